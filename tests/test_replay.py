"""raygent.replay.load_trajectory on every recorded run in ../shared/data, and on inline fixtures.

Real files: every file under ``trajectories/`` (the ones ``trajectories/INDEX.jsonl`` lists must
load; the others, such as READMEs, licences and aider's website index page, must be refused
with a TrajectoryError) and every ``http/*/conversations/*.json``. Tool-call counts are
computed here from the raw files, independently of the loader. Formats with no files in the
data (OpenHands events / eval / resolver, mini-swe-agent) are checked on small fixtures built
here per the schemas of ``MANIFEST.md`` §5.
"""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from raygent.context import Context
from raygent.errors import RaygentError, TrajectoryError
from raygent.messages import AssistantMessage, SystemMessage, ToolMessage, UserMessage
from raygent.replay import FORMATS, NO_RESULT, Trajectory, load_trajectories, load_trajectory

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NO_DATA = f"real test data not found at {DATA} (../shared/data beside the project)"
SWE_AGENT_DEMO_YAML = "trajectories/swe-agent/trajectories/demonstrations/str_replace_anthropic_demo.yaml"


def _index() -> list[dict]:
    if not (DATA / "trajectories" / "INDEX.jsonl").is_file():
        return []
    return [json.loads(line) for line in (DATA / "trajectories" / "INDEX.jsonl").read_text().splitlines() if line]


INDEX = _index()
INDEXED = {entry["file"] for entry in INDEX}


def _params(items: list, ids) -> list:
    if not items:
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_DATA))]
    return [pytest.param(item, id=ids(item)) for item in items]


def _others() -> list[str]:
    """Files under trajectories/ that INDEX.jsonl does not list (READMEs, licences, the index...)."""
    root = DATA / "trajectories"
    if not root.is_dir():
        return []
    return sorted(
        str(p.relative_to(DATA)) for p in root.rglob("*") if p.is_file() and str(p.relative_to(DATA)) not in INDEXED
    )


# --- invariants every loaded trajectory must keep ----------------------------------------------


def check_invariants(traj: Trajectory) -> None:
    assert traj.format in FORMATS
    assert traj.messages
    kinds = Counter(type(m) for m in traj.messages)
    assert kinds[UserMessage] >= 1, "no user turn"
    assert kinds[AssistantMessage] >= 1, "no assistant turn"
    assert kinds[SystemMessage] <= 1 and (kinds[SystemMessage] == 0 or isinstance(traj.messages[0], SystemMessage))
    call_ids = [c.id for c in traj.tool_calls]
    result_ids = [m.call_id for m in traj.messages if isinstance(m, ToolMessage)]
    assert len(call_ids) == len(set(call_ids)), "duplicate call ids"
    assert Counter(result_ids) == Counter(call_ids), "every call needs exactly one result, every result a call"
    assert all(isinstance(c.arguments, dict) and c.name for c in traj.tool_calls)
    assert [c.id for c, r in traj.steps] == call_ids and all(c.id == r.call_id for c, r in traj.steps)
    ctx = Context()
    ctx.extend(traj.messages)  # raises if a result has no call or a call is left unanswered
    assert ctx.history == traj.messages


# --- independent tool-call counts from the raw files -------------------------------------------


def swe_agent_calls(doc: dict) -> int:
    history = [m for m in doc["history"] if not m.get("is_demo")]
    assistants = [m for m in history if m["role"] == "assistant"]
    if any(m.get("tool_calls") for m in assistants):
        return sum(len(m.get("tool_calls") or []) for m in assistants)
    return sum(1 for m in assistants if (m.get("action") or "").strip())


def aider_calls(text: str) -> int:
    # Each complete edit block ends with exactly one closing marker; interrupted ones have none.
    return len(re.findall(r"(?m)^>{7} (UPDATED|REPLACE)\s*$", text))


def api_of(exchange: dict) -> str | None:
    if exchange["method"] != "POST" or not isinstance(exchange["request"], dict):
        return None
    path = urlsplit(exchange["uri"]).path
    for suffix, api in (
        ("/chat/completions", "openai-chat"),
        ("/responses", "openai-responses"),
        ("/v1/messages", "anthropic"),
        (":generateContent", "gemini"),
        (":streamGenerateContent", "gemini"),
        ("/converse", "bedrock-converse"),
        ("/converse-stream", "bedrock-converse"),
        ("/v2/chat", "cohere-chat"),
    ):
        if path.endswith(suffix):
            return api
    return None


