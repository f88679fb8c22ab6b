"""The offline scripted model: drives real tools on the workspace from the task text.

It needs no network and no weights, so a fresh machine can run a whole agent session. It is a
fixed investigation script, not a language model, and says so in its name and in every answer:

1. list the workspace tree (``list_dir``);
2. search for each of the task's distinctive words (one ``grep`` per word, in one turn);
3. read the file with the most hits around the first hit (``read_file``);
4. answer with what it found: the files that matched, the best hit and an excerpt.

It streams like a real provider: text in small deltas, tool-call arguments as JSON fragments
parsed as they arrive by ``raygent._native.JsonStream``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import orjson

from raygent._native import JsonStream
from raygent.messages import (
    AssistantMessage,
    Chunk,
    Done,
    Message,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolMessage,
    Usage,
    UserMessage,
)

__all__ = ["ScriptedModel", "task_keywords"]

SCRIPTED_MODEL_NAME = "scripted (offline)"

_STOPWORDS = frozenset(
    """
    a an and are as at be but by can code could do does did explain file files find for from
    get give has have how i if in into is it its let list look me my of on or please project
    repo repository say see show so some tell that the their them then there these this to up
    us use used uses was we what when where which who why will with would you your about all
    any work works working directory folder here answer describe summarize summary main
    """.split()
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_GREP_LINE = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+):(?P<text>.*)$")


def task_keywords(task: str, *, k: int = 4) -> list[str]:
    """Up to ``k`` distinctive words of ``task`` (lower-cased, stopwords out, longest first).

    Backquoted or quoted phrases are taken first and kept as written.
    """
    quoted = [q.strip() for q in re.findall(r"[`\"']([^`\"']{2,60})[`\"']", task)]
    words = [w.lower() for w in _WORD.findall(task) if w.lower() not in _STOPWORDS]
    seen: list[str] = []
    for w in quoted + sorted(dict.fromkeys(words), key=len, reverse=True):
        if w and w not in seen:
            seen.append(w)
    return seen[:k]


class ScriptedModel:
    """Offline provider that runs the four-step script above (see module docs).

    Parameters
    ----------
    text_delta_chars : int, default 24
        Size of each streamed text delta (characters).
    argument_delta_chars : int, default 8
        Size of each streamed tool-call arguments fragment (characters of JSON).
    read_lines : int, default 40
        Lines of the best file read in step 3.
    max_hits_per_word : int, default 150
        ``max_results`` of each word's search in step 2.
    """

    name = SCRIPTED_MODEL_NAME

    def __init__(
        self,
        *,
        text_delta_chars: int = 24,
        argument_delta_chars: int = 8,
        read_lines: int = 40,
        max_hits_per_word: int = 150,
    ) -> None:
        self.text_delta_chars = text_delta_chars
        self.argument_delta_chars = argument_delta_chars
        self.read_lines = read_lines
        self.max_hits_per_word = max_hits_per_word

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[dict]
    ) -> AsyncIterator[Chunk]:
        text, calls = self._decide(messages, {t["name"] for t in tools})
        out_chars = len(text)
        for i in range(0, len(text), self.text_delta_chars):
            yield TextDelta(text[i : i + self.text_delta_chars])
        for index, (name, args) in enumerate(calls):
            call_id = _call_id(messages, index, name, args)
            yield ToolCallStart(index=index, id=call_id, name=name)
            raw = orjson.dumps(args).decode()
            out_chars += len(raw)
            parser = JsonStream()
            step = self.argument_delta_chars
            for j in range(0, len(raw), step):
                piece = raw[j : j + step]
                parser.feed(piece)
                yield ToolCallDelta(
                    index=index,
                    id=call_id,
                    arguments_delta=piece,
                    partial_arguments=parser.partial(),
                )
            arguments = cast(dict[str, Any], parser.finish())
            yield ToolCallEnd(index=index, call=ToolCall(call_id, name, arguments))
        in_chars = sum(len(m.content) for m in messages)
        yield Usage(input_tokens=in_chars // 4 + 1, output_tokens=out_chars // 4 + 1)
        yield Done("tool_calls" if calls else "stop")

    async def complete(self, messages: Sequence[Message], tools: Sequence[dict]) -> list[Chunk]:
        """The whole response at once, as a non-streaming API returns it.

        The same text, calls (same ids) and usage as :meth:`stream`, without the pieces: one
        text delta, and per call a start and an end.
        """
        text, calls = self._decide(messages, {t["name"] for t in tools})
        out: list[Chunk] = [TextDelta(text)] if text else []
        out_chars = len(text)
        for index, (name, args) in enumerate(calls):
            call_id = _call_id(messages, index, name, args)
            out_chars += len(orjson.dumps(args))
            out.append(ToolCallStart(index=index, id=call_id, name=name))
            # Through orjson like the streamed path, so the arguments are the same JSON values.
            out.append(ToolCallEnd(index=index, call=ToolCall(call_id, name, orjson.loads(orjson.dumps(args)))))
        in_chars = sum(len(m.content) for m in messages)
        out.append(Usage(input_tokens=in_chars // 4 + 1, output_tokens=out_chars // 4 + 1))
        out.append(Done("tool_calls" if calls else "stop"))
        return out

    # The script is a pure function of the conversation: the step is read off the tool results
    # that follow the latest user message, so the model keeps no state between calls.
    def _decide(
        self, messages: Sequence[Message], available: set[str]
    ) -> tuple[str, list[tuple[str, dict]]]:
        last_user = max(
            (i for i, m in enumerate(messages) if isinstance(m, UserMessage)), default=-1
        )
        if last_user < 0:
            return f"[{self.name}] There is no task to work on.", []
        task = messages[last_user].content
        results = {
            m.name: m for m in messages[last_user + 1 :] if isinstance(m, ToolMessage)
        }
        greps = [
            m for m in messages[last_user + 1 :] if isinstance(m, ToolMessage) and m.name == "grep"
        ]
        rounds = sum(
            1
            for m in messages[last_user + 1 :]
            if isinstance(m, AssistantMessage) and m.tool_calls
        )
        keywords = task_keywords(task, k=6)

        if rounds == 0 and "list_dir" in available:
            return (
                f"[{self.name}] Task: {task.strip()}\nFirst I look at the layout of the workspace.\n",
                [("list_dir", {"path": ".", "max_depth": 2})],
            )
        if not greps and keywords and "grep" in available and rounds < 3:
            # One search per word, in one turn: they are read-only, so the pipeline runs them
            # in parallel, and each word's own hit count tells how common it is.
            return (
                f"Next I search the workspace for {', '.join(repr(k) for k in keywords)}.\n",
                [
                    ("grep", {"pattern": re.escape(k), "path": ".", "ignore_case": True,
                              "max_results": self.max_hits_per_word})
                    for k in keywords
                ],
            )
        hits, cut = _grep_hits(greps)
        # How many matches each word's search left out: a word that hits everywhere (the
        # project's name) is common however few of its hits were shown.
        pattern_of = {
            c.id: c.arguments.get("pattern")
            for m in messages[last_user + 1 :]
            if isinstance(m, AssistantMessage)
            for c in m.tool_calls
        }
        more = {k: n for cid, n in cut.items() for k in keywords if pattern_of.get(cid) == re.escape(k)}
        if hits and "read_file" not in results and "read_file" in available and rounds < 3:
            best, first_line = _rank_files(hits, keywords, more)[0]
            offset = max(0, first_line - 1 - self.read_lines // 4)
            return (
                f"The best match is {best}; I read it around line {first_line}.\n",
                [("read_file", {"path": best, "offset": offset, "limit": self.read_lines})],
            )
        return self._answer(task, keywords, results, hits, more), []

    def _answer(
        self,
        task: str,
        keywords: list[str],
        results: dict[str, ToolMessage],
        hits: list[tuple[str, int, str]],
        more: dict[str, int],
    ) -> str:
        lines = [f"Answer from the {self.name} model (a fixed search script, not an LLM)."]
        listing = results.get("list_dir")
        if listing is not None and not listing.is_error:
            entries = _top_level(listing.content)
            lines.append(f"The workspace top level has {len(entries)} entries: {', '.join(entries[:15])}.")
        if not keywords:
            lines.append("The task has no distinctive words to search for.")
        elif not hits:
            lines.append(f"No file mentions {', '.join(repr(k) for k in keywords)}.")
        else:
            ranked = _rank_files(hits, keywords, more)
            best, best_line = ranked[0]
            lines.append(
                f"{len(hits)} matching lines for {', '.join(repr(k) for k in keywords)} in "
                f"{len(ranked)} files; the most relevant (rarest words first): "
                + ", ".join(p for p, _ in ranked[:5])
                + "."
            )
            best_text = next(t for p, n, t in hits if p == best and n == best_line).strip()
            lines.append(f"Best hit: {best}:{best_line}: {best_text[:160]}")
            read = results.get("read_file")
            if read is not None and not read.is_error:
                excerpt = read.content.strip("\n").splitlines()
                lines.append(f"Excerpt of {best}:")
                lines.append("\n".join(f"    {ln}" for ln in excerpt[:20]))
        return "\n".join(lines) + "\n"


def _call_id(messages: Sequence[Message], index: int, name: str, args: dict) -> str:
    """A call id that depends only on the call's place in the conversation.

    So two runs of one session (streamed or not) make the same ids and the same history.
    """
    h = hashlib.sha1(f"{len(messages)}\0{index}\0{name}\0".encode())
    h.update(orjson.dumps(args, option=orjson.OPT_SORT_KEYS))
    for m in messages[-1:]:
        h.update(m.content.encode())
    return f"call_{h.hexdigest()[:24]}"


_MORE = re.compile(r"\[\.\.\. (\d+) more matches not shown")


def _grep_hits(greps: Sequence[ToolMessage]) -> tuple[list[tuple[str, int, str]], dict[str, int]]:
    """Distinct ``(path, line, text)`` hits of every grep result, and the matches each result
    left out, by tool call id."""
    hits: dict[tuple[str, int], str] = {}
    more: dict[str, int] = {}
    for g in greps:
        for line in g.content.splitlines():
            m = _GREP_LINE.match(line)
            if m:
                hits.setdefault((m["path"], int(m["line"])), m["text"])
            elif (cut := _MORE.search(line)) is not None:
                more[g.call_id] = int(cut[1])
    return [(p, n, t) for (p, n), t in hits.items()], more


_CODE_SUFFIXES = (
    ".py", ".pyi", ".rs", ".c", ".h", ".cc", ".cpp", ".hpp", ".go", ".java", ".kt", ".js",
    ".ts", ".tsx", ".jsx", ".rb", ".php", ".cs", ".swift", ".scala", ".sh", ".lua", ".zig",
)


def _rank_files(
    hits: list[tuple[str, int, str]], keywords: list[str], more: dict[str, int]
) -> list[tuple[str, int]]:
    """Files ordered by relevance, each with the line of its best hit.

    A file scores the sum of ``1 / (files containing the word)`` over the task words it
    contains, so a word that is everywhere (the project's name) counts little and a file that
    has several rare words ranks first. A word whose search was cut short (``more`` matches
    not shown) has its file count scaled up by the part not seen. Source code counts double
    against prose and build files, and tests and benchmarks count half of the code they
    exercise: a README that repeats the question, or a test that names the thing, is seldom
    where it is implemented. Ties go to more hits.
    """
    words_in: dict[str, set[str]] = {}
    best_line: dict[str, tuple[int, int]] = {}
    counts: Counter[str] = Counter()
    shown: Counter[str] = Counter()
    for path, line, text in hits:
        low = text.lower()
        found = {k for k in keywords if k.lower() in low}
        shown.update(found)
        words_in.setdefault(path, set()).update(found)
        counts[path] += 1
        # The line with the most distinct words, the earliest on a tie.
        if path not in best_line or len(found) > best_line[path][1]:
            best_line[path] = (line, len(found))
    doc_freq = Counter(k for found in words_in.values() for k in found)
    scale = {k: (shown[k] + more.get(k, 0)) / shown[k] for k in shown}
    score = {
        p: sum(1 / (doc_freq[k] * scale[k]) for k in found) * _kind_weight(p)
        for p, found in words_in.items()
    }
    order = sorted(words_in, key=lambda p: (-score[p], -counts[p], p))
    return [(p, best_line[p][0]) for p in order]


def _kind_weight(path: str) -> float:
    if not path.endswith(_CODE_SUFFIXES):
        return 1.0
    parts = path.lower().split("/")
    if any(p.startswith(("test", "bench")) or p in ("spec", "specs") for p in parts):
        return 1.0
    return 2.0


def _top_level(listing: str) -> list[str]:
    """Entries one level below the root line of a ``list_dir`` tree."""
    body = [ln for ln in listing.splitlines()[1:] if ln.strip() and not ln.lstrip().startswith("[")]
    if not body:
        return []
    indent = min(len(ln) - len(ln.lstrip()) for ln in body)
    return [ln.strip() for ln in body if len(ln) - len(ln.lstrip()) == indent]
