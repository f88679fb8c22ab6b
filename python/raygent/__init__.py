"""raygent: a runtime for LLM tool-using agents on Ray actors, with a Rust core for the hot paths.

>>> import raygent
>>> raygent.init()                                   # like ray.init(): local cluster or join one
>>> agent = raygent.Agent(workspace=".", model="scripted")
>>> result = agent.run("where is the ANSI stripper?")
>>> for chunk in agent.stream("and the JSON parser?"): ...
"""

from raygent.errors import AgentError, RaygentError, WorkflowError
from raygent.policy import Policy
from raygent.runtime import Agent, RunResult, init, shutdown
from raygent.tools import MCPError, MCPServer, Tool, tool
from raygent.workflow import Step, Stop, Workflow, WorkflowResult

__version__ = "0.1.0"

__all__ = [
    "init",
    "shutdown",
    "Agent",
    "RunResult",
    "tool",
    "Tool",
    "Policy",
    "MCPServer",
    "MCPError",
    "RaygentError",
    "AgentError",
    "Workflow",
    "Step",
    "Stop",
    "WorkflowResult",
    "WorkflowError",
]