def sse_payloads(body: str) -> list[dict]:
    out = []
    for line in body.splitlines():
        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
            try:
                out.append(json.loads(line[5:]))
            except ValueError:
                pass
    return out


def responses_items(exchange: dict, earlier: list[dict]) -> list[dict]:
    """Input items of a Responses request, with the server-side state it continues."""
    request = exchange["request"]
    items: list[dict] = []
    if request.get("previous_response_id"):
        for i, e in enumerate(earlier):
            if isinstance(e["response"], dict) and e["response"].get("id") == request["previous_response_id"]:
                items = responses_items(e, earlier[:i]) + e["response"]["output"]
    elif request.get("conversation"):
        for e in earlier:
            if e["request"].get("conversation") == request["conversation"]:
                items += list(e["request"]["input"]) + e["response"]["output"]
    inp = request["input"]
    return items + ([{"role": "user", "content": inp}] if isinstance(inp, str) else list(inp))


def http_calls(doc: dict) -> tuple[str, int]:
    """(api, tool calls in the last model request's history plus its response)."""
    model_calls = [e for e in doc["exchanges"] if api_of(e)]
    last = model_calls[-1]
    api, request = api_of(last), last["request"]
    ok = 200 <= last["status"] < 300 and last["response"] is not None
    response = last["response"] if ok else None
    streamed = ok and last["response_format"] == "sse"
    n = 0
    if api in ("openai-chat", "cohere-chat"):
        n += sum(len(m.get("tool_calls") or []) for m in request["messages"] if m["role"] == "assistant")
        if streamed:
            n += len(
                {
                    (choice.get("index", 0), tc.get("index", 0))
                    for p in sse_payloads(response)
                    for choice in p.get("choices") or []
                    for tc in (choice.get("delta") or {}).get("tool_calls") or []
                }
            )
        elif response and api == "openai-chat":
            n += len(response["choices"][0]["message"].get("tool_calls") or [])
        elif response:
            n += len(response["message"].get("tool_calls") or [])
    elif api == "openai-responses":
        same = [e for e in model_calls if api_of(e) == api]
        items = responses_items(last, same[:-1])
        if streamed:
            done = [p for p in sse_payloads(response) if p.get("type") == "response.completed"]
            items += done[-1]["response"]["output"]
        elif response:
            items += response["output"]
        n += sum(1 for it in items if str(it.get("type", "")).endswith("_call"))
    elif api == "anthropic":
        blocks = [
            b for m in request["messages"] if m["role"] == "assistant" and isinstance(m["content"], list)
            for b in m["content"]
        ]
        if streamed:
            blocks += [p["content_block"] for p in sse_payloads(response) if p.get("type") == "content_block_start"]
        elif response:
            blocks += response["content"]
        n += sum(1 for b in blocks if b.get("type") in ("tool_use", "server_tool_use", "mcp_tool_use"))
    elif api == "gemini":
        parts = [p for c in request["contents"] if c.get("role") == "model" for p in c["parts"]]
        chunks = sse_payloads(response) if streamed else [response] if response else []
        for chunk in chunks:
            for cand in (chunk.get("candidates") or [])[:1]:
                parts += (cand.get("content") or {}).get("parts") or []
        n += sum(1 for p in parts if {"functionCall", "function_call", "executableCode"} & set(p))
    elif api == "bedrock-converse":
        messages = list(request["messages"])
        if response and (response.get("output") or {}).get("message"):
            messages.append(response["output"]["message"])
        n += sum(1 for m in messages if m["role"] == "assistant" for b in m["content"] if "toolUse" in b)
    return api, n


# --- every indexed file ---------------------------------------------------------------------------


@pytest.mark.parametrize("entry", _params(INDEX, lambda e: e["file"].rsplit("/", 1)[-1][:80]))
def test_indexed_trajectory_loads(entry):
    path = DATA / entry["file"]
    traj = load_trajectory(path)
    check_invariants(traj)
    assert traj.path == str(path)
    raw = path.read_text(encoding="utf-8")
    if entry["format"] == "swe-agent.traj":
        assert traj.format == "swe-agent"
        assert len(traj.tool_calls) == swe_agent_calls(json.loads(raw))
    elif entry["format"] == "aider.chat-history.md":
        assert traj.format == "aider"
        assert len(traj.tool_calls) == aider_calls(raw)
        assert all(c.name == "edit" and set(c.arguments) == {"path", "search", "replace"} for c in traj.tool_calls)
    else:
        assert entry["format"] == "http-exchanges.json"
        api, n_calls = http_calls(json.loads(raw))
        assert traj.format == api
        assert len(traj.tool_calls) == n_calls
        if entry.get("model"):
            assert traj.model


