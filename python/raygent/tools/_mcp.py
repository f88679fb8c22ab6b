"""MCP servers as tool sources: their tools join the registry and run through the same pipeline.

Follows the Model Context Protocol (revision 2025-06-18) as implemented by the official ``mcp``
Python SDK (``ClientSession`` over ``stdio_client`` or ``streamable_http_client``):

- :class:`MCPServer` describes a server as data (a msgspec Struct, so it travels to the
  ``ToolActor`` as msgpack): a command to spawn over stdio, or a streamable HTTP URL.
- :class:`MCPConnection` holds one live session. One asyncio task owns it from ``initialize`` to
  shutdown, because the SDK's transports are anyio task groups that must be entered and left by
  the same task; calls from any other task of the loop go through the session's streams.
- :class:`MCPTool` is one server tool seen as a raygent tool (``ToolLike``): its ``inputSchema``
  becomes the ``parameters`` the model sees, ``annotations.readOnlyHint: true`` makes it
  read-only (cached and run in parallel by the pipeline), anything else is mutating.
- :class:`MCPRegistry` opens each server once (per registry: one per workspace's ``ToolActor``)
  and checks names before anything is registered.

A result's text content is concatenated; images, audio, resource links and binary resources are
described in one bracketed line each (type, MIME type, size); a result with only
``structuredContent`` gives its JSON. ``isError: true`` and JSON-RPC errors become
:class:`MCPToolError` (a :class:`~raygent.errors.ToolError`), so the pipeline turns them into
error tool results naming the server and the tool.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import re
import shlex
import sys
from collections.abc import Collection, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import orjson

from raygent.errors import RaygentError, ToolArgumentError, ToolError

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp import types as mcp_types

# The SDK (pydantic, httpx, starlette ...) is imported on first connection, not with raygent:
# every Ray worker imports raygent, and most never speak MCP.

__all__ = [
    "MCPServer",
    "MCPConnection",
    "MCPTool",
    "MCPRegistry",
    "MCPError",
    "MCPConfigError",
    "MCPConnectError",
    "MCPToolError",
    "render_result",
]

# The names the providers accept (OpenAI and Anthropic): what a server's tool name is mapped to.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_INVALID_PARAMS = -32602  # JSON-RPC 2.0 "Invalid params"
_CANCEL_NOTICE_TIMEOUT_S = 1.0


# --- errors -------------------------------------------------------------------------------------


class MCPError(RaygentError):
    """An MCP server failed or is misconfigured; ``server`` names it (see :attr:`MCPServer.label`)."""

    def __init__(self, message: str, *, server: str) -> None:
        super().__init__(message)
        self.server = server


class MCPConfigError(MCPError, ValueError):
    """An :class:`MCPServer` description is invalid, or its tools' names collide."""


class MCPConnectError(MCPError):
    """A server could not be started or reached, or did not complete ``initialize`` and
    ``tools/list`` within ``connect_timeout_s``."""


class MCPToolError(ToolError):
    """A call of an MCP tool failed: ``isError`` result, JSON-RPC error, or a dead connection.

    Attributes
    ----------
    server : str
        The server's label.
    code : int or None
        The JSON-RPC error code, when the server answered with one.
    """

    def __init__(
        self, message: str, *, tool: str, server: str, kind: str = "error", code: int | None = None
    ) -> None:
        super().__init__(message, tool=tool, kind=kind)
        self.server = server
        self.code = code


# --- server descriptions ------------------------------------------------------------------------


