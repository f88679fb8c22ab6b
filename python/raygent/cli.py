"""The ``raygent`` command line (typer + rich).

``raygent run "TASK"`` runs one agent session on a local Ray cluster (or the one ``RAY_ADDRESS``
names) and streams what happens; ``raygent tools`` lists the built-in tools and their schemas,
and those of MCP servers (``--mcp-stdio "CMD ARGS"``, ``--mcp-http URL``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from raygent.errors import RaygentError
from raygent.messages import (
    ApprovalRequest,
    TextDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolOutputDelta,
    ToolResultChunk,
    Usage,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="raygent: LLM tool-using agents on Ray, with a Rust core for the hot paths.",
)


def _preview(text: str, lines: int = 3, width: int = 110) -> list[str]:
    out = [ln[:width] + ("…" if len(ln) > width else "") for ln in text.splitlines()[:lines]]
    more = len(text.splitlines()) - lines
    if more > 0:
        out.append(f"… {more} more lines")
    return out


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="What the agent should do.")],
    workspace: Annotated[Path, typer.Option(help="Directory the tools work in.")] = Path("."),
    model: Annotated[
        Optional[str],
        typer.Option(help="'scripted' (offline) or a model name of an OpenAI-compatible endpoint."),
    ] = None,
    base_url: Annotated[
        Optional[str], typer.Option(help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL).")
    ] = None,
    max_turns: Annotated[int, typer.Option(help="Model responses allowed.")] = 24,
    address: Annotated[
        Optional[str], typer.Option(help="Ray cluster to join (default: RAY_ADDRESS or a new local one).")
    ] = None,
    policy: Annotated[
        Optional[Path],
        typer.Option(help="Tool policy TOML file (default: WORKSPACE/.raygent/policy.toml if present)."),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Approve every tool call the policy says to ask about.")
    ] = False,
    no_input: Annotated[
        bool, typer.Option("--no-input", help="Never ask: deny every tool call the policy says to ask about.")
    ] = False,
    pass_env: Annotated[
        Optional[list[str]],
        typer.Option(
            "--pass-env", metavar="NAME", help="Environment variable run_command keeps despite scrubbing (repeatable)."
        ),
    ] = None,
) -> None:
    """Run one agent session and stream its text, tool calls and tool output as they happen.

    A tool call the policy marks 'prompt' is shown and asked about on the terminal (y/n, then
    an optional reason for the model when denied); end of input denies it. The first Ctrl-C
    cancels the run (running tools are killed, the summary still prints); a second one quits
    at once with exit code 130.
    """
    import raygent

    # soft_wrap: long lines (tool arguments, paths) stay whole instead of being cut at 80 columns.
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    started = time.perf_counter()
    try:
        raygent.init(address=address)
        if yes and no_input:
            raise ValueError("--yes and --no-input exclude each other")
        agent = raygent.Agent(
            workspace=workspace, model=model, base_url=base_url, max_turns=max_turns, policy=policy,
            pass_env=pass_env or (),
        )
    except (RaygentError, ValueError, OSError) as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 0))
    out.print(
        f"[bold]raygent[/] · model [cyan]{agent.model}[/] · workspace {agent.workspace} · "
        f"Ray cluster with {cpus} CPUs"
    )
    out.print(f"[bold]task:[/] {task}\n")
    n_calls = n_failed = tokens_in = tokens_out = 0
    at_line_start = True
    streamed: set[str] = set()  # calls whose output was shown live: no preview of the result
    previous_handler = signal.signal(signal.SIGINT, _cancel_on_first_interrupt(agent, err))
    try:
        for chunk in agent.stream(task):
            if isinstance(chunk, TextDelta):
                out.print(chunk.text, end="", markup=False)
                at_line_start = chunk.text.endswith("\n")
            elif isinstance(chunk, ToolCallStart):
                if not at_line_start:
                    out.print()
                    at_line_start = True
            elif isinstance(chunk, ToolCallEnd):
                args = json.dumps(chunk.call.arguments, ensure_ascii=False)
                out.print(f"[bold magenta]▶ {chunk.call.name}[/] [dim]{args}[/]")
            elif isinstance(chunk, ToolResultChunk):
                r = chunk.result
                n_calls += 1
                mark = "[green]✓[/]" if not r.is_error else f"[red]✗ {r.error_kind}[/]"
                out.print(
                    f"  {mark} {r.name} · {r.duration_ms:.1f} ms · {len(r.content):,} chars"
                )
                if r.call_id not in streamed:
                    for line in _preview(r.content):
                        out.print(f"    {line}", style="dim", markup=False)
                n_failed += r.is_error
            elif isinstance(chunk, ToolOutputDelta):
                streamed.add(chunk.call_id)
                for line in chunk.text.splitlines():
                    out.print(f"  │ {line}", style="dim", markup=False)
            elif isinstance(chunk, Usage):
                tokens_in += chunk.input_tokens
                tokens_out += chunk.output_tokens
            elif isinstance(chunk, ApprovalRequest):
                approved, reason = _ask(out, chunk, yes=yes, no_input=no_input)
                if approved:
                    agent.approve(chunk.call.id)
                else:
                    agent.deny(chunk.call.id, reason)
    except RaygentError as e:
        kind = getattr(e, "kind", type(e).__name__)
        reason = (str(e).splitlines() or [""])[0]
        err.print(f"\n[bold red]error ({kind}):[/] {reason}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("\n[bold red]interrupted[/]")
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    status = agent.status()
    agent.close()
    wall_s = time.perf_counter() - started
    out.print()
    out.rule("summary")
    out.print(
        f"turns {status['stats']['turns']} · tool calls {n_calls} ({n_failed} failed) · "
        f"tokens {tokens_in:,} in / {tokens_out:,} out · wall time {wall_s:.2f} s · "
        f"state {status['state']}"
    )


def _cancel_on_first_interrupt(agent: Any, err: Console) -> Callable[[int, Any], None]:
    """A SIGINT handler: the first Ctrl-C cancels the agent's run, the next raises KeyboardInterrupt.

    The cancel is a Ray call, made from a thread because a signal handler may run while the
    main thread is itself inside a Ray call reading the stream; the stream then ends by itself.
    """
    interrupts = 0

    def handler(signum: int, frame: Any) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt
        err.print("\n[bold yellow]cancelling the run[/] (Ctrl-C again to quit)")
        threading.Thread(target=cancel, name="raygent-cancel", daemon=True).start()

    def cancel() -> None:
        try:
            agent.cancel()
        except RaygentError as e:  # the run is failing anyway: its stream reports why
            err.print(f"[red]could not cancel:[/] {e}")

    return handler


def _ask(out: Console, request: ApprovalRequest, *, yes: bool, no_input: bool) -> tuple[bool, str]:
    """(approved, reason for the model) for one call, from the flags or the terminal."""
    from rich.prompt import Confirm, Prompt

    call = request.call
    shown = call.arguments.get("command") if call.name == "run_command" else None
    what = shown if isinstance(shown, str) else json.dumps(call.arguments, ensure_ascii=False)
    why = f" ({request.reason})" if request.reason else ""
    out.print(f"[bold yellow]? approve {call.name}[/] [dim]{request.rule}{why}[/]")
    out.print(f"    {what}", markup=False)
    if yes or no_input:
        out.print("  approved (--yes)" if yes else "  denied (--no-input)")
        return yes, "" if yes else "the user runs without input (--no-input)"
    try:
        if Confirm.ask("  run it?", console=out, default=False):
            return True, ""
        return False, Prompt.ask("  reason for the model (optional)", console=out, default="", show_default=False)
    except EOFError:  # stdin closed: nobody to ask
        out.print("\n  denied (end of input)")
        return False, "nobody answered (end of input)"


@app.command()
def tools(
    workspace: Annotated[Path, typer.Option(help="Workspace the tools are bound to.")] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON Schemas.")] = False,
    mcp_stdio: Annotated[
        Optional[list[str]],
        typer.Option(help="MCP server to spawn over stdio, as one shell-quoted command line (repeatable)."),
    ] = None,
    mcp_http: Annotated[
        Optional[list[str]], typer.Option(help="MCP server's streamable HTTP URL (repeatable).")
    ] = None,
    mcp_timeout_s: Annotated[
        float, typer.Option(help="Seconds allowed to each MCP server to start and list its tools.")
    ] = 30.0,
) -> None:
    """List the tools (name, read-only or mutating, description): the built-ins, then the tools of
    the MCP servers given, as an agent of this workspace would be offered them.

    Exits 2 when an MCP server cannot be reached or its tools' names collide.
    """
    import asyncio

    from rich.markup import escape

    from raygent.tools import MCPError, MCPServer, MCPTool, builtin_tools

    root = workspace.resolve()
    registry: dict[str, Any] = dict(builtin_tools(root))
    try:
        servers = [
            MCPServer.stdio(*_split_command(line), connect_timeout_s=mcp_timeout_s)
            for line in mcp_stdio or ()
        ] + [MCPServer.http(url, connect_timeout_s=mcp_timeout_s) for url in mcp_http or ()]
        if servers:
            for t in asyncio.run(_mcp_tools(servers, registry, root)):
                registry[t.name] = t
    except (MCPError, ValueError) as e:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps([t.schema for t in registry.values()], indent=2))
        return
    out = Console(highlight=False)
    for t in registry.values():
        kind = "read-only" if t.read_only else "mutating"
        where = f" [dim]{escape(f'[mcp {t.server.label}]')}[/]" if isinstance(t, MCPTool) else ""
        out.print(f"[bold]{t.name}[/] ({kind}){where}: {t.description}")


def _split_command(line: str) -> tuple[str, list[str]]:
    import shlex

    words = shlex.split(line)
    if not words:
        raise ValueError("--mcp-stdio needs a command line, got an empty one")
    return words[0], words[1:]


async def _mcp_tools(servers: list[Any], registry: dict[str, Any], root: Path) -> list[Any]:
    """The servers' tools, checked against ``registry`` as a ToolActor would; connections closed."""
    from raygent.tools import MCPRegistry

    mcp = MCPRegistry(default_cwd=str(root))
    try:
        return await mcp.add(servers, registry, tuple(registry))
    finally:
        await mcp.aclose()


