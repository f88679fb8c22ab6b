"""Shared fixtures: the real-data folder beside the project, one local Ray per session, and one
real PostgreSQL server per session (``tests/_postgres.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from _postgres import PostgresServer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (../shared/data beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster shared by the whole test session, shut down at the end."""
    import ray

    # "local": always a cluster of our own. With no address Ray joins the cluster named in
    # /tmp/ray/ray_current_cluster, which any `ray start` or ray.cluster_utils.Cluster on this
    # machine (another test run's) writes, and then refuses num_cpus.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1 for the whole test session, stopped by PID at the end.

    Take a fresh database per test with ``postgres.new_database()`` (a libpq conninfo string).
    Skips when psycopg or the PostgreSQL binaries are missing.
    """
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'raygent[postgres]')")
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()