@pytest.mark.parametrize("rel", _params(_others(), lambda r: r.split("trajectories/", 1)[-1][-70:]))
def test_unindexed_files_under_trajectories(rel):
    """The SWE-agent demo YAML is a trajectory; READMEs, licences and the index are not."""
    path = DATA / rel
    if rel == SWE_AGENT_DEMO_YAML:
        traj = load_trajectory(path)
        check_invariants(traj)
        assert traj.format == "swe-agent"
        assert len(traj.tool_calls) == swe_agent_calls(yaml.safe_load(path.read_text()))
        return
    with pytest.raises(TrajectoryError) as info:
        load_trajectory(path)
    assert str(path) in str(info.value)
    if rel.endswith("examples/README.md"):
        assert "index page" in info.value.reason


def test_every_conversation_file_is_indexed():
    if not INDEX:
        pytest.skip(NO_DATA)
    on_disk = {str(p.relative_to(DATA)) for p in DATA.glob("http/*/conversations/*.json")}
    assert on_disk and on_disk <= INDEXED


def test_swe_agent_last_action_takes_observation_from_steps():
    if not INDEX:
        pytest.skip(NO_DATA)
    path = DATA / "trajectories/swe-agent/trajectories/demonstrations/ctf/forensics/flash.traj"
    traj = load_trajectory(path)
    call, result = traj.steps[-1]
    assert call.name == "submit" and call.arguments["command"].startswith("submit flag{")
    assert not result.is_error and result.content != NO_RESULT


def test_aider_interrupted_edit_is_not_a_call():
    if not INDEX:
        pytest.skip(NO_DATA)
    path = DATA / "trajectories/aider/aider/website/examples/chat-transcript-css.md"
    text = path.read_text()
    assert text.count("<<<<<<< ORIGINAL") == aider_calls(text) + 2  # two replies cut off by ^C
    traj = load_trajectory(path)
    assert all(r.content.startswith("Applied edit to ") and not r.is_error for _, r in traj.steps)
    assert traj.metadata["notices"][0]["text"].startswith("$ aider index.html")


# --- formats with no files in the data: fixtures per MANIFEST §5 --------------------------------


def _model_response(resp_id: str, content: str | None, calls: list[tuple[str, str, dict]]) -> dict:
    return {
        "id": resp_id,
        "object": "chat.completion",
        "model": "claude-3-5-sonnet-20241022",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": content,
                    "tool_calls": [
                        {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
                        for cid, name, args in calls
                    ],
                },
            }
        ],
    }


