"""Backpressure: at most `max_running` requests generate at once and at most `max_waiting` wait for a slot.

A request that finds every slot taken and the queue full is refused at once with 429 and a Retry-After
header (OpenAI clients back off and retry on it), rather than piling up until the server runs out of memory
or the client times out. Retry-After estimates when a slot frees for it: (requests waiting + 1) × the recent mean
time a request holds a slot ÷ the slots (1 s until a request has finished, 60 s at most).

Lives on the event loop. `leave` is synchronous so that a request cancelled by its client's disconnect always frees
its slot (an await in a cancelled task may itself be cancelled).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from hangjia.core.errors import HangjiaError


class QueueFull(HangjiaError):
    """Every slot is busy and the queue is full: 429 with Retry-After."""

    def __init__(self, running: int, waiting: int, retry_after: int):
        super().__init__(
            f"The server is busy ({running} requests generating, {waiting} waiting, the most it queues); "
            f"retry in {retry_after} s.",
            status_code=429,
        )
        self.retry_after = retry_after


MAX_RETRY_AFTER = 60  # seconds: past a minute a client is better told to come back soon and try again
HOLD_WEIGHT = 0.2  # weight of the newest hold time in the moving average (about the last 5 requests count)


class Admission:
    def __init__(self, max_running: int, max_waiting: int):
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.running = 0
        self.hold_s: float | None = None
        """Moving average of how long a request held its slot (None until one has left)."""
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def retry_after(self) -> int:
        """Whole seconds until a slot should be free for a refused request: everyone waiting goes first, and each
        slot frees after about one hold time; 1 before any request finished, at most MAX_RETRY_AFTER."""
        if self.hold_s is None:
            return 1
        return max(1, min(MAX_RETRY_AFTER, math.ceil(self.hold_s * (self.waiting + 1) / self.max_running)))

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def enter(self) -> None:
        """Take a slot, waiting in line (first come, first served); raise QueueFull when the line is full."""
        if self.running < self.max_running and not self._waiters:
            self.running += 1
            return
        if self.waiting >= self.max_waiting:
            raise QueueFull(self.running, self.waiting, self.retry_after)
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await turn  # `leave` hands the slot over (running already counts it)
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.leave()  # handed a slot just as we gave up: pass it on
            elif turn in self._waiters:
                self._waiters.remove(turn)
            raise

    def leave(self, held_s: float | None = None) -> None:
        """Free a slot (for the next in line); `held_s`: how long it was held, which Retry-After learns from."""
        if held_s is not None:
            self.hold_s = held_s if self.hold_s is None else (1 - HOLD_WEIGHT) * self.hold_s + HOLD_WEIGHT * held_s
        self.running -= 1
        while self._waiters and self.running < self.max_running:
            turn = self._waiters.popleft()
            if not turn.done():
                self.running += 1
                turn.set_result(None)


class Admissions:
    """One line per generator: the names the transformers engine serves share one (they share its lock), and each
    name served by a batching backend (llama.cpp, an upstream) has its own, `parallel` wide."""

    def __init__(self, lines: dict[str, Admission], shared: Admission):
        self.lines, self.shared = lines, shared

    @classmethod
    def for_engine(
        cls, engine, max_running: int, max_waiting: int, parallel: dict[str, int] | None = None
    ) -> Admissions:
        """`parallel`: the width of names whose batching backend is built later (a named version, on first request)."""
        shared = Admission(max_running, max_waiting)
        widths = {name: b.parallel for name, b in engine.backends.items()} | (parallel or {})
        return cls({name: Admission(width, max_waiting) for name, width in widths.items()}, shared)

    def of(self, model: str) -> Admission:
        return self.lines.get(model, self.shared)
