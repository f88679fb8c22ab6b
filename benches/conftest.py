"""Conventions every benchmark case follows, so ``raygent bench`` can put peers side by side.

A case calls :func:`case` once before timing:

- ``group``: what is measured, the same string for raygent and every peer doing the same job
  on the same input (for example ``"ansi str colored: npm-install.sh.raw"``);
- ``impl``: ``"raygent"`` for ours, the peer's distribution name otherwise (``"jiter"``);
- ``nbytes``: input size in bytes, for throughput (GB/s); ``items``: units of work per round
  (deltas fed, messages sent), for per-item cost.

Each case checks its result against a reference before it is timed, so a fast wrong answer
cannot pass as a win.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def case(benchmark, *, group: str, impl: str, nbytes: int | None = None, items: int | None = None) -> None:
    """Label a pytest-benchmark case (see module docs)."""
    benchmark.group = group
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["version"] = version_of("raygent" if impl == "raygent" else impl)
    if nbytes is not None:
        benchmark.extra_info["bytes"] = nbytes
    if items is not None:
        benchmark.extra_info["items"] = items


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data beside the project)")
    return SHARED_DATA
