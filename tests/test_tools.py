"""Unit tests of raygent.tools: the @tool schema and validation, and the built-in tools."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Literal, Optional

import pytest

from raygent.errors import ToolArgumentError, ToolError, ToolTimeout
from raygent.pipeline import ToolLike
from raygent.tools import Tool, builtin_tools, scrubbed_env, tool

# --- @tool --------------------------------------------------------------------------------------


@tool(read_only=True, timeout_s=5.0)
def search(
    query: str,
    mode: Literal["fast", "exact"] = "fast",
    limit: int = 10,
    tags: list[str] | None = None,
    ratio: Optional[float] = None,
    verbose: bool = False,
) -> str:
    """Search the index for documents.

    Results are ranked by score.

    Parameters
    ----------
    query : str
        What to look
        for.
    mode : {"fast", "exact"}
        Matching strategy.
    limit : int
        Most results, at least 1.
    tags, ratio
        Filters.

    Returns
    -------
    str
        The hits.
    """
    return f"{query}|{mode}|{limit}|{tags}|{ratio}|{verbose}"


@tool(name="adder")
async def add(a: int, b: int = 1) -> int:
    """Add two integers.

    Args:
        a (int): First operand,
            continued here.
        b: Second operand.

    Returns:
        The sum.
    """
    return a + b


def test_schema_shape_and_description() -> None:
    assert isinstance(search, Tool)
    tool_like: ToolLike = search  # the pipeline's protocol (checked by mypy)
    assert tool_like.name == "search"
    assert search.name == "search" and search.read_only and search.timeout_s == 5.0
    assert search.description == "Search the index for documents.\n\nResults are ranked by score."
    assert search.schema["name"] == "search"
    assert search.schema["description"] == search.description
    params = search.schema["parameters"]
    assert params["type"] == "object" and params["additionalProperties"] is False
    assert params["required"] == ["query"]


def test_schema_types_and_param_descriptions():
    props = search.schema["parameters"]["properties"]
    assert props["query"] == {"type": "string", "description": "What to look for."}
    mode = dict(props["mode"])
    assert sorted(mode.pop("enum")) == ["exact", "fast"]
    assert mode == {"type": "string", "description": "Matching strategy.", "default": "fast"}
    assert props["limit"]["type"] == "integer" and props["limit"]["default"] == 10
    assert props["tags"]["anyOf"] == [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]
    assert props["tags"]["description"] == "Filters."
    assert props["ratio"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    assert props["verbose"]["type"] == "boolean" and "description" not in props["verbose"]


def test_google_docstring_and_bare_options():
    assert add.name == "adder" and not add.read_only and add.timeout_s is None
    assert add.description == "Add two integers."
    props = add.schema["parameters"]["properties"]
    assert props["a"]["description"] == "First operand, continued here."
    assert props["b"]["description"] == "Second operand."
    assert add.schema["parameters"]["required"] == ["a"]


def test_bare_decorator_and_direct_call():
    @tool
    def ping() -> str:
        """Reply pong."""
        return "pong"

    assert ping.name == "ping" and ping.schema["parameters"]["properties"] == {}
    assert ping() == "pong"
    assert search(query="q") == "q|fast|10|None|None|False"


async def test_direct_call_of_async_tool_returns_coroutine():
    coro = add(a=2, b=3)
    assert asyncio.iscoroutine(coro)
    assert await coro == 5


async def test_invoke_applies_defaults_and_runs_sync_and_async():
    assert await search.invoke({"query": "x", "tags": ["a"], "ratio": 1}) == "x|fast|10|['a']|1.0|False"
    assert await add.invoke({"a": 2}) == 3
    assert await tool(lambda: 7, name="seven").invoke(None) == 7


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ({}, "missing required parameter `query`"),
        ({"query": "x", "bogus": 1}, "unknown parameter `bogus`"),
        ({"query": 3}, "parameter `query`: expected `str`, got `int`"),
        ({"query": "x", "limit": "10"}, "parameter `limit`: expected `int`, got `str`"),
        ({"query": "x", "limit": True}, "parameter `limit`"),
        ({"query": "x", "mode": "slow"}, "parameter `mode`"),
        ({"query": "x", "tags": [1]}, "parameter `tags`"),
        ({"query": "x", "verbose": None}, "parameter `verbose`"),
        (["x"], "arguments must be a JSON object"),
    ],
)
async def test_invoke_rejects_bad_arguments(arguments, needle):
    with pytest.raises(ToolArgumentError) as info:
        await search.invoke(arguments)
    assert needle in str(info.value)
    assert str(info.value).startswith("search: ")
    assert info.value.tool == "search" and info.value.kind == "bad_arguments"


async def test_invoke_fills_tool_name_on_tool_errors():
    @tool
    def fails() -> None:
        """Always fails."""
        raise ToolError("nope")

    with pytest.raises(ToolError) as info:
        await fails.invoke({})
    assert info.value.tool == "fails"


def test_decorator_rejects_unusable_signatures():
    with pytest.raises(TypeError, match="keyword"):

        @tool
        def variadic(*args: int) -> None:
            """No."""

    with pytest.raises(ValueError, match="name"):
        tool(lambda: None, name="has space")

    with pytest.raises(TypeError, match="annotation"):

        @tool
        def weird(x: object()) -> None:  # type: ignore[valid-type]
            """No."""


# --- built-ins ----------------------------------------------------------------------------------


@pytest.fixture
def tools(tmp_path: Path) -> dict[str, Tool]:
    return builtin_tools(tmp_path, max_output_bytes=1000)


def test_builtin_set_and_flags(tools):
    assert set(tools) == {"read_file", "write_file", "edit_file", "list_dir", "grep", "run_command"}
    assert {n for n, t in tools.items() if t.read_only} == {"read_file", "list_dir", "grep"}
    for t in tools.values():
        assert t.schema["parameters"]["additionalProperties"] is False
        assert t.description


async def test_read_file_window_and_ansi(tools, tmp_path):
    (tmp_path / "a.txt").write_text("".join(f"line {i}\n" for i in range(10)))
    assert await tools["read_file"].invoke({"path": "a.txt"}) == "".join(f"line {i}\n" for i in range(10))
    part = await tools["read_file"].invoke({"path": "a.txt", "offset": 2, "limit": 3})
    assert part.startswith("line 2\nline 3\nline 4\n")
    assert "offset=5" in part and "line 5" not in part
    assert "past the end" in await tools["read_file"].invoke({"path": "a.txt", "offset": 50})
    (tmp_path / "c.txt").write_bytes(b"\x1b[1;31mbold red\x1b[0m and \xff bad\n")
    assert await tools["read_file"].invoke({"path": "c.txt"}) == "bold red and \ufffd bad\n"


async def test_read_file_errors(tools, tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    with pytest.raises(ToolError, match="directory"):
        await tools["read_file"].invoke({"path": "d"})
    with pytest.raises(ToolError, match="no such file"):
        await tools["read_file"].invoke({"path": "missing.txt"})
    with pytest.raises(ToolArgumentError):
        await tools["read_file"].invoke({"path": "d", "offset": -1})
    import raygent.tools._builtin as builtin

    monkeypatch.setattr(builtin, "MAX_FILE_BYTES", 10)
    (tmp_path / "big.txt").write_text("x" * 11)
    with pytest.raises(ToolError, match="11 bytes, over the 10-byte limit"):
        await tools["read_file"].invoke({"path": "big.txt"})


async def test_write_file_creates_parents(tools, tmp_path):
    msg = await tools["write_file"].invoke({"path": "src/pkg/x.py", "content": "héllo\n"})
    assert msg == "wrote 7 bytes to src/pkg/x.py"
    assert (tmp_path / "src/pkg/x.py").read_text(encoding="utf-8") == "héllo\n"
    await tools["write_file"].invoke({"path": str(tmp_path / "src/pkg/x.py"), "content": "new"})
    assert (tmp_path / "src/pkg/x.py").read_text() == "new"
    with pytest.raises(ToolError, match="directory"):
        await tools["write_file"].invoke({"path": "src", "content": "x"})


async def test_edit_file(tools, tmp_path):
    f = tmp_path / "m.py"
    f.write_bytes(b"a = 1\r\nb = 1\r\nc = 2\r\n")
    assert await tools["edit_file"].invoke({"path": "m.py", "old": "c = 2", "new": "c = 3"}) == (
        "replaced 1 occurrence in m.py"
    )
    assert f.read_bytes() == b"a = 1\r\nb = 1\r\nc = 3\r\n"  # CRLF kept
    with pytest.raises(ToolError, match="occurs 2 times"):
        await tools["edit_file"].invoke({"path": "m.py", "old": "= 1", "new": "= 9"})
    assert f.read_bytes() == b"a = 1\r\nb = 1\r\nc = 3\r\n"
    msg = await tools["edit_file"].invoke({"path": "m.py", "old": "= 1", "new": "= 9", "replace_all": True})
    assert msg == "replaced 2 occurrences in m.py"
    assert f.read_bytes() == b"a = 9\r\nb = 9\r\nc = 3\r\n"
    with pytest.raises(ToolError, match="not found"):
        await tools["edit_file"].invoke({"path": "m.py", "old": "zzz", "new": "y"})
    with pytest.raises(ToolArgumentError, match="same"):
        await tools["edit_file"].invoke({"path": "m.py", "old": "a", "new": "a"})
    with pytest.raises(ToolError, match="no such file"):
        await tools["edit_file"].invoke({"path": "nope.py", "old": "a", "new": "b"})


async def test_list_dir_tree(tools, tmp_path):
    for rel in ["b.txt", "a/z.py", "a/deep/deeper/x", ".git/HEAD", "node_modules/m/i.js", "c/", ".mypy_cache/x.json"]:
        p = tmp_path / rel
        if rel.endswith("/"):
            p.mkdir()
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("")
    out = await tools["list_dir"].invoke({})
    assert out.splitlines() == ["./", "  a/", "    deep/", "    z.py", "  b.txt", "  c/"]
    out = await tools["list_dir"].invoke({"path": "a", "max_depth": 5})
    assert out.splitlines() == ["a/", "  deep/", "    deeper/", "      x", "  z.py"]
    with pytest.raises(ToolError, match="not a directory"):
        await tools["list_dir"].invoke({"path": "b.txt"})


async def test_list_dir_cap(tools, tmp_path, monkeypatch):
    import raygent.tools._builtin as builtin

    monkeypatch.setattr(builtin, "_MAX_LIST_ENTRIES", 5)
    for i in range(20):
        (tmp_path / f"f{i:02}").write_text("")
    out = (await tools["list_dir"].invoke({})).splitlines()
    assert out[-1].startswith("[... listing stopped at 5 entries")
    assert len(out) == 7


async def test_grep(tools, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/a.py").write_text("import os\ndef Foo():\n    return 1\n")
    (tmp_path / "src/b.txt").write_text("foo bar\n" + "x" * 500 + "foo\n")
    (tmp_path / "bin.dat").write_bytes(b"foo\0\x01")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git/config").write_text("foo\n")
    (tmp_path / ".pytest_cache/v/cache").mkdir(parents=True)
    (tmp_path / ".pytest_cache/v/cache/nodeids").write_text('["tests/test_foo.py::test_foo"]\n')
    out = await tools["grep"].invoke({"pattern": "foo"})
    lines = out.splitlines()
    assert lines[0] == "src/b.txt:1: foo bar"
    assert lines[1].startswith("src/b.txt:2: xxx") and lines[1].endswith(" [...]") and len(lines[1]) < 330
    assert len(lines) == 2
    out = await tools["grep"].invoke({"pattern": r"def \w+\(", "ignore_case": True, "glob": "*.py"})
    assert out == "src/a.py:2: def Foo():"
    assert await tools["grep"].invoke({"pattern": "foo", "path": "src/a.py"}) == "no matches for 'foo' in src/a.py"
    out = await tools["grep"].invoke({"pattern": "o", "max_results": 1})
    assert out.splitlines()[0] == "src/a.py:1: import os"
    assert out.splitlines()[1] == "[... 3 more matches not shown; narrow the pattern, path or glob]"
    with pytest.raises(ToolArgumentError, match="invalid regular expression"):
        await tools["grep"].invoke({"pattern": "(unclosed"})
    with pytest.raises(ToolError, match="no such file"):
        await tools["grep"].invoke({"pattern": "x", "path": "nowhere"})


# --- run_command --------------------------------------------------------------------------------


async def test_run_command_exit_code_cwd_and_stderr(tools, tmp_path):
    out = await tools["run_command"].invoke({"command": "pwd; echo oops >&2; exit 3"})
    assert out == f"{os.path.realpath(tmp_path)}\noops\n[exit code 3]"
    assert await tools["run_command"].invoke({"command": "true"}) == "[exit code 0]"
    assert await tools["run_command"].invoke({"command": "cat"}) == "[exit code 0]"  # stdin is empty


async def test_run_command_strips_ansi(tools):
    out = await tools["run_command"].invoke({"command": r"printf '\033[31mred\033[0m \033]0;title\007ok\n'"})
    assert out == "red ok\n[exit code 0]"


async def test_run_command_caps_output_head_and_tail(tools):
    # 1000-byte cap (fixture): 500 head bytes, 500 tail bytes, the rest counted in the marker.
    out = await tools["run_command"].invoke(
        {"command": "echo START; i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done; echo END"}
    )
    assert out.startswith("START\nline0\n")
    assert out.endswith("line1999\nEND\n[exit code 0]")
    total = 6 + sum(len(f"line{i}\n") for i in range(2000)) + 4
    assert f"[... {total - 1000} bytes truncated ...]" in out


def _pid_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _wait_gone(pids: list[int], tries: int = 100) -> list[int]:
    for _ in range(tries):
        alive = [p for p in pids if not _pid_gone(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return alive


def _pids(text: str) -> list[int]:
    return [int(w) for w in text.split() if w.isdigit()]


async def test_run_command_timeout_kills_process_group(tools):
    cmd = "sleep 30 & echo $! ; sh -c 'sleep 30' & echo $! ; echo $$ ; wait"
    with pytest.raises(ToolTimeout) as info:
        await tools["run_command"].invoke({"command": cmd, "timeout_s": 0.5})
    assert info.value.timeout_s == 0.5 and "0.5 s" in str(info.value)
    pids = _pids(str(info.value).split("Output so far:", 1)[1])
    assert len(pids) == 3
    assert _wait_gone(pids) == []


async def test_run_command_cancel_kills_process_group(tools, tmp_path):
    # The command records its PIDs in a file, since a cancelled call returns no output.
    cmd = "sleep 30 & echo $! $$ > pids.tmp; mv pids.tmp pids; wait"
    task = asyncio.create_task(tools["run_command"].invoke({"command": cmd, "timeout_s": 60}))
    for _ in range(200):
        if (tmp_path / "pids").exists():
            break
        await asyncio.sleep(0.05)
    pids = _pids((tmp_path / "pids").read_text())
    assert len(pids) == 2 and not any(_pid_gone(p) for p in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _wait_gone(pids) == []


async def test_run_command_stops_background_leftovers(tools):
    out = await tools["run_command"].invoke({"command": "sleep 30 & echo $!", "timeout_s": 20})
    assert out.endswith("[exit code 0]")
    assert "background processes" in out
    assert _wait_gone(_pids(out.split("[exit code")[0])) == []


async def test_run_command_env_scrubbed(tools, monkeypatch):
    monkeypatch.setenv("FOO_API_KEY", "sk-secret-1")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret-2")
    monkeypatch.setenv("DB_PASSWORD", "secret-3")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-4")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("RAYGENT_VISIBLE", "yes")
    # Only the variables in question: the whole environment can exceed the fixture's output cap.
    out = await tools["run_command"].invoke(
        {"command": "env | grep -E 'API_KEY|TOKEN|PASSWORD|SECRET|RAYGENT_VISIBLE|^PATH='"}
    )
    assert "secret" not in out
    assert "FOO_API_KEY" not in out and "GITHUB_TOKEN" not in out
    assert "RAYGENT_VISIBLE=yes" in out and "TOKENIZERS_PARALLELISM=false" in out
    assert "PATH=" in out


def test_scrubbed_env_names():
    env = {
        "OPENAI_API_KEY": "1",
        "ANTHROPIC_API_KEY": "1",
        "HF_TOKEN": "1",
        "AWS_ACCESS_KEY_ID": "1",
        "AWS_SESSION_TOKEN": "1",
        "MY_SECRET_THING": "1",
        "PGPASSWORD": "1",
        "AWS_REGION": "keep",
        "HOME": "keep",
        "TOKENIZERS_PARALLELISM": "keep",
    }
    assert scrubbed_env(env) == {"AWS_REGION": "keep", "HOME": "keep", "TOKENIZERS_PARALLELISM": "keep"}


async def test_run_command_rejects_bad_timeout(tools):
    with pytest.raises(ToolArgumentError):
        await tools["run_command"].invoke({"command": "true", "timeout_s": 0})


async def test_tool_survives_pickling_with_its_validation():
    from ray import cloudpickle  # what Ray uses to ship a tool to the ToolActor

    def local(text: str, times: int = 1) -> str:
        """Repeat a text."""
        return text * times

    t = tool(read_only=True, timeout_s=2.0)(local)
    back = cloudpickle.loads(cloudpickle.dumps(t))
    assert (back.name, back.schema, back.read_only, back.timeout_s) == (
        t.name, t.schema, t.read_only, t.timeout_s
    )
    assert await back.invoke({"text": "ab", "times": 2}) == "abab"
    with pytest.raises(ToolArgumentError):
        await back.invoke({"text": 1})