class MCPServer(msgspec.Struct, frozen=True, kw_only=True):
    """An MCP server to connect to; build it with :meth:`stdio` or :meth:`http`.

    Attributes
    ----------
    transport : {"stdio", "http"}
        ``stdio``: spawn ``command`` and speak JSON-RPC over its stdin/stdout; ``http``: the
        streamable HTTP transport at ``url``.
    name : str
        Label used in errors and listings; default :attr:`label` derived from the command or URL.
    command : str
        Executable (stdio), looked up on ``PATH`` when not a path.
    args : list of str
        Its arguments (stdio).
    env : dict or None
        Variables added to the SDK's minimal default environment (``HOME``, ``PATH``, ``USER``
        ...); the parent's other variables, API keys included, are not passed (stdio).
    cwd : str or None
        Working directory of the server process (stdio); default: the registry's default (the
        workspace, in a ``ToolActor``), else the caller's.
    url : str
        Endpoint, e.g. ``http://127.0.0.1:8000/mcp`` (http).
    headers : dict
        Sent with every HTTP request (``Authorization`` ...) (http).
    prefix : str
        Prepended to every tool name of the server (``"gh_"`` makes ``search`` ``gh_search``),
        to avoid collisions between servers or with built-ins.
    timeout_s : float or None
        Time limit of one call of the server's tools, in seconds; None: the pipeline's default.
    connect_timeout_s : float
        Time limit to start the server, ``initialize`` and list its tools, in seconds.
    """

    transport: Literal["stdio", "http"]
    name: str = ""
    command: str = ""
    args: list[str] = []
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str = ""
    headers: dict[str, str] = {}
    prefix: str = ""
    timeout_s: float | None = None
    connect_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        label = self.label
        if self.transport == "stdio" and not self.command:
            raise MCPConfigError("an stdio MCP server needs a command", server=label)
        if self.transport == "http" and not re.match(r"^https?://", self.url):
            raise MCPConfigError(f"MCP server URL must be http(s)://..., got {self.url!r}", server=label)
        if self.prefix and not re.fullmatch(r"[A-Za-z0-9_-]+", self.prefix):
            raise MCPConfigError(f"prefix must match [A-Za-z0-9_-]+, got {self.prefix!r}", server=label)
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise MCPConfigError(f"timeout_s must be positive, got {self.timeout_s}", server=label)
        if self.connect_timeout_s <= 0:
            raise MCPConfigError(
                f"connect_timeout_s must be positive, got {self.connect_timeout_s}", server=label
            )

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        name: str = "",
        prefix: str = "",
        timeout_s: float | None = None,
        connect_timeout_s: float = 30.0,
    ) -> MCPServer:
        """A server spawned as a subprocess, spoken to over its stdin/stdout.

        Raises
        ------
        MCPConfigError
            Empty command, bad prefix, or a non-positive timeout.
        """
        return cls(
            transport="stdio",
            name=name,
            command=command,
            args=[str(a) for a in args],
            env=dict(env) if env is not None else None,
            cwd=os.fspath(cwd) if cwd is not None else None,
            prefix=prefix,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
        )

    @classmethod
    def http(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        name: str = "",
        prefix: str = "",
        timeout_s: float | None = None,
        connect_timeout_s: float = 30.0,
    ) -> MCPServer:
        """A server reached over the streamable HTTP transport at ``url``.

        Raises
        ------
        MCPConfigError
            A URL that is not ``http(s)://``, bad prefix, or a non-positive timeout.
        """
        return cls(
            transport="http",
            name=name,
            url=url,
            headers=dict(headers or {}),
            prefix=prefix,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
        )

    @property
    def label(self) -> str:
        """``name`` if given, else ``stdio: <command line>`` or ``http: <url>``."""
        if self.name:
            return self.name
        if self.transport == "stdio":
            return "stdio: " + shlex.join([self.command, *self.args])
        return f"http: {self.url}"

    @property
    def key(self) -> bytes:
        """Identity of the server: two equal descriptions share one connection."""
        return msgspec.msgpack.encode(self)


# --- results ------------------------------------------------------------------------------------


def _size_of_base64(data: str) -> str:
    try:
        return f"{len(base64.b64decode(data, validate=False))} bytes"
    except (binascii.Error, ValueError):
        return f"{len(data)} base64 characters"


def _describe(block: Any) -> str:
    """One content block as text: text as is, anything else described in brackets."""
    from mcp import types as mcp_types

    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.ImageContent):
        return f"[image: {block.mimeType}, {_size_of_base64(block.data)}]"
    if isinstance(block, mcp_types.AudioContent):
        return f"[audio: {block.mimeType}, {_size_of_base64(block.data)}]"
    if isinstance(block, mcp_types.ResourceLink):
        mime = f", {block.mimeType}" if block.mimeType else ""
        return f"[resource link: {block.uri} ({block.name}{mime})]"
    if isinstance(block, mcp_types.EmbeddedResource):
        res = block.resource
        mime = f", {res.mimeType}" if res.mimeType else ""
        if isinstance(res, mcp_types.TextResourceContents):
            return f"[resource: {res.uri}{mime}]\n{res.text}"
        return f"[resource: {res.uri}{mime}, {_size_of_base64(res.blob)}]"
    return f"[{getattr(block, 'type', type(block).__name__)} content]"


def render_result(result: mcp_types.CallToolResult) -> str:
    """The text a ``tools/call`` result gives the model.

    Parameters
    ----------
    result : mcp.types.CallToolResult
        The server's answer.

    Returns
    -------
    str
        The content blocks in order, joined by newlines: text as is, other blocks described as
        ``[image: image/png, 68 bytes]``, ``[audio: ...]``, ``[resource link: URI (name, mime)]``,
        ``[resource: URI, mime]`` followed by an embedded text resource's text. With no content
        blocks, the JSON of ``structuredContent`` (or ``""``).
    """
    if result.content:
        return "\n".join(_describe(b) for b in result.content)
    if result.structuredContent is not None:
        return orjson.dumps(result.structuredContent).decode()
    return ""


# --- tools --------------------------------------------------------------------------------------


def _parameters(input_schema: Mapping[str, Any]) -> dict[str, Any]:
    # Providers want an object schema with properties, which the MCP spec does not require.
    params = dict(input_schema)
    params.setdefault("type", "object")
    params.setdefault("properties", {})
    return params


def _validator(schema: dict[str, Any]) -> Any:
    """A jsonschema validator of the tool's arguments, or None when the schema itself is invalid
    (then the server alone judges the arguments)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        return None
    return cls(schema)


class MCPTool:
    """One tool of an MCP server, as the pipeline and the model see it (``ToolLike``).

    Attributes
    ----------
    name : str
        The registry name: ``server.prefix`` + the server's tool name, with characters outside
        ``[A-Za-z0-9_-]`` replaced by ``_`` (at most 64 characters).
    remote_name : str
        The tool's name on the server.
    description : str
        The server's description (or title).
    schema : dict
        ``{"name", "description", "parameters"}`` with ``parameters`` the tool's ``inputSchema``.
    read_only : bool
        ``annotations.readOnlyHint`` is true.
    timeout_s : float or None
        The server's ``timeout_s``.
    server : MCPServer
        Where it runs.
    """

    __slots__ = ("name", "remote_name", "description", "schema", "read_only", "timeout_s", "server",
                 "_connection", "_validator")  # fmt: skip

    def __init__(self, spec: mcp_types.Tool, server: MCPServer, connection: MCPConnection) -> None:
        self.remote_name = spec.name
        self.name = _BAD_NAME_CHARS.sub("_", server.prefix + spec.name)
        if not _NAME_RE.match(self.name):
            raise MCPConfigError(
                f"tool {spec.name!r} of MCP server {server.label!r} gives the name {self.name!r}, "
                "which is longer than 64 characters or empty",
                server=server.label,
            )
        annotations = spec.annotations
        title = spec.title or (annotations.title if annotations else None)
        self.description = spec.description or title or ""
        self.read_only = bool(annotations is not None and annotations.readOnlyHint)
        self.timeout_s = server.timeout_s
        self.server = server
        parameters = _parameters(spec.inputSchema)
        self.schema: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "parameters": parameters,
        }
        self._connection = connection
        self._validator = _validator(parameters)

    async def invoke(self, arguments: dict[str, Any] | None) -> str:
        """Check the arguments against ``inputSchema`` and call the tool on its server.

        Returns
        -------
        str
            :func:`render_result` of the server's answer.

        Raises
        ------
        ToolArgumentError
            ``arguments`` is not an object or does not match the tool's ``inputSchema``.
        MCPToolError
            The server reported ``isError``, answered with a JSON-RPC error (kind
            ``bad_arguments`` for "Invalid params"), or the connection is closed (the server
            exited or cannot be reached).
        """
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ToolArgumentError(
                f"{self.name}: arguments must be a JSON object, got {type(arguments).__name__}",
                tool=self.name,
            )
        if self._validator is not None:
            from jsonschema.exceptions import best_match

            error = best_match(self._validator.iter_errors(arguments))
            if error is not None:
                where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
                at = f" at `{where.lstrip('.')}`" if where else ""
                raise ToolArgumentError(f"{self.name}: arguments{at}: {error.message}", tool=self.name)
        return await self._connection.call(self, arguments)

    def __repr__(self) -> str:
        return f"MCPTool(name={self.name!r}, server={self.server.label!r}, read_only={self.read_only})"


# --- connections --------------------------------------------------------------------------------


class MCPConnection:
    """One live session with an MCP server, owned by one task of the running event loop.

    Parameters
    ----------
    server : MCPServer
        What to connect to.
    default_cwd : str, optional
        Working directory of a stdio server that names none.
    """

    def __init__(self, server: MCPServer, *, default_cwd: str | None = None) -> None:
        self.server = server
        self.default_cwd = default_cwd
        self.tools: list[MCPTool] = []
        self.server_info: mcp_types.Implementation | None = None
        self._session: ClientSession | None = None
        self._closing: asyncio.Event | None = None
        self._owner: asyncio.Task[None] | None = None
        self._lost: str | None = None
        self._calls: set[asyncio.Task[Any]] = set()
        self._dropped: set[asyncio.Task[Any]] = set()

    @property
    def session(self) -> ClientSession | None:
        """The SDK's ``ClientSession`` while connected (for resources, prompts ...), else None."""
        return self._session

    @property
    def connected(self) -> bool:
        """True between a successful :meth:`open` and :meth:`aclose` (or the owner's failure)."""
        return self._session is not None

    async def open(self) -> list[MCPTool]:
        """Start or reach the server, ``initialize``, and list its tools (all pages).

        Returns
        -------
        list of MCPTool

        Raises
        ------
        MCPConnectError
            The command cannot be spawned, the URL cannot be reached, the server exits or answers
            with an error, or all this takes longer than ``connect_timeout_s``. Nothing is left
            running then.
        MCPConfigError
            A tool's name cannot be mapped to a valid tool name.
        RuntimeError
            The connection was already opened.
        """
        if self._owner is not None:
            raise RuntimeError(f"MCP connection to {self.server.label!r} was already opened")
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing = asyncio.Event()
        self._owner = asyncio.create_task(self._own(ready), name=f"mcp:{self.server.label}")
        try:
            await asyncio.shield(ready)
        except asyncio.CancelledError:
            await self.aclose()
            raise
        except BaseException:
            await asyncio.wait([self._owner])
            raise
        return self.tools

    def _transport(self) -> Any:
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        s = self.server
        if s.transport == "stdio":
            cwd = s.cwd if s.cwd is not None else self.default_cwd
            params = StdioServerParameters(command=s.command, args=list(s.args), env=s.env, cwd=cwd)
            return stdio_client(params, errlog=sys.stderr)
        client = create_mcp_http_client(headers=dict(s.headers) or None)
        return _http_transport(s.url, client)

    async def _own(self, ready: asyncio.Future[None]) -> None:
        from mcp import ClientSession

        s = self.server
        assert self._closing is not None
        deadline = asyncio.timeout(s.connect_timeout_s)
        try:
            async with deadline:
                async with AsyncExitStack() as stack:
                    read, write = await stack.enter_async_context(self._transport())
                    session = await stack.enter_async_context(ClientSession(read, write))
                    init = await session.initialize()
                    self.server_info = init.serverInfo
                    self.tools = await self._list_tools(session)
                    self._session = session
                    deadline.reschedule(None)
                    ready.set_result(None)
                    await self._closing.wait()
                    self._session = None
        except BaseException as exc:
            self._session = None
            if ready.done():
                self._lost = _cause(exc)
                # The SDK leaves requests in flight waiting forever when its transport dies
                # (a streamable HTTP server gone): end them with the reason.
                for task in self._calls:
                    self._dropped.add(task)
                    task.cancel()
                if not isinstance(exc, Exception):
                    raise
                return
            if isinstance(exc, MCPError):
                ready.set_exception(exc)
            elif isinstance(exc, TimeoutError) or deadline.expired():
                # The SDK's transports may turn the deadline's cancellation into another error
                # (BrokenResourceError from a pipe closed mid-write): the deadline is the cause.
                ready.set_exception(MCPConnectError(
                    f"MCP server {s.label!r} did not finish initialize and tools/list within "
                    f"{s.connect_timeout_s:g} s",
                    server=s.label,
                ))  # fmt: skip
            else:
                ready.set_exception(MCPConnectError(
                    f"cannot connect to MCP server {s.label!r}: {_cause(exc)}", server=s.label
                ))  # fmt: skip
            if not isinstance(exc, Exception):
                raise

    async def _list_tools(self, session: ClientSession) -> list[MCPTool]:
        tools: list[MCPTool] = []
        cursor: str | None = None
        while True:
            page = await session.list_tools(cursor=cursor)
            tools += [MCPTool(t, self.server, self) for t in page.tools]
            cursor = page.nextCursor
            if not cursor:
                return tools

    async def call(self, tool: MCPTool, arguments: dict[str, Any]) -> str:
        """Call ``tool`` on the server (arguments already checked); see :meth:`MCPTool.invoke`.

        When the caller is cancelled (the pipeline's timeout, a cancelled turn), the server is
        sent ``notifications/cancelled`` for the request, so it can stop the tool.
        """
        import anyio
        from mcp.shared.exceptions import McpError
        from mcp.types import CONNECTION_CLOSED

        session = self._session
        label = self.server.label
        if session is None:
            why = f" ({self._lost})" if self._lost else ""
            raise MCPToolError(
                f"MCP server {label!r} is not connected{why}; {tool.remote_name} was not called",
                tool=tool.name,
                server=label,
            )
        # The SDK numbers requests from this counter before its first await, so it is the id the
        # call will carry, which a cancellation notice must name; the SDK does not send one.
        request_id = session._request_id
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            result = await session.call_tool(tool.remote_name, arguments)
        except asyncio.CancelledError:
            if task in self._dropped and task.uncancel() == 0:
                raise MCPToolError(
                    f"MCP server {label!r} was lost during tools/call {tool.remote_name}: {self._lost}",
                    tool=tool.name,
                    server=label,
                ) from None
            await self._notify_cancelled(session, request_id)
            raise
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise MCPToolError(
                f"MCP server {label!r} is gone: the connection closed before tools/call "
                f"{tool.remote_name} could be sent (the server exited or cannot be reached)",
                tool=tool.name,
                server=label,
            ) from None
        except McpError as exc:
            code = exc.error.code
            if code == CONNECTION_CLOSED:
                raise MCPToolError(
                    f"MCP server {label!r} closed the connection during tools/call "
                    f"{tool.remote_name} (the server exited or cannot be reached)",
                    tool=tool.name,
                    server=label,
                    code=code,
                ) from None
            raise MCPToolError(
                f"MCP server {label!r} answered tools/call {tool.remote_name} with JSON-RPC error "
                f"{code}: {exc.error.message}",
                tool=tool.name,
                server=label,
                kind="bad_arguments" if code == _INVALID_PARAMS else "error",
                code=code,
            ) from None
        except Exception as exc:
            raise MCPToolError(
                f"MCP server {label!r} failed during tools/call {tool.remote_name}: {_cause(exc)}",
                tool=tool.name,
                server=label,
            ) from None
        finally:
            self._calls.discard(task)
            self._dropped.discard(task)
        text = render_result(result)
        if result.isError:
            raise MCPToolError(
                f"MCP tool {tool.remote_name} of server {label!r} reported an error: {text}",
                tool=tool.name,
                server=label,
            )
        return text

    async def _notify_cancelled(self, session: ClientSession, request_id: int) -> None:
        from mcp import types as mcp_types

        notice = mcp_types.ClientNotification(
            mcp_types.CancelledNotification(
                params=mcp_types.CancelledNotificationParams(
                    requestId=request_id, reason="cancelled by raygent"
                )
            )
        )
        # Shielded and bounded: the caller is being cancelled and must not wait on a stuck server.
        # A notice that cannot be sent is dropped: the server may already be gone.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(_CANCEL_NOTICE_TIMEOUT_S):
                await asyncio.shield(session.send_notification(notice))

    async def aclose(self) -> None:
        """Close the session and stop the server (stdio: its process is ended by the SDK)."""
        if self._owner is None:
            return
        assert self._closing is not None
        self._closing.set()
        if not self._owner.done():
            await asyncio.wait([self._owner])

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"MCPConnection({self.server.label!r}, {state}, tools={len(self.tools)})"


def _http_transport(url: str, client: Any) -> Any:
    """The streamable HTTP transport yielding ``(read, write)`` and closing ``client`` after it."""

    from mcp.client.streamable_http import streamable_http_client

    @asynccontextmanager
    async def transport() -> Any:
        async with client, streamable_http_client(url, http_client=client) as (read, write, _session_id):
            yield read, write

    return transport()


def _cause(exc: BaseException) -> str:
    """The innermost meaningful error of an (exception group of) transport failures."""
    from mcp.shared.exceptions import McpError

    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, McpError):
        return f"JSON-RPC error {exc.error.code}: {exc.error.message}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


# --- registry -----------------------------------------------------------------------------------


class MCPRegistry:
    """The MCP connections of one tool registry (a workspace's ``ToolActor``).

    Each server (equal :class:`MCPServer` descriptions) is connected once; later requests for it
    get the tools of the open connection.

    Parameters
    ----------
    default_cwd : str, optional
        Working directory of the stdio servers that name none (the workspace).
    """

    def __init__(self, *, default_cwd: str | None = None) -> None:
        self.default_cwd = default_cwd
        self._connections: dict[bytes, MCPConnection] = {}
        self._lock = asyncio.Lock()

    @property
    def connections(self) -> list[MCPConnection]:
        return list(self._connections.values())

    async def add(
        self,
        servers: Sequence[MCPServer],
        registry: Mapping[str, Any],
        builtin_names: Collection[str] = (),
    ) -> list[MCPTool]:
        """Connect the servers not yet connected and return the tools of all of ``servers``.

        Parameters
        ----------
        servers : sequence of MCPServer
            The servers, connected concurrently.
        registry : Mapping[str, ToolLike]
            Tools already registered (by name); the caller registers the returned tools in it.
        builtin_names : collection of str
            Names of built-in tools, which no MCP tool may take.

        Returns
        -------
        list of MCPTool
            The tools of every server in ``servers``, in server order.

        Raises
        ------
        MCPConnectError
            A server could not be connected (the message names it); the servers this call
            connected are closed again and nothing is registered.
        MCPConfigError
            A tool name is taken by a built-in, by another tool of the registry with a different
            schema, or by two of the new tools (use ``prefix``); nothing is registered.
        """
        async with self._lock:
            fresh: dict[bytes, MCPConnection] = {}
            for s in servers:
                if s.key not in self._connections and s.key not in fresh:
                    fresh[s.key] = MCPConnection(s, default_cwd=self.default_cwd)
            opened = await asyncio.gather(*(c.open() for c in fresh.values()), return_exceptions=True)
            failures = [e for e in opened if isinstance(e, BaseException)]
            try:
                if failures:
                    raise failures[0]
                tools = [t for s in servers for t in (self._connections.get(s.key) or fresh[s.key]).tools]
                _check_names(tools, fresh, registry, builtin_names)
            except BaseException:
                await asyncio.gather(*(c.aclose() for c in fresh.values()))
                raise
            self._connections.update(fresh)
            return tools

    async def aclose(self) -> None:
        """Close every connection (stdio servers exit); the registry can be used again after."""
        async with self._lock:
            connections, self._connections = list(self._connections.values()), {}
            await asyncio.gather(*(c.aclose() for c in connections))


def _check_names(
    tools: Sequence[MCPTool],
    fresh: Mapping[bytes, MCPConnection],
    registry: Mapping[str, Any],
    builtin_names: Collection[str],
) -> None:
    seen: dict[str, MCPTool] = {}
    for t in tools:
        label = t.server.label
        if t.name in builtin_names:
            raise MCPConfigError(
                f"tool {t.remote_name!r} of MCP server {label!r} collides with the built-in tool "
                f"{t.name!r}; give the server a prefix (MCPServer(..., prefix='x_'))",
                server=label,
            )
        other = seen.get(t.name)
        if other is not None and other is not t:
            raise MCPConfigError(
                f"tool name {t.name!r} is given by MCP servers {other.server.label!r} and {label!r}; "
                "give one of them a prefix",
                server=label,
            )
        seen[t.name] = t
        if t.server.key not in fresh:
            continue  # registered when its server was connected
        taken = registry.get(t.name)
        if taken is not None and not (isinstance(taken, MCPTool) and taken.server.key == t.server.key):
            owner = f"MCP server {taken.server.label!r}" if isinstance(taken, MCPTool) else "a user tool"
            raise MCPConfigError(
                f"tool name {t.name!r} of MCP server {label!r} is already registered on this "
                f"workspace by {owner}; give the server a prefix",
                server=label,
            )
