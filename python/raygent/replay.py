"""Import recorded agent trajectories into raygent messages.

:func:`load_trajectory` reads one recorded agent run from a file in one of the public formats
below and returns a :class:`Trajectory`: the run as :mod:`raygent.messages` (system, user and
assistant turns, tool calls with id, name and arguments, tool results). The format is detected
from the file's content, never from its name. The formats and the schemas followed (described in
``../shared/data/MANIFEST.md`` §5, which names the source projects):

============================ ======================================================= =========
``format``                   what it is                                              MANIFEST
============================ ======================================================= =========
``"swe-agent"``              SWE-agent ``.traj`` JSON (SWE-agent/SWE-agent), and its S1
                             demonstration YAML (a top-level ``history`` list)
``"openhands-events"``       OpenHands event list (All-Hands-AI/OpenHands)           S2
``"openhands-eval"``         OpenHands evaluation output, JSONL, one run per line    S3
``"openhands-resolver"``     OpenHands resolver output (legacy), JSONL               S4
``"aider"``                  aider chat history Markdown (Aider-AI/aider), also the  S5
                             transcripts on aider's website
``"mini-swe-agent"``         mini-swe-agent message list, bare or in a ``.traj.json`` S6
``"openai-chat"``            recorded API loop (S7), OpenAI Chat Completions          S7
``"openai-responses"``       recorded API loop, OpenAI Responses                      S7
``"anthropic"``              recorded API loop, Anthropic Messages                    S7
``"gemini"``                 recorded API loop, Gemini ``generateContent``            S7
``"bedrock-converse"``       recorded API loop, Amazon Bedrock Converse               S7
``"cohere-chat"``            recorded API loop, Cohere v2 chat (not in S7; present    S7
                             in the recorded data, OpenAI-shaped requests)
============================ ======================================================= =========

Conversion rules common to every format (each documented choice is recorded here once):

- **Pairing.** Every tool call gets exactly one :class:`~raygent.messages.ToolMessage`, so the
  messages always append to a :class:`raygent.context.Context`. Where a format has no call ids
  (SWE-agent without function calling, aider, mini-swe-agent, OpenHands resolver, Gemini),
  ids are synthesized (``"rg-<n>"``) and a result is paired with the open call of the same
  name, else with the oldest open call. A call with no recorded result is answered by a
  ``ToolMessage`` whose content is ``"[no result recorded]"`` and ``is_error=True``, placed
  where the conversation moves on (before the next user or assistant turn, or at the end). A
  result that answers no call gets a synthesized assistant turn calling it (``arguments={}``),
  noted in ``metadata["repairs"]``. An id that repeats an earlier call's id is renamed
  (``"<id>#2"``), and results after it follow the rename.
- **is_error** is True when the format records a failure: an error observation, a non-zero
  exit code (OpenHands, mini-swe-agent), an Anthropic ``is_error`` result, an aider edit with
  no ``Applied edit to <path>`` line, or no recorded result.
- **Arguments** are the call's JSON object; arguments that are not a JSON object are kept as
  ``{"_raw": <text>}``.
- **Text.** Assistant ``content`` is the model's text as recorded, including in-text actions
  (SWE-agent's fenced command, aider's edit blocks, mini-swe-agent's bash block) that are also
  given as structured calls. Reasoning (``thinking``, ``reasoning`` items) is left out.
  Non-text parts (images, documents, files) become placeholders ``"[image]"``.
- **System prompts.** A context holds one system prompt, first; system text before any other
  turn is joined into it, a later system (or ``developer``) message becomes a user message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
import orjson

from raygent.errors import TrajectoryError
from raygent.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)

__all__ = ["FORMATS", "NO_RESULT", "Trajectory", "load_trajectory", "load_trajectories"]

FORMATS = (
    "swe-agent",
    "openhands-events",
    "openhands-eval",
    "openhands-resolver",
    "aider",
    "mini-swe-agent",
    "openai-chat",
    "openai-responses",
    "anthropic",
    "gemini",
    "bedrock-converse",
    "cohere-chat",
)
"""Every value :attr:`Trajectory.format` can take."""

NO_RESULT = "[no result recorded]"
"""Content of the error result given to a tool call whose result the recording lacks."""


class Trajectory(msgspec.Struct, kw_only=True):
    """One recorded agent run as raygent messages.

    Attributes
    ----------
    path : str
        The file it was read from.
    format : str
        One of :data:`FORMATS`, detected from the content.
    messages : list of Message
        The conversation, oldest first: at most one :class:`~raygent.messages.SystemMessage`
        (first), then user, assistant and tool messages; every tool call has exactly one
        :class:`~raygent.messages.ToolMessage`, after the assistant turn that made it.
    model : str or None
        The model named by the recording, when it names one.
    metadata : dict
        What the format records beside the conversation (exit status, cost, instance id,
        session start times, aider notices, the provider API ...), plus ``"repairs"`` listing
        any pairing repair made (see the module docs).
    """

    path: str
    format: str
    messages: list[Message]
    model: str | None = None
    metadata: dict[str, Any] = {}

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every tool call, in order (length = number of tool messages)."""
        return [c for m in self.messages if isinstance(m, AssistantMessage) for c in m.tool_calls]

    @property
    def steps(self) -> list[tuple[ToolCall, ToolMessage]]:
        """Each tool call with its result, in call order."""
        results = {m.call_id: m for m in self.messages if isinstance(m, ToolMessage)}
        return [(c, results[c.id]) for c in self.tool_calls]


def load_trajectory(path: str | os.PathLike[str]) -> Trajectory:
    """Read one recorded agent run.

    Parameters
    ----------
    path : str or os.PathLike
        A file in one of the formats of :data:`FORMATS` (see the module docs); the format is
        detected from the content, not the name.

    Returns
    -------
    Trajectory
        The run as raygent messages.

    Raises
    ------
    raygent.errors.TrajectoryError
        If the file is empty, binary or not UTF-8, invalid JSON (the message gives line and
        column), of no known structure, misses a field its format requires, or holds several
        runs (an OpenHands JSONL; use :func:`load_trajectories`).
    OSError
        If the file cannot be read (``FileNotFoundError`` ...).
    """
    runs = load_trajectories(path)
    if len(runs) != 1:
        raise TrajectoryError(
            os.fspath(path), f"holds {len(runs)} runs; use raygent.replay.load_trajectories"
        )
    return runs[0]


