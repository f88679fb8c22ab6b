"""``raygent bench``: run the benchmark suites, put every case beside its peers, keep baselines.

The logic behind the ``raygent bench`` command, kept free of the command line so it can be
tested piece by piece:

- running the pytest-benchmark suites of ``benches/`` (one subprocess per file, so a Ctrl-C
  keeps every finished file) and the criterion benches of ``rust/benches/`` when ``cargo`` is
  present;
- reading their results (pytest-benchmark JSON; criterion's ``benchmark.json``,
  ``estimates.json`` and ``sample.json``) into :class:`Case` records;
- statistics as criterion reports them: min, median, IQR (percentiles by linear interpolation)
  and outliers by Tukey's fences (mild beyond 1.5 IQR, severe beyond 3 IQR);
- one table per group with the ratio of every peer to raygent, baselines under
  ``.benchmarks/``, comparison against a baseline with a noise band, and a Markdown report with
  PNG plots.

A case is labelled by the conventions of ``benches/conftest.py``: ``benchmark.group`` is what is
measured (the same for raygent and its peers), ``extra_info["impl"]`` is ``"raygent"`` or the
peer's distribution name, ``extra_info["version"]`` its version, and the optional
``extra_info["bytes"]`` (input size, for GB/s), ``extra_info["items"]`` (units of work per round,
for per-item cost), ``extra_info["doc_bytes"]`` (document size, for the per-delta JSON plot),
``extra_info["batch_size"]`` (for the messages-per-second plot) and ``extra_info["load"]`` (for
the overhead-under-load plot, with ``extra_info["latency_ms"]``, ``{"p50", "p90", "p99"}`` of
one call, when the case timed its calls itself). Criterion benches map the same way: the group
name (with the parameter, if any) is the group, the function id is the impl,
``Throughput::Bytes`` gives bytes and ``Throughput::Elements`` gives items.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = [
    "OURS",
    "Outliers",
    "Stats",
    "Case",
    "Change",
    "BenchInterrupted",
    "percentile",
    "tukey",
    "summarize",
    "parse_pytest_json",
    "read_criterion",
    "discover_suites",
    "discover_rust_benches",
    "run_pytest_file",
    "run_criterion_bench",
    "machine_info",
    "group_cases",
    "compare",
    "save_baseline",
    "load_baseline",
    "write_report",
    "parse_size",
]

OURS = "raygent"
BASELINE_SCHEMA = 1


# --------------------------------------------------------------------------------------------
# statistics


def percentile(sorted_xs: list[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of sorted values, by linear interpolation.

    The same definition criterion uses (rank ``p / 100 * (n - 1)``), so our IQR and outlier
    fences agree with criterion's report for the same samples.

    Parameters
    ----------
    sorted_xs : list of float
        Values in ascending order, not empty.
    p : float
        Percentile in ``[0, 100]``.
    """
    if not sorted_xs:
        raise ValueError("percentile of an empty sample")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} outside [0, 100]")
    rank = p / 100 * (len(sorted_xs) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (rank - lo)


@dataclass(frozen=True)
class Outliers:
    """Counts of samples beyond Tukey's fences (mild: 1.5 IQR, severe: 3 IQR)."""

    low_severe: int = 0
    low_mild: int = 0
    high_mild: int = 0
    high_severe: int = 0

    @property
    def mild(self) -> int:
        return self.low_mild + self.high_mild

    @property
    def severe(self) -> int:
        return self.low_severe + self.high_severe

    @property
    def total(self) -> int:
        return self.mild + self.severe


def tukey(xs: Iterable[float]) -> Outliers:
    """Classify samples by Tukey's fences, as criterion does.

    With quartiles ``q1``, ``q3`` and ``iqr = q3 - q1``: below ``q1 - 3 iqr`` is low severe,
    below ``q1 - 1.5 iqr`` low mild, above ``q3 + 1.5 iqr`` high mild and above ``q3 + 3 iqr``
    high severe.
    """
    s = sorted(xs)
    if not s:
        return Outliers()
    q1, q3 = percentile(s, 25), percentile(s, 75)
    iqr = q3 - q1
    ls, lm, hm, hs = q1 - 3 * iqr, q1 - 1.5 * iqr, q3 + 1.5 * iqr, q3 + 3 * iqr
    counts = [0, 0, 0, 0]
    for x in s:
        if x < ls:
            counts[0] += 1
        elif x < lm:
            counts[1] += 1
        elif x > hs:
            counts[3] += 1
        elif x > hm:
            counts[2] += 1
    return Outliers(*counts)


@dataclass(frozen=True)
class Stats:
    """Summary of one case's samples; times in seconds per iteration."""

    rounds: int
    min: float
    max: float
    mean: float
    median: float
    q1: float
    q3: float
    p90: float
    p99: float
    outliers: Outliers = field(default_factory=Outliers)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def rel_iqr(self) -> float:
        """IQR relative to the median: the spread used as this run's noise."""
        return self.iqr / self.median if self.median > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("rounds", "min", "max", "mean", "median", "q1", "q3", "p90", "p99")}
        d["iqr"] = self.iqr
        o = self.outliers
        d["outliers"] = {
            "low_severe": o.low_severe,
            "low_mild": o.low_mild,
            "high_mild": o.high_mild,
            "high_severe": o.high_severe,
        }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stats":
        o = d.get("outliers") or {}
        return cls(
            rounds=int(d["rounds"]),
            min=float(d["min"]),
            max=float(d["max"]),
            mean=float(d["mean"]),
            median=float(d["median"]),
            q1=float(d["q1"]),
            q3=float(d["q3"]),
            p90=float(d.get("p90", d["q3"])),
            p99=float(d.get("p99", d["max"])),
            outliers=Outliers(**{k: int(o.get(k, 0)) for k in ("low_severe", "low_mild", "high_mild", "high_severe")}),
        )

    def scaled(self, factor: float) -> "Stats":
        """The same distribution with every time multiplied by ``factor``."""
        return Stats(
            rounds=self.rounds,
            min=self.min * factor,
            max=self.max * factor,
            mean=self.mean * factor,
            median=self.median * factor,
            q1=self.q1 * factor,
            q3=self.q3 * factor,
            p90=self.p90 * factor,
            p99=self.p99 * factor,
            outliers=self.outliers,
        )


