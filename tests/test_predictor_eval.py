"""``raygent predictor-eval`` run as a real subprocess on the shared trajectories."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from raygent.messages import ToolCall, ToolMessage
from raygent.predictor import evaluate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LAST = re.compile(
    r"^top1=(?P<top1>[0-9.]+) top3=(?P<top3>[0-9.]+) markov_top3=(?P<markov_top3>[0-9.]+) "
    r"runs=(?P<runs>\d+) steps=(?P<steps>\d+)$"
)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raygent.cli", "predictor-eval", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_predictor_eval_on_shared_trajectories():
    traj = DATA / "trajectories"
    if not traj.is_dir():
        pytest.skip(f"real data not found at {traj} (../shared/data beside the project)")
    proc = _run(str(traj))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    m = LAST.match(lines[-1])
    assert m, lines[-1]
    top1, top3 = float(m["top1"]), float(m["top3"])
    assert int(m["runs"]) >= 30 and int(m["steps"]) >= 250
    assert 0 <= top1 <= top3 <= 1
    # The table: the n-gram and both baselines, each with top-1 and top-3.
    rows = {ln.split("  ")[0].strip(): ln.split()[-2:] for ln in lines[2:5]}
    freq = [float(x) for x in rows["most frequent tool"]]
    markov = [float(x) for x in rows["first-order Markov"]]
    assert float(m["markov_top3"]) == pytest.approx(markov[1], abs=1e-3)
    # Measured: mixture 0.658 / 0.807, most frequent 0.346 / 0.498, Markov 0.535 / 0.736
    # (without shell commands modelled by program: 0.599 / 0.792; the order-3 stupid
    # back-off n-gram alone: 0.576 / 0.755). The goal is top-3 >= 0.80.
    assert top1 > freq[0] and top3 > freq[1]
    assert top1 > markov[0] and top3 > markov[1] + 0.06
    assert top3 >= 0.80
    assert "arguments: proposed for" in proc.stdout
    # Measured: 3 proposed, 3 hits, 0 wasted (1 hit, 4 wasted before templates were kept
    # apart by calling convention and confidences left room for unseen arguments).
    spec = re.search(r"speculative read-only calls .*: (\d+) proposed, (\d+) hits, (\d+) wasted", proc.stdout)
    assert spec, proc.stdout
    proposed, hits, wasted = map(int, spec.groups())
    assert proposed == hits + wasted and hits >= 1 and hits > wasted
    # Non-trajectory files (README, LICENSE, INDEX.jsonl) are skipped with a note, not fatal.
    assert "note: skipped" in proc.stderr and "LICENSE" in proc.stderr


def test_predictor_eval_on_all_shared_data():
    # The whole directory: trajectories, recorded API conversations, and files that are not
    # trajectories at all (the JSON test suite's deeply nested documents) which are skipped.
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA}")
    proc = _run(str(DATA))
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = LAST.match(proc.stdout.strip().splitlines()[-1])
    assert m
    # Measured: 0.579 / 0.724 against Markov top-3 0.583 (the n-gram alone: 0.459 / 0.616).
    assert float(m["top3"]) > float(m["markov_top3"]) + 0.10


def test_predictor_eval_missing_path_fails():
    proc = _run("/nonexistent/trajectories")
    assert proc.returncode == 2
    assert "no such file or directory" in proc.stderr


def test_evaluate_predicts_before_observing():
    # A single run of distinct tools: nothing can be predicted before it is seen.
    steps = [(ToolCall(f"c{i}", f"t{i}", {}), ToolMessage(f"c{i}", f"t{i}", "")) for i in range(5)]
    r = evaluate([("one", steps)])
    assert (r.runs, r.steps, r.top1, r.top3, r.freq_top1, r.markov_top1) == (1, 5, 0, 0, 0, 0)
    # Twice the same run: the second time the n-gram knows each successor.
    r = evaluate([("a", steps), ("b", steps)])
    assert r.top1 == 5 and r.markov_top1 == 5 and r.freq_top1 <= 1