def load_trajectories(path: str | os.PathLike[str]) -> list[Trajectory]:
    """Read every recorded run in a file: one for most formats, one per line for JSONL.

    Parameters and errors as :func:`load_trajectory` (except that several runs are allowed).

    Returns
    -------
    list of Trajectory
        The runs in file order; never empty.
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _load(name, data)
    except _Bad as exc:
        raise TrajectoryError(name, str(exc)) from None


# --- reading and detection ----------------------------------------------------------------------


class _Bad(Exception):
    """A reason a file is not a trajectory (turned into TrajectoryError with the path)."""


_FALLIBLE = (KeyError, TypeError, AttributeError, IndexError, ValueError)


def _load(name: str, data: bytes) -> list[Trajectory]:
    if not data.strip():
        raise _Bad("empty file")
    nul = data.find(b"\x00", 0, 65536)
    if nul >= 0:
        raise _Bad(f"binary content (NUL byte at byte {nul}), not a trajectory")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Bad(f"not UTF-8 text (invalid byte at byte {exc.start}), not a trajectory") from None
    head = text.lstrip()[:1]
    if head in ("{", "["):
        values = _parse_json(text)
        if len(values) == 1:
            return [_convert_json(name, values[0])]
        # JSONL: OpenHands evaluation or resolver output, one run per line.
        runs = []
        for i, value in enumerate(values):
            if not isinstance(value, dict) or _openhands_record_kind(value) is None:
                raise _Bad(f"JSONL line {i + 1}: unrecognized structure {_describe(value)}")
            runs.append(_convert_json(name, value, run_index=i))
        return runs
    if _looks_like_aider(text):
        return [_run(name, "aider", _aider, text)]
    if re.search(r"(?m)^history:", text):
        import yaml  # type: ignore[import-untyped]  # a dependency of ray

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise _Bad(f"invalid YAML: {exc}") from None
        if isinstance(value, dict) and _is_swe_agent(value):
            return [_run(name, "swe-agent", _swe_agent, value)]
    raise _Bad(
        "unrecognized structure: not JSON, not an aider chat history, not a SWE-agent demo YAML"
    )


def _parse_json(text: str) -> list[Any]:
    """One JSON document, or the values of a JSONL file; errors name line and column."""
    try:
        return [orjson.loads(text)]
    except orjson.JSONDecodeError:
        pass
    try:
        return [json.loads(text)]
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise _Bad(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    values = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise _Bad(f"invalid JSON at line {lineno} column {exc.colno}: {exc.msg}") from None
    return values


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:8])
        return f"(a JSON object with keys {keys})"
    if isinstance(value, list):
        first = _describe(value[0]) if value else "nothing"
        return f"(a JSON array of {len(value)}, first: {first})"
    return f"(a JSON {type(value).__name__})"


def _convert_json(name: str, value: Any, run_index: int | None = None) -> Trajectory:
    if isinstance(value, dict):
        if isinstance(value.get("exchanges"), list):
            return _http_conversation(name, value)
        if _is_swe_agent(value):
            return _run(name, "swe-agent", _swe_agent, value)
        kind = _openhands_record_kind(value)
        if kind is not None:
            traj = _run(name, kind, _openhands_record, value)
            if run_index is not None:
                traj.metadata["run_index"] = run_index
            return traj
        if isinstance(value.get("messages"), list) and (
            str(value.get("trajectory_format", "")).startswith("mini-swe-agent") or "info" in value
        ):
            return _run(name, "mini-swe-agent", _mini_swe_agent, value)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        if all("role" in v and "content" in v for v in value):
            return _run(name, "mini-swe-agent", _mini_swe_agent, {"messages": value})
        if all(("action" in v or "observation" in v) for v in value) and any("source" in v for v in value):
            return _run(name, "openhands-events", _openhands_events_run, value)
    raise _Bad(f"unrecognized structure {_describe(value)}")


def _is_swe_agent(value: dict) -> bool:
    history = value.get("history")
    return (
        isinstance(history, list)
        and bool(history)
        and all(isinstance(m, dict) and "role" in m for m in history)
    )


def _openhands_record_kind(value: dict) -> str | None:
    history = value.get("history")
    if not isinstance(history, list):
        return None
    if isinstance(value.get("issue"), dict):
        return "openhands-resolver"
    items = [i for i in history if i]
    if items and all(isinstance(i, list) for i in items):
        return "openhands-eval"  # older eval output: [action, observation] pairs
    if items and all(isinstance(i, dict) for i in items):
        if any("source" in i or "id" in i for i in items):
            return "openhands-eval"
        if all("action" in i or "observation" in i for i in items):
            return "openhands-resolver"
    if not items and ("instance_id" in value or "instruction" in value):
        return "openhands-eval"
    return None


def _run(name: str, fmt: str, convert: Any, value: Any) -> Trajectory:
    b = _Builder()
    try:
        model = convert(b, value)
    except _Bad:
        raise
    except _FALLIBLE as exc:
        raise _Bad(f"malformed {fmt} data: {type(exc).__name__}: {exc}") from exc
    return b.trajectory(name, fmt, model)


def _need(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise _Bad(f"missing field {key!r} in {where}")
    return d[key]


# --- building a conversation that keeps the tool-call invariant ---------------------------------


class _Builder:
    """Collects messages so that every tool call is answered exactly once (see module docs)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.metadata: dict[str, Any] = {}
        self.repairs: list[str] = []
        self._used_ids: set[str] = set()
        self._synth = 0
        # The open round: assigned id -> call, and recorded id -> assigned ids still open.
        self._open: dict[str, ToolCall] = {}
        self._by_recorded: dict[str, list[str]] = {}

    @property
    def has_open_calls(self) -> bool:
        return bool(self._open)

    def _new_id(self) -> str:
        while True:
            self._synth += 1
            cid = f"rg-{self._synth}"
            if cid not in self._used_ids:
                return cid

    def _assign_id(self, recorded: str | None) -> str:
        if not recorded:
            cid = self._new_id()
        elif recorded in self._used_ids:
            n = 2
            while f"{recorded}#{n}" in self._used_ids:
                n += 1
            cid = f"{recorded}#{n}"
        else:
            cid = recorded
        self._used_ids.add(cid)
        return cid

    def close(self) -> None:
        """Answer every open call that got no result."""
        for cid, call in self._open.items():
            self.messages.append(ToolMessage(call_id=cid, name=call.name, content=NO_RESULT, is_error=True))
        self._open.clear()
        self._by_recorded.clear()

    def system(self, text: str) -> None:
        self.close()
        if not self.messages:
            self.messages.append(SystemMessage(text))
        elif len(self.messages) == 1 and isinstance(self.messages[0], SystemMessage):
            joined = "\n\n".join(t for t in (self.messages[0].content, text) if t)
            self.messages[0] = SystemMessage(joined)
        else:
            self.messages.append(UserMessage(text))

    def user(self, text: str) -> None:
        self.close()
        self.messages.append(UserMessage(text))

    def assistant(self, text: str, calls: Iterable[tuple[str | None, str, dict[str, Any]]] = ()) -> list[str]:
        """Append an assistant turn; returns the ids given to its calls, in order."""
        self.close()
        made = []
        for recorded, name, arguments in calls:
            cid = self._assign_id(recorded)
            call = ToolCall(id=cid, name=name or "unknown", arguments=arguments)
            made.append(call)
            self._open[cid] = call
            if recorded:
                self._by_recorded.setdefault(recorded, []).append(cid)
        self.messages.append(AssistantMessage(content=text, tool_calls=made))
        return [c.id for c in made]

    def result(self, recorded: str | None, name: str | None, content: str, is_error: bool = False) -> None:
        cid = self._match(recorded, name)
        if cid is None:
            label = recorded or name or "?"
            self.repairs.append(f"result for {label!r} answers no recorded call; a call was synthesized")
            cid = self.assistant("", [(recorded, name or "unknown", {})])[0]
        call = self._open.pop(cid)
        if recorded and cid in self._by_recorded.get(recorded, ()):
            self._by_recorded[recorded].remove(cid)
        self.messages.append(ToolMessage(call_id=cid, name=call.name, content=content, is_error=is_error))

    def _match(self, recorded: str | None, name: str | None) -> str | None:
        if recorded:
            for cid in self._by_recorded.get(recorded, ()):
                if cid in self._open:
                    return cid
            if recorded in self._open:
                return recorded
            return None
        if name:
            for cid, call in self._open.items():
                if call.name == name:
                    return cid
        return next(iter(self._open), None)

    def open_calls(self) -> list[ToolCall]:
        return list(self._open.values())

    def trajectory(self, name: str, fmt: str, model: str | None) -> Trajectory:
        self.close()
        if not self.messages:
            raise _Bad(f"no messages found in this {fmt} file")
        if self.repairs:
            self.metadata["repairs"] = list(self.repairs)
        return Trajectory(path=name, format=fmt, messages=self.messages, model=model, metadata=self.metadata)


