"""Tools: the ``@tool`` decorator, the workspace sandbox and the built-in tools."""

from raygent.tools._builtin import MAX_FILE_BYTES, SKIP_DIRS, builtin_tools, scrubbed_env
from raygent.tools._tool import Tool, emit, tool
from raygent.tools._workspace import Workspace

__all__ = [
    "MAX_FILE_BYTES",
    "SKIP_DIRS",
    "Tool",
    "Workspace",
    "builtin_tools",
    "emit",
    "scrubbed_env",
    "tool",
]
