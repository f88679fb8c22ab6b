"""The ``@tool`` decorator: a plain function becomes a :class:`Tool` with an OpenAI-shaped schema.

The JSON Schema of a tool's parameters comes from the function's signature (types from the
annotations, ``required`` from the parameters without defaults) and its numpydoc or Google-style
docstring (the tool description and each parameter's description). Argument validation is done
by msgspec against a Struct built from the same signature, so the schema the model sees and the
check its arguments pass through cannot disagree.

A running tool streams progress with :func:`emit` (the pattern of LangGraph's stream writer:
a function that finds the current call's output channel in a context variable, so a tool's
signature and schema stay what the model sees). Without a listener, :func:`emit` does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import re
import typing
from collections.abc import Callable, Iterator
from typing import Any, overload

import msgspec

from raygent.errors import ToolArgumentError, ToolError

__all__ = ["Tool", "tool", "emit", "output_sink"]

# The output channel of the tool call running in this context (set by the pipeline per call).
# asyncio tasks and ``asyncio.to_thread`` copy the context, so a sync tool in its worker thread
# and the tasks an async tool starts find the same channel.
_OUTPUT: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "raygent_tool_output", default=None
)


def emit(text: str) -> None:
    """Stream a piece of output of the running tool call to whoever watches the run.

    Call it from inside a tool (sync or async, from the tool's own thread or task) as its
    output arrives; the caller of ``Agent.stream`` receives it as
    :class:`~raygent.messages.ToolOutputDelta` chunks while the tool runs. The text goes
    through the streaming ANSI stripper and is coalesced by the pipeline (see
    :class:`~raygent.pipeline.ToolPipeline`). It is progress only: the model sees the tool's
    return value, so return the full output as well.

    Outside a tool call, or when nobody listens (``ToolPipeline.run_call`` without
    ``on_output``, a cache hit), it does nothing.

    Parameters
    ----------
    text : str
        The next piece of output, any length (an escape sequence may be cut across calls).

    Raises
    ------
    TypeError
        ``text`` is not a ``str``.

    Examples
    --------
    >>> @tool
    ... def build(target: str) -> str:
    ...     lines = []
    ...     for step in ("configure", "compile", "link"):
    ...         emit(f"{step} {target}\\n")
    ...         lines.append(f"{step} {target}: ok")
    ...     return "\\n".join(lines)
    """
    if not isinstance(text, str):
        raise TypeError(f"emit() takes a str, got {type(text).__name__}")
    sink = _OUTPUT.get()
    if sink is not None and text:
        sink(text)


@contextlib.contextmanager
def output_sink(sink: Callable[[str], None] | None) -> Iterator[None]:
    """Route :func:`emit` calls made in this context (and tasks/threads started from it) to
    ``sink``; None silences them. ``sink`` may be called from a worker thread."""
    token = _OUTPUT.set(sink)
    try:
        yield
    finally:
        _OUTPUT.reset(token)


# OpenAI and Anthropic both restrict function names to this pattern.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Tool:
    """A callable tool with a JSON Schema, built by :func:`tool`.

    It satisfies ``raygent.pipeline.ToolLike`` (``name``, ``read_only``, ``timeout_s``,
    ``invoke``), the only part of it the pipeline uses, besides ``schema`` for the provider.

    Attributes
    ----------
    name : str
        The name the model calls the tool by.
    description : str
        The docstring's prose (summary and extended description).
    schema : dict
        ``{"name", "description", "parameters"}``: the OpenAI function shape, where
        ``parameters`` is a JSON Schema object with ``additionalProperties: false``.
    read_only : bool
        True when the tool does not change anything (the pipeline may cache and parallelize it).
    timeout_s : float or None
        The pipeline's time limit for one call, in seconds; None for no tool-specific limit.
    fn : callable
        The decorated function, unchanged.
    """

    __slots__ = ("name", "description", "schema", "read_only", "timeout_s", "fn", "_args", "_is_async")

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        read_only: bool = False,
        timeout_s: float | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        if not _NAME_RE.match(self.name):
            raise ValueError(f"tool name {self.name!r} must match {_NAME_RE.pattern}")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"tool {self.name}: timeout_s must be positive, got {timeout_s}")
        doc = _parse_docstring(inspect.getdoc(fn) or "")
        self.description = description if description is not None else doc.description
        self.read_only = read_only
        self.timeout_s = timeout_s
        self._is_async = inspect.iscoroutinefunction(fn)
        parameters, self._args = _build_parameters(fn, self.name, doc.params)
        self.schema: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "parameters": parameters,
        }

    def __call__(self, **kwargs: Any) -> Any:
        """Call the function as-is (an async tool returns a coroutine); no validation."""
        return self.fn(**kwargs)

    async def invoke(self, arguments: dict[str, Any] | None) -> Any:
        """Validate the model's arguments and run the tool.

        Parameters
        ----------
        arguments : dict or None
            The parsed JSON object of the call's arguments; None means no arguments.

        Returns
        -------
        Any
            What the function returned. A sync function runs in a worker thread
            (``asyncio.to_thread``) so it never blocks the event loop.

        Raises
        ------
        ToolArgumentError
            If ``arguments`` is not an object, names an unknown parameter, lacks a required one
            or has a value of the wrong JSON type.
        ToolError
            Whatever the tool raised; ``tool`` is filled in with this tool's name if empty.
        """
        kwargs = self.validate(arguments)
        try:
            if self._is_async:
                return await self.fn(**kwargs)
            return await asyncio.to_thread(self.fn, **kwargs)
        except ToolError as exc:
            if not exc.tool:
                exc.tool = self.name
            raise

    def validate(self, arguments: dict[str, Any] | None) -> dict[str, Any]:
        """The keyword arguments for the function, or :class:`ToolArgumentError`.

        Parameters the model left out are not passed, so the function's own defaults apply.
        """
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ToolArgumentError(
                f"{self.name}: arguments must be a JSON object, got {type(arguments).__name__}",
                tool=self.name,
            )
        try:
            converted = msgspec.convert(arguments, self._args)
        except msgspec.ValidationError as exc:
            raise ToolArgumentError(
                f"{self.name}: {_explain(str(exc), self.schema['parameters'])}", tool=self.name
            ) from None
        return {
            field: value
            for field in self._args.__struct_fields__
            if (value := getattr(converted, field)) is not msgspec.UNSET
        }

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, read_only={self.read_only}, timeout_s={self.timeout_s})"

    def __reduce__(self) -> tuple[Any, ...]:
        # A tool travels to the ToolActor by pickling. The argument Struct is a class made at
        # run time, which does not survive pickling by value intact, so the receiver rebuilds
        # the tool from its function instead.
        return (_rebuild_tool, (self.fn, self.name, self.description, self.read_only, self.timeout_s))


def _rebuild_tool(
    fn: Callable[..., Any], name: str, description: str, read_only: bool, timeout_s: float | None
) -> Tool:
    return Tool(fn, name=name, description=description, read_only=read_only, timeout_s=timeout_s)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    timeout_s: float | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    timeout_s: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` from a function; usable bare (``@tool``) or with options.

    Parameters
    ----------
    fn : callable
        A sync or async function whose parameters are all JSON-typed keyword parameters
        (``str``, ``int``, ``float``, ``bool``, ``list[X]``, ``dict[str, X]``, ``X | None``,
        ``Literal[...]``, msgspec Structs, TypedDicts ...).
    name : str, optional
        The tool's name; the function's name by default.
    description : str, optional
        Overrides the description taken from the docstring.
    read_only : bool, default False
        The tool changes nothing (safe to cache, retry and run in parallel).
    timeout_s : float, optional
        Time limit for one call, in seconds, enforced by the pipeline.

    Returns
    -------
    Tool
        Or a decorator making one, when called with options only.

    Raises
    ------
    TypeError
        If a parameter is positional-only, variadic (``*args``/``**kwargs``) or has an annotation
        with no JSON Schema.
    ValueError
        If the name is not ``[A-Za-z0-9_-]{1,64}`` or ``timeout_s`` is not positive.
    """

    def make(f: Callable[..., Any]) -> Tool:
        return Tool(f, name=name, description=description, read_only=read_only, timeout_s=timeout_s)

    return make(fn) if fn is not None else make


# --- schema -------------------------------------------------------------------------------------


def _build_parameters(
    fn: Callable[..., Any], tool_name: str, docs: dict[str, str]
) -> tuple[dict[str, Any], type[msgspec.Struct]]:
    """The ``parameters`` JSON Schema and the msgspec Struct that validates arguments."""
    sig = inspect.signature(fn)
    # get_type_hints resolves string annotations (``from __future__ import annotations``).
    hints = typing.get_type_hints(fn, include_extras=True)
    names: list[str] = []
    types: list[Any] = []
    fields: list[tuple[Any, ...]] = []
    required: list[str] = []
    defaults: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            raise TypeError(f"tool {tool_name}: parameter {p.name!r} must be passable by keyword")
        tp = hints.get(p.name, Any)
        names.append(p.name)
        types.append(tp)
        if p.default is p.empty:
            required.append(p.name)
            fields.append((p.name, tp))
        else:
            # UNSET marks "left out", so the function's own default applies rather than a copy.
            fields.append((p.name, typing.Union[tp, msgspec.UnsetType], msgspec.UNSET))
            defaults[p.name] = p.default
    try:
        # One schema_components call shares the $defs of Structs/TypedDicts between parameters.
        schemas, defs = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
        args = msgspec.defstruct(f"{tool_name}_args", fields, forbid_unknown_fields=True)
    except TypeError as exc:
        raise TypeError(f"tool {tool_name}: unsupported parameter annotation: {exc}") from None
    properties: dict[str, Any] = {}
    for pname, schema in zip(names, schemas):
        prop = _with_enum_type(dict(schema))
        if pname in docs:
            prop["description"] = docs[pname]
        if pname in defaults:
            try:
                prop["default"] = msgspec.to_builtins(defaults[pname])
            except TypeError:
                pass  # a default with no JSON form is still applied, just not advertised
        properties[pname] = prop
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    if defs:
        parameters["$defs"] = defs
    return parameters, args


_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),  # before int: bool is a subclass of int
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (type(None), "null"),
)