def _text(content: Any) -> str:
    """Plain text of a content value: str, list of parts, or an object (as JSON)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(t for t in (_part_text(p) for p in content) if t)
    if isinstance(content, dict):
        return _part_text(content)
    return str(content)


_MEDIA_TYPES = {
    "image", "image_url", "input_image", "document", "input_file", "file", "input_audio",
    "container_upload", "audio", "video",
}
_MEDIA_KEYS = ("image", "document", "video", "fileData", "file_data", "inlineData", "inline_data")


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return _json(part)
    if isinstance(part.get("text"), str):
        return part["text"]
    kind = part.get("type")
    if kind in _MEDIA_TYPES:
        return f"[{kind}]"
    for key in _MEDIA_KEYS:
        if key in part:
            return f"[{key}]"
    if "json" in part and len(part) == 1:
        return _json(part["json"])
    if "content" in part and kind is None:
        return _text(part["content"])
    return _json(part)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _args(raw: Any) -> dict[str, Any]:
    """A call's arguments as a dict: parsed JSON text, or ``{"_raw": text}`` if not an object."""
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            return {"_raw": raw}
        return value if isinstance(value, dict) else {"_raw": raw}
    return {"_raw": _json(raw)}


# --- S1: SWE-agent .traj ----------------------------------------------------------------------


def _swe_agent(b: _Builder, d: dict) -> str | None:
    history = [m for m in _need(d, "history", "the SWE-agent file") if not m.get("is_demo")]
    structured = any(m.get("tool_calls") for m in history if m.get("role") == "assistant")
    for m in history:
        role = _need(m, "role", "a history entry")
        content = _text(m.get("content"))
        if role == "system":
            b.system(content)
        elif role == "assistant":
            calls: list[tuple[str | None, str, dict[str, Any]]] = []
            if m.get("tool_calls"):
                for tc in m["tool_calls"]:
                    fn = _need(tc, "function", "a tool call")
                    calls.append((tc.get("id"), _need(fn, "name", "a tool call"), _args(fn.get("arguments"))))
            elif not structured:
                action = (m.get("action") or "").strip()
                if action:
                    calls.append((None, action.split()[0], {"command": action}))
            b.assistant(content, calls)
        elif role == "tool":
            for cid in m.get("tool_call_ids") or [None]:
                b.result(cid, None, content)
        elif role == "user":
            if b.has_open_calls and not structured:
                b.result(None, None, content)
            else:
                b.user(content)
        else:
            raise _Bad(f"unknown role {role!r} in history")
    # The last action (usually ``submit``) has no observation in ``history``; the step list has it.
    steps = d.get("trajectory")
    open_calls = b.open_calls()
    if not structured and len(open_calls) == 1 and isinstance(steps, list) and steps:
        last = steps[-1]
        if isinstance(last, dict) and (last.get("action") or "").strip() == open_calls[0].arguments.get("command"):
            b.result(open_calls[0].id, None, _text(last.get("observation")))
    info = d.get("info")
    if isinstance(info, dict):
        b.metadata.update({k: info[k] for k in ("exit_status", "submission", "model_stats") if k in info})
    if d.get("environment") is not None:
        b.metadata["environment"] = d["environment"]
    config = d.get("replay_config")
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            config = None
    model = None
    if isinstance(config, dict):
        model_cfg = (config.get("agent") or {}).get("model") or {}
        model = model_cfg.get("name") or model_cfg.get("model_name")
    return model