@app.command()
def bench(
    suites: Annotated[
        Optional[list[str]], typer.Argument(help="Suites to run, e.g. 'ansi' for benches/test_bench_ansi.py (default: all).")
    ] = None,
    save: Annotated[Optional[str], typer.Option(help="Save this run as baseline .benchmarks/NAME.json.")] = None,
    compare: Annotated[
        Optional[str], typer.Option(help="Compare with baseline NAME; exit 1 when a case regressed.")
    ] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write DIR/report.md and PNG plots.")] = None,
    benches: Annotated[Path, typer.Option(help="Folder of the pytest-benchmark suites.")] = Path("benches"),
    threshold: Annotated[
        float, typer.Option(help="Median regression (fraction) that fails --compare, beyond the noise band.")
    ] = 0.10,
    no_rust: Annotated[bool, typer.Option("--no-rust", help="Skip the criterion benches.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Few rounds per case: a fast, rough run.")] = False,
) -> None:
    """Run the benchmarks with every peer beside raygent; keep and compare baselines; write a report."""
    import shlex
    import sys

    from raygent.bench import find_root, run_bench

    root = find_root(Path.cwd())
    if not benches.is_absolute() and not benches.is_dir():
        benches = root / benches
    code = run_bench(
        suites=suites or [],
        benches=benches,
        root=root,
        save=save,
        compare_to=compare,
        report=report,
        threshold=threshold,
        rust=not no_rust,
        quick=quick,
        command="raygent " + shlex.join(sys.argv[1:]),
        # Piped to a file, the tables keep their width instead of wrapping at 80 columns.
        out=Console(highlight=False, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160),
        err=Console(stderr=True, highlight=False),
    )
    raise typer.Exit(code)