def openhands_events() -> list[dict]:
    """An OpenHands event list (S2): one response with two calls, then one with a failing command."""
    r1 = _model_response(
        "chatcmpl-1",
        "Let me look at the repository first.",
        [("toolu_01", "execute_bash", {"command": "ls"}), ("toolu_02", "str_replace_editor", {"command": "view", "path": "/workspace/app.py"})],
    )
    r2 = _model_response("chatcmpl-2", None, [("toolu_03", "execute_bash", {"command": "python -m pytest -q"})])
    r3 = _model_response("chatcmpl-3", "Done.", [("toolu_04", "finish", {"message": "Fixed the bug."})])
    meta = lambda r, cid: {"function_name": "x", "tool_call_id": cid, "model_response": r, "total_calls_in_response": 1}  # noqa: E731
    return [
        {"id": 0, "timestamp": "2025-01-01T00:00:00", "source": "agent", "message": "You are OpenHands agent.", "action": "system", "args": {"content": "You are OpenHands agent.", "tools": []}},
        {"id": 1, "timestamp": "2025-01-01T00:00:01", "source": "user", "message": "Fix the failing test", "action": "message", "args": {"content": "Fix the failing test in app.py", "image_urls": None, "wait_for_response": False}},
        {"id": 2, "source": "environment", "message": "", "observation": "recall", "content": "", "extras": {}, "cause": 1},
        {"id": 3, "source": "agent", "message": "Running command: ls", "action": "run", "args": {"command": "ls", "thought": "Let me look at the repository first.", "is_input": False, "blocking": False}, "tool_call_metadata": meta(r1, "toolu_01")},
        {"id": 4, "source": "agent", "message": "Reading file: /workspace/app.py", "action": "read", "args": {"path": "/workspace/app.py", "thought": ""}, "tool_call_metadata": meta(r1, "toolu_02")},
        {"id": 5, "source": "agent", "message": "Command `ls` executed with exit code 0.", "observation": "run", "content": "app.py\ntest_app.py", "extras": {"command": "ls", "metadata": {"exit_code": 0, "pid": -1, "working_dir": "/workspace"}}, "cause": 3},
        {"id": 6, "source": "agent", "message": "I read the file /workspace/app.py.", "observation": "read", "content": "def add(a, b):\n    return a - b\n", "extras": {"path": "/workspace/app.py"}, "cause": 4},
        {"id": 7, "source": "agent", "message": "Running command: python -m pytest -q", "action": "run", "args": {"command": "python -m pytest -q", "thought": ""}, "tool_call_metadata": meta(r2, "toolu_03")},
        {"id": 8, "source": "agent", "message": "Command executed with exit code 1.", "observation": "run", "content": "1 failed", "extras": {"command": "python -m pytest -q", "metadata": {"exit_code": 1}}, "cause": 7},
        {"id": 9, "source": "agent", "message": "Fixed the bug.", "action": "finish", "args": {"final_thought": "Fixed the bug.", "outputs": {}}, "tool_call_metadata": meta(r3, "toolu_04")},
        {"id": 10, "source": "environment", "message": "", "observation": "agent_state_changed", "content": "", "extras": {"agent_state": "finished"}},
    ]


def _write(tmp_path: Path, name: str, value) -> Path:
    path = tmp_path / name
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def test_openhands_events(tmp_path):
    traj = load_trajectory(_write(tmp_path, "events.json", openhands_events()))
    check_invariants(traj)
    assert traj.format == "openhands-events"
    assert traj.model == "claude-3-5-sonnet-20241022"
    assert [c.id for c in traj.tool_calls] == ["toolu_01", "toolu_02", "toolu_03", "toolu_04"]
    assert isinstance(traj.messages[0], SystemMessage)
    assert traj.messages[1] == UserMessage("Fix the failing test in app.py")
    first = traj.messages[2]
    assert isinstance(first, AssistantMessage) and len(first.tool_calls) == 2  # one response, two actions
    results = {c.id: r for c, r in traj.steps}
    assert results["toolu_01"].content == "app.py\ntest_app.py" and not results["toolu_01"].is_error
    assert results["toolu_03"].is_error  # exit code 1
    assert results["toolu_04"].content == NO_RESULT and results["toolu_04"].is_error  # finish has no observation


def test_openhands_eval_jsonl(tmp_path):
    run = {
        "instance_id": "astropy__astropy-12907",
        "instruction": "Fix the failing test in app.py",
        "metadata": {"agent_class": "CodeActAgent", "llm_config": {"model": "litellm_proxy/claude-3-5-sonnet-20241022"}, "max_iterations": 100},
        "history": [e for e in openhands_events() if e.get("source") != "user"],
        "metrics": {"accumulated_cost": 0.42, "token_usages": []},
        "error": None,
        "instance": {"repo": "astropy/astropy"},
        "test_result": {"git_patch": "diff --git a/app.py b/app.py\n"},
    }
    single = load_trajectory(_write(tmp_path, "one.jsonl", json.dumps(run) + "\n"))
    check_invariants(single)
    assert single.format == "openhands-eval"
    assert single.model == "litellm_proxy/claude-3-5-sonnet-20241022"
    assert UserMessage("Fix the failing test in app.py") in single.messages  # from `instruction`
    assert single.metadata["instance_id"] == "astropy__astropy-12907"
    assert len(single.tool_calls) == 4
    two = _write(tmp_path, "output.jsonl", json.dumps(run) + "\n" + json.dumps({**run, "instance_id": "b"}) + "\n")
    runs = load_trajectories(two)
    assert [r.metadata["instance_id"] for r in runs] == ["astropy__astropy-12907", "b"]
    with pytest.raises(TrajectoryError, match="holds 2 runs"):
        load_trajectory(two)


