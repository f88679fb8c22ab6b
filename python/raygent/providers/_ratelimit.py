"""Rate limits per provider, shared by every actor of the cluster.

Three limits, any of them optional: requests per second, tokens per minute (estimated request
size) and requests in flight at once. The arithmetic is :class:`RateLimiter`, a plain class with
an injected clock; :class:`AsyncRateLimiter` waits on it in asyncio; on Ray, one named actor per
provider key (``raygent-ratelimit-<key>``, ``num_cpus=0``, detached so that it outlives the
actor that happened to create it) holds the limiter for every process, and
:func:`limiter_for` hands out a client for it. Without Ray the limiter is process-local.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["RateLimits", "RateLimiter", "AsyncRateLimiter", "RateLimiterActor", "limiter_for"]

# Longest single wait inside acquire before the limits are looked at again (seconds): a release
# wakes waiters at once, so this only bounds the wait for a bucket refill.
MAX_POLL_S = 1.0


class RateLimits(msgspec.Struct, frozen=True):
    """Limits of one provider key; None means unlimited.

    Attributes
    ----------
    requests_per_s : float or None
        Request starts per second; bursts up to ``max(1, requests_per_s)`` requests.
    tokens_per_min : float or None
        Estimated tokens per minute; a burst may use a whole minute's worth.
    max_concurrent : int or None
        Requests in flight at once.
    """

    requests_per_s: float | None = None
    tokens_per_min: float | None = None
    max_concurrent: int | None = None


class _Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate_per_s``, starting full."""

    __slots__ = ("capacity", "rate_per_s", "level", "stamp")

    def __init__(self, capacity: float, rate_per_s: float, now: float) -> None:
        self.capacity = capacity
        self.rate_per_s = rate_per_s
        self.level = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate_per_s)
        self.stamp = now

    def wait_s(self, amount: float) -> float:
        missing = min(amount, self.capacity) - self.level
        return 0.0 if missing <= 0 else missing / self.rate_per_s


class RateLimiter:
    """The pure limiter: token buckets and a concurrency count, no waiting, no I/O.

    Parameters
    ----------
    limits : RateLimits
    clock : callable, default time.monotonic
        Seconds, monotonic (tests inject a fake).

    Attributes
    ----------
    in_flight, max_in_flight : int
        Requests granted and not released; the most there ever were at once.
    granted, refused : int
        :meth:`try_acquire` calls that granted / that returned a wait.
    """

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        for name in ("requests_per_s", "tokens_per_min", "max_concurrent"):
            value = getattr(limits, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        self.limits = limits
        self.clock = clock
        now = clock()
        rps, tpm = limits.requests_per_s, limits.tokens_per_min
        self._requests = _Bucket(max(1.0, rps), rps, now) if rps else None
        self._tokens = _Bucket(tpm, tpm / 60.0, now) if tpm else None
        self.in_flight = 0
        self.max_in_flight = 0
        self.granted = 0
        self.refused = 0

    def try_acquire(self, tokens: int = 0) -> float:
        """Start a request of about ``tokens`` tokens if every limit allows it now.

        Parameters
        ----------
        tokens : int, default 0
            Estimated tokens of the request; more than a minute's worth counts as a minute's
            worth (else it could never start).

        Returns
        -------
        float
            0.0 when granted (call :meth:`release` when the request ends); otherwise the
            seconds until the buckets would allow it, or ``math.inf`` when only a release can
            (every concurrent slot is taken).
        """
        now = self.clock()
        wait = 0.0
        for bucket, amount in ((self._requests, 1.0), (self._tokens, float(tokens))):
            if bucket is not None:
                bucket.refill(now)
                wait = max(wait, bucket.wait_s(amount))
        cap = self.limits.max_concurrent
        if cap is not None and self.in_flight >= cap:
            wait = math.inf
        if wait > 0:
            self.refused += 1
            return wait
        if self._requests is not None:
            self._requests.level -= 1.0
        if self._tokens is not None:
            self._tokens.level -= min(float(tokens), self._tokens.capacity)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.granted += 1
        return 0.0

    def release(self) -> None:
        """End a granted request (frees its concurrent slot).

        Raises
        ------
        RuntimeError
            Nothing is in flight.
        """
        if self.in_flight <= 0:
            raise RuntimeError("release() without a granted request")
        self.in_flight -= 1

    def stats(self) -> dict[str, Any]:
        """Counters: ``in_flight``, ``max_in_flight``, ``granted``, ``refused`` (calls)."""
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "granted": self.granted,
            "refused": self.refused,
        }


class AsyncRateLimiter:
    """Waits in asyncio until :class:`RateLimiter` grants; woken at once by a release.

    Parameters
    ----------
    limits : RateLimits
    clock : callable, default time.monotonic
    """

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.core = RateLimiter(limits, clock)
        self._released: asyncio.Event | None = None

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until a request of ``tokens`` estimated tokens may start (unbounded wait)."""
        while True:
            wait = self.core.try_acquire(tokens)
            if wait == 0.0:
                return
            if self._released is None:
                self._released = asyncio.Event()
            event = self._released
            try:
                await asyncio.wait_for(event.wait(), timeout=min(wait, MAX_POLL_S))
            except asyncio.TimeoutError:
                pass

    async def release(self) -> None:
        """End a granted request and wake the waiters."""
        self.core.release()
        if self._released is not None:
            self._released.set()
            self._released = None  # later waiters wait on a fresh event

    async def stats(self) -> dict[str, Any]:
        return self.core.stats()


class RateLimiterActor(AsyncRateLimiter):
    """The Ray actor shell (async actor): the same methods, called with ``.remote``."""


_LOCAL: dict[str, AsyncRateLimiter] = {}


class _RayLimiter:
    """Client of the shared limiter actor, with the :class:`AsyncRateLimiter` methods."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def acquire(self, tokens: int = 0) -> None:
        await self.handle.acquire.remote(tokens)

    async def release(self) -> None:
        await self.handle.release.remote()

    async def stats(self) -> dict[str, Any]:
        return await self.handle.stats.remote()


@functools.cache
def _actor_class() -> Any:
    import ray

    return ray.remote(num_cpus=0)(RateLimiterActor)


def limiter_for(key: str, limits: RateLimits) -> AsyncRateLimiter | _RayLimiter:
    """The limiter of a provider key: the cluster's shared actor on Ray, else process-local.

    Parameters
    ----------
    key : str
        Names the limit (e.g. the provider kind and a hash of its base URL and key); every
        caller with the same key shares one limiter. The first caller's ``limits`` win.
    limits : RateLimits

    Returns
    -------
    object
        With ``async acquire(tokens)``, ``async release()`` and ``async stats()``.
    """
    import ray

    if not ray.is_initialized():
        local = _LOCAL.get(key)
        if local is None:
            local = _LOCAL[key] = AsyncRateLimiter(limits)
        return local
    handle = (
        _actor_class()
        .options(name=f"raygent-ratelimit-{key}", get_if_exists=True, lifetime="detached")
        .remote(limits)
    )
    return _RayLimiter(handle)
