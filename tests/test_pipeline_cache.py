"""Result cache and single-flight: keys, limits, counters, invalidation, read-after-write."""

import asyncio
import random

import pytest

from raygent._cache import ResultCache, canonical_key
from raygent.messages import ToolCall
from raygent.pipeline import ToolPipeline
from raygent.tools import builtin_tools, tool


def _pipe(tmp_path, **kw):
    return ToolPipeline(builtin_tools(tmp_path), workspace=tmp_path, **kw)


def _read(path, cid="r"):
    return ToolCall(cid, "read_file", {"path": path})


async def test_identical_read_hits_cache_with_canonical_key(tmp_path):
    (tmp_path / "a.txt").write_text("one\n")
    pipe = _pipe(tmp_path)
    first = await pipe.run_call(_read("a.txt", "1"))
    second = await pipe.run_call(ToolCall("2", "read_file", {"path": "./sub/../a.txt"}))
    assert (first.cached, second.cached) == (False, True)
    assert second.content == first.content == "one\n" and second.call_id == "2"
    assert second.attempts == 0
    stats = pipe.metrics()["cache"]
    assert (stats["hits"], stats["misses"], stats["entries"]) == (1, 1, 1)
    assert canonical_key("t", {"b": 1, "a": 2}) == canonical_key("t", {"a": 2, "b": 1})


