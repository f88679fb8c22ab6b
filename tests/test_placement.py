"""``raygent.init``'s placement settings: agent shards and the actor options a cluster user
gives raygent's agent and tool actors (real local Ray)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import raygent
from raygent.errors import ConfigError, RaygentError
from raygent.runtime import _SETTINGS, _SHARED_ACTORS, shard_of

pytestmark = pytest.mark.ray


@pytest.fixture
def settings():
    """Leaves the process's settings as it found them (the session cluster stays up)."""
    saved = (_SETTINGS.agent_shards, _SETTINGS.agent_actor_options, _SETTINGS.tool_actor_options)
    yield _SETTINGS
    _SETTINGS.agent_shards, _SETTINGS.agent_actor_options, _SETTINGS.tool_actor_options = saved


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)


def test_options_are_recorded_when_ray_is_already_initialized(ray_cluster, settings):
    assert ray_cluster.is_initialized()
    raygent.init(agent_shards=3, agent_actor_options={"resources": {"x": 1}})
    raygent.init(tool_actor_options={"num_cpus": 0.5})  # None leaves the others as they were
    assert settings.agent_shards == 3
    assert settings.agent_actor_options == {"resources": {"x": 1}}
    assert settings.tool_actor_options == {"num_cpus": 0.5}


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"agent_shards": 0}, "agent_shards"),
        ({"agent_shards": True}, "agent_shards"),
        ({"agent_actor_options": [("num_cpus", 1)]}, "agent_actor_options"),
        ({"agent_shards": 2, "agent_actor_options": {"namespace": "other"}}, "agent_actor_options"),
        ({"tool_actor_options": {"name": "mine"}}, "tool_actor_options"),
        ({"agent_actor_options": {"get_if_exists": False}}, "agent_actor_options"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(ray_cluster, settings, kwargs, setting):
    before = (settings.agent_shards, dict(settings.agent_actor_options), dict(settings.tool_actor_options))
    with pytest.raises(ConfigError) as err:
        raygent.init(**{"tool_actor_options": {"num_cpus": 0}, **kwargs})
    assert isinstance(err.value, RaygentError) and isinstance(err.value, ValueError)
    assert err.value.setting == setting and setting in str(err.value)
    assert (settings.agent_shards, settings.agent_actor_options, settings.tool_actor_options) == before


# Shards are named and shared: options apply to the ones created after them. These tests make
# their own shard, one index past those of the other tests, and remove it afterwards.
SHARDS = 64


def _id_on_fresh_shard() -> str:
    return next(sid for sid in (uuid.uuid4().hex for _ in range(100_000)) if shard_of(sid, SHARDS) == SHARDS - 1)


def _shard(ray) -> Any:
    """The test's shard, once its creation has reached the GCS (bounded: about 60 s)."""
    for _ in range(600):
        try:
            return ray.get_actor(f"raygent-agents-{SHARDS - 1}")
        except ValueError:
            time.sleep(0.1)
    raise AssertionError("the shard was never made")


def _drop_shard(ray) -> None:
    ray.kill(_shard(ray))


def test_actor_options_reach_the_agent_and_tool_actors(ray_cluster, settings, tmp_path):
    # A runtime_env is an actor option whose effect shows in the actor's own process.
    raygent.init(
        agent_shards=SHARDS,
        agent_actor_options={"runtime_env": {"env_vars": {"RAYGENT_PLACED": "agent"}}},
        tool_actor_options={"runtime_env": {"env_vars": {"RAYGENT_PLACED": "tools"}}},
    )
    agent = raygent.Agent(workspace=tmp_path, model="scripted", store=None, session_id=_id_on_fresh_shard())
    try:
        assert ray_cluster.get(agent._actor.session_ids.remote()) == [agent.session_id]
        assert _environ(ray_cluster.get(agent._actor.pid.remote()))["RAYGENT_PLACED"] == "agent"
        assert _environ(ray_cluster.get(agent._tools.pid.remote()))["RAYGENT_PLACED"] == "tools"
        assert agent.run("where is the scheduler?").tool_calls
    finally:
        agent.close()
        _drop_shard(ray_cluster)
        # This workspace's tool actor carries the test's runtime_env: not for reuse.
        for key in [k for k, h in _SHARED_ACTORS.items() if h is agent._tools]:
            ray_cluster.kill(_SHARED_ACTORS.pop(key))


def test_an_unsatisfiable_resource_leaves_the_agent_shard_pending(ray_cluster, settings, tmp_path):
    raygent.init(agent_shards=SHARDS, agent_actor_options={"resources": {"raygent_test_nowhere": 1}})
    outcome: list[BaseException | raygent.Agent] = []

    def make() -> None:
        try:
            outcome.append(raygent.Agent(workspace=tmp_path, model="scripted", store=None, session_id=_id_on_fresh_shard()))
        except BaseException as e:
            outcome.append(e)

    maker = threading.Thread(target=make, daemon=True)
    maker.start()
    shard = _shard(ray_cluster)
    ready, _ = ray_cluster.wait([shard.pid.remote()], timeout=2.0)
    # No node can host the shard: it stays pending, and the Agent waits for its session to open.
    assert ready == [] and maker.is_alive() and outcome == []
    # Killed, the pending shard is replaced by one made with the options of now.
    raygent.init(agent_actor_options={})
    ray_cluster.kill(shard)
    maker.join(timeout=120)
    assert len(outcome) == 1 and isinstance(outcome[0], raygent.Agent), outcome
    agent = outcome[0]
    try:
        assert agent.run("where is the scheduler?").tool_calls
    finally:
        agent.close()
        _drop_shard(ray_cluster)


def test_shutdown_forgets_the_settings(ray_cluster):
    # A second driver joins the session cluster, so its shutdown only disconnects it.
    address = ray_cluster.get_runtime_context().gcs_address
    code = (
        "import raygent\n"
        "from raygent.runtime import _SETTINGS as s\n"
        f"raygent.init(address={address!r}, agent_shards=2, agent_actor_options={{'num_cpus': 0}},"
        " tool_actor_options={'num_cpus': 0})\n"
        "assert (s.agent_shards, s.agent_actor_options, s.tool_actor_options) == (2, {'num_cpus': 0}, {'num_cpus': 0})\n"
        "raygent.shutdown()\n"
        "assert (s.agent_shards, s.agent_actor_options, s.tool_actor_options) == (None, {}, {})\n"
        "print('reset')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("reset")