def _with_enum_type(schema: dict[str, Any]) -> dict[str, Any]:
    """Add ``type`` to a bare ``enum`` (some providers require it), recursing into ``anyOf``."""
    if "anyOf" in schema:
        schema["anyOf"] = [_with_enum_type(dict(s)) for s in schema["anyOf"]]
    if "enum" in schema and "type" not in schema:
        kinds = {next((n for t, n in _JSON_TYPES if isinstance(v, t)), None) for v in schema["enum"]}
        if len(kinds) == 1 and None not in kinds:
            schema = {"type": kinds.pop(), **schema}
    return schema


def _explain(message: str, parameters: dict[str, Any]) -> str:
    """Reword msgspec's validation message in terms of parameters, naming the one at fault."""
    if m := re.fullmatch(r"Object missing required field `(.+)`", message):
        return f"missing required parameter `{m.group(1)}`"
    if m := re.fullmatch(r"Object contains unknown field `(.+)`", message):
        accepted = ", ".join(parameters["properties"]) or "none"
        return f"unknown parameter `{m.group(1)}` (accepted: {accepted})"
    if m := re.fullmatch(r"(.+) - at `\$\.([^.\[`]+)(.*)`", message):
        what, param, rest = m.groups()
        where = f"parameter `{param}`" + (f" at `{param}{rest}`" if rest else "")
        return f"{where}: {what[0].lower()}{what[1:]}"
    return message


