"""``raygent tools --mcp-stdio/--mcp-http``: a real CLI process listing a real FastMCP server's tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_mcp import SERVER_SCRIPT, free_port, start_http_server, stop

STDIO = f"{sys.executable} {SERVER_SCRIPT} stdio"


def raygent_tools(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raygent.cli", "tools", "--mcp-timeout-s", "60", *args],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "400"},  # one line per tool
    )


def test_json_lists_built_ins_then_the_stdio_servers_tools(tmp_path):
    done = raygent_tools("--workspace", str(tmp_path), "--json", "--mcp-stdio", STDIO)
    assert done.returncode == 0, done.stderr
    schemas = json.loads(done.stdout)
    names = [s["name"] for s in schemas]
    assert names[:6] == ["read_file", "write_file", "edit_file", "list_dir", "grep", "run_command"]
    assert names[6:] == ["lookup", "store", "fail", "picture", "nap", "stats"]
    lookup = schemas[6]
    assert lookup["description"] == "Read the value stored under a key."
    assert lookup["parameters"]["required"] == ["key"]


def test_text_lists_http_tools_with_their_kind_and_server():
    proc, url = start_http_server()
    try:
        done = raygent_tools("--mcp-http", url)
    finally:
        stop(proc)
    assert done.returncode == 0, done.stderr
    lines = done.stdout
    assert f"lookup (read-only) [mcp http: {url}]: Read the value stored under a key." in lines
    assert f"store (mutating) [mcp http: {url}]" in lines


def test_unreachable_server_exits_2_naming_it():
    url = f"http://127.0.0.1:{free_port()}/mcp"
    done = raygent_tools("--mcp-http", url)
    assert done.returncode == 2
    assert f"http: {url}" in done.stderr and "cannot connect" in done.stderr
    assert done.stdout == ""


def test_colliding_servers_exit_2_with_the_reason():
    # Two servers (different command lines) giving the same tool names.
    done = raygent_tools("--mcp-stdio", STDIO, "--mcp-stdio", f"{sys.executable} -u {SERVER_SCRIPT} stdio")
    assert done.returncode == 2
    assert "given by MCP servers" in done.stderr and "prefix" in done.stderr
