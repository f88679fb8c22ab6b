"""Durable session store: every message of a session, in order, and a checkpoint per turn.

:class:`SessionStore` is the seam (a ``typing.Protocol``); two implementations share one schema
and one set of rules:

- :class:`SQLiteStore`, the embedded default: a file under the workspace
  (``<workspace>/.raygent/sessions.db``), WAL journal so readers never wait for the writer,
  ``BEGIN IMMEDIATE`` so concurrent writers (threads or processes) queue on SQLite's lock
  (for up to ``timeout_s``) instead of failing halfway;
- :class:`PostgresStore` for clusters, where a node-local file would not survive its node
  (psycopg 3, the ``postgres`` extra): each append locks its session's row.

The rules. A session's messages are numbered ``0, 1, 2 ...`` (``seq``); an append names the
number of its first message. Appending a number already stored is a replay (a retried write
after a crash): the stored bytes are compared, equal ones are skipped, different ones refuse the
whole append (:class:`~raygent.errors.StoreConflict`). A first number past the next free one
would leave a hole and is refused too (:class:`~raygent.errors.SequenceGap`). Either way the
append writes all of its new messages or none, so a history never has a lost or a doubled
message. Messages are stored as their msgpack encoding (:func:`raygent.messages.encode`).

Schema (both databases)::

    raygent_sessions(session_id PK, created_at, updated_at, last_seq, state, turn,
                     checkpoint_seq, checkpoint_at, metadata)
    raygent_messages(session_id, seq, data, PRIMARY KEY (session_id, seq))
"""

from __future__ import annotations

import abc
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import msgspec

from raygent.errors import SequenceGap, StoreConflict, StoreError
from raygent.messages import Message, decode, encode

__all__ = ["SessionStore", "SessionInfo", "Checkpoint", "SQLiteStore", "PostgresStore", "default_path"]


class SessionInfo(msgspec.Struct, frozen=True):
    """One stored session as :meth:`SessionStore.list_sessions` reports it.

    Attributes
    ----------
    session_id : str
    messages : int
        Messages stored (``last_seq + 1``).
    last_seq : int
        Sequence number of the last message, -1 when there is none.
    state : str or None
        Agent state at the last checkpoint (``"Idle"``, ``"ExecutingTools"`` ...), None before one.
    turn : int or None
        Turn number at the last checkpoint.
    created_at, updated_at : float
        Wall-clock seconds since the epoch of the first write and of the last one.
    """

    session_id: str
    messages: int
    last_seq: int
    state: str | None
    turn: int | None
    created_at: float
    updated_at: float


class Checkpoint(msgspec.Struct, frozen=True):
    """Where a session stood at its last checkpoint.

    Attributes
    ----------
    session_id : str
    state : str
        The agent state (``raygent.state.AgentState`` value).
    turn : int
        The turn number the caller gave.
    last_seq : int
        The session's last message number when the checkpoint was written (-1: no message), so a
        recovery knows which messages came after it.
    metadata : dict
        What the caller stored beside it (msgpack-encodable values).
    at : float
        Wall-clock seconds since the epoch.
    """

    session_id: str
    state: str
    turn: int
    last_seq: int
    metadata: dict[str, Any]
    at: float


@runtime_checkable
class SessionStore(Protocol):
    """Durable, ordered message history and checkpoints of many sessions.

    Implementations are safe to share between threads; :class:`SQLiteStore` and
    :class:`PostgresStore` are also safe for writers in several processes at once.
    """

    def append(self, session_id: str, messages: Sequence[Message], *, start_seq: int) -> int:
        """Store ``messages`` as numbers ``start_seq, start_seq + 1 ...``; return how many were new.

        Raises
        ------
        raygent.errors.SequenceGap
            ``start_seq`` is past the session's next free number; nothing written.
        raygent.errors.StoreConflict
            A number already stored holds a different message; nothing written.
        raygent.errors.StoreError
            The database failed.
        """
        ...

    def load(self, session_id: str, *, after_seq: int = -1) -> list[Message]:
        """The session's messages numbered above ``after_seq``, in order ([] for an unknown session)."""
        ...

    def last_seq(self, session_id: str) -> int:
        """Number of the session's last message, -1 when it has none or does not exist."""
        ...

    def checkpoint(
        self, session_id: str, *, state: str, turn: int, metadata: dict[str, Any] | None = None
    ) -> Checkpoint:
        """Record the session's state and turn (after its messages so far); return the checkpoint."""
        ...

    def load_checkpoint(self, session_id: str) -> Checkpoint | None:
        """The session's last checkpoint, None if it has none."""
        ...

    def list_sessions(self) -> list[SessionInfo]:
        """Every stored session, most recently updated first."""
        ...

    def delete(self, session_id: str) -> bool:
        """Remove a session and its messages; False if it did not exist."""
        ...

    def close(self) -> None:
        """Release the connection; the store is unusable afterwards."""
        ...