@app.command("predictor-eval")
def predictor_eval(
    paths: Annotated[
        list[Path], typer.Argument(help="Trajectory files, or directories searched recursively.")
    ],
    order: Annotated[int, typer.Option(help="n of the n-gram model.")] = 3,
    threshold: Annotated[float, typer.Option(help="Confidence needed to speculate a call.")] = 0.5,
) -> None:
    """Train the tool predictor online over recorded runs and print its accuracy beside baselines.

    Each tool call is predicted before it is observed. The last line is machine-readable:
    ``top1=<float> top3=<float> markov_top3=<float> runs=<int> steps=<int>``.
    """
    from raygent.errors import TrajectoryError
    from raygent.predictor import Predictor, evaluate
    from raygent.replay import load_trajectory

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(f for f in path.rglob("*") if f.is_file())
        elif path.is_file():
            files.append(path)
        else:
            err.print(f"[bold red]error:[/] no such file or directory: {path}")
            raise typer.Exit(2)
    runs = []
    skipped = 0
    for f in files:
        try:
            runs.append((str(f), load_trajectory(f).steps))
        except (TrajectoryError, OSError, ValueError, RecursionError) as e:
            # ValueError/RecursionError: JSON that is not a trajectory (e.g. test suites of
            # malformed or deeply nested documents) fails in the parser itself.
            skipped += 1
            err.print(f"note: skipped {f}: {getattr(e, 'reason', e)}", markup=False)
    r = evaluate(runs, predictor=Predictor(order=order), threshold=threshold)
    n = max(r.steps, 1)
    print(f"predictor-eval: {r.runs} runs, {r.steps} tool calls, {skipped} files skipped")
    print(f"{'model':<32}{'top-1':>8}{'top-3':>8}")
    for label, t1, t3 in (
        (f"n-gram mixture (order {order})", r.top1, r.top3),
        ("most frequent tool", r.freq_top1, r.freq_top3),
        ("first-order Markov", r.markov_top1, r.markov_top3),
    ):
        print(f"{label:<32}{t1 / n:>8.3f}{t3 / n:>8.3f}")
    exact = r.args_exact / r.args_predicted if r.args_predicted else 0.0
    print(
        f"arguments: proposed for {r.args_predicted} calls whose top-1 tool was right, "
        f"exact {r.args_exact} ({exact:.3f})"
    )
    print(
        f"speculative read-only calls (confidence >= {threshold:.2f}): {r.spec_proposed} proposed, "
        f"{r.spec_hits} hits, {r.spec_wasted} wasted"
    )
    if r.with_durations:
        print(f"timeouts: {r.with_durations} calls with durations")
    else:
        print("timeouts: these recordings carry no tool durations; adaptive-timeout savings not measurable")
    print(
        f"top1={r.top1 / n:.4f} top3={r.top3 / n:.4f} markov_top3={r.markov_top3 / n:.4f} "
        f"runs={r.runs} steps={r.steps}"
    )


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(help="A recorded trajectory (any format raygent.replay reads).")],
    execute: Annotated[
        bool, typer.Option("--execute", help="Run the tool calls for real in a scratch copy of --workspace.")
    ] = False,
    workspace: Annotated[
        Optional[Path], typer.Option(help="With --execute: directory copied to the scratch dir (default: empty).")
    ] = None,
    tool_timeout: Annotated[float, typer.Option(help="With --execute: timeout per tool call (s).")] = 30.0,
    keep_scratch: Annotated[bool, typer.Option("--keep-scratch", help="With --execute: keep the scratch dir.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    address: Annotated[
        Optional[str], typer.Option(help="Ray cluster to join (default: RAY_ADDRESS or a new local one).")
    ] = None,
) -> None:
    """Replay a recorded trajectory through the runtime on Ray and print per-turn runtime overhead.

    The model's turns come from the recording; tool calls are answered from it (no side
    effects) or, with --execute, run for real in a scratch copy of a workspace.
    """
    import raygent
    from raygent.errors import TrajectoryError
    from raygent.replay_run import replay_trajectory

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not path.is_file():
        err.print(f"[bold red]error:[/] no such file: {path}")
        raise typer.Exit(2)
    if workspace is not None and not workspace.is_dir():
        err.print(f"[bold red]error:[/] workspace {workspace} is not a directory")
        raise typer.Exit(2)
    try:
        raygent.init(address=address)
        report = replay_trajectory(
            path, execute=execute, workspace=workspace, tool_timeout_s=tool_timeout, keep_scratch=keep_scratch
        )
    except TrajectoryError as e:
        err.print(f"[bold red]error:[/] {e}", markup=False)
        raise typer.Exit(2) from None
    except RaygentError as e:
        err.print(f"[bold red]error ({getattr(e, 'kind', type(e).__name__)}):[/] {e}", markup=False)
        raise typer.Exit(1) from None
    finally:
        raygent.shutdown()
    totals = report.totals()
    if as_json:
        print(json.dumps(report.to_builtins(), indent=2))
        return
    tools_col = "tools ms" if execute else ""
    print(f"replay {report.path} · format {report.format} · tools {report.mode}"
          + (f" · scratch {report.workspace}" if report.workspace and execute else ""))
    print(f"{'prompt':>6} {'turn':>5} {'calls':>6} {'errors':>7} {'wall ms':>9} {tools_col:>9} {'overhead ms':>12}  note")
    for t in report.turns:
        tools_ms = f"{t.tools_ms:9.1f}" if execute else " " * 9
        note = "" if t.recorded else "closing turn (not recorded)"
        print(f"{t.prompt:>6} {t.turn:>5} {t.tool_calls:>6} {t.tool_errors:>7} {t.wall_ms:>9.2f} {tools_ms} "
              f"{t.overhead_ms:>12.2f}  {note}")
    print(
        f"turns {totals['turns']} (recorded {report.recorded_turns}; +{totals['closing_turns']} closing) · "
        f"tool calls {totals['tool_calls']} (recorded {report.recorded_tool_calls}; {totals['tool_errors']} errors)"
    )
    print(
        f"overhead total {totals['overhead_ms']:.1f} ms · per turn p50 {totals['turn_overhead_p50_ms']:.2f} ms "
        f"p99 {totals['turn_overhead_p99_ms']:.2f} ms · tool round trip p50 {totals['tool_round_trip_p50_ms']:.2f} ms "
        f"p99 {totals['tool_round_trip_p99_ms']:.2f} ms · per tool call {totals['overhead_per_tool_call_ms']:.2f} ms"
    )
    print(
        f"startup {report.startup_ms:.0f} ms · replay wall {report.wall_ms:.1f} ms"
        + (f" · tools {totals['tools_ms']:.1f} ms" if execute else "")
        + " · history "
        + ("matches the recording" if report.history_matches else f"DIFFERS: {report.history_difference}")
    )


def main() -> None:
    # Ray's own log lines would interleave with the streamed answer; keep them for errors.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    app(prog_name="raygent")


if __name__ == "__main__":
    main()
