"""Built-in tools of a coding agent: files, search and shell, all confined to one workspace.

Every path argument goes through :meth:`Workspace.resolve`, and every byte of output passes the
Rust ANSI stripper before it is returned (``raygent._native``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fnmatch
import os
import re
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path

from raygent._native import AnsiStripper, strip_ansi
from raygent.errors import ToolArgumentError, ToolError, ToolTimeout
from raygent.tools._tool import Tool, emit, tool
from raygent.tools._workspace import Workspace

__all__ = ["builtin_tools", "SKIP_DIRS", "MAX_FILE_BYTES", "scrubbed_env", "pass_env"]

#: Directories that listing and search never enter (VCS data, environments, build output, and
#: the caches test and type-check tools write, whose copies of test names outrank real code).
SKIP_DIRS = frozenset(
    {".git", ".venv", "node_modules", "target", "__pycache__", ".raygent",
     ".pytest_cache", ".mypy_cache", ".hypothesis", ".ruff_cache", ".tox"}
)  # fmt: skip
#: Largest file read_file, edit_file and grep will open, in bytes (10 MiB).
MAX_FILE_BYTES = 10 * 1024 * 1024
_MAX_LIST_ENTRIES = 1000
_MAX_LINE_CHARS = 300
_BINARY_SNIFF_BYTES = 8192
_KILL_GRACE_S = 2.0  # SIGTERM -> SIGKILL, seconds
_READ_BYTES = 65536  # most bytes taken from the command's pipe per read
_DRAIN_GRACE_S = 1.0  # after the shell exits, how long background holders of stdout may keep it

# Names of environment variables that hold credentials; a command the model wrote must not see
# them (it could print them into the conversation). ``(^|_)TOKEN($|_)`` keeps e.g.
# TOKENIZERS_PARALLELISM.
_SECRET_ENV = re.compile(
    r"(^|_)API_?KEY($|_)|(^|_)TOKEN($|_)|SECRET|PASSW(OR)?D|PRIVATE_KEY|CREDENTIAL|"
    r"^AWS_ACCESS_KEY_ID$",
    re.IGNORECASE,
)


# Variables the user chose to give run_command (name -> value), on top of the scrubbed
# environment. A context variable, because one ToolActor serves every session of a workspace and
# each session names its own: it is set per turn and reaches the turn's tool tasks only.
_PASSED_ENV: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("raygent_passed_env", default={})


def scrubbed_env(env: Mapping[str, str] | None = None, *, passed: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) without variables whose names look like secrets.

    Dropped: names containing ``API_KEY``/``APIKEY``, ``TOKEN`` as a word (``GITHUB_TOKEN``,
    ``AWS_SESSION_TOKEN``), ``SECRET``, ``PASSWORD``/``PASSWD``, ``PRIVATE_KEY``, ``CREDENTIAL``,
    and ``AWS_ACCESS_KEY_ID``; case-insensitive. Everything else (``PATH``, ``HOME``, ``LANG``,
    ``AWS_REGION`` ...) is kept. ``passed`` (name -> value) is added last, whatever the names:
    the variables the user chose to give commands (``Agent(pass_env=[...])``).
    """
    source = os.environ if env is None else env
    out = {k: v for k, v in source.items() if not _SECRET_ENV.search(k)}
    out.update(passed or {})
    return out


@contextlib.contextmanager
def pass_env(values: Mapping[str, str]) -> Iterator[None]:
    """Give ``run_command`` calls started inside this block these variables (name -> value).

    They are added to the scrubbed environment even when their names look like secrets: naming
    them is the user's choice. The block covers the asyncio tasks created inside it (a
    :class:`~raygent.pipeline.ToolPipeline` turn started there), not others.
    """
    token = _PASSED_ENV.set(dict(values))
    try:
        yield
    finally:
        _PASSED_ENV.reset(token)


