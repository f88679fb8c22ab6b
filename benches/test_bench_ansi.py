"""ANSI stripping: raygent beside the strippers a Python user would pick instead.

Inputs are captured when the session starts, from real programs, into a temporary directory
(never committed): ``git log -p --color=always`` and ``grep --color=always -rn`` and
``ls --color=always -laR`` on this repository, ``pytest --color=yes`` on a small test file,
``cargo build`` of a tiny crate with ``CARGO_TERM_COLOR=always``, a rich progress bar drawn to
a forced terminal; plus the ``../shared/data/ansi`` captures and ESC-free text.

Every case checks its output before it is timed. A peer is timed on an input only when its
output equals ours, or equals ours once the sequences it leaves in are removed; then the case
says so in ``extra_info["tolerated"]`` (and in its variant). Otherwise the case is skipped with
the reason. Peers that are not installed are skipped by name.

Run: ``.venv/bin/python -m pytest benches/test_bench_ansi.py --benchmark-only``
(or ``--benchmark-disable -q`` as a quick check).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ansi_peers import PEERS, agreement  # noqa: E402
from conftest import SHARED_DATA, case  # noqa: E402

from raygent._native import AnsiStripper, strip_ansi, strip_ansi_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_FILES = [
    "buildkite-terminal-to-html/fixtures/npm.sh.raw",
    "buildkite-terminal-to-html/fixtures/docker-compose-pull.sh.raw",
    "buildkite-terminal-to-html/fixtures/pikachu.sh.raw",
]
CAPTURES = ["git-log-p", "grep-rn", "ls-laR", "pytest", "cargo-build", "rich-progress"]
STREAM_CHUNK = 64 * 1024


def _run(args, cwd, env=None) -> bytes:
    try:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return b""
    return done.stdout + done.stderr


def _rich_progress() -> bytes:
    from rich.console import Console
    from rich.progress import Progress

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system="truecolor")
    with Progress(console=console, auto_refresh=False) as progress:
        task = progress.add_task("downloading", total=500)
        for _ in range(500):
            progress.advance(task)
            progress.refresh()
    return out.getvalue().encode()


def _capture(tmp: Path) -> dict[str, bytes]:
    got: dict[str, bytes] = {}
    got["git-log-p"] = _run(["git", "log", "-p", "--color=always"], ROOT)
    got["grep-rn"] = _run(
        ["grep", "--color=always", "-rn", "--exclude-dir=.git", "--exclude-dir=target",
         "--exclude-dir=.venv", "--exclude-dir=node_modules", "-e", "def ", "-e", "fn ", "."],
        ROOT,
    )
    got["ls-laR"] = _run(
        ["ls", "--color=always", "-laR", *[d for d in ("python", "rust", "tests", "benches") if (ROOT / d).exists()]],
        ROOT,
    )
    test_file = tmp / "test_small.py"
    test_file.write_text(
        "import pytest\n\n"
        "@pytest.mark.parametrize('n', range(40))\n"
        "def test_ok(n):\n    assert n >= 0\n\n"
        "def test_fails():\n    assert {'a': 1, 'b': [1, 2]} == {'a': 2, 'b': [1, 3]}\n\n"
        "@pytest.mark.skip(reason='shown in yellow')\ndef test_skipped():\n    pass\n"
    )
    got["pytest"] = _run(
        [sys.executable, "-m", "pytest", "--color=yes", "-p", "no:cacheprovider", "-v", str(test_file)], tmp
    )
    cargo = shutil.which("cargo")
    if cargo:
        crate = tmp / "tiny"
        (crate / "src").mkdir(parents=True)
        (crate / "Cargo.toml").write_text('[package]\nname = "tiny"\nversion = "0.1.0"\nedition = "2021"\n')
        (crate / "src" / "main.rs").write_text(
            "fn main() {\n    let unused = 1;\n    let mut x = 2;\n    println!(\"hi\");\n}\n"
        )
        env = {**os.environ, "CARGO_TERM_COLOR": "always", "CARGO_TARGET_DIR": str(tmp / "target")}
        got["cargo-build"] = _run([cargo, "build", "--offline"], crate, env)
    got["rich-progress"] = _rich_progress()
    return {k: v for k, v in got.items() if b"\x1b" in v}


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> dict[str, bytes]:
    data = _capture(tmp_path_factory.mktemp("ansi-captures"))
    if SHARED_DATA.is_dir():
        for rel in SHARED_FILES:
            path = SHARED_DATA / "ansi" / rel
            if path.is_file():
                data[path.name] = path.read_bytes()
    if "git-log-p" in data:
        plain = strip_ansi_bytes(data["git-log-p"])
        data["esc-free"] = plain * (4_000_000 // max(len(plain), 1) + 1)
    return data


INPUT_NAMES = [*CAPTURES, *(Path(p).name for p in SHARED_FILES), "esc-free"]


def _input(inputs, name) -> bytes:
    if name not in inputs:
        pytest.skip(f"input {name!r} could not be captured here (program missing or no color)")
    return inputs[name]


def _kind(name: str) -> str:
    return "esc-free" if name == "esc-free" else "colored"


def _stream(chunks) -> str:
    s = AnsiStripper()
    return "".join([s.feed(c) for c in chunks]) + s.finish()


def _stream_consume(chunks) -> int:
    """What a stream consumer does: take each piece as it comes (no joining, which would
    cost a copy of the whole output that one-shot does not pay). Returns characters seen."""
    s = AnsiStripper()
    n = 0
    for c in chunks:
        n += len(s.feed(c))
    return n + len(s.finish())


@pytest.mark.parametrize("name", INPUT_NAMES)
def test_str_raygent(benchmark, inputs, name):
    data = _input(inputs, name)
    text = data.decode("utf-8", "replace")
    case(benchmark, group=f"ansi str {_kind(name)}: {name}", impl="raygent", nbytes=len(text.encode()))
    out = strip_ansi(text)
    assert "\x1b" not in out
    assert out.encode() == strip_ansi_bytes(text.encode())
    if name == "esc-free":
        assert out is text
    assert benchmark(strip_ansi, text) == out


@pytest.mark.parametrize("name", INPUT_NAMES)
def test_str_raygent_stream(benchmark, inputs, name):
    data = _input(inputs, name)
    text = data.decode("utf-8", "replace")
    case(benchmark, group=f"ansi str {_kind(name)}: {name}", impl="raygent", nbytes=len(text.encode()))
    benchmark.extra_info["variant"] = "AnsiStripper, 64 KiB chunks"
    chunks = [text[i : i + STREAM_CHUNK] for i in range(0, len(text), STREAM_CHUNK)]
    expected = strip_ansi(text)
    assert _stream(chunks) == expected  # checked whole before timing
    assert benchmark(_stream_consume, chunks) == len(expected)


@pytest.mark.parametrize("name", INPUT_NAMES)
@pytest.mark.parametrize("peer", PEERS, ids=[p[0] for p in PEERS])
def test_str_peer(benchmark, inputs, name, peer):
    label, dist, load = peer
    try:
        fn = load()
    except ImportError:
        pytest.skip(f"{label} is not installed (pip install {dist})")
    data = _input(inputs, name)
    text = data.decode("utf-8", "replace")
    ours = strip_ansi(text)
    how = agreement(fn(text), ours)
    if how is None:
        pytest.skip(f"{label} removes text or keeps what is not a sequence on {name}; not comparable")
    case(benchmark, group=f"ansi str {_kind(name)}: {name}", impl=dist, nbytes=len(text.encode()))
    if dist == "ansi-regex-port":
        benchmark.extra_info["version"] = "ansi-regex 6.2.2 pattern"
    if how != "exact":
        benchmark.extra_info["tolerated"] = how
        benchmark.extra_info["variant"] = f"tolerated: {how}"
    result = benchmark(fn, text)
    assert agreement(result, ours) == how


@pytest.mark.parametrize("name", INPUT_NAMES)
def test_bytes_raygent(benchmark, inputs, name):
    data = _input(inputs, name)
    case(benchmark, group=f"ansi bytes {_kind(name)}: {name}", impl="raygent", nbytes=len(data))
    out = strip_ansi_bytes(data)
    assert b"\x1b" not in out
    assert benchmark(strip_ansi_bytes, data) == out


@pytest.mark.parametrize("name", INPUT_NAMES)
def test_bytes_ansi_regex_port(benchmark, inputs, name):
    # What a user of a str-only stripper does with bytes: decode, strip, encode.
    from _ansi_peers import ansi_regex_port

    data = _input(inputs, name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pytest.skip(f"{name} is not valid UTF-8; a str-only peer cannot round-trip it")
    ours = strip_ansi_bytes(data)
    how = agreement(ansi_regex_port(text), ours.decode())
    if how is None:
        pytest.skip(f"ansi-regex port differs from ours on {name}")
    case(benchmark, group=f"ansi bytes {_kind(name)}: {name}", impl="ansi-regex-port", nbytes=len(data))
    benchmark.extra_info["version"] = "ansi-regex 6.2.2 pattern"
    benchmark.extra_info["variant"] = "decode, strip, encode" + ("" if how == "exact" else f"; tolerated: {how}")
    out = benchmark(lambda: ansi_regex_port(data.decode("utf-8")).encode("utf-8"))
    assert agreement(out.decode(), ours.decode()) == how


def test_peer_versions_recorded():
    # Not a benchmark: the versions the table is made with, for the report.
    versions = {dist: _version(dist) for _, dist, _ in PEERS}
    assert versions["rich"] != "not installed"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"