# --- S2-S4: OpenHands --------------------------------------------------------------------------

_OH_SKIP_ACTIONS = {"change_agent_state", "recall", "null", "condensation", "agent_state_changed"}


def _openhands_events_run(b: _Builder, events: list) -> str | None:
    return _openhands_events(b, events, instruction=None)


def _openhands_events(b: _Builder, events: list, instruction: str | None) -> str | None:
    has_user = any(e.get("source") == "user" and e.get("action") == "message" for e in events)
    pending_instruction = instruction if (instruction and not has_user) else None
    seen_responses: set[Any] = set()
    call_of_action: dict[Any, str] = {}  # action event id -> recorded (or assigned) call id
    model = None
    for ev in events:
        if pending_instruction and ev.get("action") != "system":
            b.user(pending_instruction)
            pending_instruction = None
        if "action" in ev:
            action = ev["action"]
            args = ev.get("args") or {}
            source = ev.get("source")
            if action == "system":
                b.system(_text(args.get("content") or ev.get("message")))
                continue
            if source == "user":
                if action == "message":
                    b.user(_text(args.get("content", ev.get("message"))))
                continue
            meta = ev.get("tool_call_metadata")
            if isinstance(meta, dict) and isinstance(meta.get("model_response"), dict):
                response = meta["model_response"]
                message = response["choices"][0]["message"]
                key = response.get("id") or tuple(tc.get("id") for tc in message.get("tool_calls") or ())
                if key not in seen_responses:
                    seen_responses.add(key)
                    model = model or response.get("model")
                    b.assistant(_text(message.get("content")), _openai_calls(message))
                if meta.get("tool_call_id"):
                    call_of_action[ev.get("id")] = meta["tool_call_id"]
                continue
            if action in _OH_SKIP_ACTIONS:
                continue
            if action == "message":
                b.assistant(_text(args.get("content", ev.get("message"))))
            elif action == "finish":
                b.assistant(_text(args.get("final_thought") or args.get("thought") or ev.get("message")))
            else:
                arguments = {k: v for k, v in args.items() if k != "thought"}
                cid = b.assistant(_text(args.get("thought")), [(None, action, arguments)])[0]
                call_of_action[ev.get("id")] = cid
        elif "observation" in ev:
            cause = ev.get("cause")
            if cause is None or cause not in call_of_action:
                continue  # state changes, recalls: environment notices, not tool results
            extras = ev.get("extras") or {}
            exit_code = (extras.get("metadata") or {}).get("exit_code", extras.get("exit_code"))
            is_error = ev["observation"] == "error" or exit_code not in (None, 0, -1)
            b.result(call_of_action.pop(cause), None, _text(ev.get("content")), is_error=is_error)
    if pending_instruction:
        b.user(pending_instruction)
    return model


def _openhands_record(b: _Builder, d: dict) -> str | None:
    history = _need(d, "history", "the OpenHands record")
    instruction = d.get("instruction")
    metadata = _obj(d.get("metadata"))
    for key in ("instance_id", "error", "success", "result_explanation", "base_commit"):
        if d.get(key) is not None:
            b.metadata[key] = d[key]
    if isinstance(d.get("metrics"), dict):
        b.metadata["metrics"] = {k: v for k, v in d["metrics"].items() if k == "accumulated_cost"}
    patch = (d.get("test_result") or {}).get("git_patch") or d.get("git_patch")
    if patch:
        b.metadata["git_patch"] = patch
    if isinstance(d.get("issue"), dict):
        b.metadata["issue"] = {k: d["issue"][k] for k in ("owner", "repo", "number", "title") if k in d["issue"]}
        _openhands_legacy(b, history, instruction)
        return None
    events: list[dict] = []
    for item in history:
        if isinstance(item, list):
            events.extend(e for e in item if isinstance(e, dict) and e)
        elif isinstance(item, dict) and item:
            events.append(item)
    model = _openhands_events(b, events, instruction)
    llm = _obj(metadata.get("llm_config"))
    if metadata.get("agent_class"):
        b.metadata["agent_class"] = metadata["agent_class"]
    return llm.get("model") or model


def _openhands_legacy(b: _Builder, history: list, instruction: str | None) -> None:
    """S4: flat actions and observations without ids; each action pairs with the next observation."""
    has_user = any(i.get("action") == "message" and i.get("source") == "user" for i in history)
    if instruction and not has_user:
        b.user(instruction)
    for item in history:
        fields = {**item, **(item.get("args") or {})}
        if "action" in item:
            action = item["action"]
            thought = _text(fields.get("thought"))
            if action == "message":
                text = _text(fields.get("content"))
                b.user(text) if item.get("source") == "user" else b.assistant(text)
            elif action == "finish":
                b.assistant(thought or _text(fields.get("final_thought")))
            elif action == "run":
                b.assistant(thought, [(None, "run", {"command": fields.get("command", "")})])
            elif action == "run_ipython":
                b.assistant(thought, [(None, "run_ipython", {"code": fields.get("code", "")})])
            elif action not in _OH_SKIP_ACTIONS:
                arguments = {k: v for k, v in fields.items() if k not in ("action", "args", "thought", "source", "message")}
                b.assistant(thought, [(None, action, arguments)])
        elif "observation" in item and b.has_open_calls:
            exit_code = fields.get("exit_code")
            is_error = item["observation"] == "error" or exit_code not in (None, 0, -1)
            b.result(None, None, _text(fields.get("content")), is_error=is_error)


# --- S5: aider chat history ---------------------------------------------------------------------

