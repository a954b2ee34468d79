"""User errors: one type for everything a user can get wrong (an argument, a file, the data), and
one handler that every console script runs its ``main`` through, so a bad input ends in one line
on stderr and exit code 2, never a traceback. A bug keeps its traceback.

Lowest layer: the data writer, the recipes' arguments and the converters all raise these.
"""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable

__all__ = [
    "BadInputError",
    "DiskFullError",
    "InputNotFoundError",
    "NotAFolderError",
    "TooManyErrorsError",
    "UserInputError",
    "user_error_exit",
]


class UserInputError(ValueError):
    """Something the user gave (an argument, a file, its contents) cannot be used. The message
    says what was expected, what was found and what to do; entry points print it and exit 2."""


class BadInputError(UserInputError):
    """An input (file, band, chip or shard) that cannot be used; ``reason`` is a short key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):
        # Crosses processes whole (a broadcast from rank 0, a DataLoader worker's failure).
        return type(self), (self.reason, str(self))


class InputNotFoundError(BadInputError, FileNotFoundError):
    """A path the user named does not exist (still a ``FileNotFoundError`` for callers)."""


class NotAFolderError(BadInputError, NotADirectoryError):
    """A file where a folder was expected (still a ``NotADirectoryError`` for callers)."""


class TooManyErrorsError(UserInputError, RuntimeError):
    """More bad items than ``max_error_fraction`` allows; the run stops."""


class DiskFullError(UserInputError, OSError):
    """A write ran out of space; the message names the path and how much more it needed."""

    def __init__(self, path, need_bytes: int | None = None, *, at_least: bool = False,
                 kept: str | None = None):  # fmt: skip
        """``need_bytes``: how much more the write needs (``at_least``: a lower bound, when the
        rest could not be foreseen). ``kept``: what a rerun can build on (default: nothing)."""
        need = "" if need_bytes is None else (
            f": {'at least ' if at_least else ''}{_size(need_bytes)} more")  # fmt: skip
        super().__init__(
            f"no space left on {path}{need}; free space there (or write elsewhere) and run "
            f"again ({kept or 'nothing partial was kept'})"
        )
        self.path, self.need_bytes = str(path), need_bytes
        self.at_least, self.kept = at_least, kept
        self.errno = errno.ENOSPC

    def __reduce__(self):
        return functools.partial(type(self), at_least=self.at_least, kept=self.kept), (
            self.path, self.need_bytes)  # fmt: skip


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)  # unreachable


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    notes = [" ".join(n.split()) for n in getattr(err, "__notes__", ())]
    return "; ".join([text, *notes])


# Standard exceptions a user's input causes directly (a path that is not there, a folder that
# already holds something, a file that cannot be written): reported like UserInputError.
_USER_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                   PermissionError)  # fmt: skip


def user_error_exit(prog: str) -> Callable:
    """Decorator for a console script's ``main(argv=None) -> int``: a :class:`UserInputError`
    (or a missing, existing or unwritable path, or a full disk) prints ``<prog>: error: ...`` on
    one line and returns 2, as argparse does for its own checks. Anything else propagates."""

    def wrap(main):
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except (UserInputError, *_USER_OS_ERRORS) as err:
                message = _one_line(err)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                message = _one_line(DiskFullError(err.filename or "the output device"))
            print(f"{prog}: error: {message}", file=sys.stderr)
            return 2

        return run

    return wrap
