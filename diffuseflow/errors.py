"""User-facing errors.

Anything the user can fix (a bad file, a wrong parameter) raises :class:`InputError` with a
message that names the file or parameter and what is wrong. Command-line tools turn it into a
one-line message and a non-zero exit, never a traceback.
"""


class InputError(Exception):
    """A problem with the user's input: file, config key or command-line value."""


def where(path, detail: str) -> str:
    """Format ``"<path>: <detail>"`` for error messages."""
    return f"{path}: {detail}"
