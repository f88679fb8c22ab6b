"""Tool-call policies without Ray: rule matching, TOML files, and the deny / prompt paths of the
pure Session with real tools on a temporary workspace."""

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from raygent.errors import AgentError, ApprovalError, PolicyError, ToolDenied
from raygent.messages import (
    ApprovalRequest,
    AssistantMessage,
    Chunk,
    Done,
    StateChange,
    TextDelta,
    ToolCall,
    ToolCallEnd,
    ToolCallStart,
    ToolMessage,
    ToolResultChunk,
    UserMessage,
    decode,
    encode,
)
from raygent.pipeline import ToolPipeline
from raygent.policy import Policy, Rule, load_policy, split_command
from raygent.providers import ScriptedModel
from raygent.session import Session
from raygent.state import AgentState
from raygent.streaming import CHUNK_KINDS
from raygent.tools import builtin_tools


def cmd(command: str) -> ToolCall:
    return ToolCall(id="c", name="run_command", arguments={"command": command})


def decision(policy: Policy, command: str) -> str:
    return policy.decide(cmd(command)).decision


# --- matching -----------------------------------------------------------------------------------


def test_first_matching_command_pattern_wins_in_written_order():
    p = Policy(commands={"git push*": "deny", "git *": "allow", "*": "prompt"})
    assert decision(p, "git status") == "allow"
    assert decision(p, "git push origin main") == "deny"
    assert p.decide(cmd("git push origin main")).rule == 'commands."git push*"'
    assert decision(p, "ls -la") == "prompt"
    # The broad pattern first shadows the specific one: the order is the user's to choose.
    shadowed = Policy(commands={"*": "prompt", "git *": "allow"})
    assert decision(shadowed, "git status") == "prompt"


def test_commands_fall_back_to_the_run_command_tool_rule_then_default():
    p = Policy(default="deny", tools={"run_command": "prompt"}, commands={"pytest*": "allow"})
    assert decision(p, "pytest -q") == "allow"
    v = p.decide(cmd("make"))
    assert (v.decision, v.rule) == ("prompt", "tools.run_command")
    assert p.decide(ToolCall(id="x", name="read_file", arguments={"path": "a"})).rule == "default"
    assert Policy(default="deny").decide(ToolCall(id="x", name="list_dir")).decision == "deny"


def test_tool_globs_and_default():
    p = Policy(tools={"mcp_github_*": "deny", "mcp_*": "prompt", "write_file": "prompt"})
    assert p.decide(ToolCall(id="a", name="mcp_github_create_issue")).decision == "deny"
    assert p.decide(ToolCall(id="a", name="mcp_fs_read")).decision == "prompt"
    assert p.decide(ToolCall(id="a", name="write_file")).decision == "prompt"
    assert p.decide(ToolCall(id="a", name="read_file")).decision == "allow"
    # Case-sensitive, whole-name matches.
    assert p.decide(ToolCall(id="a", name="Write_File")).decision == "allow"
    assert p.decide(ToolCall(id="a", name="write_file2")).decision == "allow"


def test_compound_commands_take_the_strictest_part():
    p = Policy(commands={"git *": "allow", "rm *": "deny", "head*": "allow", "*": "prompt"})
    v = p.decide(cmd("git status; rm -rf /"))
    assert (v.decision, v.rule) == ("deny", 'commands."rm *"')
    assert decision(p, "git status && ls") == "prompt"
    assert decision(p, "git log | head -5") == "allow"
    assert decision(p, "git log || rm x") == "deny"
    assert decision(p, "git fetch & rm -r build") == "deny"
    assert decision(p, "git log\nrm x") == "deny"


def test_quotes_and_redirections_do_not_split():
    p = Policy(commands={"git *": "allow", "make *": "allow", "*": "deny"})
    assert decision(p, 'git commit -m "fix; rm -rf x"') == "allow"
    assert decision(p, "git commit -m 'a && b | c'") == "allow"
    assert decision(p, r"git grep foo\;bar") == "allow"
    assert decision(p, "make test 2>&1") == "allow"
    assert decision(p, "make test &> out.log") == "allow"
    assert decision(p, "make test >| out.log") == "allow"


