"""What ``geofm-embed`` and ``geofm-segment`` share at the command line: the scene-reading flags
of ``geofm-make-shards`` (:func:`geofm_hf.data.cli.add_scene_arguments`), numbers checked at
parse time by flag name, and user errors as one line with exit status 2."""

from __future__ import annotations

import argparse
import re
import sys

from ..data.format import BadInputError, TooManyErrorsError

# The errors a user's inputs or flags can cause: one line, exit 2, no traceback.
USER_ERRORS = (BadInputError, TooManyErrorsError, FileNotFoundError, FileExistsError, ValueError,
               argparse.ArgumentTypeError, re.error)  # fmt: skip


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``prog: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {value}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], found {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], found {text}")
    return value


def report(prog: str, err: BaseException) -> int:
    """Print a user error as one line; the exit status."""
    print(f"{prog}: error: {err}", file=sys.stderr)
    return 2
