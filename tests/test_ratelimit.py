"""Rate limits: bucket math with an injected clock, asyncio waiting, providers, and one shared
limiter actor for every actor of a real local Ray cluster."""

from __future__ import annotations

import asyncio
import math

import pytest

from raygent.messages import UserMessage
from raygent.providers import OpenAIChatProvider
from raygent.providers._ratelimit import AsyncRateLimiter, RateLimiter, RateLimits, limiter_for

from _http_server import server, sse_plan  # noqa: F401  (server is a fixture)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_requests_per_second_bucket():
    clock = Clock()
    lim = RateLimiter(RateLimits(requests_per_s=2), clock)
    assert lim.try_acquire() == 0.0 and lim.try_acquire() == 0.0  # burst of 2
    assert lim.try_acquire() == pytest.approx(0.5)
    clock.t += 0.25
    assert lim.try_acquire() == pytest.approx(0.25)
    clock.t += 0.25
    assert lim.try_acquire() == 0.0
    clock.t += 100  # refill is capped at the burst
    assert [lim.try_acquire() for _ in range(3)][:2] == [0.0, 0.0]
    assert lim.stats()["granted"] == 5 and lim.stats()["refused"] == 3


def test_tokens_per_minute_bucket_and_oversized_requests():
    clock = Clock()
    lim = RateLimiter(RateLimits(tokens_per_min=600), clock)  # 10 tokens/s
    assert lim.try_acquire(400) == 0.0
    assert lim.try_acquire(300) == pytest.approx(10.0)  # 100 missing at 10/s
    clock.t += 10
    assert lim.try_acquire(300) == 0.0
    clock.t += 60
    assert lim.try_acquire(10_000) == 0.0  # clamped to a minute's worth, not refused forever
    assert lim.try_acquire(1) == pytest.approx(0.1)


def test_concurrency_slots():
    lim = RateLimiter(RateLimits(max_concurrent=2), Clock())
    assert lim.try_acquire() == 0.0 and lim.try_acquire() == 0.0
    assert lim.try_acquire() == math.inf
    lim.release()
    assert lim.try_acquire() == 0.0
    assert lim.stats()["max_in_flight"] == 2
    lim.release(), lim.release()
    with pytest.raises(RuntimeError):
        lim.release()
    with pytest.raises(ValueError):
        RateLimiter(RateLimits(max_concurrent=0))


def test_async_limiter_wakes_waiters_on_release():
    async def go():
        lim = AsyncRateLimiter(RateLimits(max_concurrent=3))
        now = peak = 0

        async def job():
            nonlocal now, peak
            await lim.acquire()
            now += 1
            peak = max(peak, now)
            await asyncio.sleep(0.001)
            now -= 1
            await lim.release()

        await asyncio.wait_for(asyncio.gather(*(job() for _ in range(20))), timeout=30)
        return peak, await lim.stats()

    peak, stats = asyncio.run(go())
    assert peak == 3 and stats["max_in_flight"] == 3 and stats["granted"] == 20


OK_BODY = (
    b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


async def test_http_provider_acquires_and_releases_per_request(server):  # noqa: F811
    for i in range(3):
        server.plans.append(sse_plan(OK_BODY, seed=i))
    provider = OpenAIChatProvider("m", base_url=server.base_url, api_key="x")
    provider.rate_limits = RateLimits(max_concurrent=1, requests_per_s=1000)
    provider.rate_limit_key = "test-http-provider"
    for _ in range(3):
        chunks = [c async for c in provider.stream([UserMessage("hi")], [])]
        assert chunks
    await provider.aclose()
    stats = await limiter_for("test-http-provider", RateLimits()).stats()
    assert stats["granted"] == 3 and stats["in_flight"] == 0


@pytest.mark.ray
def test_two_actors_share_one_limit(ray_cluster):
    ray = ray_cluster

    @ray.remote(num_cpus=0)
    class Caller:
        async def burst(self, key: str, n: int) -> int:
            lim = limiter_for(key, RateLimits(max_concurrent=2))

            async def one():
                await lim.acquire(10)
                await asyncio.sleep(0.02)
                await lim.release()

            await asyncio.gather(*(one() for _ in range(n)))
            return n

    key = "test-two-actors"
    a, b = Caller.remote(), Caller.remote()
    assert ray.get([a.burst.remote(key, 8), b.burst.remote(key, 8)], timeout=120) == [8, 8]
    stats = ray.get(ray.get_actor(f"raygent-ratelimit-{key}").stats.remote(), timeout=60)
    # One limiter saw all 16 requests and never more than 2 at once (per-process limiters
    # would each have counted only their own 8).
    assert stats["granted"] == 16
    assert stats["max_in_flight"] == 2
    assert stats["in_flight"] == 0
    ray.kill(ray.get_actor(f"raygent-ratelimit-{key}"))