def summarize(samples: Iterable[float]) -> Stats:
    """Min, median, quartiles, tail percentiles and Tukey outliers of time samples (seconds)."""
    s = sorted(samples)
    if not s:
        raise ValueError("no samples to summarize")
    return Stats(
        rounds=len(s),
        min=s[0],
        max=s[-1],
        mean=math.fsum(s) / len(s),
        median=percentile(s, 50),
        q1=percentile(s, 25),
        q3=percentile(s, 75),
        p90=percentile(s, 90),
        p99=percentile(s, 99),
        outliers=tukey(s),
    )


# --------------------------------------------------------------------------------------------
# cases

_SIZE_RE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB|KB|MB|GB|kB|B)(?![A-Za-z])")
_SIZE_UNITS = {"B": 1, "KB": 1000, "kB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_BATCH_RE = re.compile(r"batch(?:[ _-]?size)?\s*[=: ]\s*(\d+)", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """A document size written in a name ("1KB", "10 KB", "2MiB", "512B"), in bytes, or None."""
    m = _SIZE_RE.search(text)
    if not m:
        return None
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def _without_size(text: str) -> str:
    return re.sub(r"\s+", " ", _SIZE_RE.sub("", text)).strip(" :/-·,") or text


@dataclass
class Case:
    """One benchmark case: a group (what is measured) done by one impl (raygent or a peer)."""

    id: str  # stable across runs: "<suite>::<test name>" or "criterion::<full id>"
    suite: str
    source: str  # "pytest" or "criterion"
    group: str
    impl: str
    version: str
    stats: Stats
    bytes: int | None = None
    items: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    variant: str = ""  # which way of an impl, when a group has several (criterion "raygent/strip_str")

    @property
    def label(self) -> str:
        return f"{self.impl} · {self.variant}" if self.variant else self.impl

    @property
    def is_ours(self) -> bool:
        return self.impl == OURS

    @property
    def median(self) -> float:
        return self.stats.median

    @property
    def gbps(self) -> float | None:
        """Throughput in GB/s (10^9 bytes per second) at the median, when ``bytes`` is known."""
        if not self.bytes or self.median <= 0:
            return None
        return self.bytes / self.median / 1e9

    @property
    def us_per_item(self) -> float | None:
        """Cost of one item in microseconds at the median, when ``items`` is known."""
        if not self.items:
            return None
        return self.median / self.items * 1e6

    @property
    def doc_bytes(self) -> int | None:
        """Document size: ``extra_info["doc_bytes"]``, else a size written in the group name."""
        v = self.extra.get("doc_bytes")
        if isinstance(v, (int, float)) and v > 0:
            return int(v)
        return parse_size(self.group)

    @property
    def latency_s(self) -> dict[str, float]:
        """p50 / p90 / p99 of one call (seconds): ``extra_info["latency_ms"]`` when the case
        measured its calls itself (a load test: one round, thousands of round trips), else the
        rounds' median / p90 / p99 (each round one call)."""
        given = self.extra.get("latency_ms")
        if isinstance(given, dict) and all(isinstance(given.get(k), (int, float)) for k in ("p50", "p90", "p99")):
            return {k: float(given[k]) / 1000.0 for k in ("p50", "p90", "p99")}
        return {"p50": self.stats.median, "p90": self.stats.p90, "p99": self.stats.p99}

    @property
    def batch_size(self) -> int | None:
        v = self.extra.get("batch_size", self.extra.get("batch"))
        if isinstance(v, (int, float)) and v > 0:
            return int(v)
        m = _BATCH_RE.search(self.group)
        return int(m.group(1)) if m else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "suite": self.suite,
            "source": self.source,
            "group": self.group,
            "impl": self.impl,
            "variant": self.variant,
            "version": self.version,
            "bytes": self.bytes,
            "items": self.items,
            "extra": self.extra,
            "stats": self.stats.as_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Case":
        return cls(
            id=d["id"],
            suite=d.get("suite", ""),
            source=d.get("source", "pytest"),
            group=d["group"],
            impl=d["impl"],
            version=d.get("version", ""),
            stats=Stats.from_dict(d["stats"]),
            bytes=d.get("bytes"),
            items=d.get("items"),
            extra=d.get("extra") or {},
            variant=d.get("variant", ""),
        )


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None


def parse_pytest_json(data: dict[str, Any], suite: str) -> list[Case]:
    """Cases from a pytest-benchmark ``--benchmark-json`` document.

    Uses the per-round samples (``stats.data``, seconds per iteration) when present, so the
    statistics are ours and computed like criterion's; falls back to pytest-benchmark's own
    summary otherwise (outliers then unknown, counted as zero).
    """
    cases = []
    for b in data.get("benchmarks", []):
        extra = dict(b.get("extra_info") or {})
        impl = str(extra.pop("impl", OURS if "raygent" in b.get("name", "") else b.get("name", "?")))
        version = str(extra.pop("version", ""))
        nbytes = _int_or_none(extra.pop("bytes", None))
        items = _int_or_none(extra.pop("items", None))
        st = b.get("stats") or {}
        samples = st.get("data")
        if samples:
            stats = summarize(samples)
        else:
            med = float(st["median"])
            stats = Stats(
                rounds=int(st.get("rounds", 0)),
                min=float(st["min"]),
                max=float(st["max"]),
                mean=float(st.get("mean", med)),
                median=med,
                q1=float(st.get("q1", med)),
                q3=float(st.get("q3", med)),
                p90=float(st.get("q3", med)),
                p99=float(st.get("max", med)),
            )
        cases.append(
            Case(
                id=f"{suite}::{b.get('name', '?')}",
                suite=suite,
                source="pytest",
                group=b.get("group") or b.get("name", "?"),
                impl=impl,
                version=version,
                stats=stats,
                bytes=nbytes,
                items=items,
                extra=extra,
                variant=str(extra.get("variant") or extra.get("how") or ""),
            )
        )
    return cases


def cargo_lock_versions(lock_path: Path) -> dict[str, str]:
    """Crate name -> version from a ``Cargo.lock`` (the first version listed per name)."""
    try:
        lock = tomllib.loads(lock_path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    out: dict[str, str] = {}
    for pkg in lock.get("package", []):
        out.setdefault(pkg.get("name", ""), pkg.get("version", ""))
    return out


def read_criterion(
    criterion_dir: Path,
    *,
    suite: str = "criterion",
    ids: set[str] | None = None,
    since: float | None = None,
    versions: dict[str, str] | None = None,
) -> list[Case]:
    """Cases from criterion's output folder (``target/criterion``).

    Every ``<...>/new/benchmark.json`` gives a case: ``group_id`` (plus ``value_str`` when the
    benchmark has a parameter) is the group and ``function_id`` the impl; ``sample.json``
    (``iters``, ``times`` in ns) gives the per-iteration samples; the median is criterion's own
    point estimate from ``estimates.json`` when present.

    Parameters
    ----------
    criterion_dir : Path
        The criterion output folder.
    suite : str
        Name recorded on the cases (the bench target).
    ids : set of str, optional
        Keep only these criterion full ids (the ones a run printed).
    since : float, optional
        Keep only results written at or after this time (``time.time()`` seconds).
    versions : dict, optional
        Crate name -> version, for peers' versions (from ``Cargo.lock``).
    """
    versions = versions or {}
    cases: list[Case] = []
    if not criterion_dir.is_dir():
        return cases
    for bj in sorted(criterion_dir.rglob("new/benchmark.json")):
        new = bj.parent
        try:
            if since is not None and (new / "sample.json").stat().st_mtime < since - 1:
                continue
            meta = json.loads(bj.read_text())
            sample = json.loads((new / "sample.json").read_text())
        except (OSError, ValueError):
            continue
        full_id = meta.get("full_id") or meta.get("title") or str(new.parent.relative_to(criterion_dir))
        if ids is not None and full_id not in ids:
            continue
        group = meta.get("group_id") or full_id
        func = meta.get("function_id")
        value = meta.get("value_str")
        # "raygent/strip_str" is raygent's strip_str way; a lone function is ours.
        impl, _, variant = (func or OURS).partition("/")
        if value:
            group = f"{group}/{value}"
        iters, times = sample.get("iters") or [], sample.get("times") or []
        per_iter = [t / i / 1e9 for t, i in zip(times, iters) if i]
        if not per_iter:
            continue
        stats = summarize(per_iter)
        try:
            est = json.loads((new / "estimates.json").read_text())
            med = float(est["median"]["point_estimate"]) / 1e9
            stats = Stats(**{**stats.__dict__, "median": med})
        except (OSError, ValueError, KeyError, TypeError):
            pass
        tp = meta.get("throughput") or {}
        nbytes = _int_or_none(tp.get("Bytes", tp.get("BytesDecimal")))
        items = _int_or_none(tp.get("Elements"))
        impl_key = impl.replace("_", "-")
        version = (
            _raygent_version()
            if impl == OURS
            else versions.get(impl, versions.get(impl_key, versions.get(impl.replace("-", "_"), "")))
        )
        cases.append(
            Case(
                id=f"criterion::{full_id}",
                suite=suite,
                source="criterion",
                group=group,
                impl=impl,
                version=version,
                stats=stats,
                bytes=nbytes,
                items=items,
                variant=variant,
            )
        )
    # directories sort "100KB" before "1KB": order by what is measured, then by size
    cases.sort(key=lambda c: (_without_size(c.group), parse_size(c.group) or 0, c.group))
    return cases


# --------------------------------------------------------------------------------------------
# discovery and running


def find_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` with a ``pyproject.toml`` or ``.git``; else start."""
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / "pyproject.toml").is_file() or (d / ".git").exists():
            return d
    return start


def discover_suites(benches: Path) -> dict[str, Path]:
    """Suite name -> file for every ``test_bench_<name>.py`` in ``benches``."""
    return {p.stem.removeprefix("test_bench_"): p for p in sorted(benches.glob("test_bench_*.py"))}


def discover_rust_benches(root: Path) -> dict[str, Path]:
    """Bench target name -> source for the ``[[bench]]`` targets of ``root/Cargo.toml``."""
    try:
        manifest = tomllib.loads((root / "Cargo.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    out = {}
    for b in manifest.get("bench", []):
        name = b.get("name")
        path = root / b.get("path", f"benches/{name}.rs")
        if name and path.is_file():
            out[name] = path
    return out


def select(available: Iterable[str], wanted: list[str], *, prefix: bool = False) -> list[str]:
    """The available names a list of wanted suite names selects (all when none are given)."""
    names = list(available)
    if not wanted:
        return names
    return [n for n in names if any(n == w or (prefix and n.startswith(w + "_")) for w in wanted)]


class BenchInterrupted(Exception):
    """Ctrl-C during a suite; carries the cases of that suite that had finished."""

    def __init__(self, cases: list[Case]):
        super().__init__("interrupted")
        self.cases = cases


# Case ids may hold spaces ("test_encode[text delta-pooled]").
_PYTEST_RESULT = re.compile(r"::(.+?)\s+(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_PYTEST_COLLECTED = re.compile(r"\bcollected (\d+) items?")
_PYTEST_ERROR = re.compile(r"^(?:FAILED|ERROR)\s+\S+")


def pytest_command(path: Path, json_path: Path, *, quick: bool) -> list[str]:
    """The pytest command that runs one benchmark file and writes its JSON."""
    cmd = [
        sys.executable, "-m", "pytest", str(path),
        "--benchmark-only", f"--benchmark-json={json_path}", "--benchmark-warmup=on",
        # -v rather than -q: one line per finished case is what drives the progress bar.
        "-v", "-p", "no:cacheprovider", "--color=no",
    ]
    if quick:
        cmd += ["--benchmark-max-time=0.1", "--benchmark-min-rounds=5", "--benchmark-warmup-iterations=1000"]
    return cmd


def _stop(proc: subprocess.Popen) -> None:
    """End a suite's subprocess after Ctrl-C, keeping its pipe drained so it can exit.

    The subprocess runs in a session of its own, so a terminal's Ctrl-C reaches only us and it
    gets exactly one SIGINT, from here: a second one while pytest is writing its JSON would
    lose the cases that had finished. It may take its time to write them; after 30 s it is
    killed.
    """
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)
    except ProcessLookupError:
        proc.communicate()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def _read_json_cases(json_path: Path, suite: str) -> list[Case]:
    try:
        return parse_pytest_json(json.loads(json_path.read_text()), suite)
    except (OSError, ValueError):
        return []


@dataclass
class SuiteResult:
    suite: str
    cases: list[Case]
    returncode: int
    failures: list[str]
    log: str


def run_pytest_file(
    path: Path,
    *,
    cwd: Path,
    quick: bool,
    workdir: Path,
    on_case: Callable[[str, str], None] | None = None,
    on_collected: Callable[[int], None] | None = None,
) -> SuiteResult:
    """Run one pytest-benchmark file in a subprocess and read its cases.

    ``on_collected(n)`` is called once pytest has collected the file's ``n`` cases and
    ``on_case(name, outcome)`` as each case finishes. On Ctrl-C the subprocess is stopped and
    :class:`BenchInterrupted` carries whatever the file had written.
    """
    suite = path.stem.removeprefix("test_bench_")
    json_path = workdir / f"{suite}.json"
    proc = subprocess.Popen(
        pytest_command(path, json_path, quick=quick),
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        start_new_session=True,  # see _stop
    )
    log: list[str] = []
    failures: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            c = _PYTEST_COLLECTED.search(line)
            if c and on_collected is not None:
                on_collected(int(c.group(1)))
            m = _PYTEST_RESULT.search(line)
            if m and on_case is not None:
                on_case(m.group(1), m.group(2))
            if _PYTEST_ERROR.match(line):
                failures.append(line.strip())
        proc.wait()
    except KeyboardInterrupt:
        _stop(proc)
        raise BenchInterrupted(_read_json_cases(json_path, suite)) from None
    return SuiteResult(suite, _read_json_cases(json_path, suite), proc.returncode, failures, "".join(log))


def cargo_target_dir(root: Path) -> Path:
    """Cargo's target folder for the crate at ``root`` (``cargo metadata``, else ``root/target``)."""
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"])
    try:
        r = subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1"],
            cwd=root, capture_output=True, text=True, timeout=60,
        )
        return Path(json.loads(r.stdout)["target_directory"])
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        return root / "target"


_CRITERION_DONE = re.compile(r"Benchmarking (.+?): (?:Analyzing|Complete)")


def run_criterion_bench(
    name: str,
    *,
    root: Path,
    quick: bool,
    on_case: Callable[[str], None] | None = None,
) -> SuiteResult:
    """``cargo bench --bench NAME`` and the cases it wrote under ``target/criterion``."""
    criterion_dir = Path(os.environ.get("CRITERION_HOME") or cargo_target_dir(root) / "criterion")
    args = ["--noplot"]
    if quick:
        args += ["--warm-up-time", "0.5", "--measurement-time", "1", "--sample-size", "20"]
    started = time.time()
    env = {**os.environ, "CARGO_TERM_COLOR": "never"}
    proc = subprocess.Popen(
        ["cargo", "bench", "--bench", name, "--", *args],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1,
        start_new_session=True,  # see _stop
    )
    log: list[str] = []
    ids: set[str] = set()
    versions = cargo_lock_versions(root / "Cargo.lock")

    def cases() -> list[Case]:
        return read_criterion(criterion_dir, suite=name, ids=ids or None, since=started, versions=versions)

    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            log.append(raw)
            # criterion overwrites its status line with "\r"; every piece is a status.
            for line in raw.split("\r"):
                m = _CRITERION_DONE.search(line)
                if m and m.group(1) not in ids:
                    ids.add(m.group(1))
                    if on_case is not None:
                        on_case(m.group(1))
        proc.wait()
    except KeyboardInterrupt:
        _stop(proc)
        raise BenchInterrupted(cases()) from None
    failures = [] if proc.returncode == 0 else [f"cargo bench --bench {name} exited {proc.returncode}"]
    return SuiteResult(name, cases(), proc.returncode, failures, "".join(log))


# --------------------------------------------------------------------------------------------
# machine, grouping, formatting


def _raygent_version() -> str:
    try:
        return metadata.version("raygent")
    except metadata.PackageNotFoundError:
        return "unknown"


def cpu_model() -> str:
    """The CPU model from ``/proc/cpuinfo`` (else what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(cases: Iterable[Case] = ()) -> dict[str, Any]:
    """CPU model, core count, OS, Python and raygent versions, and the version of every impl."""
    versions: dict[str, str] = {OURS: _raygent_version()}
    for c in cases:
        if c.impl != OURS:
            versions.setdefault(c.impl, c.version or "?")
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 0,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "raygent": _raygent_version(),
        "versions": versions,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def group_cases(cases: Iterable[Case]) -> dict[str, list[Case]]:
    """Cases by group, in first-seen order; raygent first in each group, then peers by median."""
    groups: dict[str, list[Case]] = {}
    for c in cases:
        groups.setdefault(c.group, []).append(c)
    return {g: sorted(cs, key=lambda c: (not c.is_ours, c.median)) for g, cs in groups.items()}


def ratio(case: Case, group: list[Case]) -> float | None:
    """Peer median / raygent median in the group (> 1: raygent is faster); None without ours.

    When raygent has several ways in the group (variants), the fastest one is the reference.
    """
    ours = [c for c in group if c.is_ours]
    if case.is_ours or not ours:
        return None
    best = min(c.median for c in ours)
    return case.median / best if best > 0 else None


def fmt_time(seconds: float) -> str:
    """A duration with 4 significant digits in ns, µs, ms or s (criterion's style)."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(seconds) >= scale or unit == "ns":
            v = seconds / scale
            return f"{v:.4g} {unit}" if v >= 1000 else f"{v:#.4g} {unit}".replace(". ", " ")
    return f"{seconds} s"  # pragma: no cover


def fmt_outliers(o: Outliers, rounds: int) -> str:
    """Tukey outliers as "mild+severe of rounds" (criterion reports the same counts)."""
    return f"{o.mild}+{o.severe} of {rounds}"


def fmt_num(v: float | None) -> str:
    """3 significant digits, without exponents for the values a table shows."""
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 0.001:
        return f"{v:#.3g}"
    return f"{v:.2e}"


def fmt_gbps(c: Case) -> str:
    return fmt_num(c.gbps)


def fmt_us_per_item(c: Case) -> str:
    return fmt_num(c.us_per_item)


def fmt_ratio(r: float | None, ours: bool) -> str:
    if ours:
        return "ours"
    return "—" if r is None else f"{r:.2f}×"


def columns(group: list[Case]) -> list[str]:
    """A group's table columns: throughput columns only when some case of the group has them."""
    cols = ["impl", "version", "min", "median", "IQR", "outliers (mild+severe)"]
    if any(c.bytes for c in group):
        cols.append("GB/s")
    if any(c.items for c in group):
        cols.append("µs/item")
    return cols + ["peer/ours"]


def labels(group: list[Case]) -> list[str]:
    """Row labels of a group: impl and variant, plus the case name where those repeat."""
    names = [c.label for c in group]
    return [
        f"{n} ({c.id.split('::', 1)[-1]})" if names.count(n) > 1 else n for n, c in zip(names, group)
    ]


def table_rows(group: list[Case]) -> list[list[str]]:
    """The rows of one group's table, cells in the order of :func:`columns`."""
    cols = columns(group)
    rows = []
    for c, label in zip(group, labels(group)):
        row = [
            label,
            c.version or "?",
            fmt_time(c.stats.min),
            fmt_time(c.median),
            fmt_time(c.stats.iqr),
            fmt_outliers(c.stats.outliers, c.stats.rounds),
        ]
        if "GB/s" in cols:
            row.append(fmt_gbps(c))
        if "µs/item" in cols:
            row.append(fmt_us_per_item(c))
        rows.append(row + [fmt_ratio(ratio(c, group), c.is_ours)])
    return rows


def header_lines(machine: dict[str, Any]) -> list[str]:
    versions = " · ".join(f"{k} {v}" for k, v in machine["versions"].items())
    return [
        f"CPU: {machine['cpu']} · {machine['cores']} cores · {machine['os']}",
        f"Python {machine['python']} · raygent {machine['raygent']} · {machine['date']}",
        f"versions: {versions}",
    ]


def rich_tables(cases: list[Case]) -> list[Any]:
    """One rich Table per group; ratios > 1 (raygent faster) in green, < 1 in red."""
    from rich.table import Table

    tables = []
    for name, group in group_cases(cases).items():
        t = Table(title=name, title_justify="left", title_style="bold")
        for col in columns(group):
            left = col in ("impl", "version")
            t.add_column(col, justify="left" if left else "right", no_wrap=col != "impl", overflow="fold")
        for c, row in zip(group, table_rows(group)):
            r = ratio(c, group)
            if r is not None:
                row[-1] = f"[{'green' if r >= 1 else 'red'}]{row[-1]}[/]"
            t.add_row(*row, style="bold" if c.is_ours else None)
        tables.append(t)
    return tables


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def markdown_tables(cases: list[Case]) -> str:
    """The per-group tables in Markdown."""
    out = []
    for name, group in group_cases(cases).items():
        out.append(f"### {_md_escape(name)}\n")
        cols = columns(group)
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|")
        for c, row in zip(group, table_rows(group)):
            cells = [_md_escape(x) for x in row]
            if c.is_ours:
                cells[0] = f"**{cells[0]}**"
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def markdown_summary(cases: list[Case]) -> str:
    """One line per group that has raygent and a peer: raygent's median, then every peer's
    ratio (its fastest way), closest first."""
    out = ["| group | raygent median | peer/ours, closest first |", "|---|---:|---|"]
    for name, group in group_cases(cases).items():
        ours = [c for c in group if c.is_ours]
        best: dict[str, Case] = {}
        for c in group:
            if not c.is_ours and (c.impl not in best or c.median < best[c.impl].median):
                best[c.impl] = c
        if not ours or not best:
            continue
        peers = sorted(best.values(), key=lambda c: c.median)
        cells = ", ".join(f"{_md_escape(c.impl)} {fmt_ratio(ratio(c, group), False)}" for c in peers)
        out.append(f"| {_md_escape(name)} | {fmt_time(min(c.median for c in ours))} | {cells} |")
    return "\n".join(out) + "\n" if len(out) > 2 else ""


# --------------------------------------------------------------------------------------------
# baselines and comparison


def baseline_path(root: Path, name: str) -> Path:
    if not re.fullmatch(r"[\w.-]+", name) or name.startswith("."):
        raise ValueError(f"baseline name {name!r}: use letters, digits, '.', '_' or '-'")
    return root / ".benchmarks" / f"{name}.json"


def save_baseline(path: Path, cases: list[Case], machine: dict[str, Any], command: str) -> None:
    """Write a baseline: the machine, the command and every case's statistics (no raw samples)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": BASELINE_SCHEMA,
        "command": command,
        "machine": machine,
        "cases": [c.as_dict() for c in cases],
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def load_baseline(path: Path) -> tuple[dict[str, Any], list[Case]]:
    """The machine info and cases of a baseline written by :func:`save_baseline`."""
    doc = json.loads(path.read_text())
    if doc.get("schema") != BASELINE_SCHEMA:
        raise ValueError(f"{path}: unknown baseline schema {doc.get('schema')!r}")
    return doc.get("machine") or {}, [Case.from_dict(d) for d in doc.get("cases", [])]


@dataclass(frozen=True)
class Change:
    """One case against its baseline: the median's relative change and the noise band."""

    id: str
    group: str
    impl: str
    base: float | None  # baseline median (s), None for a new case
    new: float | None  # this run's median (s), None for a case missing from this run
    noise: float  # half-width of the noise band, relative (mean of both runs' IQR / median)
    threshold: float

    @property
    def change(self) -> float | None:
        if self.base is None or self.new is None or self.base <= 0:
            return None
        return (self.new - self.base) / self.base

    @property
    def verdict(self) -> str:
        ch = self.change
        if self.base is None:
            return "new"
        if self.new is None:
            return "missing"
        assert ch is not None
        limit = max(self.threshold, self.noise)
        if ch > limit:
            return "regressed"
        if ch < -limit:
            return "improved"
        return "within noise" if abs(ch) <= self.noise else "under threshold"

    @property
    def regressed(self) -> bool:
        return self.verdict == "regressed"


def compare(base: list[Case], new: list[Case], threshold: float = 0.10) -> list[Change]:
    """Every case of this run against the baseline, matched by id.

    A case regresses when its median grew by more than ``threshold`` *and* by more than its
    noise band, the mean of the two runs' IQR relative to their median: a change the runs'
    own spread could produce is not called a regression.
    """
    by_id = {c.id: c for c in base}
    seen = set()
    out = []
    for c in new:
        b = by_id.get(c.id)
        seen.add(c.id)
        noise = c.stats.rel_iqr if b is None else (b.stats.rel_iqr + c.stats.rel_iqr) / 2
        out.append(Change(c.id, c.group, c.impl, b.median if b else None, c.median, noise, threshold))
    for b in base:
        if b.id not in seen:
            out.append(Change(b.id, b.group, b.impl, b.median, None, b.stats.rel_iqr, threshold))
    return out


def change_rows(changes: list[Change]) -> list[list[str]]:
    rows = []
    for ch in changes:
        rows.append(
            [
                ch.group,
                ch.impl,
                "—" if ch.base is None else fmt_time(ch.base),
                "—" if ch.new is None else fmt_time(ch.new),
                "—" if ch.change is None else f"{ch.change:+.1%}",
                f"±{ch.noise:.1%}",
                ch.verdict,
            ]
        )
    return rows


CHANGE_COLUMNS = ["group", "impl", "baseline median", "median", "change", "noise", "verdict"]


def rich_compare_table(changes: list[Change], name: str) -> Any:
    from rich.table import Table

    t = Table(title=f"change against baseline {name!r}", title_justify="left", title_style="bold")
    for col in CHANGE_COLUMNS:
        t.add_column(col, justify="right" if col in ("baseline median", "median", "change", "noise") else "left")
    colors = {"regressed": "red", "improved": "green"}
    for ch, row in zip(changes, change_rows(changes)):
        color = colors.get(ch.verdict)
        if color:
            row[-1] = f"[bold {color}]{row[-1]}[/]"
        t.add_row(*row)
    return t


def markdown_compare(changes: list[Change], name: str) -> str:
    out = [f"## Change against baseline `{name}`\n", "| " + " | ".join(CHANGE_COLUMNS) + " |"]
    out.append("|---|---|---:|---:|---:|---:|---|")
    for row in change_rows(changes):
        out.append("| " + " | ".join(_md_escape(x) for x in row) + " |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# report and plots


def _throughput_metric(group: list[Case]) -> tuple[str, Callable[[Case], float]]:
    if all(c.bytes for c in group):
        return "GB/s", lambda c: c.bytes / c.median / 1e9  # type: ignore[operator]
    if all(c.items for c in group):
        return "items/s", lambda c: c.items / c.median  # type: ignore[operator]
    return "calls/s", lambda c: 1.0 / c.median


def _colors(impls: Iterable[str]) -> dict[str, str]:
    palette = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    out = {OURS: "#2ca02c"}
    for i, impl in enumerate(sorted(set(impls) - {OURS})):
        out[impl] = palette[i % len(palette)]
    return out


def _short(text: str, n: int = 48) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plot_throughput(cases: list[Case], out_dir: Path, plt: Any) -> list[Path]:
    """Bar charts of throughput per case beside its peers, one panel per group.

    Bars are at the median; the whiskers span the throughput at the first and third quartiles;
    the label beside a peer is peer median / raygent median. The axis turns logarithmic when
    a group's throughputs span more than 30×.
    """
    groups = list(group_cases(cases).items())
    colors = _colors(c.impl for c in cases)
    paths = []
    per_fig = 8
    pages = [groups[i : i + per_fig] for i in range(0, len(groups), per_fig)]
    for n, chunk in enumerate(pages, 1):
        heights = [0.9 + 0.3 * len(g) for _, g in chunk]
        fig, axes = plt.subplots(
            len(chunk), 1, figsize=(10, 0.6 + sum(heights)), squeeze=False,
            gridspec_kw={"height_ratios": heights},
        )
        for ax, (name, group) in zip(axes[:, 0], chunk):
            unit, metric = _throughput_metric(group)
            vals = [metric(c) for c in group]
            lo = [v - v * c.median / c.stats.q3 if c.stats.q3 > 0 else 0 for v, c in zip(vals, group)]
            hi = [v * c.median / c.stats.q1 - v if c.stats.q1 > 0 else 0 for v, c in zip(vals, group)]
            y = list(range(len(group)))
            ax.barh(y, vals, xerr=[lo, hi], color=[colors[c.impl] for c in group], capsize=3)
            ax.set_yticks(y, [_short(x) for x in labels(group)], fontsize=8)
            ax.invert_yaxis()
            top = max(v + h for v, h in zip(vals, hi))
            if min(vals) > 0 and top / min(vals) > 30:
                ax.set_xscale("log")
                ax.set_xlim(min(vals) / 2, top * 4)
            else:
                ax.set_xlim(0, top * 1.18)
            ax.set_xlabel(unit, fontsize=8)
            ax.set_title(_short(name, 100), fontsize=9, loc="left")
            for yi, (v, h, c) in enumerate(zip(vals, hi, group)):
                r = ratio(c, group)
                if r is not None:
                    ax.annotate(f"  {r:.2f}×", (v + h, yi), va="center", fontsize=8)
        fig.suptitle("Throughput per case, median (higher is better; label: peer median / raygent median)", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
        path = out_dir / (f"throughput-{n}.png" if len(pages) > 1 else "throughput.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def json_size_cases(cases: list[Case]) -> list[Case]:
    """Cases for the per-delta JSON plot: ``items`` and a document size, in a JSON suite or group."""
    out = []
    for c in cases:
        if not c.items or c.doc_bytes is None:
            continue
        if "doc_bytes" in c.extra or "json" in c.suite.lower() or "json" in c.group.lower():
            out.append(c)
    return out


def plot_json_cost(cases: list[Case], out_dir: Path, plt: Any) -> Path:
    """Per-delta cost (µs) against document size: one panel per family of groups (the group
    name without its size), one line per impl."""
    fams: dict[str, dict[str, list[tuple[int, float]]]] = {}
    impl_of = {c.label: c.impl for c in cases}
    for c in cases:
        family = _without_size(c.group)  # "json events: 10KB" and "json events: 1KB" share a panel
        fams.setdefault(family, {}).setdefault(c.label, []).append((c.doc_bytes or 0, c.us_per_item or 0.0))
    colors = _colors(impl_of.values())
    markers = "osD^v<>ph*"
    ncols = min(2, len(fams))
    nrows = math.ceil(len(fams) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 0.5 + 4.7 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(fams) :]:
        ax.axis("off")
    for ax, (fam, series) in zip(axes.flat, sorted(fams.items())):
        for k, (name, pts) in enumerate(sorted(series.items())):
            pts.sort()
            impl = impl_of[name]
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker=markers[k % len(markers)], color=colors[impl],
                label=_short(name, 40), linewidth=2.5 if impl == OURS else 1.3,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("document size (bytes)")
        ax.set_title(_short(fam, 70), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for row in axes:
        row[0].set_ylabel("µs per delta (median)")
    fig.suptitle("Incremental JSON: cost per delta against document size (lower is better)", fontsize=10)
    fig.tight_layout()
    path = out_dir / "json-delta-cost.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_batch(cases: list[Case], out_dir: Path, plt: Any) -> Path:
    """Messages per second against batch size, one line per impl and family."""
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    impl_of = {c.label: c.impl for c in cases}
    for c in cases:
        b = c.batch_size or 1
        per_round = c.items or b
        family = _BATCH_RE.sub("", c.group).strip(" :/-·,") or c.group
        series.setdefault((c.label, family), []).append((b, per_round / c.median))
    colors = _colors(impl_of.values())
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for (name, fam), pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colors[impl_of[name]], label=f"{name} — {fam}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (messages)")
    ax.set_ylabel("messages per second (median)")
    ax.set_title("Messages per second against batch size (higher is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "messages-per-second.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def overhead_cases(cases: list[Case]) -> list[Case]:
    return [c for c in cases if "load" in c.extra or "overhead" in c.group.lower()]


def plot_overhead(cases: list[Case], out_dir: Path, plt: Any) -> Path:
    """p50 / p90 / p99 of each overhead-under-load case, in µs."""
    cases = sorted(cases, key=lambda c: (c.group, c.extra.get("load", 0), c.impl))
    ticks = [f"{c.label}\n{c.group}" + (f"\nload {c.extra['load']}" if "load" in c.extra else "") for c in cases]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(cases)), 4.5))
    width = 0.27
    for k, name in enumerate(("p50", "p90", "p99")):
        ax.bar([i + (k - 1) * width for i in range(len(cases))], [c.latency_s[name] * 1e6 for c in cases], width, label=name)
    ax.set_xticks(range(len(cases)), ticks, fontsize=7)
    ax.set_ylabel("µs per call")
    ax.set_title("Overhead percentiles under load (lower is better)")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "overhead-percentiles.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(cases: list[Case], out_dir: Path) -> tuple[list[Path], list[str]]:
    """Write the PNG plots; returns their paths and a note for every plot that was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], ["all plots: matplotlib is not installed (`pip install raygent[bench]`)"]
    paths: list[Path] = []
    skipped: list[str] = []
    if cases:
        paths += plot_throughput(cases, out_dir, plt)
    else:
        skipped.append("throughput per case: no case finished")
    jc = json_size_cases(cases)
    if jc:
        paths.append(plot_json_cost(jc, out_dir, plt))
    else:
        skipped.append(
            "per-delta JSON cost against document size: no suite has cases with `items` and a document "
            "size (`extra_info[\"doc_bytes\"]` or a size such as \"10KB\" in a JSON group name)"
        )
    bc = [c for c in cases if c.batch_size is not None]
    if bc:
        paths.append(plot_batch(bc, out_dir, plt))
    else:
        skipped.append(
            "messages per second against batch size: no suite has cases with `extra_info[\"batch_size\"]` "
            "(or \"batch N\" in the group name)"
        )
    oc = overhead_cases(cases)
    if oc:
        paths.append(plot_overhead(oc, out_dir, plt))
    else:
        skipped.append(
            "overhead percentiles under load: no suite has cases with `extra_info[\"load\"]` "
            "(or \"overhead\" in the group name)"
        )
    return paths, skipped


def write_report(
    out_dir: Path,
    cases: list[Case],
    machine: dict[str, Any],
    command: str,
    *,
    changes: list[Change] | None = None,
    baseline: str | None = None,
    notes: list[str] = (),  # type: ignore[assignment]
) -> Path:
    """Write ``out_dir/report.md`` (tables, machine, command) and the PNG plots beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots, skipped = make_plots(cases, out_dir)
    lines = [
        "# raygent benchmarks\n",
        f"Produced by `{command}`.\n",
        "peer/ours: peer median / raygent median in the same group, from the same run "
        "(above 1 means raygent is faster). Times are per call; IQR is the interquartile range; "
        "outliers are counted with Tukey's fences (mild beyond 1.5 IQR, severe beyond 3 IQR) "
        "among the rounds; GB/s and µs/item are at the median.\n",
        "## Machine\n",
        *[f"- {line}" for line in header_lines(machine)],
        "",
    ]
    if notes:
        lines += ["## Notes\n", *[f"- {n}" for n in notes], ""]
    summary = markdown_summary(cases)
    if summary:
        lines += ["## Summary: raygent beside its peers, per group\n", summary]
    lines += ["## Results\n", markdown_tables(cases) if cases else "_No case finished._\n"]
    if changes is not None and baseline is not None:
        lines.append(markdown_compare(changes, baseline))
    lines.append("## Plots\n")
    for p in plots:
        lines.append(f"![{p.stem}]({p.name})\n")
    if skipped:
        lines.append("Skipped:\n")
        lines += [f"- {s}" for s in skipped]
        lines.append("")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def workdir() -> Path:
    """A fresh temporary folder for the per-file JSON of one run."""
    return Path(tempfile.mkdtemp(prefix="raygent-bench-"))


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the whole run (what `raygent bench` does)


def run_bench(
    *,
    suites: list[str],
    benches: Path,
    root: Path,
    save: str | None,
    compare_to: str | None,
    report: Path | None,
    threshold: float,
    rust: bool,
    quick: bool,
    command: str,
    out: Any,
    err: Any,
) -> int:
    """Run the selected suites, print the tables, then compare, save and report.

    Returns the exit code: 0, 1 when a case regressed past the threshold or a suite failed,
    2 when nothing can run (unknown suite, missing baseline), 130 after Ctrl-C (the finished
    cases are still printed, saved and reported).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    py_all = discover_suites(benches) if benches.is_dir() else {}
    rs_all: dict[str, Path] = {}
    notes: list[str] = []
    if rust:
        if shutil.which("cargo") is None:
            notes.append("criterion benches skipped: no Rust toolchain (`cargo`) on PATH")
        else:
            rs_all = discover_rust_benches(root)
    else:
        notes.append("criterion benches skipped (--no-rust)")
    py_sel = select(py_all, suites)
    rs_sel = select(rs_all, suites, prefix=True)
    unknown = [s for s in suites if not select(py_all, [s]) and not select(rs_all, [s], prefix=True)]
    if unknown:
        known = sorted(set(py_all) | set(rs_all))
        err.print(f"[bold red]error:[/] unknown suite(s) {', '.join(unknown)}; available: {', '.join(known) or 'none'}")
        return 2
    if not py_sel and not rs_sel:
        err.print(f"[bold red]error:[/] no benchmark suites found (test_bench_*.py in {benches})")
        return 2
    base_cases: list[Case] | None = None
    if compare_to:
        try:
            bpath = baseline_path(root, compare_to)
            base_machine, base_cases = load_baseline(bpath)
        except (OSError, ValueError) as e:
            err.print(f"[bold red]error:[/] cannot read baseline {compare_to!r}: {e}")
            return 2
        ran = set(py_sel) | set(rs_sel)
        base_cases = [c for c in base_cases if c.suite in ran]  # suites not run now are not "missing"
        if base_machine.get("cpu") and base_machine.get("cpu") != cpu_model():
            notes.append(f"baseline {compare_to!r} was taken on another CPU ({base_machine.get('cpu')})")
    if save:
        try:
            save_path = baseline_path(root, save)
        except ValueError as e:
            err.print(f"[bold red]error:[/] {e}")
            return 2
    if quick:
        notes.append("quick run (--quick): few rounds per case, figures are rough")

    cases: list[Case] = []
    failures: list[str] = []
    interrupted = False
    tmp = workdir()
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=False,
    )
    try:
        with progress:
            overall = progress.add_task("suites", total=len(py_sel) + len(rs_sel))
            for s in py_sel:
                progress.update(overall, description=f"suite [cyan]{s}[/]")
                task = progress.add_task(f"  [cyan]{s}[/] collecting", total=None)

                def on_collected(n: int, task: Any = task) -> None:
                    progress.update(task, total=n)

                def on_case(name: str, outcome: str, task: Any = task, s: str = s) -> None:
                    progress.update(task, advance=1, description=f"  [cyan]{s}[/] {name}")

                try:
                    res = run_pytest_file(
                        py_all[s], cwd=root, quick=quick, workdir=tmp, on_case=on_case, on_collected=on_collected
                    )
                except BenchInterrupted as e:
                    cases += e.cases
                    raise KeyboardInterrupt from None
                cases += res.cases
                progress.update(task, description=f"  [cyan]{s}[/] done")
                progress.advance(overall)
                if res.returncode not in (0, 5):
                    failures += res.failures or [f"{s}: pytest exited {res.returncode}"]
                    if not res.cases:
                        tail = "".join(res.log.splitlines(keepends=True)[-15:])
                        err.print(f"[red]suite {s} produced no results; pytest said:[/]\n{tail}")
            for name in rs_sel:
                progress.update(overall, description=f"criterion [magenta]{name}[/]")
                task = progress.add_task(f"  [magenta]{name} (criterion)[/] building", total=None)
                done = [0]

                def on_crit(case_id: str, task: Any = task, name: str = name, done: list = done) -> None:
                    done[0] += 1
                    progress.update(task, advance=1, description=f"  [magenta]{name}[/] {case_id}")

                try:
                    res = run_criterion_bench(name, root=root, quick=quick, on_case=on_crit)
                except BenchInterrupted as e:
                    cases += e.cases
                    raise KeyboardInterrupt from None
                cases += res.cases
                failures += res.failures
                progress.update(task, total=done[0], description=f"  [magenta]{name} (criterion)[/] done")
                progress.advance(overall)
                if res.returncode != 0:
                    tail = "".join(res.log.splitlines(keepends=True)[-15:])
                    err.print(f"[red]cargo bench {name} failed:[/]\n{tail}")
            progress.update(overall, description="suites done")
    except KeyboardInterrupt:
        interrupted = True
        notes.append("interrupted (Ctrl-C): only the cases that finished are shown")
    finally:
        cleanup(tmp)

    machine = machine_info(cases)
    for line in header_lines(machine):
        out.print(line, markup=False, highlight=False)
    out.print()
    for t in rich_tables(cases):
        out.print(t)
    for n in notes:
        out.print(f"[dim]note: {n}[/]")
    for f in failures:
        out.print(f"[bold red]failed:[/] {f}", highlight=False)

    changes = None
    if base_cases is not None:
        changes = compare(base_cases, cases, threshold)
        out.print(rich_compare_table(changes, compare_to or ""))
        regressed = [c for c in changes if c.regressed]
        if regressed:
            out.print(
                f"[bold red]{len(regressed)} case(s) regressed by more than {threshold:.0%} "
                "on the median, beyond their noise band[/]"
            )
    if save:
        save_baseline(save_path, cases, machine, command)
        out.print(f"baseline saved: {save_path}")
    if report is not None:
        path = write_report(report, cases, machine, command, changes=changes, baseline=compare_to, notes=notes + failures)
        out.print(f"report: {path}")
    if interrupted:
        return 130
    if failures or (changes and any(c.regressed for c in changes)):
        return 1
    return 0
