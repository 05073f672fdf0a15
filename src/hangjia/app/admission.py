"""Backpressure: at most `max_running` requests generate at once and at most `max_waiting` wait for a slot.

A request that finds every slot taken and the queue full is refused at once with 429 and a Retry-After
header (OpenAI clients back off and retry on it), rather than piling up until the server runs out of memory
or the client times out. Lives on the event loop. `leave` is synchronous so that a request cancelled by its
client's disconnect always frees its slot (an await in a cancelled task may itself be cancelled).
"""

from __future__ import annotations

import asyncio
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


class Admission:
    def __init__(self, max_running: int, max_waiting: int, retry_after: int = 1):
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.retry_after = retry_after
        """Seconds a refused client is told to wait; about one short answer on a CPU."""
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

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

    def leave(self) -> None:
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