_AIDER_SESSION = re.compile(r"(?m)^# aider chat started at (.*)$")
_AIDER_DIV = re.compile(r'<div class="chat-transcript"[^>]*>(.*?)(?:</div>|\Z)', re.S)
_EDIT_START = re.compile(r"^<{5,9} ?(ORIGINAL|SEARCH)\s*$")
_EDIT_DIVIDER = re.compile(r"^={5,9}\s*$")
_EDIT_END = re.compile(r"^>{5,9} ?(UPDATED|REPLACE)\s*$")
_APPLIED = re.compile(r"^Applied edit to (.+?)\s*$")


def _looks_like_aider(text: str) -> bool:
    if not re.search(r"(?m)^####( |$)", text):
        return False
    if _AIDER_SESSION.search(text):
        return True
    if '<div class="chat-transcript"' in text:
        front = re.match(r"---\n(.*?)\n---\n", text, re.S)
        if front and re.search(r"(?m)^has_children:\s*true\s*$", front.group(1)):
            # aider's website index page: links to transcripts plus a formatting legend.
            raise _Bad(
                "a site index page (front matter has_children: true), not an aider chat transcript"
            )
        return True
    return False


def _aider(b: _Builder, text: str) -> None:
    """S5: ``####`` user lines, ``>`` aider output, the rest assistant text with edit blocks.

    Several sessions (``# aider chat started at``) in one file are kept as one conversation of
    consecutive prompts; their start times go to ``metadata["sessions"]``. On aider's website the
    transcript is the content of ``<div class="chat-transcript">`` blocks (the page prose around
    them is not). ``>`` output that does not follow an edit (files added, commits, token
    reports) is not part of the model's conversation and goes to ``metadata["notices"]``.
    """
    if '<div class="chat-transcript"' in text and not _AIDER_SESSION.search(text):
        text = "\n".join(m.group(1) for m in _AIDER_DIV.finditer(text))
    sessions: list[str] = []
    notices: list[dict[str, Any]] = []
    events: list[tuple[str, list[str]]] = []  # (kind, lines): kind user / assistant / output
    for line in text.splitlines():
        line = line.rstrip()
        session = _AIDER_SESSION.match(line)
        if session:
            sessions.append(session.group(1).strip())
            events.append(("session", []))
            continue
        if line.startswith("####"):
            kind, body = "user", line[4:].strip()
        elif line.startswith("> ") or line == ">":
            kind, body = "output", line[2:]
        else:
            kind, body = "assistant", line
        last = events[-1][0] if events else None
        if kind == "assistant" and not body:
            if last == "assistant":
                events[-1][1].append("")
            elif last == "output":
                events.append(("gap", []))  # a blank line ends an output block
            continue
        if last == kind:
            events[-1][1].append(body)
        else:
            events.append((kind, [body]))
    answerable = False
    for kind, lines in events:
        if kind == "user":
            b.user("\n".join(lines))
            answerable = False
        elif kind == "assistant":
            body = "\n".join(lines).strip()
            if body:
                calls = _aider_edits(body)
                b.assistant(body, [(None, "edit", c) for c in calls])
                answerable = bool(calls)
        elif kind == "output":
            if answerable and b.has_open_calls:
                _aider_results(b, lines)
            else:
                notices.append({"before_message": len(b.messages), "text": "\n".join(lines)})
            answerable = False
    if sessions:
        b.metadata["sessions"] = sessions
    if notices:
        b.metadata["notices"] = notices


def _aider_edits(body: str) -> list[dict[str, Any]]:
    """Complete SEARCH/REPLACE (or ORIGINAL/UPDATED) blocks; an unfinished block is text only."""
    lines = body.splitlines()
    edits = []
    i = 0
    while i < len(lines):
        if not _EDIT_START.match(lines[i]):
            i += 1
            continue
        path = ""
        for back in (i - 1, i - 2):
            if back >= 0 and lines[back].strip() and not lines[back].startswith("```"):
                path = lines[back].strip().strip("`*:").strip()
                break
        j = i + 1
        search: list[str] = []
        while j < len(lines) and not _EDIT_DIVIDER.match(lines[j]):
            search.append(lines[j])
            j += 1
        replace: list[str] = []
        k = j + 1
        while k < len(lines) and not _EDIT_END.match(lines[k]):
            replace.append(lines[k])
            k += 1
        if j >= len(lines) or k >= len(lines):
            break  # interrupted reply (^C): no complete edit from here on
        edits.append({"path": path, "search": "\n".join(search), "replace": "\n".join(replace)})
        i = k + 1
    return edits


def _aider_results(b: _Builder, lines: list[str]) -> None:
    """Give each open edit call its ``Applied edit to <path>`` line; other lines go to the last."""
    calls = b.open_calls()
    used: set[int] = set()
    own: dict[str, int] = {}
    for call in calls:
        for n, line in enumerate(lines):
            applied = _APPLIED.match(line)
            if n not in used and applied and applied.group(1) == call.arguments.get("path"):
                used.add(n)
                own[call.id] = n
                break
    rest = "\n".join(line for n, line in enumerate(lines) if n not in used)
    for idx, call in enumerate(calls):
        if call.id in own:
            content = lines[own[call.id]]
            if idx == len(calls) - 1 and rest:
                content += "\n" + rest
            b.result(call.id, None, content)
        else:
            b.result(call.id, None, "\n".join(lines), is_error=True)


# --- S6: mini-swe-agent -------------------------------------------------------------------------

_MINI_BLOCK = re.compile(r"```(?:mswea_bash_command|bash)[ \t]*\n(.*?)```", re.S)
_RETURNCODE = re.compile(r"<returncode>\s*(-?\d+)\s*</returncode>")


