"""Tool-call policies: ``allow``, ``prompt`` or ``deny`` per tool and per shell-command pattern.

A :class:`Policy` decides, before a tool call runs, whether it runs (``allow``), waits for a
person to approve it (``prompt``: the session moves to ``WaitingForUser`` and the caller sees an
:class:`~raygent.messages.ApprovalRequest`), or is refused (``deny``: the model gets an error
result of kind ``"denied"`` and the session goes on).

Rules, in Python or TOML::

    # <workspace>/.raygent/policy.toml (read by default), or Agent(policy="path.toml")
    default = "allow"              # a call no rule matches

    [tools]                        # tool name (fnmatch glob) -> decision
    write_file = "prompt"
    edit_file = "prompt"
    "mcp_*" = "prompt"

    [commands]                     # run_command's `command` (fnmatch glob) -> decision
    "git status*" = "allow"
    "git diff*" = "allow"
    "rm *" = { decision = "deny", reason = "delete files by hand" }
    "*" = "prompt"

Matching
--------
- Patterns are shell-style globs (:func:`fnmatch.fnmatchcase`: ``*``, ``?``, ``[seq]``;
  case-sensitive), matched against the whole tool name or the whole command. ``*`` also
  matches ``/`` and spaces.
- **First match wins**, in the order the rules are written (a TOML table and a Python ``dict``
  keep their order): put the specific patterns before the broad ones.
- A ``run_command`` call is decided by ``[commands]`` first; when no command pattern matches,
  by its ``[tools]`` rule, then by ``default``.
- A compound command is split into its simple commands at the shell's control operators
  outside quotes (``;``, ``&``, ``&&``, ``|``, ``||``, newline); each part is decided on its
  own and the strictest decision wins (``deny`` over ``prompt`` over ``allow``), so
  ``git status; rm -rf x`` is not allowed by ``"git status*" = "allow"``.
- Command substitution (``$(...)``, backquotes, ``<(...)``, ``>(...)``) or a command the
  splitter cannot read (an unclosed quote) can run anything, so a pattern can at most
  ``prompt`` it: an ``allow`` becomes ``prompt``.
- Redirections are part of the simple command they follow and are not treated specially:
  ``"echo *" = "allow"`` also allows ``echo x > setup.py``. Deny or prompt them with a pattern
  written before the allow (``"*>*" = "prompt"``).
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from raygent.errors import PolicyError
from raygent.messages import ToolCall

__all__ = ["Policy", "Rule", "Verdict", "DECISIONS", "POLICY_FILE", "load_policy", "split_command"]

#: The decisions, weakest first (the strictest of several wins).
DECISIONS = ("allow", "prompt", "deny")
#: Where an agent looks for its policy, relative to the workspace root.
POLICY_FILE = ".raygent/policy.toml"

Decision = Literal["allow", "prompt", "deny"]
_RANK = {d: i for i, d in enumerate(DECISIONS)}
_COMMAND_TOOL = "run_command"


class Rule(msgspec.Struct, frozen=True):
    """A decision with the reason given to the model (deny) or to the approver (prompt)."""

    decision: str
    reason: str = ""


class Verdict(msgspec.Struct, frozen=True):
    """What the policy decided for one call.

    Attributes
    ----------
    decision : str
        ``"allow"``, ``"prompt"`` or ``"deny"``.
    rule : str
        The rule that decided, as written: ``'commands."rm *"'``, ``"tools.write_file"``,
        ``"default"``; for a compound command, the rule of its strictest part.
    reason : str
        The rule's reason, or why an ``allow`` became ``prompt`` (command substitution).
    """

    decision: str
    rule: str
    reason: str = ""


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """Decisions per tool and per ``run_command`` command pattern (see the module docs).

    Parameters
    ----------
    default : {"allow", "prompt", "deny"}, default "allow"
        The decision for a call no rule matches.
    tools : dict of str to str or Rule
        Tool-name glob -> decision (or :class:`Rule` with a reason), first match wins.
    commands : dict of str to str or Rule
        ``run_command`` command glob -> decision (or :class:`Rule`), first match wins.
    source : str
        Where the policy came from (a file path), for messages; ``""`` for Python.

    Raises
    ------
    PolicyError
        A decision that is not one of :data:`DECISIONS`, or an empty pattern.

    Examples
    --------
    >>> Policy(tools={"write_file": "prompt"}, commands={"git *": "allow", "*": "prompt"})
    """

    default: str = "allow"
    tools: dict[str, str | Rule] = {}
    commands: dict[str, str | Rule] = {}
    source: str = ""

    def __post_init__(self) -> None:
        where = self.source or "Policy"
        _check_decision(self.default, where, "default")
        for table in ("tools", "commands"):
            for pattern, value in getattr(self, table).items():
                key = f"{table}.{_quote(pattern)}"
                if not isinstance(pattern, str) or not pattern:
                    raise PolicyError(where, f"{table}: a pattern must be a non-empty string")
                _check_decision(value.decision if isinstance(value, Rule) else value, where, key)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Policy:
        """Read a policy file (format in the module docs).

        Raises
        ------
        PolicyError
            The file cannot be read, is not TOML, or holds an unknown key, a decision that is
            not allow/prompt/deny, or a rule of the wrong shape; the message names the file and
            the key.
        """
        return load_policy(path)

    def decide(self, call: ToolCall) -> Verdict:
        """The :class:`Verdict` for ``call`` (rules in the module docs)."""
        if call.name == _COMMAND_TOOL and self.commands:
            command = call.arguments.get("command")
            if isinstance(command, str):
                return self._decide_command(command)
        return self._decide_tool(call.name)

    def _decide_tool(self, name: str) -> Verdict:
        for pattern, value in self.tools.items():
            if fnmatch.fnmatchcase(name, pattern):
                return _verdict(value, f"tools.{_quote(pattern)}")
        return Verdict(self.default, "default")

    def _decide_command(self, command: str) -> Verdict:
        parts, opaque = split_command(command)
        worst: Verdict | None = None
        for part in parts or [command.strip()]:
            v = next(
                (
                    _verdict(value, f"commands.{_quote(pattern)}")
                    for pattern, value in self.commands.items()
                    if fnmatch.fnmatchcase(part, pattern)
                ),
                None,
            ) or self._decide_tool(_COMMAND_TOOL)
            if worst is None or _RANK[v.decision] > _RANK[worst.decision]:
                worst = v
        assert worst is not None
        if opaque and worst.decision == "allow":
            return Verdict(
                "prompt",
                worst.rule,
                "the command uses command substitution or unbalanced quotes, so no pattern can allow it",
            )
        return worst


def _verdict(value: str | Rule, rule: str) -> Verdict:
    if isinstance(value, Rule):
        return Verdict(value.decision, rule, value.reason)
    return Verdict(value, rule)


def _quote(pattern: str) -> str:
    # Written as a TOML key would be, so the message points at the line to edit.
    bare = pattern.replace("_", "").replace("-", "").isalnum()
    return pattern if bare else '"' + pattern.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_decision(value: Any, where: str, key: str) -> None:
    if value not in DECISIONS:
        raise PolicyError(where, f"{key}: decision must be one of {', '.join(DECISIONS)}, got {value!r}")


def split_command(command: str) -> tuple[list[str], bool]:
    """Split a shell command line into its simple commands at control operators.

    Returns
    -------
    parts : list of str
        The simple commands, stripped, empty ones dropped, text otherwise as written (quotes
        kept). Splits at ``;``, ``&``, ``|`` (so ``&&``, ``||``, ``|&`` too) and newlines
        outside single and double quotes and not escaped by a backslash.
    opaque : bool
        True when the line holds command substitution (``$(``, a backquote, ``<(``, ``>(``)
        outside single quotes, or a quote left open: what it runs cannot be read from the text.
    """
    parts: list[str] = []
    current: list[str] = []
    quote: str | None = None
    opaque = False
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if quote == "'":
            if c == "'":
                quote = None
        elif c == "\\" and i + 1 < n:
            current.append(c + command[i + 1])
            i += 2
            continue
        elif c == "`" or (c in "$<>" and command.startswith("(", i + 1)):
            opaque = True
        elif quote == '"':
            if c == '"':
                quote = None
        elif c in "'\"":
            quote = c
        elif c in ";&|\n" and not _redirection(command, i):
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(c)
        i += 1
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()], opaque or quote is not None


def _redirection(command: str, i: int) -> bool:
    # `2>&1`, `<&3`, `>|file` and bash's `&>file` use & and | without separating commands.
    prev = command[i - 1] if i else ""
    return (command[i] in "&|" and prev in "<>") or command.startswith("&>", i)


_KEYS = {"default", "tools", "commands"}


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read a policy TOML file (format in the module docs).

    Parameters
    ----------
    path : str or PathLike
        The file.

    Returns
    -------
    Policy
        With ``source`` set to the path.

    Raises
    ------
    PolicyError
        The file cannot be read or parsed (the TOML error's line and column are in the
        message), or a key or value is not one the format allows.
    """
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise PolicyError(where, f"cannot read the file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise PolicyError(where, f"not UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(where, f"invalid TOML: {e}") from None
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise PolicyError(where, f"unknown key {unknown[0]!r}; a policy file has {', '.join(sorted(_KEYS))}")
    default = data.get("default", "allow")
    if not isinstance(default, str):
        raise PolicyError(where, f"default: expected a string, got {type(default).__name__}")
    tables = {}
    for table in ("tools", "commands"):
        raw = data.get(table, {})
        if not isinstance(raw, Mapping):
            raise PolicyError(where, f"{table}: expected a table, got {type(raw).__name__}")
        tables[table] = {pattern: _rule(value, where, f"{table}.{_quote(pattern)}") for pattern, value in raw.items()}
    return Policy(default=default, tools=tables["tools"], commands=tables["commands"], source=where)


def _rule(value: Any, where: str, key: str) -> str | Rule:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        extra = sorted(set(value) - {"decision", "reason"})
        if extra:
            raise PolicyError(where, f"{key}: unknown field {extra[0]!r}; a rule has decision and reason")
        decision, reason = value.get("decision"), value.get("reason", "")
        if decision is None:
            raise PolicyError(where, f"{key}: a rule table needs a decision")
        if not isinstance(reason, str):
            raise PolicyError(where, f"{key}: reason must be a string, got {type(reason).__name__}")
        _check_decision(decision, where, key)
        return Rule(decision, reason)
    raise PolicyError(
        where, f"{key}: expected a decision string or {{ decision = ..., reason = ... }}, got {type(value).__name__}"
    )
