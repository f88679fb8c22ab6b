"""Render mode of ``raygent._native`` ANSI stripping, the xterm.js and vte conformance inputs,
and the streaming/identity properties (hypothesis) for both modes.

Data: ``../shared/data/ansi`` (MANIFEST.md section 3); tests that need it skip when absent.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raygent._native import AnsiStripper, strip_ansi, strip_ansi_bytes

ANSI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ansi"
NO_DATA = f"shared test data not found at {ANSI}"
needs_data = pytest.mark.skipif(not ANSI.is_dir(), reason=NO_DATA)
XTERM = ANSI / "xtermjs" / "test" / "fixtures" / "escape_sequence_files"
BUILDKITE = ANSI / "buildkite-terminal-to-html" / "fixtures"
C1 = {chr(c) for c in range(0x80, 0xA0)}


def _chunks(seq, seed: int, max_len: int = 64):
    rng = random.Random(seed)
    i = 0
    while i < len(seq):
        n = rng.randint(1, max_len)
        yield seq[i : i + n]
        i += n


def _stream(chunks, *, render: bool) -> str:
    stripper = AnsiStripper(render=render)
    return "".join(stripper.feed(c) for c in chunks) + stripper.finish()


# --- render semantics --------------------------------------------------------------------------


def test_progress_bar_redrawn_500_times_leaves_final_state():
    frames = "".join(f"\r\x1b[32m{p // 5:>3}%\x1b[0m [{'#' * (p // 50):<10}]" for p in range(501))
    text = "start\n" + frames + "\ndone\n"
    assert strip_ansi(text, render=True) == "start\n100% [##########]\ndone\n"
    assert _stream(_chunks(text, 0, 7), render=True) == "start\n100% [##########]\ndone\n"
    # Without render, every frame is kept, CR included.
    assert strip_ansi(text).count("\r") == 501


@pytest.mark.parametrize(
    ("raw", "rendered"),
    [
        ("abcdef\rxy\n", "xycdef\n"),  # CR overwrites only the cells it writes
        ("one\r\ntwo\r\n", "one\ntwo\n"),
        ("abc\b\bX", "aXc"),
        ("a\bab\b_", "a_"),  # nroff overstrike
        ("\b\bx", "x"),  # BS at column 0 stays there
        ("é›\b!", "é!"),  # a cell is a code point
        ("abcdef\r\x1b[Kxy", "xy"),  # EL 0
        ("abcdef\b\b\b\x1b[1K", "    ef"),  # EL 1 blanks up to the cursor, inclusive
        ("abcdef\x1b[2K\rxy", "xy"),  # EL 2
        ("abc\x1b[2Kxy", "   xy"),  # the cursor stays where it was; erased cells are blanks
        ("abc\x1b[2K", ""),  # ... written only if text follows (no trailing blanks)
        ("abc\r\x1b[?Kx", "x"),  # DECSEL erases like EL
        ("abcdef\x1b[1GX", "Xbcdef"),  # CHA
        ("abcdef\x1b[3`X", "abXdef"),  # HPA
        ("ab\x1b[3CX", "ab   X"),  # CUF past the end
        ("abcdef\x1b[2DX", "abcdXf"),  # CUB
        ("one\ntwo\x1b[1Athree", "one\ntwothree"),  # CUU: not emulated, just removed
        ("\x1b]0;title\x07a\tb\x1b[1mc", "a\tbc"),
        ("a\x9b2Kb", " b"),  # 8-bit CSI
    ],
)
def test_render_cases(raw, rendered):
    assert strip_ansi(raw, render=True) == rendered
    assert strip_ansi_bytes(raw.encode(), render=True) == rendered.encode()
    assert _stream(raw, render=True) == rendered  # one character per chunk


def test_default_is_unchanged_by_render_option():
    text = "a\rb\bc\x1b[Kd\x1b[1m"
    assert strip_ansi(text) == strip_ansi(text, render=False) == "a\rb\bcd"
    assert AnsiStripper().render is False
    assert AnsiStripper(render=True).render is True


def test_render_is_keyword_only():
    with pytest.raises(TypeError):
        strip_ansi("x", True)  # type: ignore[misc]
    with pytest.raises(TypeError):
        AnsiStripper(True)  # type: ignore[misc]


def test_render_plain_input_is_same_object():
    text = "no controls here\n\tbut tabs › é\n" * 50
    assert strip_ansi(text, render=True) is text
    data = text.encode()
    assert strip_ansi_bytes(data, render=True) is data
    assert strip_ansi("x\ry", render=True) == "y"


def test_stream_plain_chunk_is_same_object():
    stripper = AnsiStripper()
    chunk = "plain text › é\n" * 10
    assert stripper.feed(chunk) is chunk
    assert stripper.feed("a\x1b[3") == "a"
    assert stripper.feed(chunk) is not chunk  # inside a CSI: the chunk's first byte is its end
    assert stripper.feed(chunk) is chunk


def test_render_stream_returns_only_finished_lines():
    stripper = AnsiStripper(render=True)
    assert stripper.feed("10%\r20%") == ""
    assert stripper.feed("\r30%\nnext") == "30%\n"
    assert stripper.feed(b"" if False else "\rlast") == ""
    assert stripper.finish() == "last"


def test_render_long_line_is_bounded_and_kept():
    # A line longer than the 256 KiB bound is emitted in pieces; nothing is lost.
    text = ("x" * 1000 + "\x1b[1m") * 600 + "\rEND"
    out = strip_ansi(text, render=True)
    assert len(out) == 600_000 and out.endswith("x") and "END" in out
    assert _stream(_chunks(text, 1, 5000), render=True) == out


def test_render_bytes_stream_decodes_cut_characters():
    data = "€€\r😀\x1b[K\n".encode()
    got = _stream([data[i : i + 1] for i in range(len(data))], render=True)
    assert got == strip_ansi_bytes(data, render=True).decode() == "😀\n"


# --- buildkite captures ---------------------------------------------------------------------------


def _fixtures():
    return sorted(BUILDKITE.glob("*.raw")) if ANSI.is_dir() else []


@needs_data
def test_buildkite_curl_progress_meter_renders_to_final_state():
    out = strip_ansi_bytes((BUILDKITE / "curl.sh.raw").read_bytes(), render=True).decode()
    progress = [line for line in out.splitlines() if line.lstrip().startswith(("0 ", "100 "))]
    assert progress == [
        "100   170  100   170    0     0    105      0  0:00:01  0:00:01 --:--:--   105"
    ]


@pytest.mark.parametrize("path", _fixtures() or [pytest.param(None, marks=pytest.mark.skip(reason=NO_DATA))],
                         ids=lambda p: p.name if p else "none")
@pytest.mark.parametrize("seed", [0, 1])
def test_buildkite_render_streaming_equals_one_shot(path, seed):
    data = path.read_bytes()
    expected = strip_ansi_bytes(data, render=True)
    assert b"\x1b" not in expected and b"\r" not in expected and b"\b" not in expected
    assert _stream(_chunks(data, seed, 300), render=True) == expected.decode("utf-8", "replace")
    text = data.decode("utf-8", "replace")
    assert _stream(_chunks(text, seed, 300), render=True) == strip_ansi(text, render=True)
    assert strip_ansi(text, render=True).encode() == strip_ansi_bytes(text.encode(), render=True)


@needs_data
def test_buildkite_render_shrinks_redrawn_output():
    # CR-redrawn progress output shrinks; what only moves the cursor up (docker) keeps redraws.
    sizes = {p.name: (len(strip_ansi_bytes(p.read_bytes())), len(strip_ansi_bytes(p.read_bytes(), render=True)))
             for p in _fixtures()}
    assert sizes["curl.sh.raw"][1] < sizes["curl.sh.raw"][0] * 0.6
    assert sizes["buildah-build.sh.raw"][1] < sizes["buildah-build.sh.raw"][0] * 0.6
    assert sizes["npm.sh.raw"][1] == sizes["npm.sh.raw"][0]  # no CR, BS or EL in it


# --- xterm.js conformance inputs ------------------------------------------------------------------

# The .text files are xterm's 80x25 screen after the .in bytes. Render mode draws lines, not a
# screen, so a fixture can only be compared when it uses no cursor movement across lines, no
# scrolling region, no mode switch, no tab stops and nothing that depends on the 80-column
# width other than plain wrapping. The comparison wraps our lines at 80 columns, takes the last
# 25 rows (what scrolled off is gone from the screen) and trims trailing blanks, as xterm's
# copy does. These match exactly:
XTERM_RENDER_EQUAL = [
    "t0001-all_printable",
    "t0002-history",
    "t0002j-simple_string",
    "t0003-line_wrap",
    "t0003j-LF",
    "t0004-LF",
    "t0004j-CR",
    "t0007-space_at_end",
    "t0502-bash_ls_color",
    "t0503-zsh_ls_color",
]
# Fixtures without cursor movement across lines that still differ, each for a reason outside
# render mode's model:
XTERM_RENDER_DIFFERENT = {
    "t0005-CR": "text past column 80 overwrites the last column in xterm (no wrap there)",
    "t0008-BS": "BS from xterm's pending-wrap state at column 80",
    "t0012-VT": "VT moves down a line in xterm; render keeps it as a character",
    "t0013-FF": "FF moves down a line in xterm; render keeps it as a character",
    "t0014-CAN": "xterm draws CAN as a glyph; render keeps the control",
    "t0015-SUB": "xterm draws SUB as a glyph; render keeps the control",
    "t0501-bash_ls": "TAB advances to tab stops in xterm; render keeps TAB as one cell",
}
# Every other fixture uses cursor movement across lines, scrolling regions, insert/delete,
# tab-stop control or modes (alt screen, IRM, DECAWM, NLM), none of which render emulates.


def _screen_rows(text: str, rows: int) -> list[str]:
    out = []
    for line in text.split("\n"):
        out += [line[i : i + 80] for i in range(0, max(len(line), 1), 80)]
    out = [r.rstrip() for r in out]
    while out and not out[-1]:
        out.pop()
    return out[-rows:]


def _expected_rows(path: Path) -> list[str]:
    rows = [r.rstrip() for r in path.read_text(encoding="utf-8").split("\n")]
    while rows and not rows[-1]:
        rows.pop()
    return rows


def _xterm_ids(names):
    if not ANSI.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_DATA))]
    return names


@pytest.mark.parametrize("name", _xterm_ids(XTERM_RENDER_EQUAL))
def test_xterm_render_equals_screen(name):
    data = (XTERM / f"{name}.in").read_bytes()
    expected = _expected_rows(XTERM / f"{name}.text")
    got = strip_ansi_bytes(data, render=True).decode("utf-8", "replace")
    assert _screen_rows(got, len(expected)) == expected


@pytest.mark.parametrize("name", _xterm_ids(sorted(XTERM_RENDER_DIFFERENT)))
def test_xterm_render_known_differences(name):
    # Pinned so a change in behaviour is noticed; the reason is in XTERM_RENDER_DIFFERENT.
    data = (XTERM / f"{name}.in").read_bytes()
    expected = _expected_rows(XTERM / f"{name}.text")
    got = strip_ansi_bytes(data, render=True).decode("utf-8", "replace")
    assert _screen_rows(got, len(expected)) != expected
    assert "\x1b" not in got


@needs_data
def test_xterm_every_input_strips_and_renders_without_escapes():
    inputs = sorted(XTERM.glob("*.in"))
    assert len(inputs) == 76
    for path in inputs:
        data = path.read_bytes()
        for out in (strip_ansi_bytes(data), strip_ansi_bytes(data, render=True)):
            assert b"\x1b" not in out, path.name
        rendered = strip_ansi_bytes(data, render=True)
        assert b"\r" not in rendered and b"\b" not in rendered, path.name


# --- vte's demo.vte -------------------------------------------------------------------------------


@needs_data
def test_vte_demo():
    data = (ANSI / "alacritty-vte" / "tests" / "demo.vte").read_bytes()
    out = strip_ansi_bytes(data)
    text = out.decode("utf-8", "replace")  # the input has invalid UTF-8 too, kept as is
    assert "\x1b" not in text and not C1 & set(text)
    # OSC 52 ended by BEL, then an OSC of 45 `;` aborted by `ESC s` (an escape sequence whose
    # final byte is `s`, so the `S` of "Some" is not text), a 40-parameter CSI, an overflowing
    # parameter, a DCS ended by the 8-bit ST and an OSC with UTF-8 in its title.
    assert text.startswith("Test\nRED ON GREEN\nome random text; \x07 what\n\n\n\n\r\nREEEEEED\n")
    assert "echo" not in text and "Y2xpcGJvYXJk" not in text
    rendered = strip_ansi_bytes(data, render=True)
    assert rendered.startswith(out[:60].replace(b"\r", b""))
    assert not {0x1B, 0x0D, 0x08} & set(rendered)
    for seed in range(3):
        assert _stream(_chunks(data, seed, 9), render=False) == text
        assert _stream(_chunks(data, seed, 9), render=True) == rendered.decode("utf-8", "replace")


# --- properties (hypothesis) ----------------------------------------------------------------------

_PIECES = st.sampled_from(
    ["\x1b", "\x1b[", "\x1b]8;;", "\x1b\\", "\x1bP", "\x07", "\x18", "\x9b", "\x9c", "\x85",
     "é›Ŝ😀", "31;1m", "2K", "K", "1G", "3C", "D", "\r", "\b", "\n", "\r\n", "text ", "\t"]
)
_TEXT = st.lists(st.one_of(_PIECES, st.text(max_size=5)), max_size=40).map("".join)
_CUTS = st.lists(st.integers(0, 200), max_size=8)


def _cut(seq, cuts):
    idx = sorted({c % (len(seq) + 1) for c in cuts})
    bounds = [0, *idx, len(seq)]
    return [seq[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=400, deadline=None)
@given(text=_TEXT, cuts=_CUTS, render=st.booleans())
def test_any_chunking_equals_one_shot_str(text, cuts, render):
    assert _stream(_cut(text, cuts), render=render) == strip_ansi(text, render=render)


@settings(max_examples=400, deadline=None)
@given(text=_TEXT, junk=st.binary(max_size=6), cuts=_CUTS, render=st.booleans())
def test_any_chunking_equals_one_shot_bytes(text, junk, cuts, render):
    data = text.encode("utf-8", "surrogatepass") + junk + text[:3].encode("utf-8", "surrogatepass")
    expected = strip_ansi_bytes(data, render=render)
    assert b"\x1b" not in expected
    assert _stream(_cut(data, cuts), render=render) == expected.decode("utf-8", "replace")


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_characters=["\x1b"] + sorted(C1))))
def test_text_without_esc_or_c1_is_returned_unchanged(text):
    assert strip_ansi(text) is text
    data = text.encode("utf-8", "surrogatepass")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        # Lone surrogates: their surrogatepass bytes are not UTF-8, and bytes mode reads a
        # stray continuation byte 0x80..0x9F in them as a C1 control ("\ude00" is ED B8 80).
        return
    out = strip_ansi_bytes(data)
    assert out is data
    if "\r" not in text and "\b" not in text:
        assert strip_ansi(text, render=True) is text
        assert strip_ansi_bytes(data, render=True) is data