def test_openhands_resolver_legacy(tmp_path):
    record = {
        "issue": {"owner": "octo", "repo": "demo", "number": 7, "title": "add() subtracts", "body": "..."},
        "instruction": "Please fix issue #7: add() subtracts.",
        "base_commit": "abc123",
        "git_patch": "diff --git a/app.py b/app.py\n",
        "history": [
            {"action": "run", "command": "cat app.py", "thought": "Look at the code."},
            {"observation": "run", "content": "def add(a, b):\n    return a - b", "command_id": -1, "exit_code": 0},
            {"action": "run_ipython", "code": "print(1 + 1)", "thought": ""},
            {"observation": "run_ipython", "content": "2"},
            {"action": "run", "command": "pytest", "thought": "Run the tests."},
            {"observation": "run", "content": "1 failed", "command_id": -1, "exit_code": 1},
            {"action": "finish", "thought": "Fixed."},
        ],
        "metrics": {"accumulated_cost": 0.1, "costs": [0.05, 0.05]},
        "success": True,
        "result_explanation": "fixed",
        "error": None,
    }
    traj = load_trajectory(_write(tmp_path, "output.jsonl", json.dumps(record) + "\n"))
    check_invariants(traj)
    assert traj.format == "openhands-resolver"
    assert [(c.name, c.arguments) for c in traj.tool_calls] == [
        ("run", {"command": "cat app.py"}),
        ("run_ipython", {"code": "print(1 + 1)"}),
        ("run", {"command": "pytest"}),
    ]
    assert [r.is_error for _, r in traj.steps] == [False, False, True]
    assert traj.messages[0] == UserMessage("Please fix issue #7: add() subtracts.")


MINI_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can interact with a computer."},
    {"role": "user", "content": "Please solve this issue: add() subtracts."},
    {"role": "assistant", "content": "THOUGHT: look at the file.\n\n```mswea_bash_command\ncat app.py\n```"},
    {"role": "user", "content": "<returncode>0</returncode>\n<output>\ndef add(a, b):\n    return a - b\n</output>"},
    {"role": "assistant", "content": "THOUGHT: two at once.\n\n```bash\nls\n```\n\n```bash\npwd\n```"},
    {"role": "user", "content": "Please always provide EXACTLY ONE action in triple backticks, found 2 actions."},
    {"role": "assistant", "content": "THOUGHT: run the tests.\n\n```bash\npytest -q\n```"},
    {"role": "user", "content": "<returncode>1</returncode>\n<output>\n1 failed\n</output>"},
    {"role": "assistant", "content": "THOUGHT: done.\n\n```mswea_bash_command\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"},
]


def test_mini_swe_agent_list(tmp_path):
    traj = load_trajectory(_write(tmp_path, "traj.json", MINI_MESSAGES))
    check_invariants(traj)
    assert traj.format == "mini-swe-agent"
    assert [c.arguments["command"] for c in traj.tool_calls] == ["cat app.py", "pytest -q", "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"]
    assert [r.is_error for _, r in traj.steps] == [False, True, True]
    assert traj.steps[-1][1].content == NO_RESULT  # the final command's output was not recorded
    assert UserMessage(MINI_MESSAGES[5]["content"]) in traj.messages  # format error stays a user turn


def test_mini_swe_agent_traj_json(tmp_path):
    doc = {
        "info": {"exit_status": "Submitted", "submission": "", "model_stats": {"instance_cost": 0.01, "api_calls": 4},
                 "config": {"model": {"model_name": "anthropic/claude-sonnet-4-5"}}},
        "messages": MINI_MESSAGES,
        "trajectory_format": "mini-swe-agent-1",
    }
    traj = load_trajectory(_write(tmp_path, "x.traj.json", doc))
    check_invariants(traj)
    assert traj.format == "mini-swe-agent" and traj.model == "anthropic/claude-sonnet-4-5"
    assert traj.metadata["exit_status"] == "Submitted"