def _mini_swe_agent(b: _Builder, d: dict) -> str | None:
    """S6: one fenced bash block per assistant turn is the call; the next user turn its result.

    A turn with zero or several blocks is no call (mini-swe-agent answers it with a format error
    message, kept as a user turn). Tool-calling models' ``tool_calls`` / ``tool`` messages (the
    v2 trajectory format) are used as such.
    """
    skipped: dict[str, int] = {}
    for m in d["messages"]:
        role = m.get("role")
        content = _text(m.get("content"))
        if role == "system":
            b.system(content)
        elif role == "assistant":
            if m.get("tool_calls"):
                b.assistant(content, _openai_calls(m))
                continue
            blocks = _MINI_BLOCK.findall(content)
            calls = [(None, "bash", {"command": blocks[0].strip()})] if len(blocks) == 1 else []
            b.assistant(content, calls)
        elif role == "tool":
            b.result(m.get("tool_call_id"), m.get("name"), content, is_error=_nonzero_returncode(content))
        elif role == "user":
            if b.has_open_calls:
                b.result(None, None, content, is_error=_nonzero_returncode(content))
            else:
                b.user(content)
        else:
            skipped[str(role)] = skipped.get(str(role), 0) + 1
    if skipped:
        b.metadata["skipped_roles"] = skipped
    info = _obj(d.get("info"))
    b.metadata.update({k: info[k] for k in ("exit_status", "submission", "model_stats") if k in info})
    return _obj(_obj(info.get("config")).get("model")).get("model_name")


def _nonzero_returncode(content: str) -> bool:
    code = _RETURNCODE.search(content)
    return code is not None and int(code.group(1)) != 0


# --- S7: recorded API loops ---------------------------------------------------------------------


def _api_of(exchange: Any) -> str | None:
    """The model API of one recorded exchange, from its URI path; None if not a model call."""
    if not isinstance(exchange, dict) or not isinstance(exchange.get("request"), dict):
        return None
    if str(exchange.get("method", "POST")).upper() != "POST":
        return None
    path = urlsplit(str(exchange.get("uri", ""))).path
    request = exchange["request"]
    if path.endswith("/chat/completions") and "messages" in request:
        return "openai-chat"
    if path.endswith("/responses") and "input" in request:
        return "openai-responses"
    if path.endswith("/messages") and "messages" in request:
        return "anthropic"
    if (path.endswith(":generateContent") or path.endswith(":streamGenerateContent")) and "contents" in request:
        return "gemini"
    if (path.endswith("/converse") or path.endswith("/converse-stream")) and "messages" in request:
        return "bedrock-converse"
    if path.endswith("/v2/chat") and "messages" in request:
        return "cohere-chat"
    return None


def _http_conversation(name: str, d: dict) -> Trajectory:
    """S7: the last model request's history plus its response is the whole conversation.

    Exchanges of other APIs (a fallback model, file uploads, MCP) are not part of it and are
    counted in ``metadata["other_exchanges"]``. When the last model call failed (an HTTP error)
    or its response was not recorded, the conversation ends with that request's history.
    """
    exchanges = d["exchanges"]
    model_calls = [e for e in exchanges if _api_of(e)]
    if not model_calls:
        raise _Bad(f"no model API call among {len(exchanges)} recorded exchanges")
    last = model_calls[-1]
    api = _api_of(last)
    assert api is not None
    b = _Builder()
    b.metadata.update({k: d[k] for k in ("source_repo", "source_path", "commit") if k in d})
    b.metadata["other_exchanges"] = sum(1 for e in exchanges if _api_of(e) != api)
    status = last.get("status")
    b.metadata["final_status"] = status
    response = last.get("response") if isinstance(status, int) and 200 <= status < 300 else None
    if response is not None and last.get("response_format") == "sse":
        if not isinstance(response, str):
            raise _Bad("a streamed response (response_format 'sse') that is not text")
        response = _sse_response(api, response)
        b.metadata["final_response"] = "sse"
    else:
        b.metadata["final_response"] = "json" if response is not None else "missing"
    request = last["request"]
    try:
        if api in ("openai-chat", "cohere-chat"):
            _chat_messages(b, request.get("messages") or [])
            if response is not None:
                _chat_response(b, api, response)
        elif api == "openai-responses":
            _responses(b, request, response, [e for e in model_calls if _api_of(e) == api])
        elif api == "anthropic":
            _anthropic(b, request, response)
        elif api == "gemini":
            _gemini(b, request, response)
        else:
            _bedrock(b, request, response)
    except _Bad:
        raise
    except _FALLIBLE as exc:
        raise _Bad(f"malformed {api} exchange: {type(exc).__name__}: {exc}") from exc
    return b.trajectory(name, api, _http_model(api, last, response))


def _http_model(api: str, exchange: dict, response: Any) -> str | None:
    model = exchange["request"].get("model")
    if not model:
        path = unquote(urlsplit(str(exchange.get("uri", ""))).path)
        found = re.search(r"/models/([^/:]+):", path) or re.search(r"/model/([^/]+)/converse", path)
        model = found.group(1) if found else None
    if not model and isinstance(response, dict):
        model = response.get("model") or response.get("modelVersion")
    return model


def _openai_calls(message: dict) -> list[tuple[str | None, str, dict[str, Any]]]:
    calls = []
    for tc in message.get("tool_calls") or ():
        if "function" in tc:
            fn = tc["function"]
            calls.append((tc.get("id"), fn.get("name"), _args(fn.get("arguments"))))
        elif "custom" in tc:
            calls.append((tc.get("id"), tc["custom"].get("name"), {"input": tc["custom"].get("input")}))
    legacy = message.get("function_call")  # legacy single call; some hosts send it empty
    if isinstance(legacy, dict) and legacy.get("name"):
        calls.append((None, legacy["name"], _args(legacy.get("arguments"))))
    return calls


def _chat_messages(b: _Builder, messages: list) -> None:
    for m in messages:
        role = m.get("role")
        content = _text(m.get("content"))
        if role in ("system", "developer"):
            b.system(content)
        elif role == "user":
            b.user(content)
        elif role == "assistant":
            b.assistant(content, _openai_calls(m))
        elif role in ("tool", "function"):
            b.result(m.get("tool_call_id"), m.get("name"), content)
        else:
            raise _Bad(f"unknown message role {role!r}")


def _chat_response(b: _Builder, api: str, response: Any) -> None:
    if not isinstance(response, dict):
        return
    if api == "cohere-chat":
        message = response.get("message") or {}
        text = _text(message.get("content")) or _text(message.get("tool_plan"))
        b.assistant(text, _openai_calls(message))
        return
    choices = response.get("choices") or []
    if choices:
        message = choices[0].get("message") or {}
        b.assistant(_text(message.get("content")), _openai_calls(message))


