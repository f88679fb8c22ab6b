"""The workspace sandbox: every escape is refused with SandboxViolation and touches nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raygent.errors import SandboxViolation
from raygent.tools import Workspace, builtin_tools


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """``ws/`` (the workspace) beside ``outside/``, with symlinks from one into the other."""
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    ws.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("secret data\n")
    (ws / "a").mkdir()
    (ws / "a" / "inside.txt").write_text("inside data\n")
    (ws / "link_dir").symlink_to(outside, target_is_directory=True)
    (ws / "link_file").symlink_to(outside / "secret.txt")
    (ws / "dangling").symlink_to(outside / "created.txt")
    (ws / "a" / "up").symlink_to("..", target_is_directory=True)  # inside -> inside: allowed
    (ws / "nested_escape").symlink_to("a/up/../..", target_is_directory=True)
    return ws, outside


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` with its bytes and mtime (ns), to prove nothing changed."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


ESCAPES = [
    "../outside/secret.txt",
    "a/../../outside/secret.txt",
    "a/../../outside",
    "..",
    "/etc/passwd",
    "/",
    "link_dir/secret.txt",
    "link_dir",
    "link_file",
    "dangling",
    "link_dir/new/sub.txt",
    "nested_escape/outside/secret.txt",
    "a/up/../../outside/secret.txt",
    "a/inside.txt\0",
    "\0",
]


def arguments(tool_name: str, path: str) -> dict:
    return {
        "read_file": {"path": path},
        "write_file": {"path": path, "content": "pwned"},
        "edit_file": {"path": path, "old": "secret", "new": "pwned"},
        "list_dir": {"path": path},
        "grep": {"pattern": "secret", "path": path},
    }[tool_name]


@pytest.mark.parametrize("tool_name", ["read_file", "write_file", "edit_file", "list_dir", "grep"])
@pytest.mark.parametrize("path", ESCAPES)
async def test_tools_refuse_escapes(layout, tool_name, path):
    ws, outside = layout
    tools = builtin_tools(ws)
    before_outside, before_ws = snapshot(outside), snapshot(ws)
    with pytest.raises(SandboxViolation) as info:
        await tools[tool_name].invoke(arguments(tool_name, path))
    assert info.value.kind == "sandbox" and info.value.tool == tool_name
    assert "outside the workspace" in str(info.value) or "NUL" in str(info.value)
    assert snapshot(outside) == before_outside
    assert snapshot(ws) == before_ws
    assert not (outside / "created.txt").exists()
    assert not (outside / "new").exists()


@pytest.mark.parametrize(
    "path", ["../x", "a/../../x", "/etc/passwd", "link_dir/secret.txt", "link_file", "dangling", "a\0b"]
)
def test_resolve_refuses(layout, path):
    ws, _ = layout
    with pytest.raises(SandboxViolation) as info:
        Workspace(ws).resolve(path)
    assert info.value.path == path


def test_violation_message_names_the_cause(layout):
    ws, _ = layout
    w = Workspace(ws)
    with pytest.raises(SandboxViolation, match="through a symlink"):
        w.resolve("link_file")
    with pytest.raises(SandboxViolation, match="'..' or an absolute path"):
        w.resolve("../x")


def test_resolve_allows_paths_inside(layout):
    ws, _ = layout
    w = Workspace(ws)
    root = Path(os.path.realpath(ws))
    assert w.resolve("") == root and w.resolve(".") == root
    assert w.resolve("a/inside.txt") == root / "a/inside.txt"
    assert w.resolve(str(ws / "a" / "inside.txt")) == root / "a/inside.txt"  # absolute inside
    assert w.resolve("a/../a/new/deeper.txt") == root / "a/new/deeper.txt"  # not yet existing
    assert w.resolve("a/up/a/inside.txt") == root / "a/inside.txt"  # symlink staying inside
    assert w.relative("a/up/a") == "a"
    assert w.relative(".") == "."


def test_root_reached_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    w = Workspace(tmp_path / "alias")
    assert w.root == Path(os.path.realpath(real))
    assert w.relative(str(tmp_path / "alias" / "f.txt")) == "f.txt"
    with pytest.raises(SandboxViolation):
        w.resolve(str(tmp_path / "other.txt"))


def test_workspace_root_must_be_a_directory(tmp_path):
    with pytest.raises(NotADirectoryError):
        Workspace(tmp_path / "missing")


async def test_recursive_tools_do_not_follow_symlinks_out(layout):
    ws, _ = layout
    tools = builtin_tools(ws)
    # grep over the root must not read outside/secret.txt through link_dir or link_file.
    found = await tools["grep"].invoke({"pattern": "data", "path": "."})
    assert found == "a/inside.txt:1: inside data"
    listing = await tools["list_dir"].invoke({"path": ".", "max_depth": 3})
    assert "secret.txt" not in [line.strip() for line in listing.splitlines()]  # not entered
    assert f"  link_dir -> {ws.parent / 'outside'}" in listing.splitlines()


async def test_write_through_inside_symlink_stays_inside(layout):
    ws, _ = layout
    tools = builtin_tools(ws)
    assert await tools["write_file"].invoke({"path": "a/up/b.txt", "content": "ok"}) == "wrote 2 bytes to b.txt"
    assert (ws / "b.txt").read_text() == "ok"
