"""Adapters of the ANSI strippers raygent is measured against, one function each (str -> str).

Each is what a user of that library would call. A peer may implement other semantics than
ours; :func:`agreement` says, per input, whether its output equals ours exactly, equals it once
the escape sequences it leaves in are removed (tolerated, and named), or differs (not timed).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from raygent._native import strip_ansi

# chalk/ansi-regex 6.2.2 (index.js at 94983fc6), ported faithfully: JavaScript's `\d` is ASCII
# digits and `[\s\S]` any character, so `[0-9]` and DOTALL here. strip-ansi 7.1 returns the
# input untouched when it has no ESC and no U+009B, then replaces every match with "".
_ST = r"(?:\x07|\x1b\x5c|\x9c)"
_OSC = rf"(?:\x1b\][\s\S]*?{_ST})"
_CSI = r"[\x1b\x9b][\[\]()#;?]*(?:[0-9]{1,4}(?:[;:][0-9]{0,4})*)?[0-9A-PR-TZcf-nq-uy=><~]"
ANSI_REGEX = re.compile(f"{_OSC}|{_CSI}")


def ansi_regex_port(text: str) -> str:
    if "\x1b" not in text and "\x9b" not in text:
        return text
    return ANSI_REGEX.sub("", text)


def _strip_ansi_pypi() -> Callable[[str], str]:
    from strip_ansi import strip_ansi as f

    return f


def _ansistrip() -> Callable[[str], str]:
    from ansistrip import ansi_strip

    return ansi_strip


def _console() -> Callable[[str], str]:
    from console.utils import strip_ansi as f

    # Its widest setting: CSI (7- and 8-bit) and OSC.
    return lambda text: f(text, c1=True, osc=True)


def _click() -> Callable[[str], str]:
    import click

    return click.unstyle


def _rich() -> Callable[[str], str]:
    from rich.text import Text

    return lambda text: Text.from_ansi(text).plain


# (label, PyPI distribution, loader). The port has no distribution: it is labelled by what it
# ports.
PEERS: list[tuple[str, str, Callable[[], Callable[[str], str]]]] = [
    ("ansi-regex (Python port)", "ansi-regex-port", lambda: ansi_regex_port),
    ("strip-ansi", "strip-ansi", _strip_ansi_pypi),
    ("ansistrip", "ansistrip", _ansistrip),
    ("console", "console", _console),
    ("click", "click", _click),
    ("rich", "rich", _rich),
]


def agreement(peer_out: str, ours: str) -> str | None:
    """``"exact"``, ``"leaves sequences in"`` or ``None`` (differs: not comparable)."""
    if peer_out == ours:
        return "exact"
    # The peer removed less than we do but damaged no text: what it left are sequences,
    # which our stripper then removes.
    if strip_ansi(peer_out) == ours:
        return "leaves sequences in"
    return None
