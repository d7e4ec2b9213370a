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


def notice(message: str, echo=None) -> None:
    """Say `notice: message`: a default assumed, a fallback taken, something the user should know that is not
    an error. On stderr, or through `echo` where a command collects its lines (psp-bench's log)."""
    import sys

    line = f"notice: {message}"
    if echo is None:
        print(line, file=sys.stderr)
    else:
        echo(line)


def notice_once(key: str, message: str) -> None:
    """notice(message) the first time `key` is seen in this process: worth saying once per model or file, not
    once per frame."""
    if key not in _noticed:
        _noticed.add(key)
        notice(message)


def first_line(exc: BaseException, *, with_type: bool = False) -> str:
    """An exception's message as one line (its first), or its type's name when it says nothing: what a
    PSPError quotes of a library's multi-line error. with_type: `TypeName: first line`, where the type says
    what the text does not (a KeyError's bare key, a library's own exception class)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if not line:
        return type(exc).__name__
    return f"{type(exc).__name__}: {line}" if with_type else line


def load_error(source, what: str, exc: BaseException, error: type[PSPError] = InputError) -> PSPError:
    """The one error for a model a library cannot load: `SOURCE: not a loadable WHAT: first line`."""
    return error(f"{source}: not a loadable {what}: {first_line(exc)}")
