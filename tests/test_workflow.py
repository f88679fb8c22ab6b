"""Workflows on a real local Ray cluster: each composition, early exit, failures, cycles, refs."""

import hashlib
import time

import pytest
import ray

import raygent
from raygent import RunResult, Step, Stop, Workflow, WorkflowError

pytestmark = pytest.mark.ray

# Steps that must not run touch a file in tmp_path: a real side effect seen outside Ray.


def test_sequential_passes_each_output_to_the_next_step(ray_cluster):
    wf = Workflow.sequential(
        Step("double", fn=lambda x: x * 2),
        Step("inc", fn=lambda x: x + 1),
        Step("show", fn=lambda x: f"value={x}"),
    )
    result = wf.run(20)
    assert result.output == "value=41"
    assert result.results == {"double": 40, "inc": 41, "show": "value=41"}
    assert result.stopped_by is None and result.skipped == []


def test_parallel_runs_every_step_on_the_input(ray_cluster):
    wf = Workflow.parallel(
        Step("upper", fn=str.upper),
        Step("length", fn=len),
        Step("reverse", fn=lambda s: s[::-1]),
    )
    assert wf.run("ray").output == {"upper": "RAY", "length": 3, "reverse": "yar"}


def test_dag_joins_branches_in_after_order(ray_cluster):
    wf = Workflow([
        Step("join", fn=lambda a, b: f"{a}|{b}", after=("left", "right")),
        Step("left", fn=lambda x: f"L{x}", after=("root",)),
        Step("right", fn=lambda x: f"R{x}", after=("root",)),
        Step("root", fn=lambda x: x + 1),
    ])
    assert wf.order.index("root") == 0 and wf.order[-1] == "join"
    result = wf.run(1)
    assert result.output == "L2|R2"
    assert result.iterations == {"root": 1, "left": 1, "right": 1, "join": 1}


def test_stop_ends_the_workflow_and_later_steps_never_run(ray_cluster, tmp_path):
    def check(x):
        (tmp_path / "check").touch()
        return Stop(f"gave up at {x}") if x > 10 else x

    def later(x):
        (tmp_path / "later").touch()
        return x

    wf = Workflow.sequential(
        Step("big", fn=lambda x: x * 100), Step("check", fn=check), Step("later", fn=later)
    )
    result = wf.run(1)
    assert result.stopped_by == "check" and result.output == "gave up at 100"
    assert result.skipped == ["later"] and "later" not in result.refs
    assert (tmp_path / "check").exists() and not (tmp_path / "later").exists()

    # Below the threshold the same workflow runs to its end: the stop is the step's decision.
    assert wf.run(0).output == 0 and (tmp_path / "later").exists()


def test_stop_if_predicate_ends_the_workflow(ray_cluster, tmp_path):
    wf = Workflow.sequential(
        Step("score", fn=lambda x: x, stop_if=lambda v: v >= 0.9),
        Step("refine", fn=lambda v: (tmp_path / "refine").touch()),
    )
    result = wf.run(0.95)
    assert result.stopped_by == "score" and result.output == 0.95
    assert not (tmp_path / "refine").exists()


def test_stop_does_not_wait_for_a_running_sibling(ray_cluster, tmp_path):
    go = tmp_path / "go"

    def slow(x):
        # Finishes only once the test says "go", which it does after the workflow returned:
        # so it cannot complete before the stop, however loaded the machine is.
        for _ in range(300):
            if go.exists():
                (tmp_path / "slow").touch()
                return x
            time.sleep(0.1)
        return x

    wf = Workflow.parallel(
        Step("fast", fn=lambda x: Stop("quick"), num_cpus=0), Step("slow", fn=slow, num_cpus=0)
    )
    # run() returns while slow still waits for "go": the stop does not wait for running steps.
    result = wf.run(1)
    assert not (tmp_path / "slow").exists()
    assert result.stopped_by == "fast" and result.output == "quick" and result.skipped == ["slow"]
    assert "slow" not in result.refs
    go.touch()


def test_failing_step_is_named_and_earlier_results_are_kept(ray_cluster, tmp_path):
    def explode(x):
        raise ValueError(f"bad value {x}")

    wf = Workflow.sequential(
        Step("first", fn=lambda x: x + 1),
        Step("second", fn=lambda x: [x, x]),
        Step("broken", fn=explode),
        Step("after", fn=lambda x: (tmp_path / "after").touch()),
    )
    with pytest.raises(WorkflowError) as info:
        wf.run(1)
    err = info.value
    assert err.step == "broken" and "'broken'" in str(err) and "bad value [2, 2]" in str(err)
    assert isinstance(err.__cause__, ValueError)
    assert set(err.refs) == {"first", "second"}
    assert err.results == {"first": 2, "second": [2, 2]}
    assert not (tmp_path / "after").exists()