# --- docstrings ---------------------------------------------------------------------------------


class _Doc(msgspec.Struct):
    description: str
    params: dict[str, str]


_NUMPY_SECTION = re.compile(r"^([A-Z][A-Za-z ]*)\n-{3,}[ \t]*$", re.M)
_GOOGLE_SECTION = re.compile(r"^([A-Z][A-Za-z ]*):[ \t]*$", re.M)
_PARAM_SECTIONS = {"Parameters", "Args", "Arguments", "Keyword Arguments", "Other Parameters"}


def _parse_docstring(doc: str) -> _Doc:
    """Split a cleaned docstring into prose and per-parameter descriptions.

    Handles numpydoc (``Parameters`` + dashes, ``name : type`` then indented text) and Google
    style (``Args:`` then indented ``name (type): text``). Unknown layouts give the whole text
    as the description and no parameter descriptions.
    """
    numpy = list(_NUMPY_SECTION.finditer(doc))
    matches = numpy or [m for m in _GOOGLE_SECTION.finditer(doc) if _is_google_header(m.group(1))]
    if not matches:
        return _Doc(_squash(doc), {})
    params: dict[str, str] = {}
    for i, m in enumerate(matches):
        if m.group(1).strip() not in _PARAM_SECTIONS:
            continue
        end = matches[i + 1].start() if i + 1 < len(matches) else len(doc)
        body = doc[m.end() : end]
        params.update(_numpy_params(body) if numpy else _google_params(body))
    return _Doc(_squash(doc[: matches[0].start()]), params)


def _is_google_header(title: str) -> bool:
    return title in _PARAM_SECTIONS or title in {
        "Returns", "Return", "Yields", "Raises", "Examples", "Example", "Notes", "Note",
        "Attributes", "See Also", "Warnings", "Warning", "References", "Todo",
    }  # fmt: skip


def _numpy_params(body: str) -> dict[str, str]:
    out: dict[str, str] = {}
    current: list[str] = []
    for line in body.splitlines():
        if line and not line[0].isspace():
            current = []
            for name in line.split(":", 1)[0].split(","):
                out[name.strip().lstrip("*")] = ""
                current.append(name.strip().lstrip("*"))
        elif current and line.strip():
            for name in current:
                out[name] = f"{out[name]} {line.strip()}".strip()
    return {k: v for k, v in out.items() if v}


def _google_params(body: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = [ln for ln in body.splitlines() if ln.strip()]
    if not lines:
        return out
    indent = len(lines[0]) - len(lines[0].lstrip())
    name = ""
    for line in lines:
        depth = len(line) - len(line.lstrip())
        if depth < indent:
            break
        if depth == indent and (m := re.match(r"\s*\**(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)", line)):
            name = m.group(1)
            out[name] = m.group(2).strip()
        elif name:
            out[name] = f"{out[name]} {line.strip()}".strip()
    return {k: v for k, v in out.items() if v}


def _squash(text: str) -> str:
    """Paragraphs joined by a blank line, lines within a paragraph joined by a space."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())

