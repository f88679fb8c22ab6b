"""Result cache of read-only tool calls, with path-based write invalidation.

An entry is keyed by the tool name and the call's canonical arguments (JSON with sorted keys,
path arguments normalized relative to the workspace) and remembers the workspace paths the call
read. A mutating call invalidates every entry whose paths overlap its own: the same path, a
parent directory (a ``grep``/``list_dir`` over it) or a child; a mutating call whose paths are
unknown (``run_command``) invalidates every entry.

Entries expire after a TTL; the cache holds at most ``max_entries`` entries and ``max_bytes``
bytes of content (UTF-8), evicting the least recently used. A hit also re-checks the size and
modification time of the files the entry read, so an edit made outside the pipeline (a human in
an editor) is seen at once for ``read_file``; directory listings and searches rely on the TTL for
such edits.
"""

from __future__ import annotations

import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["ResultCache", "canonical_key", "paths_overlap", "ALL_PATHS"]

#: The path set of a call that may touch anything in the workspace.
ALL_PATHS: frozenset[str] = frozenset({"."})


def canonical_key(name: str, arguments: dict[str, Any]) -> bytes:
    """``name`` and ``arguments`` as one byte string: JSON with sorted keys, no whitespace.

    Path arguments must already be normalized by the caller (see ``ToolPipeline``).
    """
    return name.encode() + b"\0" + orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS, default=str)


def paths_overlap(a: Iterable[str], b: Iterable[str]) -> bool:
    """True if a path of ``a`` equals, contains or lies inside a path of ``b``.

    Paths are ``/``-separated and relative to the workspace root; ``"."`` is the root and so
    overlaps everything.
    """
    for p in a:
        for q in b:
            if p == q or p == "." or q == "." or q.startswith(p + "/") or p.startswith(q + "/"):
                return True
    return False


@dataclass(slots=True)
class _Entry:
    value: Any
    nbytes: int
    paths: frozenset[str]
    stamps: tuple[tuple[str, int, int], ...]
    expires: float


def file_stamps(paths: Iterable[str], root: str | None) -> tuple[tuple[str, int, int], ...]:
    """(path, size in bytes, mtime in ns) of each path that is a regular file under ``root``."""
    if root is None:
        return ()
    out = []
    for p in sorted(paths):
        try:
            st = os.stat(os.path.join(root, p))
        except OSError:
            out.append((p, -1, -1))
            continue
        if not stat.S_ISDIR(st.st_mode):
            out.append((p, st.st_size, st.st_mtime_ns))
    return tuple(out)


class ResultCache:
    """LRU cache with TTL, entry and byte limits, and path invalidation.

    Parameters
    ----------
    ttl_s : float, default 60.0
        Seconds an entry stays valid after it was stored.
    max_entries : int, default 1024
        Most entries held; the least recently used is evicted beyond it.
    max_bytes : int, default 32 MiB
        Most bytes of content held (UTF-8 length of the result text); a single result larger
        than this is not stored.
    root : str, optional
        Workspace root, for the file stamps checked on a hit. Without it stamps are not checked.
    clock : callable, default time.monotonic
        Returns seconds; injectable for tests.

    Raises
    ------
    ValueError
        If a limit is not positive.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 60.0,
        max_entries: int = 1024,
        max_bytes: int = 32 * 1024 * 1024,
        root: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_entries < 1 or max_bytes < 1:
            raise ValueError("cache ttl_s, max_entries and max_bytes must be positive")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.root = root
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expirations = 0
        self.invalidations = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes of content held."""
        return self._bytes

    def get(self, key: bytes) -> Any | None:
        """The value stored under ``key``, or None (a miss) if absent, expired or stale."""
        e = self._entries.get(key)
        if e is None:
            self.misses += 1
            return None
        if self._clock() >= e.expires or (e.stamps and file_stamps(e.paths, self.root) != e.stamps):
            self._drop(key)
            self.expirations += 1
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return e.value

    def peek(self, key: bytes) -> bool:
        """Whether ``key`` has a fresh entry, without counting a hit or a miss or touching its
        recency (for callers deciding whether to compute a value, not using it)."""
        e = self._entries.get(key)
        if e is None or self._clock() >= e.expires:
            return False
        return not (e.stamps and file_stamps(e.paths, self.root) != e.stamps)

    def put(
        self,
        key: bytes,
        value: Any,
        *,
        nbytes: int,
        paths: frozenset[str],
        stamps: tuple[tuple[str, int, int], ...] = (),
    ) -> bool:
        """Store ``value`` (``nbytes`` bytes) read from ``paths``; False if it is too large."""
        if nbytes > self.max_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        self._entries[key] = _Entry(value, nbytes, paths, stamps, self._clock() + self.ttl_s)
        self._bytes += nbytes
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1
        return True

    def invalidate(self, paths: frozenset[str] | None) -> int:
        """Drop every entry that read one of ``paths`` (None: every entry); returns how many."""
        if paths is None or ALL_PATHS <= paths:
            doomed = list(self._entries)
        else:
            doomed = [k for k, e in self._entries.items() if paths_overlap(paths, e.paths)]
        for k in doomed:
            self._drop(k)
        self.invalidations += len(doomed)
        return len(doomed)

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: bytes) -> None:
        e = self._entries.pop(key)
        self._bytes -= e.nbytes

    def stats(self) -> dict[str, int]:
        """Counters and sizes: hits, misses, evictions, expirations, invalidations, entries, bytes."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "invalidations": self.invalidations,
            "entries": len(self._entries),
            "bytes": self._bytes,
        }