def test_command_substitution_is_never_allowed_by_a_pattern():
    p = Policy(commands={"echo *": "allow", "rm *": "deny"})
    for line in ("echo $(rm -rf ~)", "echo `id`", 'echo "$(whoami)"', "echo <(cat /etc/passwd)"):
        v = p.decide(cmd(line))
        assert v.decision == "prompt", line
        assert "command substitution" in v.reason
    assert decision(p, "echo '$(not run)'") == "allow"  # single quotes: literal text
    assert decision(p, "echo 'unclosed") == "prompt"
    # A deny stays a deny.
    assert decision(p, "rm $(ls)") == "deny"


def test_split_command():
    assert split_command("a; b && c | d || e & f") == (["a", "b", "c", "d", "e", "f"], False)
    assert split_command("echo 'a;b' \"c|d\"") == (["echo 'a;b' \"c|d\""], False)
    assert split_command("cmd 2>&1 | tee log") == (["cmd 2>&1", "tee log"], False)
    assert split_command(";;  ;") == ([], False)
    assert split_command("x $(y)")[1] is True
    assert split_command('x "open')[1] is True


def test_run_command_without_a_string_command_is_decided_by_the_tool_rule():
    p = Policy(tools={"run_command": "prompt"}, commands={"*": "allow"})
    assert p.decide(ToolCall(id="x", name="run_command", arguments={})).decision == "prompt"


def test_policy_crosses_ray_as_msgpack():
    p = Policy(default="prompt", tools={"write_file": "deny"}, commands={"rm *": Rule("deny", "no")})
    back = decode(encode(p), Policy)
    assert back == p
    assert back.decide(cmd("rm x")) == p.decide(cmd("rm x"))


def test_bad_python_policy_is_a_typed_error():
    with pytest.raises(PolicyError) as info:
        Policy(tools={"write_file": "ask"})
    assert "tools.write_file" in str(info.value) and "'ask'" in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(PolicyError, match="default"):
        Policy(default="yes")
    with pytest.raises(PolicyError, match="non-empty"):
        Policy(commands={"": "allow"})
    with pytest.raises(PolicyError, match='commands."rm \\*"'):
        Policy(commands={"rm *": Rule("block")})


# --- TOML ---------------------------------------------------------------------------------------

GOOD_TOML = """
default = "prompt"

[tools]
read_file = "allow"
list_dir = "allow"
"mcp_*" = { decision = "deny", reason = "no MCP here" }

[commands]
"git status*" = "allow"
"rm *" = { decision = "deny", reason = "delete files by hand" }
"*" = "prompt"
"""


