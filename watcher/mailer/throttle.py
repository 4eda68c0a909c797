"""At most N letters a minute, evenly spaced rather than in bursts."""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """``wait()`` returns when the next letter may go; the first one goes at once."""

    def __init__(
        self,
        per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval_s = 60.0 / per_minute
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    def wait(self) -> None:
        now = self._clock()
        if self._next is not None and now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self.interval_s
