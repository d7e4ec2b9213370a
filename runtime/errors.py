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