def test_aider_history_with_sessions(tmp_path):
    text = (
        "\n# aider chat started at 2024-05-01 10:00:00\n\n> aider hello.py\n> Added hello.py to the chat.\n\n"
        "#### change hello to goodbye\n\nHere is the change:\n\nhello.py\n```python\n<<<<<<< SEARCH\nprint(\"hello\")\n"
        "=======\nprint(\"goodbye\")\n>>>>>>> REPLACE\n```\n\n> Applied edit to hello.py\n> Commit 1a2b3c4 goodbye\n\n"
        "# aider chat started at 2024-05-02 09:00:00\n\n#### now say hi\n#### in french\n\nhi.py\n```python\n<<<<<<< SEARCH\nx\n=======\ny\n"
        ">>>>>>> REPLACE\n```\n\n> The LLM did not conform to the edit format.\n"
    )
    traj = load_trajectory(_write(tmp_path, ".aider.chat.history.md", text))
    check_invariants(traj)
    assert traj.format == "aider"
    assert traj.metadata["sessions"] == ["2024-05-01 10:00:00", "2024-05-02 09:00:00"]
    users = [m.content for m in traj.messages if isinstance(m, UserMessage)]
    assert users == ["change hello to goodbye", "now say hi\nin french"]
    (c1, r1), (c2, r2) = traj.steps
    assert c1.arguments == {"path": "hello.py", "search": 'print("hello")', "replace": 'print("goodbye")'}
    assert r1.content == "Applied edit to hello.py\nCommit 1a2b3c4 goodbye" and not r1.is_error
    assert c2.arguments["path"] == "hi.py" and r2.is_error  # no "Applied edit" line


def test_orphan_result_and_duplicate_id_are_repaired(tmp_path):
    doc = {
        "exchanges": [
            {
                "method": "POST",
                "uri": "https://api.openai.com/v1/chat/completions",
                "provider": "openai",
                "status": 200,
                "response_format": "json",
                "request": {
                    "model": "gpt-4o",
                    "messages": [
                        {"role": "user", "content": "hi"},
                        {"role": "tool", "tool_call_id": "call_lost", "content": "orphan"},
                        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                        {"role": "tool", "tool_call_id": "c1", "content": "one"},
                        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "not json"}}]},
                        {"role": "tool", "tool_call_id": "c1", "content": "two"},
                    ],
                },
                "response": {"choices": [{"message": {"role": "assistant", "content": "done"}}]},
            }
        ]
    }
    traj = load_trajectory(_write(tmp_path, "conv.json", doc))
    check_invariants(traj)
    assert traj.format == "openai-chat" and traj.model == "gpt-4o"
    assert [c.id for c in traj.tool_calls] == ["call_lost", "c1", "c1#2"]
    assert [r.content for _, r in traj.steps] == ["orphan", "one", "two"]
    assert traj.tool_calls[2].arguments == {"_raw": "not json"}
    assert len(traj.metadata["repairs"]) == 1


# --- broken inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("truncated.traj", '{"history": [{"role": "user",\n "content": "hi"', r"invalid JSON at line 2 column \d+"),
        ("unknown.json", '{"foo": 1, "bar": [1, 2]}', r"unrecognized structure \(a JSON object with keys 'foo', 'bar'\)"),
        ("numbers.json", "[1, 2, 3]", "unrecognized structure"),
        ("empty.traj", "", "empty file"),
        ("blank.json", " \n\t\n", "empty file"),
        ("binary.traj", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content"),
        ("latin1.md", "#### caf\xe9".encode("latin-1"), "not UTF-8"),
        ("prose.md", "# Notes\n\nNothing to see here.\n", "unrecognized structure"),
        ("bad-line.jsonl", '{"instance_id": "a", "history": []}\n{"instance_id": \n', "invalid JSON at line 2"),
        ("bad-event.json", json.dumps([{"id": 1, "source": "agent", "action": "run", "args": {}, "tool_call_metadata": {"tool_call_id": "x", "model_response": {"id": "r"}}}]), "malformed openhands-events data: KeyError: 'choices'"),
        ("no-model.json", json.dumps({"exchanges": [{"method": "GET", "uri": "https://x/y", "request": None, "status": 200, "response": {}}]}), "no model API call"),
    ],
)
def test_broken_input_raises_trajectory_error(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(TrajectoryError) as info:
        load_trajectory(path)
    err = info.value
    assert str(path) in str(err) and err.path == str(path)
    assert re.search(reason, err.reason), err.reason
    assert isinstance(err, RaygentError) and isinstance(err, ValueError)


def test_trajectory_error_pickles():
    err = pickle.loads(pickle.dumps(TrajectoryError("/x/y.traj", "empty file")))
    assert (err.path, err.reason, str(err)) == ("/x/y.traj", "empty file", "/x/y.traj: empty file")


def test_missing_file_is_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_trajectory(tmp_path / "absent.traj")
