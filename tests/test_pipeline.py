import asyncio

import pytest

from raygent.messages import ToolCall
from raygent.pipeline import ToolPipeline, cap_output, plan_steps
from raygent.tools import tool


def _registry(log: list, barrier: dict | None = None):
    @tool(read_only=True)
    async def look(name: str) -> str:
        """Read something."""
        log.append(("start", name))
        if barrier is not None:
            barrier["arrived"] += 1
            if barrier["arrived"] >= barrier["n"]:
                barrier["event"].set()
            # Finishes only if every read of the step is running at the same time.
            await asyncio.wait_for(barrier["event"].wait(), 5)
        await asyncio.sleep(0.01)
        log.append(("end", name))
        return f"looked at {name}"

    @tool
    async def change(name: str) -> str:
        """Change something."""
        log.append(("start", name))
        await asyncio.sleep(0.01)
        log.append(("end", name))
        return f"changed {name}"

    return {"look": look, "change": change}


def _calls(spec: str) -> list[ToolCall]:
    # "r1 w2 r3" -> look(r1), change(w2), look(r3)
    return [
        ToolCall(f"id_{tok}", "look" if tok[0] == "r" else "change", {"name": tok})
        for tok in spec.split()
    ]


def test_plan_groups_reads_and_isolates_writes():
    steps = plan_steps(_calls("r1 r2 w3 r4 w5 w6 r7 r8"), _registry([]))
    assert [[c.arguments["name"] for c in s] for s in steps] == [
        ["r1", "r2"], ["w3"], ["r4"], ["w5"], ["w6"], ["r7", "r8"]
    ]


async def test_reads_of_one_step_run_concurrently():
    log: list = []
    barrier = {"n": 3, "arrived": 0, "event": asyncio.Event()}
    results = await ToolPipeline(_registry(log, barrier)).run_all(_calls("r1 r2 r3"))
    assert [r.is_error for r in results] == [False, False, False]
    assert [r.call_id for r in results] == ["id_r1", "id_r2", "id_r3"]
    # All three started before any ended: they overlapped.
    assert sorted(log[:3]) == [("start", n) for n in ("r1", "r2", "r3")]


async def test_writes_keep_order_and_wait_for_reads_before_them():
    log: list = []
    await ToolPipeline(_registry(log)).run_all(_calls("r1 r2 w3 r4 w5"))
    pos = {e: i for i, e in enumerate(log)}
    assert pos[("end", "r1")] < pos[("start", "w3")] and pos[("end", "r2")] < pos[("start", "w3")]
    assert pos[("end", "w3")] < pos[("start", "r4")] < pos[("end", "r4")] < pos[("start", "w5")]


async def test_concurrency_limit_is_respected():
    running = {"now": 0, "peak": 0}

    @tool(read_only=True)
    async def slow(i: int) -> str:
        """Slow read."""
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        await asyncio.sleep(0.02)
        running["now"] -= 1
        return str(i)

    calls = [ToolCall(f"c{i}", "slow", {"i": i}) for i in range(6)]
    results = await ToolPipeline({"slow": slow}, max_concurrency=2).run_all(calls)
    assert [r.content for r in results] == [str(i) for i in range(6)]
    assert running["peak"] == 2


async def test_timeout_unknown_tool_bad_arguments_and_crash_become_error_results():
    @tool(read_only=True, timeout_s=0.1)
    async def hang() -> str:
        """Never returns."""
        await asyncio.sleep(30)
        return "unreachable"

    @tool(read_only=True)
    def crash(n: int) -> str:
        """Raises."""
        raise RuntimeError(f"boom {n}")

    pipe = ToolPipeline({"hang": hang, "crash": crash})
    results = await pipe.run_all(
        [
            ToolCall("a", "hang", {}),
            ToolCall("b", "nope", {}),
            ToolCall("c", "crash", {"n": "not a number"}),
            ToolCall("d", "crash", {"n": 3}),
        ]
    )
    kinds = [(r.is_error, r.error_kind) for r in results]
    assert kinds == [(True, "timeout"), (True, "not_found"), (True, "bad_arguments"), (True, "error")]
    assert "0.1 s" in results[0].content
    assert "known tools: crash, hang" in results[1].content
    assert "boom 3" in results[3].content


async def test_output_is_stripped_of_ansi_and_capped():
    @tool(read_only=True)
    def colored() -> str:
        """Colored output."""
        return "\x1b[31mred\x1b[0m " + "x" * 500

    [r] = await ToolPipeline({"colored": colored}, max_output_chars=100).run_all(
        [ToolCall("a", "colored", {})]
    )
    assert "\x1b" not in r.content
    assert r.content.startswith("red ")
    assert "[... 404 characters truncated ...]" in r.content


def test_cap_output_keeps_head_and_tail():
    assert cap_output("abc", 10) == "abc"
    capped = cap_output("a" * 10 + "b" * 10, 10)
    assert capped.startswith("aaaaa\n[... 10 characters truncated ...]\n") and capped.endswith("bbbbb")


def test_max_concurrency_must_be_positive():
    with pytest.raises(ValueError):
        ToolPipeline({}, max_concurrency=0)