def builtin_tools(
    workspace: str | os.PathLike[str] | Workspace, *, max_output_bytes: int = 64 * 1024
) -> dict[str, Tool]:
    """The built-in tools bound to one workspace, by name.

    Parameters
    ----------
    workspace : str, os.PathLike or Workspace
        The directory the tools are confined to (must exist).
    max_output_bytes : int, default 65536
        Cap on ``run_command`` output in bytes (after ANSI stripping); the head and the tail are
        kept around a ``[... N bytes truncated ...]`` marker.

    Returns
    -------
    dict of str to Tool
        ``read_file``, ``write_file``, ``edit_file``, ``list_dir``, ``grep`` (these take paths
        relative to the workspace root) and ``run_command`` (``/bin/sh -c`` in the root).

    Raises
    ------
    NotADirectoryError
        If the workspace directory does not exist.
    ValueError
        If ``max_output_bytes`` is less than 2.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if max_output_bytes < 2:
        raise ValueError(f"max_output_bytes must be at least 2, got {max_output_bytes}")

    def existing_file(path: str) -> Path:
        p = ws.resolve(path)
        if not p.exists():
            raise ToolError(f"no such file: {path}")
        if p.is_dir():
            raise ToolError(f"{path} is a directory, not a file (use list_dir)")
        if not p.is_file():
            # A FIFO or device would block the reading thread forever.
            raise ToolError(f"{path} is not a regular file")
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ToolError(f"{path} is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
        return p

    @tool(read_only=True)
    def read_file(path: str, offset: int = 0, limit: int = 2000) -> str:
        """Read a text file of the workspace.

        Parameters
        ----------
        path : str
            File path, relative to the workspace root.
        offset : int
            First line to return, 0-based.
        limit : int
            Most lines to return.
        """
        if offset < 0 or limit < 1:
            raise ToolArgumentError("read_file: offset must be >= 0 and limit >= 1")
        with _fs_errors(path):
            data = existing_file(path).read_bytes()
        lines = strip_ansi(data.decode("utf-8", errors="replace")).splitlines(keepends=True)
        if offset and offset >= len(lines):
            return f"[offset {offset} is past the end: {path} has {len(lines)} lines]"
        end = min(offset + limit, len(lines))
        text = "".join(lines[offset:end])
        if offset or end < len(lines):
            more = f"; call again with offset={end} for more" if end < len(lines) else ""
            sep = "" if text.endswith("\n") or not text else "\n"
            text += f"{sep}[lines {offset}-{end - 1} of {len(lines)} (0-based){more}]"
        return text

    @tool
    def write_file(path: str, content: str) -> str:
        """Write a file of the workspace, replacing it if it exists; parent directories are created.

        Parameters
        ----------
        path : str
            File path, relative to the workspace root.
        content : str
            The full new content of the file.
        """
        p = ws.resolve(path)
        if p.is_dir():
            raise ToolError(f"{path} is a directory")
        data = content.encode("utf-8")
        with _fs_errors(path):
            # p is the resolved path, so every parent created here lies inside the workspace.
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return f"wrote {len(data)} bytes to {ws.relative(p)}"

    @tool
    def edit_file(path: str, old: str, new: str, replace_all: bool = False) -> str:
        """Replace an exact piece of text in a file of the workspace.

        Parameters
        ----------
        path : str
            File path, relative to the workspace root.
        old : str
            The exact text to replace (whitespace and indentation included). It must occur
            exactly once unless replace_all is true.
        new : str
            The replacement text.
        replace_all : bool
            Replace every occurrence of old.
        """
        if not old:
            raise ToolArgumentError("edit_file: old must not be empty")
        if old == new:
            raise ToolArgumentError("edit_file: old and new are the same; nothing to change")
        with _fs_errors(path):
            p = existing_file(path)
            data = p.read_bytes()
        try:
            # Bytes then decode, so CRLF line endings are kept exactly (read_text would translate).
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ToolError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        count = text.count(old)
        if count == 0:
            raise ToolError(f"old text not found in {path}; read the file and copy it exactly")
        if count > 1 and not replace_all:
            raise ToolError(
                f"old text occurs {count} times in {path}; add surrounding lines to make it "
                "unique, or set replace_all"
            )
        with _fs_errors(path):
            p.write_bytes(text.replace(old, new).encode("utf-8"))
        return f"replaced {count} occurrence{'s' if count > 1 else ''} in {ws.relative(p)}"

    @tool(read_only=True)
    def list_dir(path: str = ".", max_depth: int = 2) -> str:
        """List a directory of the workspace as a tree; directories end with '/'.

        Skips .git, .venv, node_modules, target, __pycache__, .raygent and tool caches
        (.pytest_cache, .mypy_cache, .hypothesis, .ruff_cache, .tox). Symlinks are shown
        with their target and not entered.

        Parameters
        ----------
        path : str
            Directory path, relative to the workspace root.
        max_depth : int
            Levels to descend; 1 lists only the directory's own entries.
        """
        if max_depth < 1:
            raise ToolArgumentError("list_dir: max_depth must be >= 1")
        top = ws.resolve(path)
        if not top.is_dir():
            raise ToolError(f"{path} is not a directory" if top.exists() else f"no such directory: {path}")
        out = [f"{ws.relative(top)}/"]
        truncated = False

        def walk(d: Path, depth: int) -> None:
            nonlocal truncated
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError as exc:
                out.append(f"{'  ' * depth}[cannot list: {exc.strerror}]")
                return
            for e in entries:
                if len(out) > _MAX_LIST_ENTRIES:
                    truncated = True
                    return
                pad = "  " * depth
                if e.is_symlink():
                    out.append(f"{pad}{e.name} -> {os.readlink(e.path)}")
                elif e.is_dir():
                    if e.name in SKIP_DIRS:
                        continue
                    out.append(f"{pad}{e.name}/")
                    if depth < max_depth:
                        walk(Path(e.path), depth + 1)
                else:
                    out.append(f"{pad}{e.name}")

        walk(top, 1)
        if truncated:
            out.append(f"[... listing stopped at {_MAX_LIST_ENTRIES} entries; list a subdirectory]")
        return strip_ansi("\n".join(out))

    @tool(read_only=True)
    def grep(
        pattern: str,
        path: str = ".",
        glob: str | None = None,
        max_results: int = 100,
        ignore_case: bool = False,
    ) -> str:
        """Search files of the workspace for a regular expression (Python re syntax).

        Output lines are 'path:line: text' with 1-based line numbers; binary files and the
        directories list_dir skips are not searched.

        Parameters
        ----------
        pattern : str
            Regular expression, matched against each line.
        path : str
            File or directory to search, relative to the workspace root.
        glob : str
            Only search files whose name (or relative path, if it contains '/') matches this
            glob, e.g. '*.py'.
        max_results : int
            Most matching lines to return.
        ignore_case : bool
            Match case-insensitively.
        """
        if max_results < 1:
            raise ToolArgumentError("grep: max_results must be >= 1")
        try:
            rx = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as exc:
            raise ToolArgumentError(f"grep: invalid regular expression {pattern!r}: {exc}") from None
        top = ws.resolve(path)
        if not top.exists():
            raise ToolError(f"no such file or directory: {path}")
        if glob and glob.startswith("**/") and "/" not in glob[3:]:
            glob = glob[3:]  # fnmatch has no '**'; "**/*.py" means any *.py at any depth
        hits: list[str] = []
        extra = 0
        for f in _files_under(top):
            # Lexical, not resolved: a symlink's own path is what the model can pass back.
            rel = f.relative_to(ws.root).as_posix()
            if glob and not fnmatch.fnmatch(rel if "/" in glob else f.name, glob):
                continue
            for lineno, line in _text_lines(f, ws):
                if rx.search(line):
                    if len(hits) < max_results:
                        if len(line) > _MAX_LINE_CHARS:
                            line = line[:_MAX_LINE_CHARS] + " [...]"
                        hits.append(f"{rel}:{lineno}: {line}")
                    else:
                        extra += 1
        if not hits:
            return f"no matches for {pattern!r} in {ws.relative(top)}"
        if extra:
            hits.append(f"[... {extra} more matches not shown; narrow the pattern, path or glob]")
        return strip_ansi("\n".join(hits))

    @tool
    async def run_command(command: str, timeout_s: float = 60.0) -> str:
        """Run a shell command (/bin/sh -c) in the workspace root; stdout and stderr are merged.

        The command has no stdin; variables holding secrets are removed from its environment
        (except those the user passes). Processes it leaves running are stopped when it exits
        or times out. Its output is streamed while it runs (``raygent.tools.emit``).

        Parameters
        ----------
        command : str
            The shell command line.
        timeout_s : float
            Seconds before the command and all its child processes are killed.
        """
        if not timeout_s > 0:
            raise ToolArgumentError("run_command: timeout_s must be > 0")
        return await _run_shell(command, ws.root, timeout_s, max_output_bytes)

    return {t.name: t for t in (read_file, write_file, edit_file, list_dir, grep, run_command)}


# --- file helpers -------------------------------------------------------------------------------


@contextlib.contextmanager
def _fs_errors(path: str):
    """Report an OSError (permission, read-only filesystem ...) as a ToolError naming the path."""
    try:
        yield
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror or exc}") from None


def _files_under(top: Path):
    """Regular files under ``top`` (or ``top`` itself), sorted, skipping SKIP_DIRS."""
    if top.is_file():
        yield top
        return
    # followlinks=False: a symlinked directory is never entered (it may point anywhere).
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            yield Path(dirpath, name)


def _text_lines(f: Path, ws: Workspace):
    """(1-based line number, line) of a text file; nothing for binary, huge or outside files."""
    try:
        # A symlinked file is searched only if its target is inside the workspace too.
        real = ws.resolve(f)
        if not real.is_file() or real.stat().st_size > MAX_FILE_BYTES:
            return
        data = real.read_bytes()
    except (OSError, ToolError):
        return
    if b"\0" in data[:_BINARY_SNIFF_BYTES]:
        return
    for i, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        yield i, line


# --- shell --------------------------------------------------------------------------------------


class _HeadTail:
    """Keeps the first and last bytes of a stream, counting what was dropped in between."""

    def __init__(self, max_bytes: int) -> None:
        self.head_cap = max_bytes // 2
        self.tail_cap = max_bytes - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if not dropped:
            return head + tail
        return f"{head}\n[... {dropped} bytes truncated ...]\n{tail}"


async def _run_shell(command: str, cwd: Path, timeout_s: float, max_output_bytes: int) -> str:
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Own session and process group (pgid == pid), so one killpg reaches every descendant.
        start_new_session=True,
        env=scrubbed_env(passed=_PASSED_ENV.get()),
    )
    out = _HeadTail(max_output_bytes)
    stripper = AnsiStripper()
    stdout = proc.stdout
    assert stdout is not None  # stdout=PIPE above

    async def pump() -> None:
        # read(n) returns whatever the pipe holds (up to n bytes) as soon as anything arrives,
        # so progress is reported as the command writes it; the pipeline coalesces the deltas.
        while chunk := await stdout.read(_READ_BYTES):
            text = stripper.feed(chunk)
            out.add(text.encode("utf-8"))
            emit(text)

    reader = asyncio.ensure_future(pump())
    notes: list[str] = []
    try:
        try:
            await asyncio.wait_for(_wait_exit(proc, reader, notes), timeout_s)
        except TimeoutError:
            await _kill_group(proc)
            await _finish_reader(reader)
            rest = stripper.finish()
            out.add(rest.encode("utf-8"))
            emit(rest)
            raise ToolTimeout(
                f"command timed out after {timeout_s} s; its process group was killed. "
                f"Output so far:\n{out.text()}",
                timeout_s=timeout_s,
            ) from None
    finally:
        # Runs on success, timeout and cancellation alike: nothing the command started survives.
        await _kill_group(proc)
        reader.cancel()
    rest = stripper.finish()
    out.add(rest.encode("utf-8"))
    emit(rest)
    text = out.text()
    if text and not text.endswith("\n"):
        text += "\n"
    return "".join(f"{n}\n" for n in notes) + text + f"[exit code {proc.returncode}]"


async def _wait_exit(proc: asyncio.subprocess.Process, reader: asyncio.Future, notes: list[str]) -> None:
    # Not proc.wait(): on Python 3.11 it also waits for the pipes to close, which a background
    # child holding stdout delays indefinitely. returncode is set as soon as the shell exits.
    while proc.returncode is None and not reader.done():
        await asyncio.wait({reader}, timeout=0.02)
    if not reader.done():
        # Background children still hold stdout: read what they write for a short grace, then
        # stop (the finally in _run_shell kills them).
        done, _ = await asyncio.wait({reader}, timeout=_DRAIN_GRACE_S)
        if not done:
            notes.append("[background processes still running after the command exited were stopped]")
    await _reaped(proc, timeout_s=None)


async def _reaped(proc: asyncio.subprocess.Process, timeout_s: float | None) -> None:
    """Wait until the shell's exit status is known (polling, for the reason in _wait_exit)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    while proc.returncode is None and (deadline is None or loop.time() < deadline):
        await asyncio.sleep(0.02)


async def _finish_reader(reader: asyncio.Future) -> None:
    """Let the reader take what is left in the pipe after a kill, without waiting on it long."""
    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(reader), 0.5)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period, and reap the shell."""
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone
    else:
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _KILL_GRACE_S
            while loop.time() < deadline and _group_alive(pgid):
                await asyncio.sleep(0.05)
        finally:
            # Also when the wait above is cancelled: the group must not outlive the call.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
    await _reaped(proc, timeout_s=_KILL_GRACE_S)


def _group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` still runs; zombies do not count.

    Orphaned children are reparented to PID 1, which may reap them late (in containers it is
    often not a real init), and a zombie still answers ``killpg(pgid, 0)``.
    """
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return True  # no procfs: trust killpg
    for pid in entries:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                # Fields after the parenthesized command name: state, ppid, pgrp, ...
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False