def _responses(b: _Builder, request: dict, response: Any, calls: list[dict]) -> None:
    if request.get("instructions"):
        b.system(_text(request["instructions"]))
    items = _responses_chain(b, request, calls[:-1], set())
    if isinstance(response, dict):
        items += response.get("output") or []
    _responses_items(b, items)


def _conversation_id(request: dict) -> str | None:
    conv = request.get("conversation")
    return conv.get("id") if isinstance(conv, dict) else conv


def _responses_chain(b: _Builder, request: dict, earlier: list[dict], seen: set[str]) -> list[Any]:
    """Input items, preceded by the server-side state the request continues.

    ``previous_response_id`` chains to one earlier response (its request's items and its
    output); ``conversation`` to every earlier exchange of the same conversation, in order.
    """
    items: list[Any] = []
    previous = request.get("previous_response_id")
    conversation = _conversation_id(request)
    if previous and previous not in seen:
        seen.add(previous)
        at = next(
            (i for i, e in enumerate(earlier) if isinstance(e.get("response"), dict) and e["response"].get("id") == previous),
            None,
        )
        if at is None:
            b.metadata["previous_response_missing"] = previous
        else:
            items += _responses_chain(b, earlier[at]["request"], earlier[:at], seen)
            items += earlier[at]["response"].get("output") or []
    elif conversation:
        for e in earlier:
            if _conversation_id(e["request"]) == conversation:
                items += _input_items(e["request"])
                if isinstance(e.get("response"), dict):
                    items += e["response"].get("output") or []
    return items + _input_items(request)


def _input_items(request: dict) -> list[Any]:
    inp = request.get("input")
    return [{"type": "message", "role": "user", "content": inp}] if isinstance(inp, str) else list(inp or [])


def _responses_items(b: _Builder, items: list[Any]) -> None:
    text: list[str] = []
    calls: list[tuple[str | None, str, dict[str, Any]]] = []

    def flush() -> None:
        if text or calls:
            b.assistant("\n".join(text), list(calls))
            text.clear()
            calls.clear()

    for it in items:
        kind = it.get("type") or "message"
        if kind == "message":
            role = it.get("role")
            if role == "assistant":
                text.append(_text(it.get("content")))
                continue
            flush()
            if role in ("system", "developer"):
                b.system(_text(it.get("content")))
            else:
                b.user(_text(it.get("content")))
        elif kind == "reasoning":
            continue
        elif kind == "function_call":
            calls.append((it.get("call_id") or it.get("id"), it.get("name"), _args(it.get("arguments"))))
        elif kind == "custom_tool_call":
            calls.append((it.get("call_id") or it.get("id"), it.get("name"), {"input": it.get("input")}))
        elif kind.endswith("_call"):
            raw = it.get("arguments", it.get("action"))
            if raw is None:
                raw = {k: v for k, v in it.items() if k not in ("type", "id", "call_id", "status", "execution")}
            calls.append((it.get("call_id") or it.get("id"), it.get("name") or kind[: -len("_call")], _args(raw)))
        elif kind.endswith("_output"):
            flush()
            if "output" in it:
                content = _text(it["output"])
            else:
                content = _json({k: v for k, v in it.items() if k not in ("type", "id", "call_id", "status", "execution")})
            b.result(it.get("call_id"), None, content)
        else:
            b.metadata.setdefault("skipped_items", []).append(kind)
    flush()


def _merge_turns(messages: list, key: str) -> list[tuple[Any, list[Any]]]:
    """(role, blocks) with consecutive messages of one role combined into one turn.

    Anthropic, Gemini and Bedrock histories written by other frameworks sometimes split one
    turn (two tool calls answered together) into consecutive same-role messages; the APIs
    accept that, and reading it as one turn keeps each call next to its result.
    """
    turns: list[tuple[Any, list[Any]]] = []
    for m in messages:
        content = m.get(key)
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        role = m.get("role", "user")
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    return turns


def _anthropic(b: _Builder, request: dict, response: Any) -> None:
    if request.get("system"):
        b.system(_text(request["system"]))
    for role, blocks in _merge_turns(request.get("messages") or [], "content"):
        _anthropic_message(b, role, blocks)
    if isinstance(response, dict) and response.get("type", "message") == "message":
        _anthropic_message(b, "assistant", response.get("content"))


def _anthropic_message(b: _Builder, role: str | None, content: Any) -> None:
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    content = content or []
    if role == "assistant":
        text: list[str] = []
        calls: list[tuple[str | None, str, dict[str, Any]]] = []
        for block in content:
            kind = block.get("type")
            if kind == "text":
                text.append(block.get("text", ""))
            elif kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
                calls.append((block.get("id"), block.get("name"), _args(block.get("input"))))
            elif kind and kind.endswith("tool_result"):
                if text or calls:
                    b.assistant("\n".join(text), list(calls))
                    text.clear()
                    calls.clear()
                b.result(block.get("tool_use_id"), None, _text(block.get("content")), _anthropic_error(block))
        if text or calls or not content:
            b.assistant("\n".join(text), calls)
        return
    other: list[str] = []
    for block in content:
        if block.get("type") == "tool_result":
            b.result(block.get("tool_use_id"), None, _text(block.get("content")), _anthropic_error(block))
        else:
            other.append(_part_text(block))
    if role == "system":
        # Beta system-role turns (``tool_addition``) carry no text for the model to read.
        if any(block.get("type") == "text" for block in content):
            b.system("\n".join(other))
        else:
            b.metadata.setdefault("skipped_items", []).extend(block.get("type") for block in content)
    elif other:
        b.user("\n".join(other))


def _anthropic_error(block: dict) -> bool:
    if block.get("is_error"):
        return True
    inner = block.get("content")
    return isinstance(inner, dict) and str(inner.get("type", "")).endswith("_error")


def _gemini(b: _Builder, request: dict, response: Any) -> None:
    system = request.get("systemInstruction") or request.get("system_instruction")
    if system:
        b.system(_text(system.get("parts") if isinstance(system, dict) else system))
    for role, parts in _merge_turns(request.get("contents") or [], "parts"):
        _gemini_content(b, role, parts)
    if isinstance(response, dict):
        candidates = response.get("candidates") or []
        if candidates and isinstance(candidates[0].get("content"), dict):
            _gemini_content(b, "model", candidates[0]["content"].get("parts") or [])


