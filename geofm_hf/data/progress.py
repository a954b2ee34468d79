"""Long runs say how big they are before they start, and how far they are while they run.

``geofm-make-shards``, ``geofm-embed`` and ``geofm-segment`` count their work from raster headers
alone (a :class:`Plan`: scenes, chips or windows, shards, bytes), refuse a plan over
``--max-chips`` before any pixel is read (:func:`check_max_chips`), and then report on stderr
(:class:`Progress`): the plan, and a line every ``GEOFM_PROGRESS_SECONDS`` seconds (default 10)
with done / total, rate and ETA. A run shorter than that prints the plan line only.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .._errors import BadInputError, UserInputError, _size

__all__ = [
    "DEFAULT_MAX_CHIPS",
    "PROGRESS_SECONDS_ENV",
    "Plan",
    "Progress",
    "SceneSize",
    "add_max_chips_argument",
    "check_max_chips",
]

# About an hour of make-shards on one core, and ~60 GB of uint16 chips of 13 x 64 x 64: past
# this, a run is more likely a mistake (a stray huge or sparse raster) than a plan.
DEFAULT_MAX_CHIPS = 1_000_000
PROGRESS_SECONDS_ENV = "GEOFM_PROGRESS_SECONDS"
_DEFAULT_SECONDS = 10.0


@dataclass(frozen=True)
class SceneSize:
    """One input's share of a plan: its grid (``None`` for a shard dataset) and chip count."""

    source: str
    width: int | None
    height: int | None
    chips: int


@dataclass
class Plan:
    """What a run will do, counted before it reads a pixel.

    ``unit`` names what is counted (``"chips"``, ``"windows"``); ``chips`` are every window
    of the inputs' grids, before any is dropped for nodata, so a run writes at most that many.
    """

    unit: str
    chip_size: int
    stride: int
    scenes: list[SceneSize] = field(default_factory=list)
    bytes: int = 0  # pixels the chips hold (make-shards: uncompressed; inference: float32 read)
    bytes_label: str = "of pixels"
    shards: int | None = None
    note: str = ""  # e.g. "up to 1,200 series of 10 frames"

    @property
    def chips(self) -> int:
        return sum(s.chips for s in self.scenes)

    def describe(self) -> str:
        n = len(self.scenes)
        what = f"{n} scene{'s' if n != 1 else ''}, up to {self.chips:,} {self.unit} "
        what += f"({self.chip_size} x {self.chip_size} px, stride {self.stride}"
        what += f"; {self.note})" if self.note else ")"
        if self.shards is not None:
            what += f", ~{self.shards:,} shard{'s' if self.shards != 1 else ''}"
        return f"{what}, ~{_size(self.bytes)} {self.bytes_label}"


def check_max_chips(plan: Plan, max_chips: int | None, knobs: str) -> None:
    """Refuse ``plan`` when it holds more than ``max_chips`` chips (``None``: no limit).

    ``knobs`` names the flags that make fewer chips (``"a larger --stride or --chip-size"``).
    """
    if max_chips is None or plan.chips <= max_chips:
        return
    big = max(plan.scenes, key=lambda s: s.chips)
    grid = (f"{big.source} of {big.width:,} x {big.height:,} px" if big.width is not None
            else str(big.source))  # fmt: skip
    if len(plan.scenes) == 1:
        found = f"{plan.chips:,} {plan.unit} from {grid}"
    else:
        found = (f"{plan.chips:,} {plan.unit} from {len(plan.scenes):,} scenes (the largest: "
                 f"{big.chips:,} from {grid})")  # fmt: skip
    raise BadInputError(
        "too_many_chips",
        f"{found} at {'chip' if plan.unit == 'chips' else 'window'} size {plan.chip_size}, "
        f"stride {plan.stride}, is over --max-chips "
        f"{max_chips:,}; crop the input, pass {knobs}, or raise --max-chips (0: no limit) if "
        "this many is meant",
    )


def _max_chips(text: str) -> int | None:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of chips (0: no limit), found {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (no limit) or more, found {value}")
    return value or None


def add_max_chips_argument(parser: argparse.ArgumentParser, unit: str = "chips") -> None:
    """``--max-chips N`` (default :data:`DEFAULT_MAX_CHIPS`; ``0``: no limit), parsed to
    ``args.max_chips`` (``None``: no limit). One spelling and meaning in every tool."""
    parser.add_argument(
        "--max-chips",
        type=_max_chips,
        default=DEFAULT_MAX_CHIPS,
        metavar="N",
        help=f"refuse, before reading any pixel, inputs that hold more than N {unit} (default "
        f"{DEFAULT_MAX_CHIPS:,}; 0: no limit). The planned size is printed first either way; "
        f"progress lines follow every {PROGRESS_SECONDS_ENV} seconds (default "
        f"{_DEFAULT_SECONDS:g})",
    )


def _interval() -> float:
    text = os.environ.get(PROGRESS_SECONDS_ENV)
    if text is None or not text.strip():
        return _DEFAULT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:  # NaN too
        raise UserInputError(
            f"{PROGRESS_SECONDS_ENV} is the number of seconds between progress lines (>= 0); "
            f"found {text!r}: set it to a number or unset it"
        )
    return value


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
    """The plan line, then a progress line at most every ``GEOFM_PROGRESS_SECONDS`` on stderr.

    Used as a tqdm bar is (``update(n)``, ``close()``). ``status`` adds what only the caller
    knows at print time (``"12.3 MB read, 2 shards"``). ``enabled=False`` prints nothing.
    """

    def __init__(self, prog: str, *, enabled: bool = True, stream=None):
        self.prog, self.enabled = prog, enabled
        self.interval = _interval()
        self.stream = stream
        self.total, self.unit, self.done, self.lines = 0, "chips", 0, 0
        self.status: Callable[[], str] | None = None
        self.start = self.last = time.monotonic()

    def _print(self, text: str) -> None:
        print(f"{self.prog}: {text}", file=self.stream or sys.stderr, flush=True)

    def plan(self, plan: Plan, status: Callable[[], str] | None = None) -> None:
        """Print ``plan`` and start the clock: the totals the progress lines count against."""
        self.total, self.unit, self.status = plan.chips, plan.unit, status
        self.start = self.last = time.monotonic()
        if self.enabled and plan.chips:  # no chips: the run's own error says why
            self._print(f"plan: {plan.describe()}")

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.lines += 1
            self._print(self._line(now))

    def _line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        line = f"{self.done:,} of {self.total:,} {self.unit}"
        if self.total:
            line += f" ({100 * min(self.done / self.total, 1):.1f}%)"
        line += f", {rate:,.1f} {self.unit}/s"
        if rate > 0 and self.done < self.total:
            line += f", ETA {_clock((self.total - self.done) / rate)}"
        if self.status is not None:
            line += f"; {self.status()}"
        return line

    def close(self) -> None:
        """A last line with the totals, when the run was long enough to print progress."""
        if self.enabled and self.lines:
            self.lines = 0
            elapsed = time.monotonic() - self.start
            self._print(f"done: {self.done:,} {self.unit} in {_clock(elapsed)}"
                        + (f"; {self.status()}" if self.status is not None else ""))  # fmt: skip