def default_path(workspace: str | Path) -> Path:
    """``<workspace>/.raygent/sessions.db``, the embedded store's default file."""
    return Path(workspace) / ".raygent" / "sessions.db"


_META = msgspec.msgpack.Encoder()
_META_DECODER = msgspec.msgpack.Decoder(dict[str, Any])


class _SQLStore(abc.ABC):
    """The rules of the module docstring over a DB-API connection; dialects fill in the SQL."""

    _ph = "?"  # DB-API paramstyle marker: qmark for sqlite3 (psycopg uses %s)
    _for_update = ""  # row lock clause inside a transaction
    _errors: tuple[type[BaseException], ...] = ()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False

    @abc.abstractmethod
    def _transaction(self, write: bool = True) -> contextlib.AbstractContextManager[Any]:
        """One database transaction, yielding a cursor; committed on exit, rolled back on error.

        ``write=False`` marks a read-only one, which need not wait for writers.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection; the store is unusable afterwards."""

    def _q(self, sql: str) -> str:
        return sql.replace("?", self._ph) if self._ph != "?" else sql

    @contextlib.contextmanager
    def _tx(self, session_id: str, what: str, *, write: bool = True) -> Iterator[Any]:
        if self._closed:
            raise StoreError(f"{what}: the store is closed", session_id=session_id)
        with self._lock:
            try:
                with self._transaction(write) as cur:
                    yield cur
            except StoreError:
                raise
            except self._errors as exc:
                raise StoreError(f"{what} failed: {exc}", session_id=session_id) from exc

    def _session_row(self, cur: Any, session_id: str, now: float) -> tuple[int]:
        cur.execute(
            self._q(
                "INSERT INTO raygent_sessions (session_id, created_at, updated_at, last_seq) "
                "VALUES (?, ?, ?, -1) ON CONFLICT (session_id) DO NOTHING"
            ),
            (session_id, now, now),
        )
        cur.execute(
            self._q(f"SELECT last_seq FROM raygent_sessions WHERE session_id = ?{self._for_update}"),
            (session_id,),
        )
        row = cur.fetchone()
        return (int(row[0]),)

    def append(self, session_id: str, messages: Sequence[Message], *, start_seq: int) -> int:
        if start_seq < 0:
            raise SequenceGap(
                f"session {session_id!r}: sequence numbers start at 0, got {start_seq}",
                session_id=session_id,
                expected=0,
                got=start_seq,
            )
        encoded = [encode(m) for m in messages]
        if not encoded:
            return 0
        now = time.time()
        with self._tx(session_id, "append") as cur:
            (last,) = self._session_row(cur, session_id, now)
            expected = last + 1
            if start_seq > expected:
                raise SequenceGap(
                    f"session {session_id!r}: append starts at {start_seq} but the next number is "
                    f"{expected}; messages {expected}..{start_seq - 1} are missing",
                    session_id=session_id,
                    expected=expected,
                    got=start_seq,
                )
            replayed = min(expected, start_seq + len(encoded)) - start_seq
            if replayed > 0:
                cur.execute(
                    self._q(
                        "SELECT seq, data FROM raygent_messages WHERE session_id = ? AND seq >= ? "
                        "AND seq < ? ORDER BY seq"
                    ),
                    (session_id, start_seq, start_seq + replayed),
                )
                for seq, data in cur.fetchall():
                    if bytes(data) != encoded[seq - start_seq]:
                        raise StoreConflict(
                            f"session {session_id!r}: message {seq} is already stored with "
                            "different content; the append was refused",
                            session_id=session_id,
                            seq=seq,
                        )
            new = encoded[replayed:]
            if new:
                cur.executemany(
                    self._q("INSERT INTO raygent_messages (session_id, seq, data) VALUES (?, ?, ?)"),
                    [(session_id, expected + i, data) for i, data in enumerate(new)],
                )
                cur.execute(
                    self._q("UPDATE raygent_sessions SET last_seq = ?, updated_at = ? WHERE session_id = ?"),
                    (expected + len(new) - 1, now, session_id),
                )
            return len(new)

    def load(self, session_id: str, *, after_seq: int = -1) -> list[Message]:
        with self._tx(session_id, "load", write=False) as cur:
            cur.execute(
                self._q("SELECT data FROM raygent_messages WHERE session_id = ? AND seq > ? ORDER BY seq"),
                (session_id, after_seq),
            )
            rows = cur.fetchall()
        try:
            return [decode(bytes(row[0]), Message) for row in rows]
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise StoreError(f"session {session_id!r}: a stored message does not decode: {exc}", session_id=session_id) from exc

    def last_seq(self, session_id: str) -> int:
        with self._tx(session_id, "last_seq", write=False) as cur:
            cur.execute(self._q("SELECT last_seq FROM raygent_sessions WHERE session_id = ?"), (session_id,))
            row = cur.fetchone()
        return -1 if row is None else int(row[0])

    def checkpoint(
        self, session_id: str, *, state: str, turn: int, metadata: dict[str, Any] | None = None
    ) -> Checkpoint:
        now = time.time()
        meta = dict(metadata or {})
        blob = _META.encode(meta)
        with self._tx(session_id, "checkpoint") as cur:
            (last,) = self._session_row(cur, session_id, now)
            cur.execute(
                self._q(
                    "UPDATE raygent_sessions SET state = ?, turn = ?, checkpoint_seq = ?, checkpoint_at = ?, "
                    "metadata = ?, updated_at = ? WHERE session_id = ?"
                ),
                (state, turn, last, now, blob, now, session_id),
            )
        return Checkpoint(session_id=session_id, state=state, turn=turn, last_seq=last, metadata=meta, at=now)

    def load_checkpoint(self, session_id: str) -> Checkpoint | None:
        with self._tx(session_id, "load_checkpoint", write=False) as cur:
            cur.execute(
                self._q(
                    "SELECT state, turn, checkpoint_seq, metadata, checkpoint_at FROM raygent_sessions "
                    "WHERE session_id = ?"
                ),
                (session_id,),
            )
            row = cur.fetchone()
        if row is None or row[0] is None:
            return None
        state, turn, seq, blob, at = row
        meta = _META_DECODER.decode(bytes(blob)) if blob is not None else {}
        return Checkpoint(session_id=session_id, state=state, turn=int(turn), last_seq=int(seq), metadata=meta, at=float(at))

    def list_sessions(self) -> list[SessionInfo]:
        with self._tx("", "list_sessions", write=False) as cur:
            cur.execute(
                "SELECT session_id, last_seq, state, turn, created_at, updated_at FROM raygent_sessions "
                "ORDER BY updated_at DESC, session_id"
            )
            rows = cur.fetchall()
        return [
            SessionInfo(
                session_id=sid,
                messages=int(last) + 1,
                last_seq=int(last),
                state=state,
                turn=None if turn is None else int(turn),
                created_at=float(created),
                updated_at=float(updated),
            )
            for sid, last, state, turn, created, updated in rows
        ]

    def delete(self, session_id: str) -> bool:
        with self._tx(session_id, "delete") as cur:
            cur.execute(self._q("DELETE FROM raygent_messages WHERE session_id = ?"), (session_id,))
            cur.execute(self._q("DELETE FROM raygent_sessions WHERE session_id = ?"), (session_id,))
            return bool(cur.rowcount)

    def __enter__(self) -> _SQLStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS raygent_sessions (
        session_id TEXT PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        last_seq BIGINT NOT NULL,
        state TEXT,
        turn BIGINT,
        checkpoint_seq BIGINT,
        checkpoint_at DOUBLE PRECISION,
        metadata {blob}
    )""",
    """CREATE TABLE IF NOT EXISTS raygent_messages (
        session_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        data {blob} NOT NULL,
        PRIMARY KEY (session_id, seq)
    )""",
)


class SQLiteStore(_SQLStore):
    """:class:`SessionStore` in an SQLite file (stdlib ``sqlite3``), the embedded default.

    Parameters
    ----------
    path : str or Path, optional
        The database file; default ``<workspace>/.raygent/sessions.db`` (the folder is created).
        ``":memory:"`` keeps everything in this process (tests).
    workspace : str or Path, default "."
        The workspace whose ``.raygent/`` holds the default file.
    timeout_s : float, default 30.0
        How long a write waits for another connection's write (seconds) before
        :class:`~raygent.errors.StoreError`.
    synchronous : {"NORMAL", "FULL"}, default "NORMAL"
        SQLite's ``PRAGMA synchronous``. With WAL, ``NORMAL`` loses no committed message when a
        process crashes; ``FULL`` also keeps the last commits through a power loss, at an fsync
        per commit.

    Raises
    ------
    raygent.errors.StoreError
        If the file cannot be opened or is not an SQLite database.
    """

    _errors = (sqlite3.Error,)

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        workspace: str | Path = ".",
        timeout_s: float = 30.0,
        synchronous: str = "NORMAL",
    ) -> None:
        super().__init__()
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        if path is None:
            path = default_path(workspace)
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE below).
            self._conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            with self._transaction() as cur:
                for ddl in _SCHEMA:
                    cur.execute(ddl.format(blob="BLOB"))
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the session store at {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        # IMMEDIATE takes the write lock now: two writers that both read first and then upgrade
        # would deadlock (SQLITE_BUSY at once, busy_timeout notwithstanding). A read takes a
        # plain (deferred) transaction: under WAL it reads a snapshot while a writer commits.
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"


class PostgresStore(_SQLStore):
    """:class:`SessionStore` in PostgreSQL (psycopg 3), for clusters.

    Install with ``pip install 'raygent[postgres]'``. Each append runs in one transaction that
    locks its session's row (``SELECT ... FOR UPDATE``), so writers of different sessions run
    in parallel and writers of one session take turns.

    Parameters
    ----------
    conninfo : str
        A libpq connection string or URI (``"postgresql://user@host:5432/db"``).
    timeout_s : float, default 30.0
        Connect timeout and lock wait (``lock_timeout``) in seconds.

    Raises
    ------
    raygent.errors.StoreError
        If psycopg is not installed or the server cannot be reached.
    """

    _ph = "%s"
    _for_update = " FOR UPDATE"

    def __init__(self, conninfo: str, *, timeout_s: float = 30.0) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError("PostgresStore needs psycopg: pip install 'raygent[postgres]'") from exc
        self._errors = (psycopg.Error,)
        self.conninfo = conninfo
        try:
            self._conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=max(1, int(timeout_s)))
            self._conn.execute(f"SET lock_timeout = {int(timeout_s * 1000)}")
            with self._transaction() as cur:
                # CREATE TABLE IF NOT EXISTS races with itself across connections (a unique
                # violation in pg_type); a transaction-scoped advisory lock orders them.
                cur.execute("SELECT pg_advisory_xact_lock(7243911)")
                for ddl in _SCHEMA:
                    cur.execute(ddl.format(blob="BYTEA"))
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the PostgreSQL session store: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Any]:
        # MVCC: readers never wait for writers, so a read needs no mode of its own here.
        with self._conn.transaction(), self._conn.cursor() as cur:
            yield cur

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()

    def __repr__(self) -> str:
        return "PostgresStore(...)"
