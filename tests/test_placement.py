"""``raygent.init``'s placement settings: agent shards and the actor options a cluster user
gives raygent's agent and tool actors (real local Ray)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import raygent
from raygent.errors import ConfigError, RaygentError
from raygent.runtime import _SETTINGS

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


def test_actor_options_reach_the_agent_and_tool_actors(ray_cluster, settings, tmp_path):
    # A runtime_env is an actor option whose effect shows in the actor's own process.
    raygent.init(
        agent_actor_options={"runtime_env": {"env_vars": {"RAYGENT_PLACED": "agent"}}},
        tool_actor_options={"runtime_env": {"env_vars": {"RAYGENT_PLACED": "tools"}}},
    )
    agent = raygent.Agent(workspace=tmp_path, model="scripted", store=None)
    try:
        assert _environ(ray_cluster.get(agent._actor.pid.remote()))["RAYGENT_PLACED"] == "agent"
        assert _environ(ray_cluster.get(agent._tools.pid.remote()))["RAYGENT_PLACED"] == "tools"
        assert agent.run("hello").text
    finally:
        agent.close()
        from raygent.runtime import _SHARED_ACTORS

        # This workspace's tool actor carries the test's runtime_env: not for reuse.
        for key in [k for k in _SHARED_ACTORS if k[1].startswith("raygent-tools-")]:
            if _SHARED_ACTORS[key] is agent._tools:
                ray_cluster.kill(_SHARED_ACTORS.pop(key))


def test_an_unsatisfiable_resource_leaves_the_agent_actor_pending(ray_cluster, settings, tmp_path):
    raygent.init(agent_actor_options={"resources": {"raygent_test_nowhere": 1}})
    agent = raygent.Agent(workspace=tmp_path, model="scripted", store=None)
    try:
        ready, _ = ray_cluster.wait([agent._actor.pid.remote()], timeout=2.0)
        assert ready == []
    finally:
        ray_cluster.kill(agent._actor)


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
