"""Online model of tool use: which tool comes next with which arguments, how long it takes.

The runtime feeds :class:`Predictor` finished tool calls (:class:`ToolEvent`) fire-and-forget and
asks it for hints; nothing waits on it in the hot path. Everything is learned online, one event
at a time, in O(order) work per event.

Methods followed
----------------
- **Actions**: the sequence model sees each call as an *action*: the tool's name, or for a
  shell tool (:data:`SHELL_TOOLS`) the program its command runs (:func:`action_of`), so the
  same step recorded as tool ``python`` by one agent and as ``bash {"command": "python x.py"}``
  by another is learned once, and a shell's ``ls``, ``python`` and ``rm`` are told apart. A
  predicted action is named as the tool that will carry it in the session: itself when the
  session called it as a tool, else the session's shell when it is a program (some shell ran
  it, or it was only ever recorded as a bare command line named after itself), also before
  the session's first shell call when its tools take arguments of their own rather than
  command lines; the probabilities of the actions one tool carries add up.
- **Next tool**: a linear mixture of four experts, each a distribution over the tools seen so
  far (1 % of each spread uniformly), whose weights are learned online by Bayes' rule on each
  call's probability with *fixed share* (Herbster & Warmuth, "Tracking the best expert",
  Machine Learning 32, 1998; share 0.02), so each call is predicted before it is learned:

  * ``ngram``: a variable-order n-gram over tool names (contexts of up to ``order - 1``
    previous tools of the session, the session start being a symbol of its own) scored with
    *stupid back-off* (Brants et al., EMNLP 2007): the relative frequency in the longest
    context that saw the tool, times ``backoff`` (0.4) per level, down to the session's own
    tool counts and then the number of sessions that used each tool (one agent's long run of
    one tool does not outweigh what most sessions do), normalized.
  * ``sessions``: the finished sessions (the last ``max_sessions``) as a Bayesian mixture of
    their own n-grams (Witten-Bell interpolated, over ``ngram``): the weight of each is a
    geometric recency prior (``session_prior_decay`` per younger session) times the
    likelihood of the current session's calls so far. It finds the runs of the same agent
    and task family (its tool names and habits) without being told which agent runs.
  * ``cache``: the current session's own bigram and unigram counts, Witten-Bell interpolated
    over ``ngram`` (a cache language model: Kuhn & De Mori, IEEE PAMI 12(6), 1990).
  * ``repeat``: the previous tool again (agents often repeat a tool, including one never seen
    before in any session).
- **Arguments**: per tool, counts of argument *templates*: the call's arguments as canonical
  JSON in which every file path that also occurs in the previous call's result is replaced by
  a slot naming its position among the paths of that result (after ``grep`` or ``find_file``,
  the next ``read_file``/``open`` is usually of a file in that output). A prediction fills the
  most frequent template that the current previous result can fill; a template with no slot
  is a literal repeat. Templates are kept apart by calling convention (a bare command line
  such as SWE-agent's ``find_file "x.py" src``, or arguments of their own such as
  ``{"file_name": "x.py"}``) and a session is offered those of its own convention once it has
  shown one. A template's confidence is ``c / (n + 1)``, ``c`` of the ``n`` calls of the tool
  having used it (the ``+ 1`` keeps room for arguments never seen: one observation gives 1/2,
  not certainty); a second source, "same arguments as this tool's last call in the
  session", competes with its own online hit rate.
- **Durations**: per action (a tool, or the program a shell tool ran), an exponentially weighted moving average (``alpha = 0.2``) and the
  p95 and p99 by the P² algorithm (Jain & Chlamtac, "The P² algorithm for dynamic calculation
  of quantiles and histograms without storing observations", CACM 28(10), 1985): five markers
  adjusted by piecewise-parabolic interpolation, O(1) memory; success rates by counting.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter, defaultdict, deque
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import msgspec
import orjson

from raygent.messages import ToolCall, ToolResult

__all__ = [
    "DEFAULT_READ_ONLY_TOOLS",
    "SHELL_TOOLS",
    "action_of",
    "P2Quantile",
    "Predictor",
    "PredictedCall",
    "ToolEvent",
    "ToolStats",
    "EvalReport",
    "Hints",
    "evaluate",
]

DEFAULT_READ_ONLY_TOOLS: frozenset[str] = frozenset(
    {
        # raygent's built-in read-only tools
        "read_file", "list_dir", "grep",
        # common read-only tools of other agents (SWE-agent, OpenHands, aider-like loops)
        "open", "find_file", "search_dir", "search_file", "get_file", "view", "cat", "ls",
        "glob", "list_files", "read", "search",
    }
)  # fmt: skip
"""Tools :meth:`Predictor.speculative_calls` may propose when the caller names none."""

SHELL_TOOLS: frozenset[str] = frozenset(
    {"run_command", "bash", "shell", "sh", "execute_bash", "execute_command", "run_shell_command",
     "terminal", "exec", "bash_code_execution", "local_shell"}
)  # fmt: skip
"""Tools that run a shell command given in their ``command`` argument; the predictor models
such a call by the program it runs (see :func:`action_of`)."""

_START: None = None
_PROGRAM_PREFIXES = frozenset({"sudo", "env", "time", "nohup", "exec", "command"})
_VERSION_SUFFIX = re.compile(r"(?<=[a-z])[0-9][0-9.]*$")
_EXCERPT_CHARS = 8_192
_PATH = re.compile(r"(?<![\w.~/-])(?:[\w.~-]*/)*[\w~-][\w.~-]*\.[A-Za-z][A-Za-z0-9]{0,7}(?![\w/-])")
_SLOT = re.compile(r"\x00(\d+)\x00")


class ToolEvent(msgspec.Struct, frozen=True):
    """One finished tool call as the predictor hears it.

    Attributes
    ----------
    session_id : str
        Separates sequences: the first call of a session follows the start state.
    tool : str
        Tool name.
    duration_ms : float
        Wall time of the call, milliseconds.
    ok : bool
        False when the call failed.
    arguments : dict
        The call's arguments (for argument prediction); empty when not given.
    result_excerpt : str
        The start of the call's result (the predictor reads at most 8 KiB of it, for the file
        paths it names); empty when not given.
    """

    session_id: str
    tool: str
    duration_ms: float
    ok: bool = True
    arguments: dict[str, Any] = {}
    result_excerpt: str = ""

    @classmethod
    def of(cls, session_id: str, call: ToolCall, result: ToolResult) -> ToolEvent:
        """The event of one finished call: its duration, outcome, arguments and result start."""
        return cls(
            session_id,
            call.name,
            result.duration_ms,
            not result.is_error,
            dict(call.arguments),
            result.content[:_EXCERPT_CHARS],
        )


class PredictedCall(msgspec.Struct, frozen=True):
    """A call the predictor expects next: tool, arguments and ``confidence`` in [0, 1]."""

    tool: str
    arguments: dict[str, Any]
    confidence: float


class Hints(msgspec.Struct, frozen=True):
    """What the runtime asks the predictor for between turns (:meth:`Predictor.hints`).

    Attributes
    ----------
    speculative : list of PredictedCall
        Read-only calls worth running before the model asks for them.
    timeouts_s : dict of str to float
        Adaptive timeout per action (seconds), for actions with enough observed durations.
    """

    speculative: list[PredictedCall] = []
    timeouts_s: dict[str, float] = {}


class P2Quantile:
    """Streaming estimate of one quantile by the P² algorithm (Jain & Chlamtac 1985).

    Parameters
    ----------
    q : float
        The quantile, in (0, 1).

    Notes
    -----
    Exact for the first five observations; then five markers (min, q/2, q, (1+q)/2, max) whose
    heights are corrected by piecewise-parabolic (else linear) interpolation. O(1) memory and
    time per observation.
    """

    __slots__ = ("q", "n", "_h", "_pos", "_want", "_dwant")

    def __init__(self, q: float) -> None:
        if not 0 < q < 1:
            raise ValueError(f"q must be in (0, 1), got {q}")
        self.q = q
        self.n = 0
        self._h: list[float] = []
        self._pos = [1.0, 2.0, 3.0, 4.0, 5.0]
        self._want = [1.0, 1 + 2 * q, 1 + 4 * q, 3 + 2 * q, 5.0]
        self._dwant = [0.0, q / 2, q, (1 + q) / 2, 1.0]

    def add(self, x: float) -> None:
        self.n += 1
        h = self._h
        if self.n <= 5:
            h.append(x)
            h.sort()
            return
        if x < h[0]:
            h[0] = x
            k = 0
        elif x >= h[4]:
            h[4] = x
            k = 3
        else:
            k = next(i for i in range(4) if h[i] <= x < h[i + 1])
        pos = self._pos
        for i in range(k + 1, 5):
            pos[i] += 1
        for i in range(5):
            self._want[i] += self._dwant[i]
        for i in (1, 2, 3):
            d = self._want[i] - pos[i]
            if (d >= 1 and pos[i + 1] - pos[i] > 1) or (d <= -1 and pos[i - 1] - pos[i] < -1):
                s = 1.0 if d > 0 else -1.0
                hp = h[i] + s / (pos[i + 1] - pos[i - 1]) * (
                    (pos[i] - pos[i - 1] + s) * (h[i + 1] - h[i]) / (pos[i + 1] - pos[i])
                    + (pos[i + 1] - pos[i] - s) * (h[i] - h[i - 1]) / (pos[i] - pos[i - 1])
                )
                if not h[i - 1] < hp < h[i + 1]:  # parabola leaves the bracket: linear
                    j = i + int(s)
                    hp = h[i] + s * (h[j] - h[i]) / (pos[j] - pos[i])
                h[i] = hp
                pos[i] += s

    def value(self) -> float | None:
        """The current estimate (``None`` before any observation)."""
        if self.n == 0:
            return None
        if self.n <= 5:
            # Nearest rank on the sorted observations.
            return self._h[min(self.n - 1, max(0, math.ceil(self.q * self.n) - 1))]
        return self._h[2]


class ToolStats:
    """Per-tool statistics.

    Attributes
    ----------
    calls, failures : int
    mean_duration_ms : float
        Running mean, milliseconds.
    ewma_duration_ms : float
        Exponentially weighted moving average (``alpha`` 0.2), milliseconds.
    p95, p99 : P2Quantile
        Streaming duration quantiles, milliseconds.
    """

    __slots__ = ("calls", "failures", "mean_duration_ms", "ewma_duration_ms", "p95", "p99")
    EWMA_ALPHA = 0.2

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.mean_duration_ms = 0.0
        self.ewma_duration_ms = 0.0
        self.p95 = P2Quantile(0.95)
        self.p99 = P2Quantile(0.99)

    def add(self, duration_ms: float, ok: bool) -> None:
        self.calls += 1
        self.failures += 0 if ok else 1
        self.mean_duration_ms += (duration_ms - self.mean_duration_ms) / self.calls
        a = self.EWMA_ALPHA if self.calls > 1 else 1.0
        self.ewma_duration_ms += a * (duration_ms - self.ewma_duration_ms)
        self.p95.add(duration_ms)
        self.p99.add(duration_ms)

    @property
    def success_rate(self) -> float:
        return 1.0 - self.failures / self.calls if self.calls else 1.0


def _paths(text: str) -> list[str]:
    """File paths named in ``text``, each followed by its basename, first occurrence first."""
    out: dict[str, None] = {}
    for m in _PATH.finditer(text[:_EXCERPT_CHARS]):
        p = m.group(0).rstrip(".")
        out.setdefault(p, None)
        out.setdefault(os.path.basename(p), None)
    return list(out)


def action_of(tool: str, arguments: dict[str, Any]) -> str:
    """What a call does, as the sequence model sees it: the tool's name, or for a shell tool
    (:data:`SHELL_TOOLS`) with a string ``command`` the program it runs.

    The program is the command's first word after environment assignments (``X=1``) and
    wrappers such as ``sudo``/``env``, as a basename with a trailing version removed
    (``/usr/bin/python3.11 -m pytest`` -> ``python``). So ``bash {"command": "python x.py"}``
    and SWE-agent's ``python x.py`` (recorded as tool ``python``) are one action, and a
    shell's mixed calls (``ls``, then ``python``, then ``rm``) are not one undifferentiated
    tool.

    Examples
    --------
    >>> action_of("bash", {"command": "cd src && ls -F"})
    'cd'
    >>> action_of("run_command", {"command": "LANG=C python3 -m pytest"})
    'python'
    >>> action_of("read_file", {"path": "a.py"})
    'read_file'
    """
    command = arguments.get("command") if tool in SHELL_TOOLS else None
    if not isinstance(command, str):
        return tool
    for word in command.split():
        if "=" in word and not word.startswith(("-", "=")) or word in _PROGRAM_PREFIXES:
            continue
        name = _VERSION_SUFFIX.sub("", os.path.basename(word))
        return name or tool
    return tool


def _canonical(arguments: dict[str, Any]) -> str:
    return orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS).decode()


def _template(arguments: dict[str, Any], paths: Sequence[str]) -> str:
    """Canonical JSON of ``arguments`` with each of ``paths`` found in it replaced by a slot."""
    text = _canonical(arguments)
    if not paths or "\x00" in text:
        return text
    by_length = sorted(range(len(paths)), key=lambda i: -len(paths[i]))
    for i in by_length:
        text = re.sub(
            r"(?<![\w./~-])" + re.escape(paths[i]) + r"(?![\w/~-])", f"\x00{i}\x00", text
        )
    return text


def _fill(template: str, paths: Sequence[str]) -> dict[str, Any] | None:
    try:
        text = _SLOT.sub(lambda m: paths[int(m.group(1))], template)
        value = orjson.loads(text)
    except (IndexError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


class _Session:
    __slots__ = ("recent", "counts", "last_args", "paths", "history", "rows", "loglik", "direct", "shell", "command_lines", "structured")

    def __init__(self, order: int) -> None:
        self.recent: deque[str | None] = deque([_START], maxlen=max(1, order - 1))
        self.counts: Counter[str] = Counter()
        self.last_args: dict[str, str] = {}
        self.paths: list[str] = []
        self.history: list[str] = []
        # The session's own n-gram rows: context (previous tools, oldest first) -> counts.
        self.rows: dict[tuple[str | None, ...], Counter[str]] = defaultdict(Counter)
        # Log-likelihood of this session's calls under each archived session's model (by id).
        self.loglik: dict[int, float] = {}
        # Actions this session called as tools of their own, and its shell tool (the tool its
        # shell commands went through), to name the tool that will carry a predicted action.
        self.direct: set[str] = set()
        self.shell: str | None = None
        self.command_lines = False  # some call was recorded as a bare command line
        self.structured = False  # some call had arguments of its own (or went through a shell)


class _Archived(msgspec.Struct):
    """A finished session as a model for later ones: its tool counts and n-gram rows."""

    id: int
    counts: Counter[str]
    rows: dict[tuple[str | None, ...], Counter[str]]


def _interpolate(
    levels: Iterable[Counter[str] | None], vocab: Sequence[str], base: dict[str, float]
) -> dict[str, float]:
    """Witten-Bell interpolation of ``levels`` (lowest order first) over ``base``.

    Each level with ``c`` observations of ``t`` distinct tools keeps weight ``c / (c + t)`` on
    its relative frequencies and gives the rest to the levels below.
    """
    p = base
    for row in levels:
        if not row:
            continue
        c = sum(row.values())
        lam = c / (c + len(row))
        p = {w: lam * row.get(w, 0) / c + (1 - lam) * p.get(w, 0.0) for w in vocab}
    return p


def _contexts(history: Sequence[str], n_max: int) -> list[tuple[str | None, ...]]:
    """The contexts of lengths 1..``n_max`` ending at the end of ``history`` (start = ``None``)."""
    tail: list[str | None] = [_START, *history[-n_max:]][-n_max:] if n_max > 0 else []
    return [tuple(tail[len(tail) - n :]) for n in range(1, len(tail) + 1)]


class Predictor:
    """Online model of tool sequences, arguments and durations (see module docs).

    Parameters
    ----------
    order : int, default 3
        n of the n-grams: the next tool is predicted from up to ``order - 1`` previous tools.
    backoff : float, default 0.4
        Stupid back-off factor per level of the global n-gram expert.
    max_sessions : int, default 64
        Finished sessions kept as models for new ones (the oldest are dropped).
    session_prior_decay : float, default 0.9
        Prior weight of a finished session relative to the one finished after it.

    Examples
    --------
    >>> p = Predictor()
    >>> p.observe(ToolEvent("s", "grep", 3.0))
    >>> p.observe(ToolEvent("s", "read_file", 1.0))
    >>> p.next_tools("grep")
    [('read_file', 1.0)]
    """

    EXPERTS = ("ngram", "sessions", "cache", "repeat")
    SHARE = 0.02  # fixed-share mixing rate of the expert weights
    FLOOR = 0.01  # share of each expert's distribution spread uniformly over the known tools

    def __init__(
        self,
        *,
        order: int = 3,
        backoff: float = 0.4,
        max_sessions: int = 64,
        session_prior_decay: float = 0.9,
    ) -> None:
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        self.order = order
        self.backoff = backoff
        self.session_prior_decay = session_prior_decay
        # Context (tuple of the previous tools, oldest first; None = session start) -> counts.
        self._ngrams: dict[tuple[str | None, ...], Counter[str]] = defaultdict(Counter)
        self._df: Counter[str] = Counter()  # action -> sessions that used it
        self._sessions: dict[str, _Session] = {}
        self._archive: deque[_Archived] = deque(maxlen=max(0, max_sessions))
        self._archived = 0
        self._weights = {e: 1.0 / len(self.EXPERTS) for e in self.EXPERTS}
        self._events = 0
        self._memo: tuple[str, int, Any] | None = None
        # (tool, recorded as a bare command line) -> argument template -> calls.
        self._templates: dict[tuple[str, bool], Counter[str]] = defaultdict(Counter)
        # Program -> the shell tool that last ran it (any session).
        self._wrapped: dict[str, str] = {}
        self._direct: set[str] = set()  # actions called as tools of their own (any session)
        self._structured: set[str] = set()  # ... with arguments other than a command line
        self._repeat = [0, 0]  # [hits, trials] of "same arguments as the last call of the tool"
        self.stats: dict[str, ToolStats] = {}

    # --- learning -----------------------------------------------------------------------------

    def _session(self, session_id: str) -> _Session:
        s = self._sessions.get(session_id)
        if s is None:
            s = self._sessions[session_id] = _Session(self.order)
        return s

    def observe(self, event: ToolEvent) -> None:
        """Learn one finished call (after any prediction made for it)."""
        s = self._session(event.session_id)
        action = action_of(event.tool, event.arguments)
        self._learn_mixture(event.session_id, s, action)
        recent = tuple(s.recent)
        for n in range(1, len(recent) + 1):
            self._ngrams[recent[len(recent) - n :]][action] += 1
        for ctx in _contexts(s.history, self.order - 1):
            s.rows[ctx][action] += 1
        s.history.append(action)
        if not s.counts[action]:
            self._df[action] += 1
        s.counts[action] += 1
        s.recent.append(action)
        command = event.arguments.get("command")
        command_line = (
            action == event.tool
            and len(event.arguments) == 1
            and isinstance(command, str)
            and command.split(maxsplit=1)[:1] == [action]
        )
        if command_line:
            s.command_lines = True
        else:
            s.structured = True
        if action == event.tool:
            s.direct.add(action)
            self._direct.add(action)
            if not command_line:
                self._structured.add(action)
        else:
            s.shell = event.tool
            self._wrapped[action] = event.tool
        self._events += 1
        if event.arguments or event.result_excerpt:
            canon = _canonical(event.arguments)
            last = s.last_args.get(event.tool)
            if last is not None:
                self._repeat[1] += 1
                self._repeat[0] += last == canon
            s.last_args[event.tool] = canon
            self._templates[event.tool, command_line][_template(event.arguments, s.paths)] += 1
            s.paths = _paths(event.result_excerpt)
        st = self.stats.get(action)
        if st is None:
            st = self.stats[action] = ToolStats()
        st.add(event.duration_ms, event.ok)

    def end_session(self, session_id: str) -> None:
        """Close the session: its next call counts from the start state, and its tool sequence
        joins the finished sessions that later sessions are compared with."""
        s = self._sessions.pop(session_id, None)
        if s is not None and s.history and self._archive.maxlen:
            self._archived += 1
            self._archive.append(_Archived(id=self._archived, counts=s.counts, rows=dict(s.rows)))

    # --- next tool ----------------------------------------------------------------------------

    def _scores(self, recent: Sequence[str | None], session_counts: Counter[str] | None) -> dict[str, float]:
        """Stupid back-off scores over the global n-gram, normalized to sum to one."""
        scores: dict[str, float] = {}
        weight = 1.0
        levels: list[Counter[str]] = []
        for n in range(min(len(recent), self.order - 1), 0, -1):
            row = self._ngrams.get(tuple(recent[len(recent) - n :]))
            if row:
                levels.append(row)
        if session_counts:
            levels.append(session_counts)
        levels.append(self._df)
        for row in levels:
            total = sum(row.values())
            if total:
                for tool, c in row.items():
                    if tool not in scores:
                        scores[tool] = weight * c / total
                weight *= self.backoff
        z = sum(scores.values())
        return {t: v / z for t, v in scores.items()} if z else {}

    def _experts(
        self, session_id: str
    ) -> tuple[list[str], dict[str, dict[str, float]], list[tuple[_Archived, dict[str, float]]]]:
        """Each expert's distribution over the known tools for the session's next call, and
        each finished session's own prediction (memoized until the next event)."""
        memo = self._memo
        if memo is not None and memo[0] == session_id and memo[1] == self._events:
            return memo[2]  # type: ignore[no-any-return]
        s = self._sessions.get(session_id)
        history: list[str] = s.history if s else []
        vocab = sorted(set(self._df) | set(history))
        out: tuple[list[str], dict[str, dict[str, float]], list[tuple[_Archived, dict[str, float]]]]
        if not vocab:
            out = (vocab, {}, [])
        else:
            uniform = 1.0 / len(vocab)
            recent: Sequence[str | None] = tuple(s.recent) if s else (_START,)
            sbo = self._scores(recent, s.counts if s else None)
            ngram = {w: sbo.get(w, 0.0) for w in vocab}
            ctxs = _contexts(history, self.order - 1)
            # Cache model: the session's own bigram and unigram over the global n-gram.
            cache = ngram
            if s is not None:
                cache = _interpolate((s.counts, s.rows.get(ctxs[0])), vocab, ngram)
            # Finished sessions as a Bayesian mixture: each one's n-gram (interpolated over the
            # global n-gram), weighted by recency prior x likelihood of this session's calls.
            own = [
                (a, _interpolate((a.counts, *(a.rows.get(c) for c in ctxs)), vocab, ngram))
                for a in self._archive
            ]
            if own:
                loglik = s.loglik if s else {}
                if s is not None and len(loglik) < len(own):
                    self._score_history(s, vocab, ngram)
                n = len(own)
                logw = [
                    loglik.get(a.id, 0.0) + (n - 1 - i) * math.log(self.session_prior_decay)
                    for i, (a, _) in enumerate(own)
                ]
                top = max(logw)
                ws = [math.exp(x - top) for x in logw]
                z = sum(ws)
                sessions = {w: sum(wi * d[w] for wi, (_, d) in zip(ws, own)) / z for w in vocab}
            else:
                sessions = ngram
            repeat = {w: float(w == history[-1]) for w in vocab} if history else ngram
            experts = {"ngram": ngram, "sessions": sessions, "cache": cache, "repeat": repeat}
            f = self.FLOOR
            experts = {k: {w: (1 - f) * d[w] + f * uniform for w in vocab} for k, d in experts.items()}
            out = (vocab, experts, own)
        self._memo = (session_id, self._events, out)
        return out

    def _score_history(self, s: _Session, vocab: Sequence[str], base: dict[str, float]) -> None:
        """Log-likelihood of the session's calls so far under finished sessions it has not
        been compared with yet (those that finished after it started)."""
        for a in self._archive:
            if a.id in s.loglik:
                continue
            ll = 0.0
            for i, tool in enumerate(s.history):
                ctxs = _contexts(s.history[:i], self.order - 1)
                d = _interpolate((a.counts, *(a.rows.get(c) for c in ctxs)), vocab, base)
                ll += math.log((1 - self.FLOOR) * d.get(tool, 0.0) + self.FLOOR / len(vocab))
            s.loglik[a.id] = ll

    def _learn_mixture(self, session_id: str, s: _Session, tool: str) -> None:
        """Online updates before ``tool`` is learned: expert weights (Bayes with fixed share,
        Herbster & Warmuth 1998) and the session's likelihood under each finished session."""
        vocab, experts, own = self._experts(session_id)
        if not experts:
            return
        unseen = self.FLOOR / (len(vocab) + 1)  # a tool no expert knows yet
        for k in self._weights:
            self._weights[k] *= experts[k].get(tool, unseen)
        z = sum(self._weights.values())
        share = self.SHARE / len(self._weights)
        self._weights = {k: (1 - self.SHARE) * v / z + share for k, v in self._weights.items()}
        for a, d in own:
            p = (1 - self.FLOOR) * d.get(tool, 0.0) + self.FLOOR / (len(vocab) + 1)
            s.loglik[a.id] = s.loglik.get(a.id, 0.0) + math.log(p)

    def predict(self, session_id: str, *, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most likely next tools of ``session_id`` with their probabilities.

        The experts' distributions mixed with their current weights (see module docs).

        Returns
        -------
        list of (tool, probability)
            Highest first (ties by name); empty before any event was observed.
        """
        vocab, experts, _ = self._experts(session_id)
        if not experts:
            return []
        z = sum(self._weights.values())
        s = self._sessions.get(session_id)
        mixed: dict[str, float] = defaultdict(float)
        for w in vocab:
            mixed[self._tool_for(s, w)] += sum(self._weights[e] * experts[e][w] for e in self._weights) / z
        return sorted(mixed.items(), key=lambda kv: (-kv[1], kv[0]))[:k]

    def _tool_for(self, s: _Session | None, action: str) -> str:
        """The tool that will carry ``action`` in session ``s``: the action itself when the
        session called it as a tool; else, in a session that has a shell, that shell unless
        the action is a tool with arguments of its own; else the action itself (or, for a
        program only ever run by a shell, that shell)."""
        if s is not None and action in s.direct:
            return action
        wrapper = self._wrapped.get(action)
        if s is not None and s.shell is not None:
            # A session with a shell runs programs through it: the actions some shell ran, and
            # those only ever recorded as a command line named after themselves (SWE-agent's
            # ``ls -F`` as tool ``ls``), not a tool with arguments of its own.
            if wrapper is not None or action not in self._structured:
                return s.shell
            return action
        if wrapper is None:
            return action
        if s is not None and s.direct and not s.command_lines:
            # No shell call yet, but the session's tools take arguments of their own rather
            # than command lines: a program will go through a shell, as it did elsewhere.
            return wrapper
        return action if action in self._direct else wrapper

    def next_tools(self, after: str | None, *, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most likely actions to follow ``after`` (``None``: a session's first call).

        First-order view over every session (no back-off), kept for callers that know only
        the previous call; :meth:`predict` uses the session's longer context. Actions are
        tool names, except that a shell tool's calls are its programs (:func:`action_of`):
        after ``"grep"`` may come ``"pytest"``, and ``after="pytest"`` asks what follows it.

        Returns
        -------
        list of (tool, probability)
            Sorted by probability, highest first (ties by name); empty when ``after`` was never
            followed by anything.
        """
        row = self._ngrams.get((after,))
        if not row:
            return []
        total = sum(row.values())
        ranked = sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(tool, n / total) for tool, n in ranked[:k]]

    # --- arguments ----------------------------------------------------------------------------

    def predict_arguments(self, session_id: str, tool: str) -> tuple[dict[str, Any], float] | None:
        """Predicted arguments of the session's next call if it is to ``tool``.

        Returns
        -------
        (arguments, confidence) or None
            ``confidence`` in [0, 1] is the estimated probability that the arguments are
            exactly right given the tool; ``None`` when nothing can be proposed.
        """
        s = self._sessions.get(session_id)
        paths = s.paths if s else []
        best: tuple[dict[str, Any], float] | None = None
        # Arguments follow the session's calling convention: command lines (SWE-agent's
        # ``find_file "x.py" src``) or arguments of their own (``{"file_name": "x.py"}``).
        styles = [s.command_lines] if s is not None and s.command_lines != s.structured else [False, True]
        templates: Counter[str] = Counter()
        for style in styles:
            templates.update(self._templates.get((tool, style), {}))
        if templates:
            total = sum(templates.values())
            for template, c in templates.most_common():
                args = _fill(template, paths)
                if args is not None:
                    best = (args, c / (total + 1))  # a new argument set is always possible
                    break
        if s is not None and tool in s.last_args:
            hits, trials = self._repeat
            rate = (hits + 1) / (trials + 2)  # Laplace
            if best is None or rate > best[1]:
                best = (orjson.loads(s.last_args[tool]), rate)
        return best

    def speculative_calls(
        self,
        session_id: str,
        *,
        read_only: Collection[str] | None = None,
        threshold: float = 0.5,
        k: int = 3,
    ) -> list[PredictedCall]:
        """Calls worth running before the model asks for them (results go to the cache).

        Parameters
        ----------
        session_id : str
        read_only : collection of str, optional
            Tools that have no side effects; only these are ever proposed (default
            :data:`DEFAULT_READ_ONLY_TOOLS`). A mutating tool is never proposed.
        threshold : float, default 0.5
            Minimum confidence: P(next tool) x P(arguments exact | tool).
        k : int, default 3
            Next tools considered.

        Returns
        -------
        list of PredictedCall
            Highest confidence first.
        """
        allowed = DEFAULT_READ_ONLY_TOOLS if read_only is None else read_only
        out = []
        for tool, p in self.predict(session_id, k=k):
            if tool not in allowed or p < threshold:
                continue
            guess = self.predict_arguments(session_id, tool)
            if guess is not None and p * guess[1] >= threshold:
                out.append(PredictedCall(tool, guess[0], p * guess[1]))
        return sorted(out, key=lambda c: -c.confidence)

    # --- durations, timeouts, groups ----------------------------------------------------------

    def mean_duration_ms(self, tool: str) -> float | None:
        st = self.stats.get(tool)
        return st.mean_duration_ms if st else None

    def adaptive_timeouts_s(
        self, *, floor_s: float = 5.0, margin: float = 3.0, min_samples: int = 20
    ) -> dict[str, float]:
        """Adaptive timeout of every action seen at least ``min_samples`` times.

        ``max(floor_s, margin * p99)`` seconds, p99 being the action's observed p99 duration
        (P², see the module docs). An action is a tool, or the program a shell tool ran
        (:func:`action_of`): ``ls`` and ``pytest`` through one shell are timed apart. The
        pipeline only ever uses these to *lower* a tool's configured timeout
        (:meth:`raygent.pipeline.ToolPipeline.set_adaptive_timeouts`), so a slow action
        keeps its configured limit; a call that hits an adaptive timeout is recorded with
        that duration, which raises the action's p99 and so its next timeout.

        Parameters
        ----------
        floor_s : float, default 5.0
            Lowest timeout proposed (seconds): fast actions still get room for a slow disk.
        margin : float, default 3.0
            Multiple of the p99 allowed.
        min_samples : int, default 20
            Observations needed before an action gets a timeout (a p99 from fewer calls is
            their maximum at best).

        Returns
        -------
        dict of str to float
            Action -> seconds.
        """
        out = {}
        for action, st in self.stats.items():
            p99 = st.p99.value()
            if st.calls >= min_samples and p99 is not None:
                out[action] = max(floor_s, margin * p99 / 1000.0)
        return out

    def hints(
        self,
        session_id: str,
        *,
        threshold: float = 0.5,
        read_only: Collection[str] | None = None,
        timeout_floor_s: float = 5.0,
        timeout_margin: float = 3.0,
        timeout_min_samples: int = 20,
    ) -> Hints:
        """Everything the runtime uses between turns, in one answer: the speculative calls
        of :meth:`speculative_calls` (``threshold``, ``read_only``) and the timeouts of
        :meth:`adaptive_timeouts_s` (``timeout_floor_s``, ``timeout_margin``,
        ``timeout_min_samples``)."""
        return Hints(
            speculative=self.speculative_calls(session_id, read_only=read_only, threshold=threshold),
            timeouts_s=self.adaptive_timeouts_s(
                floor_s=timeout_floor_s, margin=timeout_margin, min_samples=timeout_min_samples
            ),
        )

    def timeout_s(
        self,
        tool: str,
        *,
        default_s: float,
        floor_s: float = 1.0,
        cap_s: float = 600.0,
        margin: float = 2.0,
        min_samples: int = 20,
    ) -> float:
        """Adaptive timeout: ``margin`` x the observed p99 duration, within [floor_s, cap_s].

        Returns ``default_s`` (clamped likewise) until ``min_samples`` calls of ``tool`` were seen.
        """
        st = self.stats.get(tool)
        p99 = st.p99.value() if st is not None and st.calls >= min_samples else None
        t = default_s if p99 is None else margin * p99 / 1000.0
        return min(cap_s, max(floor_s, t))

    def plan_groups(
        self,
        session_id: str,
        *,
        horizon: int = 4,
        min_probability: float = 0.3,
        read_only: Collection[str] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Likely upcoming calls grouped for parallel execution.

        Rolls the n-gram forward from the session's context, taking the most likely tool each
        step while the chain's probability stays at least ``min_probability`` (at most
        ``horizon`` steps); consecutive read-only tools share a group (they may run together),
        a mutating tool is a group of its own.

        The runtime does not use this: the pipeline plans each turn's groups itself from the
        calls it actually got and the paths they touch (:meth:`raygent.pipeline.ToolPipeline.run_turn`),
        which is finer than tool names, and look-ahead execution is what
        :meth:`speculative_calls` feeds. It is a hint for callers that schedule ahead.

        Returns
        -------
        list of groups, each a list of (tool, chain probability)
        """
        allowed = DEFAULT_READ_ONLY_TOOLS if read_only is None else read_only
        s = self._sessions.get(session_id)
        recent: list[str | None] = list(s.recent) if s else [_START]
        counts: Counter[str] = Counter(s.counts) if s else Counter()
        groups: list[list[tuple[str, float]]] = []
        prob = 1.0
        for _ in range(horizon):
            scores = self._scores(recent, counts)
            if not scores:
                break
            action, p = min(scores.items(), key=lambda kv: (-kv[1], kv[0]))
            prob *= p
            if prob < min_probability:
                break
            tool = self._tool_for(s, action)
            if tool in allowed and groups and groups[-1][0][0] in allowed:
                groups[-1].append((tool, prob))
            else:
                groups.append([(tool, prob)])
            recent = (recent + [action])[-max(1, self.order - 1) :]
            counts[action] += 1
        return groups

    @staticmethod
    def parallel_groups(tools: Iterable[str], *, read_only: Collection[str] | None = None) -> list[list[int]]:
        """Indices of one turn's calls in groups that may run together, in order.

        Consecutive read-only calls share a group; each mutating call runs alone, after the
        calls before it and before the calls after it.
        """
        allowed = DEFAULT_READ_ONLY_TOOLS if read_only is None else read_only
        groups: list[list[int]] = []
        prev_ro = False
        for i, tool in enumerate(tools):
            ro = tool in allowed
            if ro and prev_ro:
                groups[-1].append(i)
            else:
                groups.append([i])
            prev_ro = ro
        return groups

    def snapshot(self) -> dict:
        """Plain data: first-order ``transitions`` ``{prev: {next: count}}`` (start as ``""``),
        per-tool ``stats`` (durations in ms), the model's ``order``, the ids of the
        ``active_sessions`` and the count of ``finished_sessions``."""
        return {
            "order": self.order,
            "active_sessions": sorted(self._sessions),
            "finished_sessions": self._archived,
            "transitions": {
                (ctx[0] or ""): dict(row) for ctx, row in self._ngrams.items() if len(ctx) == 1
            },
            "stats": {
                name: {
                    "calls": s.calls,
                    "failures": s.failures,
                    "success_rate": s.success_rate,
                    "mean_duration_ms": s.mean_duration_ms,
                    "ewma_duration_ms": s.ewma_duration_ms,
                    "p95_duration_ms": s.p95.value(),
                    "p99_duration_ms": s.p99.value(),
                }
                for name, s in self.stats.items()
            },
        }


# --- offline evaluation on recorded trajectories ----------------------------------------------


class EvalReport(msgspec.Struct, kw_only=True):
    """What :func:`evaluate` measured (counts; accuracies are ``hits / steps``).

    ``args_predicted`` counts steps whose top-1 tool was right and for which arguments were
    proposed; ``args_exact`` those whose arguments matched exactly. ``spec_*`` count the
    speculative calls proposed at ``threshold`` over read-only tools: ``spec_hits`` equal the
    call that came next (tool and arguments), ``spec_wasted`` did not.
    """

    runs: int = 0
    steps: int = 0
    top1: int = 0
    top3: int = 0
    freq_top1: int = 0
    freq_top3: int = 0
    markov_top1: int = 0
    markov_top3: int = 0
    args_predicted: int = 0
    args_exact: int = 0
    spec_proposed: int = 0
    spec_hits: int = 0
    spec_wasted: int = 0
    with_durations: int = 0
    skipped: list[str] = []


def _ranked(row: Counter[str] | None, fill: Counter[str], k: int) -> list[str]:
    out = [t for t, _ in sorted((row or {}).items(), key=lambda kv: (-kv[1], kv[0]))[:k]]
    for t, _ in sorted(fill.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(out) >= k:
            break
        if t not in out:
            out.append(t)
    return out


def evaluate(
    runs: Iterable[tuple[str, Sequence[tuple[Any, Any]]]],
    *,
    predictor: Predictor | None = None,
    threshold: float = 0.5,
    read_only: Collection[str] | None = None,
) -> EvalReport:
    """Train online over recorded runs, predicting every call before observing it.

    Parameters
    ----------
    runs : iterable of (name, steps)
        ``steps`` as :attr:`raygent.replay.Trajectory.steps`: ``(ToolCall, ToolMessage)``
        pairs in call order. Runs are taken in the order given; each is a session.
    predictor : Predictor, optional
        The model under test (default ``Predictor()``).
    threshold : float, default 0.5
        Confidence threshold of :meth:`Predictor.speculative_calls`.
    read_only : collection of str, optional
        Tools speculation may run (default :data:`DEFAULT_READ_ONLY_TOOLS`).

    Returns
    -------
    EvalReport
        Against two baselines trained on the same events: the most frequent tool so far, and a
        first-order Markov chain (ties and missing rows filled by frequency).
    """
    p = predictor or Predictor()
    r = EvalReport()
    freq: Counter[str] = Counter()
    markov: dict[str | None, Counter[str]] = defaultdict(Counter)
    for name, steps in runs:
        r.runs += 1
        sid = f"eval:{r.runs}:{name}"
        prev: str | None = None
        for call, result in steps:
            r.steps += 1
            guess = [t for t, _ in p.predict(sid, k=3)]
            r.top1 += guess[:1] == [call.name]
            r.top3 += call.name in guess
            f = _ranked(None, freq, 3)
            r.freq_top1 += f[:1] == [call.name]
            r.freq_top3 += call.name in f
            m = _ranked(markov.get(prev), freq, 3)
            r.markov_top1 += m[:1] == [call.name]
            r.markov_top3 += call.name in m
            if guess[:1] == [call.name]:
                args = p.predict_arguments(sid, call.name)
                if args is not None:
                    r.args_predicted += 1
                    r.args_exact += _canonical(args[0]) == _canonical(call.arguments)
            for spec in p.speculative_calls(sid, read_only=read_only, threshold=threshold):
                r.spec_proposed += 1
                hit = spec.tool == call.name and _canonical(spec.arguments) == _canonical(call.arguments)
                r.spec_hits += hit
                r.spec_wasted += not hit
            duration = getattr(result, "duration_ms", None)
            r.with_durations += duration is not None
            p.observe(
                ToolEvent(
                    sid,
                    call.name,
                    float(duration or 0.0),
                    ok=not getattr(result, "is_error", False),
                    arguments=dict(call.arguments),
                    result_excerpt=getattr(result, "content", "")[:_EXCERPT_CHARS],
                )
            )
            freq[call.name] += 1
            markov[prev][call.name] += 1
            prev = call.name
        p.end_session(sid)
    return r
