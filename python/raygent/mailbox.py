"""A session's mailbox: its prompts run one at a time, in the order the caller numbered them.

An agent actor hosts many sessions and serves their calls concurrently on one event loop; a
session's own runs must not interleave (each appends to one history). Ray does not promise
that an async actor starts two calls from one caller in the order they were sent, so each
prompt carries its number in the session (1, 2, ...; :class:`raygent.runtime.Agent` counts
them) and the mailbox admits prompt ``n`` only once prompt ``n - 1`` was admitted and every
admitted run has ended. Calls without a number, and numbers already admitted (a run resumed
after a restart, or a second handle of the same session whose count lags), wait in arrival
order behind the lower numbers. Control calls (approve, deny, cancel, status ...) never go
through the mailbox, so they work while runs wait or stream.

Pure asyncio; it knows nothing of Ray.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["Mailbox", "GAP_WAIT_S"]

#: How long a numbered prompt waits for a lower number that has not arrived (seconds) before it
#: runs anyway: a number can be skipped for good (a call that failed on the way, a handle whose
#: count ran ahead of a session that lost its history), and the session must not stall then.
GAP_WAIT_S = 5.0


class Mailbox:
    """Admits one run at a time, lowest prompt number first.

    Parameters
    ----------
    admitted : int, default 0
        Prompts the session has already taken (the user prompts of a restored history): the
        next expected number is ``admitted + 1``.
    gap_wait_s : float, default :data:`GAP_WAIT_S`
        Longest a prompt waits for a missing lower number (seconds).
    """

    def __init__(self, admitted: int = 0, *, gap_wait_s: float = GAP_WAIT_S) -> None:
        self.admitted = admitted
        self.gap_wait_s = gap_wait_s
        self._busy = False
        self._arrivals = itertools.count()
        # (number, arrival, future): a heap, so the lowest number (then the earliest) is next.
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._gap_timer: asyncio.TimerHandle | None = None

    @property
    def busy(self) -> bool:
        """True while a run holds the session."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Runs waiting for their turn."""
        return sum(not f.done() for _, _, f in self._waiting)

    @asynccontextmanager
    async def turn(self, number: int | None = None) -> AsyncIterator[None]:
        """Wait for this run's turn and hold the session until the block exits.

        Parameters
        ----------
        number : int, optional
            The prompt's number in the session (from 1); None queues in arrival order behind
            every numbered prompt already waiting.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = float("inf") if number is None else number
        heapq.heappush(self._waiting, (key, next(self._arrivals), future))
        self._dispatch()
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self._release()  # admitted just as the waiter was cancelled: pass the turn on
            else:
                future.cancel()
                self._dispatch()
            raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self._busy = False
        self._dispatch()

    def _dispatch(self, *, gap_expired: bool = False) -> None:
        while self._waiting and self._waiting[0][2].done():
            heapq.heappop(self._waiting)  # cancelled waiters
        if self._busy or not self._waiting:
            return
        key, _, future = self._waiting[0]
        if key != float("inf") and key > self.admitted + 1 and not gap_expired:
            if self._gap_timer is None:
                loop = asyncio.get_running_loop()
                self._gap_timer = loop.call_later(self.gap_wait_s, self._gap_expired)
            return
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        heapq.heappop(self._waiting)
        self._busy = True
        if key != float("inf"):
            self.admitted = max(self.admitted, int(key))
        future.set_result(None)

    def _gap_expired(self) -> None:
        self._gap_timer = None
        self._dispatch(gap_expired=True)