def _gemini_content(b: _Builder, role: str, parts: list) -> None:
    text: list[str] = []
    calls: list[tuple[str | None, str, dict[str, Any]]] = []

    def flush_model() -> None:
        if text or calls:
            b.assistant("\n".join(text), list(calls))
            text.clear()
            calls.clear()

    for part in parts:
        call = part.get("functionCall") or part.get("function_call")
        answer = part.get("functionResponse") or part.get("function_response")
        if call is not None:
            calls.append((call.get("id"), call.get("name"), _args(call.get("args"))))
        elif part.get("executableCode") or part.get("executable_code"):
            code = part.get("executableCode") or part.get("executable_code")
            calls.append((None, "code_execution", _args(code)))
        elif answer is not None:
            if role == "model":
                flush_model()
            b.result(answer.get("id"), answer.get("name"), _text(answer.get("response")))
        elif part.get("codeExecutionResult") or part.get("code_execution_result"):
            result = part.get("codeExecutionResult") or part.get("code_execution_result")
            if role == "model":
                flush_model()
            b.result(None, "code_execution", _text(result.get("output")), result.get("outcome", "OUTCOME_OK") != "OUTCOME_OK")
        elif part.get("thought"):
            continue  # reasoning summary
        else:
            text.append(_part_text(part))
    if role == "model":
        if text or calls or not parts:
            b.assistant("\n".join(text), calls)
    elif text:
        b.user("\n".join(text))


def _bedrock(b: _Builder, request: dict, response: Any) -> None:
    if request.get("system"):
        b.system(_text([s for s in request["system"] if "text" in s]))
    messages = list(request.get("messages") or [])
    if isinstance(response, dict):
        message = (response.get("output") or {}).get("message")
        if isinstance(message, dict):
            messages.append(message)
    for role, content in _merge_turns(messages, "content"):
        text: list[str] = []
        calls: list[tuple[str | None, str, dict[str, Any]]] = []
        for block in content:
            if "toolUse" in block:
                use = block["toolUse"]
                calls.append((use.get("toolUseId"), use.get("name"), _args(use.get("input"))))
            elif "toolResult" in block:
                res = block["toolResult"]
                if role == "assistant" and (text or calls):
                    b.assistant("\n".join(text), list(calls))
                    text.clear()
                    calls.clear()
                b.result(res.get("toolUseId"), None, _text(res.get("content")), res.get("status") == "error")
            elif "reasoningContent" in block:
                continue
            else:
                text.append(_part_text(block))
        if role == "assistant":
            if text or calls or not content:
                b.assistant("\n".join(text), calls)
        elif text:
            b.user("\n".join(text))


# --- streamed final responses -------------------------------------------------------------------


def _sse_events(body: str) -> list[tuple[str, Any]]:
    """(event name, parsed data) of each SSE event with a JSON ``data:`` payload."""
    events = []
    for block in re.split(r"\r?\n\r?\n", body):
        name, data = "", []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        payload = "\n".join(data).strip()
        if not payload or payload == "[DONE]":
            continue
        try:
            events.append((name, json.loads(payload)))
        except ValueError:
            continue
    return events


def _sse_response(api: str, body: str) -> dict[str, Any]:
    """A streamed response body rebuilt as the API's non-streamed JSON response.

    OpenAI chat goes through :func:`raygent.providers.decode_stream` (the provider's own
    decoder). An OpenAI Responses stream ends with ``response.completed``, which carries the
    whole response. Anthropic and Gemini streams are reassembled here: Anthropic's content
    blocks (including server-tool results, which the provider chunk vocabulary cannot carry)
    from ``content_block_*`` events; Gemini's chunks are whole parts, concatenated.
    """
    if api == "openai-chat":
        from raygent.errors import ProviderError
        from raygent.messages import TextDelta, ToolCallEnd
        from raygent.providers import decode_stream

        try:
            chunks = decode_stream(api, [body.encode()])
        except ProviderError as exc:
            raise _Bad(f"streamed response does not decode: {exc}") from None
        message: dict[str, Any] = {
            "content": "".join(c.text for c in chunks if isinstance(c, TextDelta)),
            "tool_calls": [
                {"id": c.call.id, "function": {"name": c.call.name, "arguments": c.call.arguments}}
                for c in chunks
                if isinstance(c, ToolCallEnd)
            ],
        }
        return {"choices": [{"message": message}]}
    events = _sse_events(body)
    if api == "openai-responses":
        for _, data in reversed(events):
            if data.get("type") in ("response.completed", "response.incomplete", "response.failed"):
                return data["response"]
        return {"output": [d["item"] for _, d in events if d.get("type") == "response.output_item.done"]}
    if api == "anthropic":
        blocks: dict[int, dict[str, Any]] = {}
        partial: dict[int, str] = {}
        for _, data in events:
            kind = data.get("type")
            if kind == "content_block_start":
                blocks[data["index"]] = dict(data["content_block"])
            elif kind == "content_block_delta":
                block, delta = blocks[data["index"]], data["delta"]
                if delta.get("type") == "text_delta":
                    block["text"] = block.get("text", "") + delta.get("text", "")
                elif delta.get("type") == "input_json_delta":
                    partial[data["index"]] = partial.get(data["index"], "") + delta.get("partial_json", "")
        for index, raw in partial.items():
            blocks[index]["input"] = _args(raw)
        return {"type": "message", "content": [blocks[i] for i in sorted(blocks)]}
    if api == "gemini":
        parts: list[dict[str, Any]] = []
        for _, data in events:
            for candidate in (data.get("candidates") or [])[:1]:
                for part in (candidate.get("content") or {}).get("parts") or []:
                    if "text" in part and parts and "text" in parts[-1] and not part.get("thought"):
                        parts[-1] = {**parts[-1], "text": parts[-1]["text"] + part["text"]}
                    else:
                        parts.append(dict(part))
        return {"candidates": [{"content": {"role": "model", "parts": parts}}]}
    raise _Bad(f"streamed {api} responses are not supported")
