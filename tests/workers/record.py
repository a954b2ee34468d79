"""One way for a rank to print a record the test parses out of the launcher's shared stdout."""

import os
import sys


def emit(record: str) -> None:
    """Writes ``record`` and its newline in one ``write(2)``.

    All ranks share the launcher's stdout pipe. ``print`` writes the text and the newline
    separately, so two ranks finishing together ran their records into one line (seen in CI).
    A single write below ``PIPE_BUF`` (4 KiB) to a pipe is atomic, so records stay whole.
    """
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (record + "\n").encode())