def test_toml_policy_is_read_in_order(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text(GOOD_TOML)
    p = load_policy(f)
    assert p == Policy.from_toml(f)
    assert p.source == str(f) and p.default == "prompt"
    assert list(p.commands) == ["git status*", "rm *", "*"]
    v = p.decide(cmd("rm -rf src"))
    assert (v.decision, v.reason) == ("deny", "delete files by hand")
    assert decision(p, "git status --short") == "allow"
    assert p.decide(ToolCall(id="a", name="mcp_x")).reason == "no MCP here"
    assert p.decide(ToolCall(id="a", name="write_file")).decision == "prompt"
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load_policy(empty) == Policy(source=str(empty))


@pytest.mark.parametrize(
    "text, problem",
    [
        ('default = "allow"\n[tools\n', "invalid TOML"),
        ('[tools]\nwrite_file = "ask"\n', "tools.write_file: decision must be one of allow, prompt, deny, got 'ask'"),
        ('[commands]\n"rm *" = { decision = "nope" }\n', "commands.\"rm *\": decision must be one of"),
        ('[commands]\n"rm *" = { reason = "x" }\n', 'commands."rm *": a rule table needs a decision'),
        ('[commands]\n"rm *" = { decision = "deny", why = "x" }\n', "unknown field 'why'"),
        ('[commands]\n"rm *" = { decision = "deny", reason = 3 }\n', "reason must be a string"),
        ('[commands]\n"rm *" = 1\n', "expected a decision string"),
        ('tools = "allow"\n', "tools: expected a table"),
        ("default = 1\n", "default: expected a string"),
        ('default = "allow"\nrules = []\n', "unknown key 'rules'"),
    ],
)
def test_bad_toml_names_the_file_and_the_problem(tmp_path, text, problem):
    f = tmp_path / "policy.toml"
    f.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(f)
    assert str(info.value).startswith(f"{f}: ")
    assert problem in str(info.value)
    assert info.value.source == str(f)


def test_toml_syntax_error_gives_line_and_column(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text('default = "allow"\n\n[commands]\n"rm *" = deny\n')
    with pytest.raises(PolicyError) as info:
        load_policy(f)
    assert "line 4" in str(info.value)


def test_unreadable_policy_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read the file"):
        load_policy(tmp_path / "missing.toml")
    f = tmp_path / "bin.toml"
    f.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(f)


# --- the Session -------------------------------------------------------------------------------


class CommandModel:
    """A test double for the model: turn 1 calls run_command once per command (in one turn);
    turn 2 answers with every tool result it got, so a test sees what the model saw."""

    name = "test:commands"

    def __init__(self, commands: list[str]) -> None:
        self.commands = commands

    async def stream(self, messages, tools) -> AsyncIterator[Chunk]:
        prompt_no = sum(isinstance(m, UserMessage) for m in messages)
        if isinstance(messages[-1], UserMessage):
            for i, command in enumerate(self.commands):
                call = ToolCall(id=f"call_{prompt_no}_{i}", name="run_command", arguments={"command": command})
                yield ToolCallStart(index=i, id=call.id, name=call.name)
                yield ToolCallEnd(index=i, call=call)
            yield Done("tool_calls")
            return
        last_assistant = max(i for i, m in enumerate(messages) if isinstance(m, AssistantMessage))
        seen = [m for m in messages[last_assistant:] if isinstance(m, ToolMessage)]
        yield TextDelta(" | ".join(f"{m.call_id}={m.content.strip()}" for m in seen))
        yield Done("stop")


def _session(workspace, provider, policy, **kw):
    pipeline = ToolPipeline(builtin_tools(workspace))
    return Session(
        provider=provider,
        run_tools=pipeline.run_turn,
        tool_schemas=[t.schema for t in pipeline.tools.values()],
        policy=policy,
        **kw,
    )


def _states(session):
    return [(t.source.value, t.target.value) for t in session.machine.history]


def _results(chunks):
    return {c.result.call_id: c.result for c in chunks if isinstance(c, ToolResultChunk)}


def _assert_whole_history(session):
    """Every tool call of every assistant message has exactly one tool message after it."""
    history = session.context.history
    for i, m in enumerate(history):
        if isinstance(m, AssistantMessage) and m.tool_calls:
            answered = [t.call_id for t in history[i + 1 : i + 1 + len(m.tool_calls)] if isinstance(t, ToolMessage)]
            assert sorted(answered) == sorted(c.id for c in m.tool_calls)


async def test_deny_rule_returns_a_typed_error_and_the_session_goes_on(tmp_path):
    (tmp_path / "data").mkdir()
    model = CommandModel(["echo hello", "rm -rf data"])
    policy = Policy(commands={"rm *": Rule("deny", "delete files by hand"), "*": "allow"})
    session = _session(tmp_path, model, policy)
    chunks = [c async for c in session.run("clean up")]
    results = _results(chunks)
    assert results["call_1_0"].content.startswith("hello\n") and not results["call_1_0"].is_error
    denied = results["call_1_1"]
    assert denied.is_error and denied.error_kind == ToolDenied.kind == "denied" and denied.attempts == 0
    assert denied.content == 'denied by policy rule commands."rm *": delete files by hand'
    assert (tmp_path / "data").is_dir()  # it never ran
    # The model got its next turn and saw the refusal.
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert "call_1_1=denied by policy rule" in text and "call_1_0=hello" in text
    assert session.state is AgentState.IDLE
    assert ("ExecutingTools", "WaitingForUser") not in _states(session)
    assert session.stats.tool_calls == 2 and session.stats.tool_errors == 1
    _assert_whole_history(session)
    assert not any(isinstance(c, ApprovalRequest) for c in chunks)


async def test_prompt_then_approve_runs_the_call(tmp_path):
    model = CommandModel(["echo first", "touch made.txt"])
    session = _session(tmp_path, model, Policy(commands={"touch *": "prompt"}))
    chunks = []
    async for chunk in session.run("make a file"):
        chunks.append(chunk)
        if isinstance(chunk, ApprovalRequest):
            assert session.state is AgentState.WAITING_FOR_USER
            assert session.pending_approvals == ["call_1_1"]
            assert chunk.call.arguments == {"command": "touch made.txt"}
            assert chunk.rule == 'commands."touch *"'
            assert not (tmp_path / "made.txt").exists()
            session.approve(chunk.call.id)
            with pytest.raises(ApprovalError):  # answered once only
                session.approve(chunk.call.id)
    assert (tmp_path / "made.txt").is_file()
    results = _results(chunks)
    assert not any(r.is_error for r in results.values()) and len(results) == 2
    states = _states(session)
    i = states.index(("ExecutingTools", "WaitingForUser"))
    assert states[i + 1] == ("WaitingForUser", "ExecutingTools")
    assert states[-1] == ("GeneratingResponse", "Idle")
    # The request is announced after the move to WaitingForUser, before any result.
    kinds = [type(c).__name__ for c in chunks]
    wait = next(k for k, c in enumerate(chunks) if isinstance(c, StateChange) and c.target == "WaitingForUser")
    assert kinds[wait + 1] == "ApprovalRequest"
    assert "ToolResultChunk" not in kinds[:wait]
    assert session.pending_approvals == []
    _assert_whole_history(session)


async def test_prompt_then_deny_gives_the_model_the_reason(tmp_path):
    model = CommandModel(["touch made.txt"])
    session = _session(tmp_path, model, Policy(default="prompt"))
    chunks = []
    async for chunk in session.run("make a file"):
        chunks.append(chunk)
        if isinstance(chunk, ApprovalRequest):
            session.deny(chunk.call.id, "use write_file instead")
    assert not (tmp_path / "made.txt").exists()
    r = _results(chunks)["call_1_0"]
    assert r.is_error and r.error_kind == "denied"
    assert r.content == "denied by the user: use write_file instead"
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert "use write_file instead" in text
    assert session.state is AgentState.IDLE
    _assert_whole_history(session)
    # The session goes on: the next prompt runs (and is asked again).
    again = []
    async for chunk in session.run("again"):
        again.append(chunk)
        if isinstance(chunk, ApprovalRequest):
            session.approve(chunk.call.id)
    assert (tmp_path / "made.txt").exists()
    assert [m.content for m in session.context.history if isinstance(m, UserMessage)] == ["make a file", "again"]


async def test_unknown_call_id_is_a_typed_error(tmp_path):
    session = _session(tmp_path, CommandModel(["true"]), Policy(default="prompt"))
    with pytest.raises(ApprovalError) as info:
        session.approve("nope")
    assert info.value.call_id == "nope" and info.value.pending == []
    async for chunk in session.run("x"):
        if isinstance(chunk, ApprovalRequest):
            with pytest.raises(ApprovalError) as info:
                session.deny("call_9_9", "x")
            assert info.value.pending == [chunk.call.id]
            session.approve(chunk.call.id)
    assert session.state is AgentState.IDLE


async def test_unanswered_prompt_is_denied_after_the_timeout(tmp_path):
    session = _session(tmp_path, CommandModel(["touch late.txt"]), Policy(default="prompt"), approval_timeout_s=0.05)
    chunks = [c async for c in session.run("x")]
    r = _results(chunks)["call_1_0"]
    assert r.error_kind == "denied" and r.content == "denied: no answer within 0.05 s"
    assert not (tmp_path / "late.txt").exists()
    assert session.state is AgentState.IDLE and session.pending_approvals == []


async def test_reader_leaving_while_waiting_keeps_the_history_whole(tmp_path):
    model = CommandModel(["echo ok", "touch x", "rm y"])
    session = _session(tmp_path, model, Policy(commands={"echo *": "allow", "rm *": "deny", "*": "prompt"}))
    run = session.run("x")
    async for chunk in run:
        if isinstance(chunk, ApprovalRequest):
            break
    await run.aclose()
    _assert_whole_history(session)
    tool_messages = [m for m in session.context.history if isinstance(m, ToolMessage)]
    assert [m.content.split(":")[0] for m in tool_messages] == ["interrupted", "interrupted", "denied by policy rule commands.\"rm *\""]
    assert session.pending_approvals == []
    with pytest.raises(ApprovalError):
        session.approve("call_1_1")


async def test_shutdown_while_waiting_ends_the_run_with_a_typed_error(tmp_path):
    session = _session(tmp_path, CommandModel(["touch x"]), Policy(default="prompt"))
    with pytest.raises(AgentError) as info:
        async for chunk in session.run("x"):
            if isinstance(chunk, ApprovalRequest):
                session.shutdown()
    assert info.value.kind == "shutdown"
    assert not (tmp_path / "x").exists()
    _assert_whole_history(session)
    assert session.context.history[-1].content == "denied: the session was shut down"


async def test_approval_from_another_task(tmp_path):
    """How a server uses it: one task reads the run, another answers (as AgentActor.approve)."""
    session = _session(tmp_path, CommandModel(["touch a", "touch b"]), Policy(default="prompt"))
    asked: asyncio.Queue[ApprovalRequest] = asyncio.Queue()

    async def reader():
        return [c async for c in _tap(session.run("x"), asked)]

    async def approver():
        first, second = await asked.get(), await asked.get()
        session.approve(second.call.id)
        session.deny(first.call.id, "not a")

    chunks, _ = await asyncio.gather(reader(), approver())
    assert not (tmp_path / "a").exists() and (tmp_path / "b").exists()
    assert _results(chunks)["call_1_0"].content == "denied by the user: not a"


async def _tap(run, queue):
    async for chunk in run:
        if isinstance(chunk, ApprovalRequest):
            queue.put_nowait(chunk)
        yield chunk


async def test_scripted_model_with_denied_tool(tmp_path):
    (tmp_path / "billing.py").write_text("def compute_invoice():\n    pass\n")
    session = _session(tmp_path, ScriptedModel(), Policy(tools={"read_file": "deny"}))
    chunks = [c async for c in session.run("Where is compute_invoice?")]
    results = list(_results(chunks).values())
    reads = [r for r in results if r.name == "read_file"]
    assert reads and all(r.error_kind == "denied" for r in reads)
    assert all(not r.is_error for r in results if r.name != "read_file")
    assert session.state is AgentState.IDLE
    _assert_whole_history(session)


def test_approval_request_is_a_chunk_kind():
    call = ToolCall(id="c1", name="run_command", arguments={"command": "ls"})
    req = ApprovalRequest(call=call, rule="default", reason="")
    assert CHUNK_KINDS["approval_request"] is ApprovalRequest
    assert decode(encode([req]), list[Chunk]) == [req]
    assert msgspec.to_builtins(req)["type"] == "approval_request"


# --- run_command's environment ------------------------------------------------------------------


def test_scrubbed_env_keeps_only_what_the_user_passes():
    from raygent.tools import scrubbed_env

    env = {"PATH": "/bin", "GITHUB_TOKEN": "ghp", "OPENAI_API_KEY": "sk", "TOKENIZERS_PARALLELISM": "1"}
    assert scrubbed_env(env) == {"PATH": "/bin", "TOKENIZERS_PARALLELISM": "1"}
    passed = scrubbed_env(env, passed={"GITHUB_TOKEN": "ghp"})
    assert passed == {"PATH": "/bin", "TOKENIZERS_PARALLELISM": "1", "GITHUB_TOKEN": "ghp"}


async def test_run_command_sees_passed_variables_only_in_its_own_turn(tmp_path, monkeypatch):
    from raygent.tools import pass_env

    monkeypatch.setenv("GITHUB_TOKEN", "from-parent")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent")
    pipeline = ToolPipeline(builtin_tools(tmp_path))
    line = 'echo "gh=[$GITHUB_TOKEN] openai=[$OPENAI_API_KEY] cwd=$(pwd)"'

    async def turn(call_id):
        call = ToolCall(id=call_id, name="run_command", arguments={"command": line})
        return [r async for r in pipeline.run_turn([call])][0].content

    async def turn_with(values, call_id):
        with pass_env(values):
            return await asyncio.ensure_future(turn(call_id))

    plain, passed = await asyncio.gather(turn("a"), turn_with({"GITHUB_TOKEN": "chosen"}, "b"))
    assert plain.startswith(f"gh=[] openai=[] cwd={tmp_path}")
    assert passed.startswith(f"gh=[chosen] openai=[] cwd={tmp_path}")
    assert (await turn("c")).startswith("gh=[] openai=[]")  # the block ended


def test_redirections_are_matched_only_by_patterns_that_name_them():
    loose = Policy(commands={"echo *": "allow"}, default="deny")
    assert loose.decide(ToolCall("1", "run_command", {"command": "echo x > setup.py"})).decision == "allow"
    guarded = Policy(commands={"*>*": "prompt", "echo *": "allow"}, default="deny")
    assert guarded.decide(ToolCall("2", "run_command", {"command": "echo x > setup.py"})).decision == "prompt"
    assert guarded.decide(ToolCall("3", "run_command", {"command": "echo hi"})).decision == "allow"
