"""Capped exponential backoff with full jitter, for transient failures only."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often one request is tried, and how long to wait in between."""

    attempts: int = 5  # total tries of one request, the first included
    base_delay: float = 0.5
    max_delay: float = 10.0

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (retry_number - 1)))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography
