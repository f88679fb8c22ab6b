"""What a workspace's ``ToolActor`` was given, kept where its restarted self reads it back.

Ray restarts a dead ``ToolActor`` (``max_restarts=-1``) by running ``__init__`` again with the
constructor's arguments, so tools registered later (``add_tools``, ``add_mcp_servers``) would be
gone and the next call to one would fail ``not_found``. The actor therefore writes each
registration to a :class:`ToolRecord` before the registering call returns; the restarted actor
re-registers the user tools in ``__init__`` and reconnects the MCP servers before it runs the
next call.

Why the actor keeps the record, in Ray's GCS key-value store (``ray.experimental.internal_kv``),
rather than the agent side re-sending its tools after a restart: the ``ToolActor`` is shared by
every session of its workspace, so the first call after a restart may come from any session,
while each ``AgentActor`` knows only the tools it added; and the GCS outlives every worker
process (Ray keeps its named actors there too), so nothing has to notice the restart. The key
is the actor's id, which Ray keeps across restarts and never reuses, so a new actor of the same
name (a later job) starts empty. :meth:`ToolRecord.forget` removes the record when the actor is
closed; a driver that exits without ``raygent.shutdown()`` leaves it in the GCS (a few KiB)
until the cluster stops.

Outside a Ray actor (unit tests, a ``ToolActor`` built in-process) the record lives in a
:class:`MemoryKV`, which a test shares between two actors to play a restart.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import msgspec

from raygent.tools import MCPServer

__all__ = ["KeyValue", "MemoryKV", "RayKV", "ToolRecord"]

_log = logging.getLogger(__name__)


class KeyValue(Protocol):
    """A byte key-value store: the seam between :class:`ToolRecord` and where it lives."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...


class MemoryKV:
    """:class:`KeyValue` in a dict of this process (it dies with the process)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class RayKV:
    """:class:`KeyValue` in the Ray cluster's GCS (``ray.experimental.internal_kv``), under
    ``namespace``; usable from any worker of the cluster, and kept until the cluster stops."""

    def __init__(self, namespace: str = "raygent") -> None:
        from ray.experimental import internal_kv

        self._kv = internal_kv
        self.namespace = namespace

    def get(self, key: str) -> bytes | None:
        value = self._kv._internal_kv_get(key, namespace=self.namespace)
        return None if value is None else bytes(value)

    def put(self, key: str, value: bytes) -> None:
        self._kv._internal_kv_put(key, value, overwrite=True, namespace=self.namespace)

    def delete(self, key: str) -> None:
        self._kv._internal_kv_del(key, namespace=self.namespace)


class _Record(msgspec.Struct):
    # Tools by name, each pickled alone (cloudpickle, as Ray sent it) so one that cannot be
    # rebuilt after a restart does not take the others with it.
    tools: dict[str, bytes] = {}
    mcp_servers: list[MCPServer] = []


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Record)


class ToolRecord:
    """The user tools and MCP servers registered with one ``ToolActor``.

    Parameters
    ----------
    kv : KeyValue
        Where the record is kept.
    key : str
        The record's key in ``kv`` (one record per actor).
    """

    def __init__(self, kv: KeyValue, key: str) -> None:
        self.kv = kv
        self.key = key

    @classmethod
    def of_this_actor(cls) -> ToolRecord:
        """The record of the Ray actor running this code (GCS, keyed by the actor's id, which
        a restart keeps), or an empty in-memory one outside an actor."""
        import ray

        actor_id = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
        if actor_id is None:
            return cls(MemoryKV(), "tool-actor")
        return cls(RayKV(), f"tool-actor/{actor_id}")

    def _load(self) -> _Record:
        data = self.kv.get(self.key)
        return _Record() if data is None else _decoder.decode(data)

    def _save(self, record: _Record) -> None:
        self.kv.put(self.key, _encoder.encode(record))

    def tools(self) -> list[Any]:
        """The recorded user tools, rebuilt; one that cannot be (its function's module is not
        importable here any more) is left out and logged, the others are returned."""
        import ray.cloudpickle as cloudpickle

        rebuilt = []
        for name, blob in self._load().tools.items():
            try:
                rebuilt.append(cloudpickle.loads(blob))
            except Exception as exc:  # a user's pickle can raise anything
                _log.error("tool %r registered before the tool actor restarted cannot be rebuilt: %s", name, exc)
        return rebuilt

    def mcp_servers(self) -> list[MCPServer]:
        """The recorded MCP servers, in the order they were first added."""
        return self._load().mcp_servers

    def add_tools(self, tools: list[Any]) -> None:
        """Record user tools (a tool of a name already recorded replaces it).

        Raises
        ------
        pickle.PicklingError, TypeError
            A tool cannot be pickled (nothing is recorded then).
        """
        import ray.cloudpickle as cloudpickle

        blobs = {t.name: cloudpickle.dumps(t) for t in tools}
        record = self._load()
        record.tools = {**record.tools, **blobs}
        self._save(record)

    def add_mcp_servers(self, servers: list[MCPServer]) -> None:
        """Record MCP servers (a server already recorded, by :attr:`MCPServer.key`, is not
        recorded twice)."""
        record = self._load()
        known = {s.key for s in record.mcp_servers}
        for s in servers:
            if s.key not in known:
                known.add(s.key)
                record.mcp_servers = [*record.mcp_servers, s]
        self._save(record)

    def drop_mcp_servers(self) -> None:
        """Forget every MCP server (their connections were closed on purpose)."""
        record = self._load()
        if record.mcp_servers:
            record.mcp_servers = []
            self._save(record)

    def forget(self) -> None:
        """Remove the whole record (the actor is closing)."""
        self.kv.delete(self.key)
