"""What a run does with a bad input item: raise, or skip it (counted, logged, listed on the card)
until more than ``max_error_fraction`` of the items are bad. Shared by the writer and inference."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from .format import BadInputError, TooManyErrorsError

__all__ = ["ErrorPolicy"]

logger = logging.getLogger(__name__)


class ErrorPolicy:
    def __init__(self, on_error: str, max_error_fraction: float, total_items: int):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise'; got {on_error!r}")
        if not 0.0 <= max_error_fraction <= 1.0:
            raise ValueError(f"max_error_fraction must be in [0, 1]; got {max_error_fraction}")
        self.on_error = on_error
        self.max_error_fraction = max_error_fraction
        self.total_items = max(total_items, 1)
        self.errors = 0
        self.by_reason: Counter[str] = Counter()
        self.items: list[dict[str, str]] = []

    def record(self, err: BadInputError, item: str, *, is_error: bool = True) -> None:
        if is_error and self.on_error == "raise":
            raise err
        self.by_reason[err.reason] += 1
        if len(self.items) < 1000:  # the card lists the first ones; the counts are complete
            self.items.append({"item": item, "reason": err.reason, "message": str(err)})
        if not is_error:
            logger.debug("dropped %s: %s", item, err)
            return
        self.errors += 1
        logger.warning("skipped %s (%s): %s", item, err.reason, err)
        if self.errors > self.max_error_fraction * self.total_items:
            raise TooManyErrorsError(
                f"{self.errors} of {self.total_items} input items are bad (last: {item}: {err}); "
                f"max_error_fraction={self.max_error_fraction} allows at most "
                f"{int(self.max_error_fraction * self.total_items)}. Fix the inputs or raise "
                f"max_error_fraction. Reasons so far: {dict(self.by_reason)}"
            ) from err

    def summary(self) -> dict[str, Any]:
        return {"count": int(sum(self.by_reason.values())), "errors": self.errors,
                "by_reason": dict(sorted(self.by_reason.items()))}  # fmt: skip