async def test_write_invalidates_reads_of_the_path_and_parent_listings(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    (tmp_path / "other.txt").write_text("keep\n")
    pipe = _pipe(tmp_path)
    reads = [
        _read("src/a.py", "1"),
        ToolCall("2", "grep", {"pattern": "x =", "path": "src"}),
        ToolCall("3", "list_dir", {"path": "."}),
        _read("other.txt", "4"),
    ]
    await pipe.run_all(reads)
    assert pipe.metrics()["cache"]["entries"] == 4
    [w] = await pipe.run_all([ToolCall("w", "write_file", {"path": "src/a.py", "content": "x = 2\n"})])
    assert not w.is_error
    # The read of the file, the grep over its directory and the listing of the root are gone.
    assert pipe.metrics()["cache"]["entries"] == 1
    after = await pipe.run_all(reads)
    assert after[0].content == "x = 2\n" and not after[0].cached
    assert "x = 2" in after[1].content and not after[1].cached
    assert after[3].cached  # another path: still cached


async def test_run_command_invalidates_every_entry(tmp_path):
    (tmp_path / "a.txt").write_text("before\n")
    pipe = _pipe(tmp_path)
    await pipe.run_call(_read("a.txt"))
    await pipe.run_call(ToolCall("l", "list_dir", {}))
    [r] = await pipe.run_all([ToolCall("c", "run_command", {"command": "echo after > a.txt"})])
    assert not r.is_error
    assert pipe.metrics()["cache"]["entries"] == 0
    assert (await pipe.run_call(_read("a.txt"))).content == "after\n"


async def test_edit_outside_the_pipeline_is_seen_for_read_file(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("v1\n")
    pipe = _pipe(tmp_path)
    assert (await pipe.run_call(_read("a.txt"))).content == "v1\n"
    f.write_text("v2 longer\n")
    r = await pipe.run_call(_read("a.txt"))
    assert r.content == "v2 longer\n" and not r.cached


def test_ttl_entries_and_bytes_limits_count_evictions():
    now = [0.0]
    c = ResultCache(ttl_s=10, max_entries=2, max_bytes=100, clock=lambda: now[0])
    p = frozenset({"x"})
    c.put(b"a", "A", nbytes=10, paths=p)
    c.put(b"b", "B", nbytes=10, paths=p)
    assert c.get(b"a") == "A"  # a is now most recent
    c.put(b"c", "C", nbytes=10, paths=p)  # evicts b
    assert c.get(b"b") is None and c.evictions == 1
    c.put(b"d", "D", nbytes=95, paths=p)  # bytes limit: evicts a and c
    assert len(c) == 1 and c.nbytes == 95 and c.evictions == 3
    assert not c.put(b"e", "E", nbytes=101, paths=p)  # larger than the whole cache
    now[0] = 11.0
    assert c.get(b"d") is None and c.expirations == 1
    assert c.stats()["misses"] == 2 and c.stats()["hits"] == 1
    with pytest.raises(ValueError):
        ResultCache(max_entries=0)


async def test_single_flight_runs_once_for_n_identical_concurrent_calls():
    runs = {"n": 0}
    release = asyncio.Event()

    @tool(read_only=True)
    async def fetch(path: str) -> str:
        """Slow read."""
        runs["n"] += 1
        await release.wait()
        return f"content of {path}"

    pipe = ToolPipeline({"fetch": fetch}, max_concurrency=2)
    n = 50
    tasks = [
        asyncio.ensure_future(pipe.run_call(ToolCall(f"c{i}", "fetch", {"path": "a"}))) for i in range(n)
    ]
    for _ in range(10):
        await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks)
    assert runs["n"] == 1
    assert {r.content for r in results} == {"content of a"}
    assert [r.call_id for r in results] == [f"c{i}" for i in range(n)]
    assert sum(r.cached for r in results) == n - 1
    m = pipe.metrics()
    assert m["executions"] == 1 and m["singleflight_shared"] == n - 1


async def test_cancelling_one_waiter_does_not_cancel_a_shared_flight():
    release = asyncio.Event()
    runs = {"n": 0}

    @tool(read_only=True)
    async def fetch(path: str) -> str:
        """Slow read."""
        runs["n"] += 1
        await release.wait()
        return "done"

    pipe = ToolPipeline({"fetch": fetch})
    a = asyncio.ensure_future(pipe.run_call(ToolCall("a", "fetch", {"path": "p"})))
    b = asyncio.ensure_future(pipe.run_call(ToolCall("b", "fetch", {"path": "p"})))
    for _ in range(5):
        await asyncio.sleep(0)
    a.cancel()
    release.set()
    assert (await b).content == "done" and runs["n"] == 1


async def test_read_started_after_a_write_never_joins_or_stores_stale(tmp_path):
    # A slow read of a.txt is in flight (from another session) when a write to a.txt starts and
    # finishes; a read issued after the write must see the new content, and the slow read's
    # stale result must not enter the cache.
    (tmp_path / "a.txt").write_text("old\n")
    gate = asyncio.Event()
    started = asyncio.Event()
    tools = builtin_tools(tmp_path)
    real_read = tools["read_file"]

    @tool(read_only=True, name="read_file")
    async def slow_read(path: str) -> str:
        """Read slowly."""
        text = await real_read.invoke({"path": path})
        started.set()
        await gate.wait()
        return text

    tools["read_file"] = slow_read
    pipe = ToolPipeline(tools, workspace=tmp_path)
    stale = asyncio.ensure_future(pipe.run_call(_read("a.txt", "s")))
    await started.wait()
    [w] = await pipe.run_all([ToolCall("w", "write_file", {"path": "a.txt", "content": "new\n"})])
    assert not w.is_error
    fresh = asyncio.ensure_future(pipe.run_call(_read("a.txt", "f")))
    await asyncio.sleep(0)
    gate.set()
    assert (await stale).content == "old\n"
    assert (await fresh).content == "new\n"
    again = await pipe.run_call(_read("a.txt", "g"))
    assert again.content == "new\n"


async def test_read_after_write_is_never_stale_under_random_interleavings(tmp_path):
    # Several sessions share one pipeline; each turn writes a file then reads it, with reads of
    # every file by others in between. Every read in a turn after its write sees that write.
    rng = random.Random(7)
    files = [f"f{i}.txt" for i in range(3)]
    for f in files:
        (tmp_path / f).write_text("0\n")
    pipe = _pipe(tmp_path, max_concurrency=4)
    locks = {f: asyncio.Lock() for f in files}  # one writer per file at a time, like one session

    async def session(sid: int) -> int:
        checked = 0
        for step in range(15):
            f = rng.choice(files)
            value = f"{sid}-{step}\n"
            async with locks[f]:
                calls = [
                    ToolCall("r0", "read_file", {"path": rng.choice(files)}),
                    ToolCall("w", "write_file", {"path": f, "content": value}),
                    ToolCall("r1", "read_file", {"path": f}),
                    ToolCall("g", "grep", {"pattern": sid and f"{sid}-" or "-", "path": "."}),
                    ToolCall("r2", "read_file", {"path": f}),
                ]
                res = {r.call_id: r for r in await pipe.run_all(calls)}
            assert res["r1"].content == value and res["r2"].content == value
            checked += 2
            await asyncio.sleep(0)
        return checked

    totals = await asyncio.gather(*(session(s) for s in range(6)))
    assert sum(totals) == 6 * 15 * 2
    assert pipe.metrics()["cache"]["hits"] + pipe.metrics()["singleflight_shared"] > 0


async def test_cache_off_runs_every_call(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    pipe = _pipe(tmp_path, cache=False)
    await pipe.run_call(_read("a.txt"))
    r = await pipe.run_call(_read("a.txt"))
    assert not r.cached and pipe.metrics()["executions"] == 2 and pipe.metrics()["cache"] == {}
