"""The project's exceptions: every failure a user can act on is one of these, shown as one line by the CLIs."""


class PSPError(Exception):
    """A failure with a message a user can act on. CLIs print it on one line and exit with `exit_code`."""

    exit_code = 1


class InputError(PSPError):
    """Bad input from the user: a missing file, a malformed option, a model that does not fit."""

    exit_code = 2


class CheckpointError(InputError):
    """A checkpoint that is missing, unreadable, or does not match the model."""


class BackendUnavailable(PSPError):
    """A backend whose package or hardware is not present on this machine."""


_noticed: set[str] = set()


def notice_once(key: str, message: str) -> None:
    """Print `notice: message` on stderr the first time `key` is seen in this process (a default assumed, a
    fallback taken): worth saying once per model or file, not once per frame."""
    import sys

    if key not in _noticed:
        _noticed.add(key)
        print(f"notice: {message}", file=sys.stderr)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): what a one-line error
    quotes of a library's multi-line report."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
