"""An MCP tool called from a full agent turn on real Ray: ``Agent(mcp_servers=[...])``.

The model is a small OpenAI-compatible Chat Completions endpoint on 127.0.0.1 (a real HTTP
server streaming SSE to raygent's real OpenAI provider): asked first, it calls the MCP tools it
was offered; shown their results, it answers with them. The MCP servers are the FastMCP test
server over stdio (spawned by the ToolActor) and over streamable HTTP (a subprocess here).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from test_mcp import SERVER_SCRIPT, start_http_server, stop

import raygent
from raygent import MCPServer
from raygent.messages import AssistantMessage, ToolMessage
from raygent.tools import MCPConnectError

pytestmark = pytest.mark.ray


class ToolCallingModel(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions``: the first response calls ``s_lookup`` and ``h_lookup``, the
    next (once tool results are in the conversation) answers with their contents."""

    requests: list[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(body)
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if results:
            events = [{"choices": [{"index": 0, "delta": {"content": "Found: " + "; ".join(results)},
                                    "finish_reason": "stop"}]}]  # fmt: skip
        else:
            calls = [
                {"index": i, "id": f"call_{i}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps({"key": key})}}
                for i, (name, key) in enumerate([("s_lookup", "alpha"), ("h_lookup", "beta")])
            ]  # fmt: skip
            events = [
                {"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": calls}}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            ]
        payload = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def model_endpoint() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    requests: list[dict[str, Any]] = []
    handler = type("Handler", (ToolCallingModel,), {"requests": requests})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def http_mcp() -> Iterator[str]:
    proc, url = start_http_server()
    try:
        yield url
    finally:
        stop(proc)


def test_agent_turn_calls_mcp_tools_over_stdio_and_http(ray_cluster, tmp_path, model_endpoint, http_mcp):
    base_url, requests = model_endpoint
    servers = [
        MCPServer.stdio(sys.executable, [str(SERVER_SCRIPT), "stdio"], prefix="s_", connect_timeout_s=60.0),
        MCPServer.http(http_mcp, prefix="h_", connect_timeout_s=60.0),
    ]
    agent = raygent.Agent(workspace=tmp_path, model="test-model", base_url=base_url, api_key="unused",
                          mcp_servers=servers)  # fmt: skip
    try:
        result = agent.run("What are alpha and beta?")
        offered = {t["function"]["name"]: t["function"] for t in requests[0]["tools"]}
        assert {"s_lookup", "s_store", "h_lookup", "h_store", "read_file"} <= set(offered)
        assert offered["s_lookup"]["parameters"]["properties"]["key"]["type"] == "string"
        assert offered["h_lookup"]["description"] == "Read the value stored under a key."

        assert [(c.name, c.arguments) for c in result.tool_calls] == [
            ("s_lookup", {"key": "alpha"}), ("h_lookup", {"key": "beta"})
        ]  # fmt: skip
        assert sorted(r.content for r in result.tool_results) == ["alpha=1", "beta=2"]
        assert not any(r.is_error for r in result.tool_results)
        history = agent.history()
        tool_messages = [m for m in history if isinstance(m, ToolMessage)]
        assert {(m.name, m.content) for m in tool_messages} == {("s_lookup", "alpha=1"), ("h_lookup", "beta=2")}
        assert isinstance(history[-1], AssistantMessage)
        assert result.text == history[-1].content
        assert result.text in ("Found: alpha=1; beta=2", "Found: beta=2; alpha=1")
        assert len(requests) == 2

        # A second agent of the same workspace reuses the connections (no second server spawn):
        # the stdio server's cache hit shows the call answered from the shared pipeline.
        second = raygent.Agent(workspace=tmp_path, model="test-model", base_url=base_url, api_key="unused",
                               mcp_servers=servers)  # fmt: skip
        try:
            again = second.run("And again?")
            assert sorted(r.content for r in again.tool_results) == ["alpha=1", "beta=2"]
            assert all(r.cached for r in again.tool_results)
        finally:
            second.close()
    finally:
        agent.close()
        ray_cluster.get(agent._tools.close_mcp.remote())


def test_agent_with_an_unreachable_mcp_server_fails_naming_it(ray_cluster, tmp_path):
    with pytest.raises(MCPConnectError, match="'ghost'"):
        raygent.Agent(workspace=tmp_path, model="scripted",
                      mcp_servers=[MCPServer.stdio("/nonexistent/mcp-server", name="ghost")])  # fmt: skip
