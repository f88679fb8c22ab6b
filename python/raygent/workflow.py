"""Workflows: agent prompts and Python functions composed as sequential, parallel, DAG and loop.

>>> wf = Workflow.sequential(
...     Step("find", prompt="Where is the scheduler? {input}", agent=raygent.Agent(".")),
...     Step("summarize", fn=lambda found: found.text.upper()),
... )
>>> wf.run("look in pkg/").output

Each step runs as a Ray task. Its output stays in Ray's object store: the driver hands the
next steps the :class:`ray.ObjectRef` and Ray resolves it in their worker, so large values
never travel through the driver. The driver only fetches a few bytes of control per step
(done, stop, loop again) to decide what to start next, which is what makes early exit exact:
a step that is not started by the time one stops never runs.
"""

from __future__ import annotations

import dataclasses
import graphlib
from collections.abc import Callable, Sequence
from typing import Any

import ray

from raygent.errors import WorkflowError
from raygent.runtime import Agent, RunResult

__all__ = ["Workflow", "Step", "Stop", "WorkflowResult"]

# What a step's task reports to the driver beside its output (a short string, never the value).
_NEXT, _STOP, _LOOP_DONE = "next", "stop", "loop_done"


@dataclasses.dataclass(frozen=True)
class Stop:
    """Returned by a step to end the whole workflow with ``value`` as its output.

    Steps not yet started never run; steps running at that moment are cancelled with
    ``ray.cancel`` (best effort: one may still finish, its output is dropped) and not waited for.
    """

    value: Any = None


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a :class:`Workflow`: a Python function, or a prompt run by an agent.

    A step gets the outputs of the steps named in ``after``, in that order, as positional
    arguments; a step with no ``after`` gets the workflow's ``input``. Iteration ``i > 1`` of a
    loop step gets the output of iteration ``i - 1`` instead.

    Parameters
    ----------
    name : str
        Unique within the workflow; other steps name it in ``after``.
    fn : callable, optional
        ``fn(*inputs) -> output``. Exactly one of ``fn`` and ``prompt``.
    prompt : str or callable, optional
        The user message for ``agent``: a ``str.format`` template whose fields are the names of
        the ``after`` steps (``"input"`` for a first step, the step's own name inside a loop),
        filled with their output (a :class:`~raygent.RunResult` gives its ``text``); or a
        callable ``prompt(*inputs) -> str``. The step's output is the :class:`RunResult`.
    agent : Agent, optional
        The agent that runs ``prompt`` (required with it). An agent runs one prompt at a time:
        give steps that may run at the same time different agents.
    after : sequence of str, default ()
        Steps whose outputs this step needs; it starts once they have all completed.
    stop_if : callable, optional
        ``stop_if(output) -> bool``; True ends the workflow after this step, as :class:`Stop`.
    max_iterations : int, default 1
        More than 1 makes the step a loop: it runs again on its own output until ``until``
        holds or this bound is reached; its output is the last iteration's.
    until : callable, optional
        ``until(output) -> bool``; True ends the loop (not the workflow).
    num_cpus : float, optional
        Ray CPUs the step's task holds. Default 1 for a function, 0 for an agent prompt (it
        waits on the agent's actor).

    Raises
    ------
    WorkflowError
        Neither or both of ``fn`` and ``prompt``, a prompt without an agent, an agent without a
        prompt, or ``max_iterations < 1``.
    """

    name: str
    fn: Callable[..., Any] | None = None
    prompt: str | Callable[..., str] | None = None
    agent: Agent | None = None
    after: Sequence[str] = ()
    stop_if: Callable[[Any], bool] | None = None
    max_iterations: int = 1
    until: Callable[[Any], bool] | None = None
    num_cpus: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "after", tuple(self.after))
        problem = None
        if (self.fn is None) == (self.prompt is None):
            problem = "needs exactly one of fn= and prompt="
        elif self.prompt is not None and self.agent is None:
            problem = "has a prompt but no agent="
        elif self.fn is not None and self.agent is not None:
            problem = "has an agent= but no prompt for it"
        elif self.max_iterations < 1:
            problem = f"has max_iterations={self.max_iterations}, must be at least 1"
        if problem:
            raise WorkflowError(f"step {self.name!r} {problem}", step=self.name)


@dataclasses.dataclass
class WorkflowResult:
    """What :meth:`Workflow.run` returns.

    Attributes
    ----------
    refs : dict of str to ray.ObjectRef
        The output of every step that completed, by name, still in Ray's object store.
    stopped_by : str or None
        The step that ended the workflow early (:class:`Stop` or ``stop_if``), else None.
    skipped : list of str
        Steps that did not complete because the workflow stopped early (never started or
        cancelled while running).
    iterations : dict of str to int
        How many times each completed step ran (1, or the rounds of a loop).
    sinks : list of str
        The steps no other step comes after, in the workflow's order.
    """

    refs: dict[str, Any]
    stopped_by: str | None
    skipped: list[str]
    iterations: dict[str, int]
    sinks: list[str]

    def __getitem__(self, name: str) -> Any:
        """The output of step ``name`` (fetched from Ray). Raises ``KeyError`` if it did not complete."""
        return ray.get(self.refs[name])

    @property
    def results(self) -> dict[str, Any]:
        """Every completed step's output, by name (fetched from Ray)."""
        return dict(zip(self.refs, ray.get(list(self.refs.values())), strict=True))

    @property
    def output(self) -> Any:
        """The workflow's answer: the stopping step's output if it stopped early; else the
        output of its one last step, or a dict of the last steps' outputs when there are
        several (a parallel workflow)."""
        if self.stopped_by is not None:
            return self[self.stopped_by]
        if len(self.sinks) == 1:
            return self[self.sinks[0]]
        return {name: self[name] for name in self.sinks}


class Workflow:
    """A DAG of :class:`Step`; ``sequential`` and ``parallel`` build the common shapes.

    Parameters
    ----------
    steps : sequence of Step
        Dependencies are each step's ``after``. The graph is checked here, before anything runs.

    Raises
    ------
    WorkflowError
        Two steps share a name, a step comes after an unknown step, or the steps form a cycle
        (``cycle`` lists it, e.g. ``["a", "b", "a"]``).
    """

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps: dict[str, Step] = {}
        for step in steps:
            if step.name in self.steps:
                raise WorkflowError(f"two steps are named {step.name!r}", step=step.name)
            self.steps[step.name] = step
        for step in steps:
            for dep in step.after:
                if dep not in self.steps:
                    raise WorkflowError(
                        f"step {step.name!r} comes after {dep!r}, which is not a step of the workflow",
                        step=step.name,
                    )
        sorter = graphlib.TopologicalSorter({s.name: s.after for s in steps})
        try:
            self.order: list[str] = list(sorter.static_order())
        except graphlib.CycleError as e:
            # Each node of CycleError's cycle comes before the next, the first repeated at the end.
            cycle = list(e.args[1])
            raise WorkflowError(
                f"the workflow's steps form a cycle: {' -> '.join(cycle)}", step=cycle[0], cycle=cycle
            ) from None
        needed = {dep for s in steps for dep in s.after}
        self.sinks = [name for name in self.order if name not in needed]

    @classmethod
    def sequential(cls, *steps: Step) -> Workflow:
        """Each step after the one before it: the first gets the input, the last gives the output.

        Raises
        ------
        WorkflowError
            A step already has ``after`` (the order here is the only dependency), or as
            :class:`Workflow`.
        """
        _refuse_after(steps, "sequential")
        chained = [dataclasses.replace(s, after=(p.name,)) for p, s in zip(steps, steps[1:], strict=False)]
        return cls([*steps[:1], *chained])

    @classmethod
    def parallel(cls, *steps: Step) -> Workflow:
        """Every step at once on the same input; the output is a dict of each step's output.

        Raises
        ------
        WorkflowError
            A step has ``after``, or as :class:`Workflow`.
        """
        _refuse_after(steps, "parallel")
        return cls(steps)

    def run(self, input: Any = None) -> WorkflowResult:
        """Run the workflow to its end, or until a step stops it.

        A step starts as soon as the steps it comes after have completed; independent steps
        run at the same time. Outputs pass between steps as Ray object references.

        Parameters
        ----------
        input : any, optional
            What the first steps (those with no ``after``) get.

        Returns
        -------
        WorkflowResult

        Raises
        ------
        WorkflowError
            A step raised: ``step`` names it, the cause is chained, and ``refs`` / ``results``
            keep the outputs of every step that completed before it. Steps still running
            are cancelled (best effort, as for :class:`Stop`).
        """
        input_ref = ray.put(input)
        done: dict[str, Any] = {}
        iterations: dict[str, int] = {}
        running: dict[Any, tuple[str, Any, int]] = {}  # control ref -> (step, output ref, iteration)

        def start(name: str, args: list[Any], iteration: int) -> None:
            step = self.steps[name]
            num_cpus = step.num_cpus if step.num_cpus is not None else (0 if step.agent else 1)
            out_ref, control_ref = _run_step.options(
                num_returns=2, num_cpus=num_cpus, name=f"workflow:{name}"
            ).remote(step, iteration, *args)
            running[control_ref] = (name, out_ref, iteration)

        def start_ready() -> None:
            started = {name for name, _, _ in running.values()}
            for name in self.order:
                step = self.steps[name]
                if name not in done and name not in started and all(d in done for d in step.after):
                    start(name, [done[d] for d in step.after] if step.after else [input_ref], 1)

        def stop_running() -> None:
            for _, out_ref, _ in running.values():
                ray.cancel(out_ref)

        start_ready()
        stopped_by = None
        while running:
            [control_ref], _ = ray.wait(list(running), num_returns=1)
            name, out_ref, iteration = running.pop(control_ref)
            try:
                control = ray.get(control_ref)
            except Exception as e:
                stop_running()
                _consume(out_ref)
                cause = getattr(e, "cause", None) or e
                raise WorkflowError(
                    f"step {name!r} failed: {type(cause).__name__}: {cause}", step=name, refs=done
                ) from cause
            step = self.steps[name]
            if control == _NEXT and iteration < step.max_iterations:
                start(name, [out_ref], iteration + 1)
                continue
            done[name] = out_ref
            iterations[name] = iteration
            if control == _STOP:
                stopped_by = name
                stop_running()
                break
            start_ready()
        return WorkflowResult(
            refs=done,
            stopped_by=stopped_by,
            skipped=[name for name in self.order if name not in done],
            iterations=iterations,
            sinks=self.sinks,
        )


def _consume(ref: Any) -> None:
    # The failed task's output ref holds the same error; reading it marks the error handled, or
    # Ray would log it again as "unhandled" when the ref is collected.
    try:
        ray.get(ref)
    except Exception:
        pass


def _refuse_after(steps: Sequence[Step], shape: str) -> None:
    for step in steps:
        if step.after:
            raise WorkflowError(
                f"step {step.name!r} has after={list(step.after)}, but a {shape} workflow sets the order",
                step=step.name,
            )


@ray.remote
def _run_step(step: Step, iteration: int, *inputs: Any) -> tuple[Any, str]:
    # Ray resolved ``inputs`` from the object store in this worker; only the control string
    # returned beside the output is read by the driver.
    output = _call_step(step, inputs, iteration)
    if isinstance(output, Stop):
        return output.value, _STOP
    if step.stop_if is not None and step.stop_if(output):
        return output, _STOP
    if step.until is not None and step.until(output):
        return output, _LOOP_DONE
    return output, _NEXT


def _call_step(step: Step, inputs: Sequence[Any], iteration: int = 1) -> Any:
    """Run one step on its inputs, in this process: the function, or the agent on the prompt.

    Returns the step's output (possibly a :class:`Stop`). Exceptions of the step propagate.
    """
    if step.fn is not None:
        return step.fn(*inputs)
    assert step.agent is not None and step.prompt is not None  # checked by Step
    if callable(step.prompt):
        text = step.prompt(*inputs)
    else:
        names = [step.name] if iteration > 1 else list(step.after) or ["input"]
        fields = {n: v.text if isinstance(v, RunResult) else v for n, v in zip(names, inputs, strict=True)}
        text = step.prompt.format(**fields)
    return step.agent.run(text)
