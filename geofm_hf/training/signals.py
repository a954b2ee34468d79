"""Stop signals: Slurm's warning before the time limit (SIGUSR1) and SIGTERM become a flag the
ranks agree on, or interrupt a rank stuck waiting for data."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


class StopWhileWaitingForData(Exception):
    """A stop signal arrived while this rank waited for its next batch."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum} while waiting for data")
        self.signum = signum


class StopSignal:
    """SIGTERM / SIGUSR1 (Slurm's warning before the time limit) -> checkpoint and exit.

    The flag is voted on after each forward pass. A signal that arrives while this rank waits
    for data (a stalled read) cannot wait for that vote: it interrupts the wait instead.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.waiting_for_data = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = signum
        if self.waiting_for_data:
            self.waiting_for_data = False
            raise StopWhileWaitingForData(signum)

    def next_batch(self, data_iter):
        self.waiting_for_data = True
        try:
            return next(data_iter)
        finally:
            self.waiting_for_data = False
