"""raygent.store: one contract suite run against SQLite and against a real PostgreSQL server.

The PostgreSQL server is the session's ``postgres`` fixture (``tests/_postgres.py``: started
locally on 127.0.0.1, stopped by PID); each test gets its own database on it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

from raygent.errors import RaygentError, SequenceGap, StoreConflict, StoreError
from raygent.messages import AssistantMessage, Message, SystemMessage, ToolCall, ToolMessage, UserMessage
from raygent.store import PostgresStore, SessionStore, SQLiteStore, default_path

from _postgres import free_port


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request, tmp_path) -> Iterator[Callable[[], SessionStore]]:
    """Opens stores on one fresh database (several calls: several connections to it)."""
    opened: list[SessionStore] = []
    if request.param == "sqlite":
        path = tmp_path / "sessions.db"

        def make() -> SessionStore:
            opened.append(SQLiteStore(path))
            return opened[-1]
    else:
        conninfo = request.getfixturevalue("postgres").new_database()

        def make() -> SessionStore:
            opened.append(PostgresStore(conninfo))
            return opened[-1]

    make.target = str(path) if request.param == "sqlite" else conninfo  # type: ignore[attr-defined]
    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for store in opened:
        store.close()


HISTORY: list[Message] = [
    SystemMessage(content="You are a coding agent."),
    UserMessage(content="Where is the ANSI stripper?"),
    AssistantMessage(content="", tool_calls=[ToolCall(id="call_1", name="grep", arguments={"pattern": "ansi"})]),
    ToolMessage(call_id="call_1", name="grep", content="rust/src/ansi.rs:1: //! ECMA-48 stripping"),
    AssistantMessage(content="In rust/src/ansi.rs."),
]


# --- the contract -------------------------------------------------------------------------------


def test_append_and_load_in_order(make_store):
    store = make_store()
    assert isinstance(store, SessionStore)
    assert store.append("s1", HISTORY[:2], start_seq=0) == 2
    assert store.append("s1", HISTORY[2:], start_seq=2) == 3
    assert store.load("s1") == HISTORY
    assert store.load("s1", after_seq=2) == HISTORY[3:]
    assert store.last_seq("s1") == 4
    assert store.load("unknown") == [] and store.last_seq("unknown") == -1


def test_replayed_append_is_idempotent(make_store):
    store = make_store()
    store.append("s1", HISTORY[:3], start_seq=0)
    # A crash after the commit but before the caller knew: the same append again, then more.
    assert store.append("s1", HISTORY[:3], start_seq=0) == 0
    assert store.append("s1", HISTORY[1:], start_seq=1) == 2  # overlaps 1..2, adds 3..4
    assert store.load("s1") == HISTORY
    assert store.last_seq("s1") == 4


def test_gap_is_refused_and_nothing_written(make_store):
    store = make_store()
    store.append("s1", HISTORY[:2], start_seq=0)
    with pytest.raises(SequenceGap) as err:
        store.append("s1", HISTORY[3:], start_seq=3)
    assert (err.value.expected, err.value.got, err.value.session_id) == (2, 3, "s1")
    assert isinstance(err.value, RaygentError)
    with pytest.raises(SequenceGap):
        store.append("s1", HISTORY[:1], start_seq=-1)
    assert store.load("s1") == HISTORY[:2]


def test_conflicting_replay_is_refused_and_nothing_written(make_store):
    store = make_store()
    store.append("s1", HISTORY[:3], start_seq=0)
    changed = [HISTORY[1], UserMessage(content="not what was stored"), HISTORY[3], HISTORY[4]]
    with pytest.raises(StoreConflict) as err:
        store.append("s1", changed, start_seq=1)  # 1 and 2 are replays; 2 differs
    assert (err.value.seq, err.value.session_id) == (2, "s1")
    # Neither the matching part nor the new tail was written.
    assert store.load("s1") == HISTORY[:3]


def test_checkpoints_record_state_turn_and_position(make_store):
    store = make_store()
    assert store.load_checkpoint("s1") is None
    store.append("s1", HISTORY[:3], start_seq=0)
    cp = store.checkpoint("s1", state="ExecutingTools", turn=1, metadata={"in_flight": ["call_1"], "read_only": True})
    assert (cp.state, cp.turn, cp.last_seq) == ("ExecutingTools", 1, 2)
    store.append("s1", HISTORY[3:], start_seq=3)
    loaded = store.load_checkpoint("s1")
    assert loaded == cp  # the checkpoint still says where it was taken, not where the session is now
    assert loaded.metadata == {"in_flight": ["call_1"], "read_only": True}
    store.checkpoint("s1", state="Idle", turn=2)
    last = store.load_checkpoint("s1")
    assert last is not None and (last.state, last.turn, last.last_seq, last.metadata) == ("Idle", 2, 4, {})
    # A checkpoint of a session without messages creates it.
    empty = store.checkpoint("s2", state="Idle", turn=0)
    assert empty.last_seq == -1 and store.load("s2") == []


def test_list_sessions_and_delete(make_store):
    store = make_store()
    store.append("a", HISTORY[:1], start_seq=0)
    store.append("b", HISTORY, start_seq=0)
    store.checkpoint("b", state="Idle", turn=3)
    infos = {i.session_id: i for i in store.list_sessions()}
    assert set(infos) == {"a", "b"}
    assert (infos["a"].messages, infos["a"].state, infos["a"].turn) == (1, None, None)
    assert (infos["b"].messages, infos["b"].last_seq, infos["b"].state, infos["b"].turn) == (5, 4, "Idle", 3)
    assert store.list_sessions()[0].session_id == "b"  # most recently updated first
    assert store.delete("a") is True and store.delete("a") is False
    assert [i.session_id for i in store.list_sessions()] == ["b"]
    assert store.load("a") == []


def test_survives_reopening(make_store):
    first = make_store()
    first.append("s1", HISTORY, start_seq=0)
    first.checkpoint("s1", state="Idle", turn=1)
    first.close()
    with pytest.raises(StoreError):
        first.load("s1")
    second = make_store()
    assert second.load("s1") == HISTORY
    assert second.load_checkpoint("s1") is not None


def test_two_connections_see_each_others_writes(make_store):
    a, b = make_store(), make_store()
    a.append("s1", HISTORY[:2], start_seq=0)
    assert b.append("s1", HISTORY[:4], start_seq=0) == 2
    assert a.load("s1") == HISTORY[:4]


_WRITER = textwrap.dedent(
    """
    import sys
    from raygent.messages import UserMessage
    from raygent.store import PostgresStore, SQLiteStore

    kind, target, writer = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = SQLiteStore(target) if kind == "sqlite" else PostgresStore(target)
    messages = [UserMessage(content=f"shared {i}") for i in range(60)]
    # Every writer replays the shared session's appends (as restarted actors would) and writes
    # its own session, interleaved.
    for i in range(0, 60, 3):
        store.append("shared", messages[i : i + 3], start_seq=i)
        store.append(f"own-{writer}", [UserMessage(content=f"{writer}:{i}")], start_seq=i // 3)
    store.close()
    """
)


def test_concurrent_writers_in_several_processes(make_store):
    store = make_store()  # creates the schema before the writers race
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, make_store.kind, make_store.target, str(w)], stderr=subprocess.PIPE, text=True)
        for w in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert store.load("shared") == [UserMessage(content=f"shared {i}") for i in range(60)]
    for w in range(3):
        assert store.load(f"own-{w}") == [UserMessage(content=f"{w}:{i}") for i in range(0, 60, 3)]


# --- SQLite specifics ---------------------------------------------------------------------------


def test_sqlite_default_file_under_the_workspace_in_wal_mode(tmp_path):
    with SQLiteStore(workspace=tmp_path) as store:
        store.append("s", HISTORY[:1], start_seq=0)
        mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert default_path(tmp_path) == tmp_path / ".raygent" / "sessions.db"
    assert default_path(tmp_path).is_file()


def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path):
    path = tmp_path / "sessions.db"
    store = SQLiteStore(path, timeout_s=0.5)
    store.append("s", HISTORY[:2], start_seq=0)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    writer.execute("INSERT INTO raygent_messages VALUES ('s', 2, x'c0')")
    try:
        assert store.load("s") == HISTORY[:2]  # the committed snapshot, at once
        assert store.last_seq("s") == 1 and [i.session_id for i in store.list_sessions()] == ["s"]
        with pytest.raises(StoreError):  # a write waits for the lock, then gives up
            store.append("s", HISTORY[2:3], start_seq=2)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert store.append("s", HISTORY[2:3], start_seq=2) == 1
    assert store.load("s") == HISTORY[:3]
    store.close()


def test_sqlite_not_a_database_is_a_typed_error(tmp_path):
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        SQLiteStore(bad)


def test_postgres_unreachable_is_a_typed_error():
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError):
        PostgresStore(f"host=127.0.0.1 port={free_port()} user=nobody connect_timeout=2", timeout_s=2)