def test_cycle_is_refused_before_anything_runs(tmp_path):
    steps = [
        Step("a", fn=lambda x: (tmp_path / "a").touch(), after=("c",)),
        Step("b", fn=lambda x: x, after=("a",)),
        Step("c", fn=lambda x: x, after=("b",)),
        Step("d", fn=lambda x: x),
    ]
    with pytest.raises(WorkflowError, match="cycle") as info:
        Workflow(steps)
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"} and len(cycle) == 4
    assert info.value.step in {"a", "b", "c"}
    # Each edge of the reported cycle is a real dependency, in execution direction.
    deps = {s.name: s.after for s in steps}
    assert all(prev in deps[nxt] for prev, nxt in zip(cycle, cycle[1:]))


def test_bad_graphs_and_steps_are_refused():
    with pytest.raises(WorkflowError, match="not a step"):
        Workflow([Step("a", fn=len, after=("ghost",))])
    with pytest.raises(WorkflowError, match="two steps"):
        Workflow([Step("a", fn=len), Step("a", fn=str)])
    with pytest.raises(WorkflowError, match="exactly one"):
        Step("a")
    with pytest.raises(WorkflowError, match="no agent"):
        Step("a", prompt="hi")
    with pytest.raises(WorkflowError, match="max_iterations"):
        Step("a", fn=len, max_iterations=0)
    with pytest.raises(WorkflowError, match="sets the order"):
        Workflow.sequential(Step("a", fn=len), Step("b", fn=len, after=("a",)))


def test_outputs_pass_by_reference_from_worker_to_worker(ray_cluster):
    size = 16 * 1024 * 1024

    def produce(seed):
        return bytes([seed]) * size

    def digest(data):
        # Resolved by Ray in this worker: the bytes, not a reference.
        assert isinstance(data, bytes)
        return len(data), hashlib.sha256(data).hexdigest()

    result = Workflow.sequential(Step("produce", fn=produce), Step("digest", fn=digest)).run(7)
    assert result.output == (size, hashlib.sha256(bytes([7]) * size).hexdigest())
    produced = result.refs["produce"]
    assert isinstance(produced, ray.ObjectRef)
    # The object is the return value of the producing task, created in its worker; a value
    # that went through the driver would be the driver's own put (its task id).
    driver_put = ray.put(b"x")
    assert produced.task_id() != driver_put.task_id()
    assert produced.task_id() != result.refs["digest"].task_id()


def test_loop_runs_until_its_predicate_or_its_bound(ray_cluster):
    until = Workflow.sequential(
        Step("grow", fn=lambda x: x * 2, max_iterations=50, until=lambda v: v >= 100),
        Step("done", fn=lambda v: f"reached {v}"),
    ).run(3)
    assert until.output == "reached 192" and until.iterations["grow"] == 6

    bounded = Workflow.sequential(
        Step("grow", fn=lambda x: x + 1, max_iterations=4, until=lambda v: False)
    ).run(0)
    assert bounded.output == 4 and bounded.iterations["grow"] == 4


def test_loop_step_can_stop_the_workflow(ray_cluster, tmp_path):
    wf = Workflow.sequential(
        Step("count", fn=lambda x: Stop(x) if x == 3 else x + 1, max_iterations=10),
        Step("never", fn=lambda x: (tmp_path / "never").touch()),
    )
    result = wf.run(0)
    assert result.stopped_by == "count" and result.output == 3 and result.iterations["count"] == 4
    assert not (tmp_path / "never").exists()


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "scheduler.py").write_text(
        "class Scheduler:\n    '''Round-robin scheduler for worker queues.'''\n"
        "    def next_worker(self):\n        return self.queue.pop(0)\n"
    )
    (tmp_path / "pkg" / "other.py").write_text("# unrelated\nVALUE = 1\n")
    return tmp_path


def test_agent_prompt_steps_in_a_dag(ray_cluster, workspace):
    finder = raygent.Agent(workspace=workspace, model="scripted")
    explainer = raygent.Agent(workspace=workspace, model="scripted")
    try:
        wf = Workflow([
            Step("topic", fn=lambda x: x.strip()),
            Step("find", prompt="Where is the {topic} scheduler?", agent=finder, after=("topic",)),
            Step("ask", prompt=lambda t: f"what does next_worker of the {t} return?",
                 agent=explainer, after=("topic",)),
            Step("report", fn=lambda f, a: (f, a), after=("find", "ask")),
        ])
        found, asked = wf.run("  round-robin ").output
        assert isinstance(found, RunResult) and isinstance(asked, RunResult)
        assert "pkg/scheduler.py" in found.text
        assert found.tool_calls[-1].arguments["path"] == "pkg/scheduler.py"
        # The prompts the agents got were built from the previous step's output.
        assert finder.history()[1].content == "Where is the round-robin scheduler?"
        assert explainer.history()[1].content == "what does next_worker of the round-robin return?"
    finally:
        finder.close()
        explainer.close()
