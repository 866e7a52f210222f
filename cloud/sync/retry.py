"""Retries with exponential backoff and full jitter for transient cloud errors (DESIGN.md,
"Errors": a failed batch is retried, never dropped). Only :class:`StoreUnavailable` is
retried: any other error will not get better by waiting."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from der_core.errors import StoreUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class RetryPolicy:
    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int) -> float:
        """Full jitter (uniform in [0, base * 2**attempt], capped): concurrent clients that
        failed together do not retry together."""
        return float(self.rng.uniform(0.0, min(self.cap_s, self.base_s * 2**attempt)))

    def call(self, what: str, func: Callable[[], T]) -> T:
        for attempt in range(self.attempts):
            try:
                return func()
            except StoreUnavailable as error:
                if attempt == self.attempts - 1:
                    raise
                wait = self.delay(attempt)
                log.warning("%s: %s; retry %d/%d in %.1fs", what, error, attempt + 1, self.attempts - 1, wait)
                self.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises
