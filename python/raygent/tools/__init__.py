"""Tools: the ``@tool`` decorator, the workspace sandbox, the built-in tools and MCP servers."""

from raygent.tools._builtin import MAX_FILE_BYTES, SKIP_DIRS, builtin_tools, pass_env, scrubbed_env
from raygent.tools._mcp import (
    MCPConfigError,
    MCPConnectError,
    MCPConnection,
    MCPError,
    MCPRegistry,
    MCPServer,
    MCPTool,
    MCPToolError,
)
from raygent.tools._tool import Tool, emit, tool
from raygent.tools._workspace import Workspace

__all__ = [
    "MAX_FILE_BYTES",
    "MCPConfigError",
    "MCPConnectError",
    "MCPConnection",
    "MCPError",
    "MCPRegistry",
    "MCPServer",
    "MCPTool",
    "MCPToolError",
    "SKIP_DIRS",
    "Tool",
    "Workspace",
    "builtin_tools",
    "emit",
    "pass_env",
    "scrubbed_env",
    "tool",
]
