//! ECMA-48 control-sequence stripping, one-shot and streaming.
//!
//! The parser is the DEC VT500-series state machine described by Paul Flo Williams
//! (<https://vt100.net/emu/dec_ansi_parser>), which implements ECMA-48 5th edition (1991),
//! sections 5.3 (C0/C1 control functions), 5.4 (control sequences), 5.5 (independent control
//! functions) and 5.6 (control strings), plus the escape sequences of ECMA-35 section 13.
//! It works on bytes (`&str` input is its UTF-8 encoding), or on the code units of a string
//! stored one code point per unit as CPython stores `str` ([`CodeUnit`]: `u8`, `u16`, `u32`;
//! the same rules, see [`strip_units`]). Nothing is buffered: every byte is
//! either copied to the output or dropped as soon as it is read, so the only state carried
//! between chunks is the parser state and at most three bytes of a UTF-8 character cut by a
//! chunk boundary.
//!
//! The ground state has two fast paths that give the same result as stepping: text is copied
//! up to the next ESC or C1 control a vector at a time, and colored output, where a sequence
//! comes every few characters, is taken 64 units at a time by the `window` module (whole
//! `ESC [ ... final` sequences found with bit masks, the text kept written with one compress
//! or a copy per run).
//!
//! What is removed:
//! - CSI sequences (`ESC [` or C1 `0x9B`): parameters `0x30..=0x3F` (digits, `;`, `:`
//!   sub-parameters, private markers `<=>?`), intermediates `0x20..=0x2F`, final `0x40..=0x7E`;
//! - control strings: OSC (`ESC ]`, `0x9D`), DCS (`ESC P`, `0x90`), SOS (`ESC X`, `0x98`),
//!   PM (`ESC ^`, `0x9E`) and APC (`ESC _`, `0x9F`), ended by ST (`ESC \` or `0x9C`) or BEL.
//!   An OSC 8 hyperlink `ESC ]8;;url ST text ESC ]8;; ST` therefore leaves `text`;
//! - other escape sequences: `ESC` + intermediates `0x20..=0x2F` + final `0x30..=0x7E`
//!   (nF, Fp, Fe and Fs forms: `ESC ( B`, `ESC 7`, `ESC =`, `ESC M`, `ESC # 8`, `ESC c` ...);
//! - C1 controls: the code points U+0080..U+009F (UTF-8 `C2 80..=C2 9F`) and, for byte input,
//!   a lone byte `0x80..=0x9F` that is not part of a valid UTF-8 sequence. A byte inside a
//!   valid multi-byte character (`0xA9` of "é" = `C3 A9`, `0x80` of "›" = `E2 80 BA`) is text.
//!
//! What is kept: all text, and every C0 control other than ESC (TAB, LF, CR, BS, BEL, NUL ...),
//! like the JavaScript `strip-ansi` package: CR and BS change how a terminal draws a line, and
//! rendering them is a separate concern from stripping. DEL (`0x7F`) outside a sequence is kept.
//!
//! Deviations from the DEC parser, each because a stripper only has to decide what is text:
//! - The CSI sub-states (entry, param, intermediate, ignore) are one state, and so are the DCS
//!   sub-states (entry, param, intermediate, passthrough, ignore): they differ only in whether
//!   the sequence would be dispatched, and a stripper drops it either way. Colon sub-parameters
//!   (ITU-T T.416, `ESC[38:2::255:0:0m`) are thereby accepted rather than sent to csi_ignore.
//! - C0 controls that the DEC parser *executes* inside ESC and CSI sequences are kept in the
//!   output (as in ground); those it *ignores* inside control strings are dropped with the
//!   string. CAN (`0x18`) and SUB (`0x1A`) abort any sequence and are kept.
//! - BEL ends DCS, SOS, PM and APC as well as OSC (DEC: only OSC, an xterm extension). Programs
//!   that wrongly end them with BEL would otherwise make the stripper swallow all later text.
//! - A character at or above U+00A0 (or, for bytes, an invalid UTF-8 byte at or above `0xA0`)
//!   inside an ESC or CSI sequence aborts the sequence and is kept as text. The DEC parser folds
//!   `0xA0..=0xFF` onto `0x20..=0x7F`, which is right for 8-bit character sets, not for UTF-8.
//! - An unterminated sequence at the end of the input is dropped.

use std::borrow::Cow;

use memchr::memchr2;

mod window;

const ESC: u8 = 0x1B;
const BEL: u8 = 0x07;
const CAN: u8 = 0x18;
const SUB: u8 = 0x1A;
const DEL: u8 = 0x7F;
/// UTF-8 lead byte of U+0080..U+00BF, which include the C1 controls U+0080..U+009F.
const C1_LEAD: u8 = 0xC2;

/// How input bytes are decoded into characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The concatenated input is valid UTF-8 (it came from a `&str`); it is not validated.
    Text,
    /// Arbitrary bytes: UTF-8 is decoded where valid, invalid bytes are passed through, and a
    /// lone `0x80..=0x9F` byte outside any valid UTF-8 sequence is a C1 control.
    Bytes,
}

/// The parser states of the DEC VT500 diagram, with the deviations listed in the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ground,
    Escape,
    EscapeIntermediate,
    /// csi_entry, csi_param, csi_intermediate and csi_ignore.
    Csi,
    OscString,
    /// dcs_entry, dcs_param, dcs_intermediate, dcs_passthrough and dcs_ignore.
    Dcs,
    SosPmApcString,
}

/// One decoded element of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// A byte `0x00..=0x7F`.
    Ascii(u8),
    /// A C1 control, given as its code `0x80..=0x9F`.
    C1(u8),
    /// A character at or above U+00A0, or an invalid UTF-8 byte that is not a C1 control.
    Other,
}

/// Decode the unit at the start of `bytes` (non-empty). Returns the unit and its length, or
/// `None` when `bytes` is a proper prefix of a valid UTF-8 sequence that might be a C1
/// control or a character and more input may follow (`at_end == false`).
fn decode(bytes: &[u8], mode: Mode, at_end: bool) -> Option<(Unit, usize)> {
    let b = bytes[0];
    if b < 0x80 {
        return Some((Unit::Ascii(b), 1));
    }
    match mode {
        // Valid UTF-8 is trusted: only `C2 80..=9F` needs a look at the next byte; every other
        // non-ASCII byte is text, so it can be taken one byte at a time.
        Mode::Text => {
            if b != C1_LEAD {
                return Some((Unit::Other, 1));
            }
            match bytes.get(1) {
                Some(&c @ 0x80..=0x9F) => Some((Unit::C1(c), 2)),
                Some(_) => Some((Unit::Other, 1)),
                None if at_end => Some((Unit::Other, 1)),
                None => None,
            }
        }
        Mode::Bytes => {
            // Unicode 15, table 3-7 (well-formed UTF-8 byte sequences).
            let (len, second) = match b {
                0xC2..=0xDF => (2, 0x80..=0xBF),
                0xE0 => (3, 0xA0..=0xBF),
                0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80..=0xBF),
                0xED => (3, 0x80..=0x9F),
                0xF0 => (4, 0x90..=0xBF),
                0xF1..=0xF3 => (4, 0x80..=0xBF),
                0xF4 => (4, 0x80..=0x8F),
                0x80..=0x9F => return Some((Unit::C1(b), 1)),
                _ => return Some((Unit::Other, 1)),
            };
            for k in 1..len {
                let Some(&c) = bytes.get(k) else {
                    return if at_end { Some((Unit::Other, 1)) } else { None };
                };
                let ok = if k == 1 {
                    second.contains(&c)
                } else {
                    (0x80..=0xBF).contains(&c)
                };
                if !ok {
                    // The lead byte is invalid on its own; what follows is decoded afresh, so a
                    // stray `0x80..=0x9F` after it becomes a C1 control.
                    return Some((Unit::Other, 1));
                }
            }
            if b == C1_LEAD && bytes[1] <= 0x9F {
                Some((Unit::C1(bytes[1]), 2))
            } else {
                Some((Unit::Other, len))
            }
        }
    }
}

/// Where the stripper puts what it keeps: a `Vec<u8>` for plain stripping, a [`Line`] for
/// render mode. Monomorphised, so plain stripping pays nothing for render mode.
trait Sink {
    /// Whether [`csi`](Self::csi) wants the control sequences (render mode only).
    const WANTS_CSI: bool = false;
    /// Text, possibly with C0 controls other than ESC in it.
    fn text(&mut self, bytes: &[u8]);
    fn byte(&mut self, b: u8) {
        self.text(&[b]);
    }
    /// A complete control sequence with final byte `final_byte`.
    fn csi(&mut self, _final_byte: u8, _params: &CsiParams) {}
    /// Take what [`window::strip_windows`] decides of valid UTF-8 `input[i..end]` from the
    /// ground state; return where it stopped. Sinks that want the control sequences take
    /// nothing.
    #[inline]
    fn windows(&mut self, _input: &[u8], i: usize, _end: usize) -> usize {
        i
    }
    /// Take `input[i..end]` up to its first ESC or `C2` byte; return that byte's index, or
    /// `end`.
    #[inline]
    fn text_until_special(&mut self, input: &[u8], i: usize, end: usize) -> usize {
        let region = &input[i..end];
        match memchr2(ESC, C1_LEAD, region) {
            Some(k) => {
                self.text(&region[..k]);
                i + k
            }
            None => {
                self.text(region);
                end
            }
        }
    }
}

impl Sink for Vec<u8> {
    #[inline]
    fn text(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    #[inline]
    fn windows(&mut self, input: &[u8], i: usize, end: usize) -> usize {
        self.reserve(end - i);
        let len = self.len();
        // SAFETY: room for `end - i` more bytes was reserved; `set_len` covers what was written.
        unsafe {
            let (next, written) =
                window::strip_windows::<u8, true>(input, i, end, self.as_mut_ptr().add(len));
            self.set_len(len + written);
            next
        }
    }
    #[inline]
    fn byte(&mut self, b: u8) {
        self.push(b);
    }

    /// Colored output has an escape every 10 to 20 bytes, too close for `memchr`'s setup to
    /// pay off. Instead: look at 16 bytes at a time (SSE2, part of x86-64), store all 16 at
    /// the end of the output whether or not they are kept, and count as written only those
    /// before the first ESC or `C2`; so a short run costs one compare and one store.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    fn text_until_special(&mut self, input: &[u8], mut i: usize, end: usize) -> usize {
        use std::arch::x86_64::*;
        // SAFETY: loads read input[i..i + 16] with i + 16 <= end <= input.len(); the store
        // writes 16 bytes at the end of `self` after reserving them; `set_len` covers only
        // bytes just written.
        unsafe {
            let esc = _mm_set1_epi8(ESC as i8);
            let c2 = _mm_set1_epi8(C1_LEAD as i8);
            while i + 16 <= end {
                self.reserve(16);
                let v = _mm_loadu_si128(input.as_ptr().add(i).cast());
                let hits = _mm_or_si128(_mm_cmpeq_epi8(v, esc), _mm_cmpeq_epi8(v, c2));
                let mask = _mm_movemask_epi8(hits) as u32;
                let len = self.len();
                _mm_storeu_si128(self.as_mut_ptr().add(len).cast(), v);
                if mask == 0 {
                    self.set_len(len + 16);
                    i += 16;
                } else {
                    let k = mask.trailing_zeros() as usize;
                    self.set_len(len + k);
                    return i + k;
                }
            }
        }
        let region = &input[i..end];
        match memchr2(ESC, C1_LEAD, region) {
            Some(k) => {
                self.extend_from_slice(&region[..k]);
                i + k
            }
            None => {
                self.extend_from_slice(region);
                end
            }
        }
    }
}

/// What render mode needs of a control sequence's parameter bytes: the first parameter
/// (ECMA-48 5.4.2: decimal digits, default when empty) and whether the sequence had a private
/// marker (`<=>?`) or intermediates, which make it a different function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CsiParams {
    first: u32,
    separator: bool,
    private: bool,
    intermediate: bool,
}

impl CsiParams {
    fn push(&mut self, b: u8) {
        match b {
            b'0'..=b'9' if !self.separator => {
                self.first = self
                    .first
                    .saturating_mul(10)
                    .saturating_add(u32::from(b - b'0'));
            }
            b'0'..=b'9' => {}
            b';' | b':' => self.separator = true,
            0x3C..=0x3F => self.private = true,
            _ => self.intermediate = true,
        }
    }

    fn of(bytes: &[u8]) -> Self {
        let mut p = CsiParams::default();
        for &b in bytes {
            p.push(b);
        }
        p
    }
}

/// A streaming ECMA-48 stripper; see the module docs for what it removes and keeps.
///
/// The concatenated output of any sequence of [`feed`](Self::feed) calls followed by
/// [`finish`](Self::finish) depends only on the concatenated input, not on how it was cut.
#[derive(Clone, Debug)]
pub struct Stripper {
    state: State,
    mode: Mode,
    /// The start of a UTF-8 sequence cut by a chunk boundary (at most 3 bytes).
    pending: [u8; 4],
    pending_len: usize,
    /// Parameters of the control sequence being read (collected in render mode only).
    csi: CsiParams,
}

impl Stripper {
    pub fn new(mode: Mode) -> Self {
        Stripper {
            state: State::Ground,
            mode,
            pending: [0; 4],
            pending_len: 0,
            csi: CsiParams::default(),
        }
    }

    /// Whether `input` fed now would come out unchanged: the stripper is between sequences
    /// with no partial character held, and `input` is UTF-8 (assumed in text mode) with no
    /// ESC and no C1 control. Feeding it is then the same as copying it.
    pub fn passes_through(&self, input: &[u8]) -> bool {
        self.state == State::Ground
            && self.pending_len == 0
            && (self.mode == Mode::Text || valid_utf8_prefix(input) == input.len())
            && first_control_in_text(input).is_none()
    }

    /// Strip `input`, appending the text that is complete so far to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.feed_into(input, out);
    }

    /// End the stream: flush a held partial character, drop an unterminated sequence and
    /// reset to the initial state, so the stripper can be reused.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.finish_into(out);
    }

    fn feed_into<S: Sink>(&mut self, input: &[u8], out: &mut S) {
        let start = self.resume_pending(input, out, false);
        self.run(input, start, start, out, false);
    }

    fn finish_into<S: Sink>(&mut self, out: &mut S) {
        self.resume_pending(&[], out, true);
        self.state = State::Ground;
    }

    /// Complete the held partial character with the first bytes of `input`; returns how many
    /// bytes of `input` were used.
    fn resume_pending<S: Sink>(&mut self, input: &[u8], out: &mut S, at_end: bool) -> usize {
        let mut used = 0;
        while self.pending_len > 0 {
            let mut buf = [0u8; 4];
            let held = self.pending_len;
            let take = (4 - held).min(input.len() - used);
            buf[..held].copy_from_slice(&self.pending[..held]);
            buf[held..held + take].copy_from_slice(&input[used..used + take]);
            let avail = held + take;
            let Some((unit, len)) = decode(&buf[..avail], self.mode, at_end) else {
                // Still a prefix, so `take` was limited by the input: all of it is now held.
                self.pending[..avail].copy_from_slice(&buf[..avail]);
                self.pending_len = avail;
                return input.len();
            };
            self.step(unit, &buf[..len], out);
            if len >= held {
                used += len - held;
                self.pending_len = 0;
            } else {
                // An invalid lead byte: the bytes held after it are decoded again.
                self.pending.copy_within(len..held, 0);
                self.pending_len = held - len;
            }
        }
        used
    }

    /// Strip `input[i..]`. With `at_end`, a character cut at the end is decoded as invalid
    /// bytes instead of being held for the next chunk. `input[i..valid_to]` is known to be
    /// valid UTF-8 (`valid_to <= i` when nothing is known).
    fn run<S: Sink>(
        &mut self,
        input: &[u8],
        mut i: usize,
        valid_to: usize,
        out: &mut S,
        at_end: bool,
    ) {
        // End of the known-valid UTF-8 region that starts at or before `i` (bytes mode): the
        // ground fast path may copy up to it without decoding. Kept across iterations so each
        // byte is validated once.
        let mut valid_end = match self.mode {
            Mode::Text => input.len(),
            Mode::Bytes => valid_to.max(i),
        };
        while i < input.len() {
            if self.state == State::Ground {
                if i >= valid_end {
                    valid_end = i + valid_utf8_prefix(&input[i..]);
                }
                i = out.windows(input, i, valid_end);
                i = copy_text(input, i, valid_end, out);
                if i >= input.len() {
                    break;
                }
                // Fast path for the commonest sequence, a whole CSI in this chunk: the same
                // transitions as stepping ESC, `[`, the parameters and the final byte.
                if let Some(end) = whole_csi(input, i) {
                    if S::WANTS_CSI {
                        out.csi(input[end - 1], &CsiParams::of(&input[i + 2..end - 1]));
                    }
                    i = end;
                    continue;
                }
            } else if let Some(inert) = self.inert_bytes() {
                let skipped = input[i..]
                    .iter()
                    .position(|b| !inert.contains(b))
                    .unwrap_or(input.len() - i);
                if S::WANTS_CSI && self.state == State::Csi {
                    for &b in &input[i..i + skipped] {
                        self.csi.push(b);
                    }
                }
                i += skipped;
                if i >= input.len() {
                    break;
                }
            }
            match decode(&input[i..], self.mode, at_end) {
                Some((unit, len)) => {
                    self.step(unit, &input[i..i + len], out);
                    i += len;
                }
                None => {
                    let rest = &input[i..];
                    self.pending[..rest.len()].copy_from_slice(rest);
                    self.pending_len = rest.len();
                    return;
                }
            }
        }
    }

    /// Bytes that leave the current state as it is and are dropped, so a run of them can be
    /// skipped without stepping: parameters and intermediates of a CSI, printable ASCII in a
    /// control string.
    fn inert_bytes(&self) -> Option<std::ops::RangeInclusive<u8>> {
        match self.state {
            State::Csi => Some(0x20..=0x3F),
            State::OscString | State::Dcs | State::SosPmApcString => Some(0x20..=DEL),
            State::Ground | State::Escape | State::EscapeIntermediate => None,
        }
    }

    fn enter_csi(&mut self) {
        self.state = State::Csi;
        self.csi = CsiParams::default();
    }

    /// Advance the state machine by one unit; `bytes` is the unit's encoding.
    fn step<S: Sink>(&mut self, unit: Unit, bytes: &[u8], out: &mut S) {
        use State::*;
        match unit {
            Unit::Ascii(b) => self.step_ascii(b, out),
            // The C1 "anywhere" transitions of the DEC diagram.
            Unit::C1(c) => {
                self.state = match c {
                    0x90 => Dcs,
                    0x98 | 0x9E | 0x9F => SosPmApcString,
                    0x9B => {
                        self.enter_csi();
                        Csi
                    }
                    0x9D => OscString,
                    // ST and every other C1 control: removed, back to ground.
                    _ => Ground,
                };
            }
            Unit::Other => match self.state {
                OscString | Dcs | SosPmApcString => {}
                // Text in ground; inside ESC or CSI it aborts the sequence and is still text.
                Ground | Escape | EscapeIntermediate | Csi => {
                    self.state = Ground;
                    out.text(bytes);
                }
            },
        }
    }

    fn step_ascii<S: Sink>(&mut self, b: u8, out: &mut S) {
        use State::*;
        // The C0 "anywhere" transitions.
        match b {
            ESC => {
                self.state = Escape;
                return;
            }
            CAN | SUB => {
                out.byte(b);
                self.state = Ground;
                return;
            }
            _ => {}
        }
        match self.state {
            Ground => out.byte(b),
            Escape => match b {
                0x00..=0x1F => out.byte(b),
                0x20..=0x2F => self.state = EscapeIntermediate,
                b'[' => self.enter_csi(),
                b']' => self.state = OscString,
                b'P' => self.state = Dcs,
                b'X' | b'^' | b'_' => self.state = SosPmApcString,
                DEL => {}
                // esc_dispatch of a two-byte sequence (Fp, Fe, Fs), including `ESC \` (ST).
                _ => self.state = Ground,
            },
            EscapeIntermediate => match b {
                0x00..=0x1F => out.byte(b),
                0x20..=0x2F | DEL => {}
                // esc_dispatch of an nF sequence (`ESC ( B`, `ESC # 8`).
                _ => self.state = Ground,
            },
            Csi => match b {
                0x00..=0x1F => out.byte(b),
                0x20..=0x3F => {
                    if S::WANTS_CSI {
                        self.csi.push(b);
                    }
                }
                DEL => {}
                // csi_dispatch on the final byte.
                _ => {
                    self.state = Ground;
                    if S::WANTS_CSI {
                        out.csi(b, &self.csi);
                    }
                }
            },
            OscString | Dcs | SosPmApcString => {
                if b == BEL {
                    self.state = Ground;
                }
            }
        }
    }
}

/// If `input[i..]` starts with a whole CSI introduced by `ESC [` (parameter and intermediate
/// bytes `0x20..=0x3F`, then a final byte `0x40..=0x7E`), the index just past it.
#[inline]
fn whole_csi(input: &[u8], i: usize) -> Option<usize> {
    if input[i] != ESC || input.get(i + 1) != Some(&b'[') {
        return None;
    }
    let mut j = i + 2;
    while let Some(&b) = input.get(j) {
        match b {
            0x20..=0x3F => j += 1,
            0x40..=0x7E => return Some(j + 1),
            _ => return None,
        }
    }
    None
}

/// Ground-state fast path: copy text from `input[i..]` up to the next byte that may start a
/// sequence (ESC, a `C2` lead of a possible C1) or up to `valid_end`, the end of the region
/// known to be UTF-8. Returns that index.
#[inline]
fn copy_text<S: Sink>(input: &[u8], mut i: usize, valid_end: usize, out: &mut S) -> usize {
    loop {
        i = out.text_until_special(input, i, valid_end);
        if i >= valid_end {
            return valid_end;
        }
        // A `C2` that is not a C1 control is an ordinary character: copy it and go on.
        if input[i] == C1_LEAD {
            if let Some(&c) = input.get(i + 1) {
                if !(0x80..=0x9F).contains(&c) && i + 1 < valid_end {
                    out.byte(C1_LEAD);
                    i += 1;
                    continue;
                }
            }
        }
        return i;
    }
}

// --- Render mode ---------------------------------------------------------------------------

/// Default bound of the line a [`Renderer`] holds, in bytes.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

const LF: u8 = b'\n';
const CR: u8 = b'\r';
const BS: u8 = 0x08;

#[inline]
fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// Number of cells in `bytes`: one per byte that is not a UTF-8 continuation byte.
fn cells(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| !is_continuation(b)).count()
}

/// The line a terminal is drawing, as render mode sees it.
///
/// A cell is one character: a byte that is not a UTF-8 continuation byte, with the
/// continuation bytes after it (so wide and combining characters are not measured, and a TAB
/// is one cell). `buf` holds the cells written so far; the cursor is at byte `cur` of `buf`,
/// or, when `pad > 0`, `pad` blank cells past its end (after an erase or a forward move):
/// blanks are written out only when text lands after them, so erased cells at the end of a
/// line leave no trailing spaces.
///
/// The line is bounded: before a character is appended to a line of `max_bytes` or more, the
/// line is emitted as it stands and a new one started, as if the terminal had wrapped there;
/// CR, BS and cursor moves then act on the new piece. Overwriting keeps the number of cells,
/// so a line holds at most `max_bytes` cells and, as a character is at most 4 bytes, at most
/// `4 * max_bytes` bytes; that is also the hard cut for runs of stray continuation bytes
/// (invalid UTF-8). The rules are byte-level, so they do not depend on how the input was
/// chunked, and they never separate a valid character from its continuation bytes.
#[derive(Clone, Debug)]
pub struct Line {
    buf: Vec<u8>,
    cur: usize,
    pad: usize,
    max_bytes: usize,
}

impl Line {
    fn new(max_bytes: usize) -> Self {
        Line {
            buf: Vec::new(),
            cur: 0,
            pad: 0,
            max_bytes: max_bytes.max(1),
        }
    }

    /// Emit the line as it stands (no newline) and start an empty one.
    fn commit(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.buf);
        self.buf.clear();
        self.cur = 0;
        self.pad = 0;
    }

    /// The cursor's column (cells before it).
    fn column(&self) -> usize {
        cells(&self.buf[..self.cur]) + self.pad
    }

    /// Put the cursor at column `col` of this line.
    fn move_to(&mut self, col: usize) {
        let mut seen = 0;
        for (k, &b) in self.buf.iter().enumerate() {
            if !is_continuation(b) {
                if seen == col {
                    self.cur = k;
                    self.pad = 0;
                    return;
                }
                seen += 1;
            }
        }
        self.cur = self.buf.len();
        self.pad = (col - seen).min(self.max_bytes.saturating_sub(self.buf.len()));
    }

    fn back(&mut self, n: usize) {
        let col = self.column();
        self.move_to(col.saturating_sub(n));
    }

    /// Erase in line (EL, ECMA-48 8.3.41): 0 from the cursor to the end, 1 from the start to
    /// the cursor (inclusive), 2 the whole line. The cursor does not move.
    fn erase(&mut self, how: u32) {
        let col = self.column();
        match how {
            0 => self.buf.truncate(self.cur),
            1 => {
                // End of the cell under the cursor.
                let mut end = self.cur;
                if end < self.buf.len() {
                    end += 1;
                    while end < self.buf.len() && is_continuation(self.buf[end]) {
                        end += 1;
                    }
                }
                if end >= self.buf.len() {
                    self.buf.clear();
                    self.cur = 0;
                    self.pad = col;
                } else {
                    let blanks = cells(&self.buf[..end]);
                    self.buf.splice(..end, std::iter::repeat_n(b' ', blanks));
                    self.cur = col;
                }
            }
            2 => {
                self.buf.clear();
                self.cur = 0;
                self.pad = col;
            }
            _ => {}
        }
    }

    /// Write text (no LF, CR or BS in it) at the cursor, overwriting cells.
    fn write(&mut self, mut s: &[u8], out: &mut Vec<u8>) {
        while let Some(&b) = s.first() {
            let len = self.buf.len();
            // The bound; see the type docs.
            let hard = 4 * self.max_bytes;
            if len >= hard || (len >= self.max_bytes && self.cur == len && !is_continuation(b)) {
                self.commit(out);
                continue;
            }
            if self.cur == len {
                if self.pad > 0 {
                    self.buf.resize(len + self.pad, b' ');
                    self.pad = 0;
                    self.cur = self.buf.len();
                    continue;
                }
                // Append up to the bound; at or past it, only continuation bytes.
                let mut q = self.max_bytes.saturating_sub(len).min(s.len());
                while q < s.len() && is_continuation(s[q]) && len + q < hard {
                    q += 1;
                }
                let q = q.max(1);
                self.buf.extend_from_slice(&s[..q]);
                self.cur = self.buf.len();
                s = &s[q..];
            } else if is_continuation(b) {
                // More of the character just written (or a stray byte): inserted.
                self.buf.insert(self.cur, b);
                self.cur += 1;
                s = &s[1..];
            } else {
                // Overwrite the cell at the cursor with one character.
                let new_len = 1 + s[1..]
                    .iter()
                    .take(3)
                    .take_while(|&&c| is_continuation(c))
                    .count();
                let mut old_end = self.cur + 1;
                while old_end < len && is_continuation(self.buf[old_end]) {
                    old_end += 1;
                }
                if old_end - self.cur == new_len {
                    self.buf[self.cur..old_end].copy_from_slice(&s[..new_len]);
                } else {
                    self.buf
                        .splice(self.cur..old_end, s[..new_len].iter().copied());
                }
                self.cur += new_len;
                s = &s[new_len..];
            }
        }
    }
}

/// Render-mode sink: text goes through the line, LF/CR/BS and a few control sequences move
/// the cursor or erase.
struct RenderSink<'a> {
    line: &'a mut Line,
    out: &'a mut Vec<u8>,
}

impl Sink for RenderSink<'_> {
    const WANTS_CSI: bool = true;

    fn text(&mut self, mut bytes: &[u8]) {
        while let Some(k) = memchr::memchr3(LF, CR, BS, bytes) {
            self.line.write(&bytes[..k], self.out);
            match bytes[k] {
                LF => {
                    self.line.commit(self.out);
                    self.out.push(LF);
                }
                CR => {
                    self.line.cur = 0;
                    self.line.pad = 0;
                }
                _ => self.line.back(1),
            }
            bytes = &bytes[k + 1..];
        }
        self.line.write(bytes, self.out);
    }

    fn csi(&mut self, final_byte: u8, p: &CsiParams) {
        if p.intermediate || (p.private && final_byte != b'K') {
            return;
        }
        // A missing or zero parameter is the default, 1, for the moves.
        let n = (p.first.max(1) as usize).min(self.line.max_bytes);
        match final_byte {
            // EL, and DECSEL (`CSI ? Ps K`), which differs only for protected cells.
            b'K' => self.line.erase(p.first),
            // CHA and HPA: to column n.
            b'G' | b'`' => self.line.move_to(n - 1),
            // CUF / HPR: n columns forward.
            b'C' | b'a' => {
                let col = self.line.column();
                self.line.move_to(col + n);
            }
            // CUB: n columns back.
            b'D' => self.line.back(n),
            _ => {}
        }
    }
}

/// A streaming renderer: the [`Stripper`] plus the current [`Line`].
///
/// CR, BS, LF and, among control sequences, EL (`CSI K`, 0/1/2), CHA/HPA (`CSI G`, `` CSI ` ``),
/// CUF/HPR (`CSI C`, `CSI a`) and CUB (`CSI D`) are applied to the current line as a terminal
/// would; a line is emitted when LF ends it (or at [`finish`](Self::finish)), so a progress bar
/// redrawn with CR or EL leaves only its last state. Not emulated: movement across lines
/// (CUU, CUD, CUP, ...), scroll regions, erase in display, insert/delete, tab stops, wrapping
/// at a screen width, character widths; those sequences are removed and their effect is lost.
/// Everything the stripper keeps other than LF, CR and BS (TAB, BEL ...) is written as a cell.
///
/// The concatenated output depends only on the concatenated input, not on how it was cut;
/// between calls it holds the stripper's state and one line of at most about `max_bytes`.
#[derive(Clone, Debug)]
pub struct Renderer {
    stripper: Stripper,
    line: Line,
}

impl Renderer {
    pub fn new(mode: Mode) -> Self {
        Self::with_max_line_bytes(mode, MAX_LINE_BYTES)
    }

    pub fn with_max_line_bytes(mode: Mode, max_bytes: usize) -> Self {
        Renderer {
            stripper: Stripper::new(mode),
            line: Line::new(max_bytes),
        }
    }

    /// Render `input`, appending the lines it completed to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut sink = RenderSink {
            line: &mut self.line,
            out,
        };
        self.stripper.feed_into(input, &mut sink);
    }

    /// End the stream: emit the last, unterminated line and reset.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let mut sink = RenderSink {
            line: &mut self.line,
            out,
        };
        self.stripper.finish_into(&mut sink);
        self.line.commit(out);
    }
}

/// Render `data` in one go (see [`Renderer`]). Input with no ESC, no C1 control, no CR and no
/// BS (and, in bytes mode, valid UTF-8) renders to itself and is returned borrowed.
pub fn render(data: &[u8], mode: Mode) -> Cow<'_, [u8]> {
    let plain = match mode {
        Mode::Text => true,
        Mode::Bytes => valid_utf8_prefix(data) == data.len(),
    };
    if plain && first_control_in_text(data).is_none() && memchr::memchr2(CR, BS, data).is_none() {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len());
    let mut renderer = Renderer::new(mode);
    renderer.feed(data, &mut out);
    renderer.finish(&mut out);
    Cow::Owned(out)
}

/// Length of the longest valid UTF-8 prefix of `bytes`.
fn valid_utf8_prefix(bytes: &[u8]) -> usize {
    // simdutf8 validates a vector at a time, where std goes a byte at a time once past ASCII.
    match simdutf8::compat::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) => e.valid_up_to(),
    }
}

/// Index of the first byte of valid UTF-8 `bytes` where a sequence or C1 control starts.
fn first_control_in_text(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = memchr2(ESC, C1_LEAD, &bytes[from..]) {
        let at = from + k;
        if bytes[at] == ESC || matches!(bytes.get(at + 1), Some(0x80..=0x9F)) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Strip `data` in one go. Input without ESC, C1 controls or (in bytes mode) invalid UTF-8 is
/// returned borrowed.
///
/// In [`Mode::Text`] `data` is expected to be UTF-8, or its generalisation that encodes lone
/// surrogates (what Python's `surrogatepass` error handler writes): it is not validated, and
/// every byte at or above `0x80` other than the `C2` lead of U+0080..U+009F is text.
pub fn strip(data: &[u8], mode: Mode) -> Cow<'_, [u8]> {
    let valid = match mode {
        Mode::Text => data.len(),
        Mode::Bytes => valid_utf8_prefix(data),
    };
    let start = match first_control_in_text(&data[..valid]) {
        Some(at) => at,
        None if valid == data.len() => return Cow::Borrowed(data),
        None => valid,
    };
    Cow::Owned(strip_from(data, start, valid, mode))
}

/// Strip `text` in one go. Text without ESC or C1 controls is returned borrowed.
pub fn strip_str(text: &str) -> Cow<'_, str> {
    match strip(text.as_bytes(), Mode::Text) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        // Whole characters are removed from valid UTF-8, so what is left is valid UTF-8.
        Cow::Owned(out) => {
            Cow::Owned(String::from_utf8(out).expect("stripping valid UTF-8 leaves valid UTF-8"))
        }
    }
}

/// Strip raw terminal bytes in one go ([`Mode::Bytes`]).
pub fn strip_bytes(data: &[u8]) -> Cow<'_, [u8]> {
    strip(data, Mode::Bytes)
}

/// `data[..start]` is plain text ending on a character boundary and `data[..valid]` is valid
/// UTF-8; strip the rest.
fn strip_from(data: &[u8], start: usize, valid: usize, mode: Mode) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..start]);
    let mut stripper = Stripper::new(mode);
    stripper.run(data, start, valid, &mut out, true);
    stripper.finish(&mut out);
    out
}

// --- Code units (the storage of a Python `str`) --------------------------------------------

/// A code unit of a string stored one code point per unit, as CPython stores `str`: `u8`
/// (Latin-1), `u16` (UCS-2, code points below U+10000; a surrogate is a code point like any
/// other) or `u32` (UCS-4). A unit is a code point, so there is no decoding and nothing held
/// between chunks: units `0x80..=0x9F` are C1 controls, units `0xA0` and above are text (the
/// same [`Unit::Other`] as a UTF-8 character at or above U+00A0).
pub trait CodeUnit: window::Lanes + Copy + Eq + Send + Sync + 'static {
    fn value(self) -> u32;
    fn from_ascii(b: u8) -> Self;

    /// Copy `input[i..end]` to `out` up to the first ESC or C1 unit; return its index, or
    /// `end`.
    #[inline]
    fn copy_until_special(input: &[Self], i: usize, end: usize, out: &mut UnitOut<Self>) -> usize {
        let k = find_special_scalar(&input[i..end]).unwrap_or(end - i);
        out.extend(&input[i..i + k]);
        i + k
    }

    /// Index of the first ESC or C1 unit of `input`.
    fn find_special(input: &[Self]) -> Option<usize> {
        find_special_scalar(input)
    }
}

#[inline]
fn is_special(v: u32) -> bool {
    v == ESC as u32 || (0x80..=0x9F).contains(&v)
}

#[inline]
fn find_special_scalar<T: CodeUnit>(input: &[T]) -> Option<usize> {
    input.iter().position(|c| is_special(c.value()))
}

/// The SSE2 kernels (SSE2 is part of x86-64): a 16-byte mask with the bytes of each ESC or C1
/// unit set.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    #[inline(always)]
    pub unsafe fn special_u8(v: __m128i) -> __m128i {
        // As i8, 0x80..=0x9F are -128..=-97, the only bytes below -96 (0xA0).
        _mm_or_si128(
            _mm_cmpeq_epi8(v, _mm_set1_epi8(0x1B)),
            _mm_cmplt_epi8(v, _mm_set1_epi8(0xA0u8 as i8)),
        )
    }

    #[inline(always)]
    pub unsafe fn special_u16(v: __m128i) -> __m128i {
        // v - 0x80 (wrapping) is at most 0x1F exactly for 0x80..=0x9F.
        let x = _mm_sub_epi16(v, _mm_set1_epi16(0x80));
        let c1 = _mm_cmpeq_epi16(_mm_subs_epu16(x, _mm_set1_epi16(0x1F)), _mm_setzero_si128());
        _mm_or_si128(_mm_cmpeq_epi16(v, _mm_set1_epi16(0x1B)), c1)
    }

    #[inline(always)]
    pub unsafe fn special_u32(v: __m128i) -> __m128i {
        // Code points are at most 0x10FFFF, so signed compares are exact.
        let c1 = _mm_and_si128(
            _mm_cmpgt_epi32(v, _mm_set1_epi32(0x7F)),
            _mm_cmplt_epi32(v, _mm_set1_epi32(0xA0)),
        );
        _mm_or_si128(_mm_cmpeq_epi32(v, _mm_set1_epi32(0x1B)), c1)
    }
}

/// The AVX2 versions of the kernels, for the one scan over a whole input that decides whether
/// anything is to be stripped (selected at run time: the crate is built for baseline x86-64).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[inline(always)]
    pub unsafe fn special_u8(v: __m256i) -> __m256i {
        _mm256_or_si256(
            _mm256_cmpeq_epi8(v, _mm256_set1_epi8(0x1B)),
            _mm256_cmpgt_epi8(_mm256_set1_epi8(0xA0u8 as i8), v),
        )
    }

    #[inline(always)]
    pub unsafe fn special_u16(v: __m256i) -> __m256i {
        let x = _mm256_sub_epi16(v, _mm256_set1_epi16(0x80));
        let c1 = _mm256_cmpeq_epi16(
            _mm256_subs_epu16(x, _mm256_set1_epi16(0x1F)),
            _mm256_setzero_si256(),
        );
        _mm256_or_si256(_mm256_cmpeq_epi16(v, _mm256_set1_epi16(0x1B)), c1)
    }

    #[inline(always)]
    pub unsafe fn special_u32(v: __m256i) -> __m256i {
        let c1 = _mm256_and_si256(
            _mm256_cmpgt_epi32(v, _mm256_set1_epi32(0x7F)),
            _mm256_cmpgt_epi32(_mm256_set1_epi32(0xA0), v),
        );
        _mm256_or_si256(_mm256_cmpeq_epi32(v, _mm256_set1_epi32(0x1B)), c1)
    }
}

/// Implements the SIMD methods of [`CodeUnit`] for one unit type with its mask kernel.
macro_rules! code_unit {
    ($t:ty, $kernel:ident) => {
        impl CodeUnit for $t {
            #[inline(always)]
            fn value(self) -> u32 {
                self as u32
            }
            #[inline(always)]
            fn from_ascii(b: u8) -> Self {
                b as $t
            }

            /// Colored output has an escape every 10 to 20 units: look at 16 bytes at a time,
            /// store all of them at the end of the output whether or not they are kept, and
            /// count as written only the units before the first ESC or C1. The store is in
            /// bounds because the output is never ahead of the input (see [`UnitOut`]).
            #[cfg(target_arch = "x86_64")]
            #[inline]
            fn copy_until_special(
                input: &[Self],
                mut i: usize,
                end: usize,
                out: &mut UnitOut<Self>,
            ) -> usize {
                use std::arch::x86_64::*;
                const SIZE: usize = std::mem::size_of::<$t>();
                const LANES: usize = 16 / SIZE;
                // SAFETY: loads read input[i..i + LANES] with i + LANES <= end; the store
                // writes LANES units at out.len, which has room for them (UnitOut invariant:
                // out.len - out.base <= i - start, and room for end - start units).
                unsafe {
                    while i + LANES <= end {
                        let v = _mm_loadu_si128(input.as_ptr().add(i).cast());
                        let mask = _mm_movemask_epi8(simd::$kernel(v)) as u32;
                        _mm_storeu_si128(out.ptr.add(out.len).cast(), v);
                        if mask == 0 {
                            out.len += LANES;
                            i += LANES;
                        } else {
                            let k = mask.trailing_zeros() as usize / SIZE;
                            out.len += k;
                            return i + k;
                        }
                    }
                }
                let k = find_special_scalar(&input[i..end]).unwrap_or(end - i);
                out.extend(&input[i..i + k]);
                i + k
            }

            #[cfg(target_arch = "x86_64")]
            fn find_special(input: &[Self]) -> Option<usize> {
                use std::arch::x86_64::*;
                const SIZE: usize = std::mem::size_of::<$t>();
                const LANES: usize = 16 / SIZE;
                let mut i = 0;
                if input.len() >= 256 && std::arch::is_x86_feature_detected!("avx2") {
                    /// 128 bytes per step, in 32-byte vectors.
                    #[target_feature(enable = "avx2")]
                    unsafe fn clean_prefix(input: &[$t]) -> usize {
                        const W: usize = 32 / SIZE;
                        let mut i = 0;
                        while i + 4 * W <= input.len() {
                            let p = input.as_ptr().add(i);
                            let a = avx2::$kernel(_mm256_loadu_si256(p.cast()));
                            let b = avx2::$kernel(_mm256_loadu_si256(p.add(W).cast()));
                            let c = avx2::$kernel(_mm256_loadu_si256(p.add(2 * W).cast()));
                            let d = avx2::$kernel(_mm256_loadu_si256(p.add(3 * W).cast()));
                            let any = _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
                            if _mm256_testz_si256(any, any) == 0 {
                                break;
                            }
                            i += 4 * W;
                        }
                        i
                    }
                    // SAFETY: AVX2 is present; the loads stay within `input`.
                    i = unsafe { clean_prefix(input) };
                }
                // SAFETY: the loads read input[i..i + 4 * LANES] with i + 4 * LANES <= len.
                unsafe {
                    while i + 4 * LANES <= input.len() {
                        let p = input.as_ptr().add(i);
                        let a = simd::$kernel(_mm_loadu_si128(p.cast()));
                        let b = simd::$kernel(_mm_loadu_si128(p.add(LANES).cast()));
                        let c = simd::$kernel(_mm_loadu_si128(p.add(2 * LANES).cast()));
                        let d = simd::$kernel(_mm_loadu_si128(p.add(3 * LANES).cast()));
                        let any = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));
                        if _mm_movemask_epi8(any) != 0 {
                            break;
                        }
                        i += 4 * LANES;
                    }
                }
                find_special_scalar(&input[i..]).map(|k| i + k)
            }
        }
    };
}

code_unit!(u8, special_u8);
code_unit!(u16, special_u16);
code_unit!(u32, special_u32);

/// Where [`Stripper::run_units`] writes: `len` units written at `ptr`, with room for as many
/// units as the input it is given has. The stripper writes at most one unit per unit read, and
/// never ahead of its read position, which the 16-byte stores of the fast path rely on.
pub struct UnitOut<T> {
    ptr: *mut T,
    len: usize,
    /// The largest unit at or above `0x80` that was dropped (0 if none): when it reaches the
    /// range that sets a `str`'s kind, the output may need a smaller kind.
    dropped_max: u32,
}

// SAFETY: a UnitOut is the exclusive writer of its buffer.
unsafe impl<T: Send> Send for UnitOut<T> {}

impl<T: CodeUnit> UnitOut<T> {
    /// # Safety
    /// `ptr` must be valid for writes of as many units as the input later given to
    /// [`Stripper::run_units`] with this output.
    pub unsafe fn new(ptr: *mut T) -> Self {
        UnitOut {
            ptr,
            len: 0,
            dropped_max: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dropped_max(&self) -> u32 {
        self.dropped_max
    }

    #[inline]
    fn push(&mut self, c: T) {
        // SAFETY: room for one unit per unit read (type invariant).
        unsafe { self.ptr.add(self.len).write(c) };
        self.len += 1;
    }

    #[inline]
    fn extend(&mut self, s: &[T]) {
        // SAFETY: as in push; input and output buffers never overlap.
        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), self.ptr.add(self.len), s.len()) };
        self.len += s.len();
    }

    #[inline]
    fn drop_unit(&mut self, v: u32) {
        self.dropped_max = self.dropped_max.max(v);
    }
}

/// [`Stripper::step_ascii`] only ever writes the ASCII unit it was given.
impl<T: CodeUnit> Sink for UnitOut<T> {
    fn text(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.push(T::from_ascii(b));
        }
    }
    #[inline]
    fn byte(&mut self, b: u8) {
        self.push(T::from_ascii(b));
    }
}

/// If `input[i..]` starts with a whole `ESC [` CSI, the index just past it (as [`whole_csi`]).
#[inline]
fn whole_csi_units<T: CodeUnit>(input: &[T], i: usize) -> Option<usize> {
    if input[i].value() != ESC as u32 || input.get(i + 1).map(|c| c.value()) != Some(b'[' as u32) {
        return None;
    }
    let mut j = i + 2;
    while let Some(c) = input.get(j) {
        match c.value() {
            0x20..=0x3F => j += 1,
            0x40..=0x7E => return Some(j + 1),
            _ => return None,
        }
    }
    None
}

impl Stripper {
    /// Whether the stripper is in the ground state with no partial character held, so that
    /// the next unit or byte it is fed starts afresh.
    pub fn between_sequences(&self) -> bool {
        self.state == State::Ground && self.pending_len == 0
    }

    /// Whether `input` fed now with [`feed_units`](Self::feed_units) would come out
    /// unchanged: the stripper is between sequences and `input` has no ESC and no C1 unit.
    pub fn passes_through_units<T: CodeUnit>(&self, input: &[T]) -> bool {
        self.between_sequences() && T::find_special(input).is_none()
    }

    /// Strip code units, appending what is kept to `out`. A stripper fed units must be fed
    /// nothing else until [`finish`](Self::finish) (which adds nothing for units); the output
    /// for any chunking equals the one-shot [`strip_units`], and equals [`strip_str`] of the
    /// same characters.
    pub fn feed_units<T: CodeUnit>(&mut self, input: &[T], out: &mut Vec<T>) {
        out.reserve(input.len());
        let len = out.len();
        // SAFETY: `out` has room for input.len() more units; set_len covers what was written.
        unsafe {
            let mut w = UnitOut::new(out.as_mut_ptr().add(len));
            self.run_units(input, &mut w);
            out.set_len(len + w.len);
        }
    }

    /// Strip `input` into `out` (see [`UnitOut`] for the room it needs).
    pub fn run_units<T: CodeUnit>(&mut self, input: &[T], out: &mut UnitOut<T>) {
        debug_assert_eq!(self.pending_len, 0, "units fed to a stripper holding UTF-8");
        let n = input.len();
        let mut i = 0;
        while i < n {
            if self.state == State::Ground {
                // SAFETY: `out` has room for a unit per unit of `input` and is never ahead of
                // the read position, so for `n - i` units from its end.
                let (next, written) =
                    unsafe { window::strip_windows::<T, false>(input, i, n, out.ptr.add(out.len)) };
                out.len += written;
                i = T::copy_until_special(input, next, n, out);
                if i >= n {
                    break;
                }
                if let Some(end) = whole_csi_units(input, i) {
                    i = end;
                    continue;
                }
            } else if let Some(inert) = self.inert_bytes() {
                let (lo, hi) = (u32::from(*inert.start()), u32::from(*inert.end()));
                while i < n && (lo..=hi).contains(&input[i].value()) {
                    i += 1;
                }
                if i >= n {
                    break;
                }
            }
            let c = input[i].value();
            if c < 0x80 {
                self.step_ascii(c as u8, out);
            } else if c < 0xA0 {
                out.drop_unit(c);
                self.step(Unit::C1(c as u8), &[], out);
            } else {
                match self.state {
                    State::OscString | State::Dcs | State::SosPmApcString => out.drop_unit(c),
                    _ => {
                        self.state = State::Ground;
                        out.push(input[i]);
                    }
                }
            }
            i += 1;
        }
    }
}

/// Strip a string given as code units in one go (see [`CodeUnit`]); input without ESC or C1
/// units is returned borrowed. The result equals [`strip_str`] of the same characters.
pub fn strip_units<T: CodeUnit>(input: &[T]) -> Cow<'_, [T]> {
    let Some(start) = T::find_special(input) else {
        return Cow::Borrowed(input);
    };
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(&input[..start]);
    let mut stripper = Stripper::new(Mode::Text);
    stripper.feed_units(&input[start..], &mut out);
    Cow::Owned(out)
}

/// Lossy UTF-8 decoding of a byte stream cut into chunks: the concatenated output equals
/// Python's `whole.decode("utf-8", "replace")` (and Rust's `String::from_utf8_lossy`), one
/// U+FFFD per maximal invalid subpart (Unicode 15, section 3.9), for any chunking.
#[derive(Clone, Debug, Default)]
pub struct Utf8Decoder {
    /// A valid but incomplete UTF-8 sequence at the end of the last chunk (at most 3 bytes).
    pending: [u8; 4],
    pending_len: usize,
}

impl Utf8Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, mut bytes: &[u8], out: &mut String) {
        while self.pending_len > 0 {
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            self.pending[self.pending_len] = b;
            let held = &self.pending[..=self.pending_len];
            match std::str::from_utf8(held) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending_len = 0;
                    bytes = rest;
                }
                Err(e) if e.error_len().is_none() => {
                    self.pending_len += 1;
                    bytes = rest;
                }
                // The held prefix is the maximal invalid subpart; `b` starts afresh.
                Err(_) => {
                    out.push(char::REPLACEMENT_CHARACTER);
                    self.pending_len = 0;
                }
            }
        }
        let mut chunks = bytes.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            out.push_str(chunk.valid());
            let bad = chunk.invalid();
            if bad.is_empty() {
                continue;
            }
            let incomplete = chunks.peek().is_none()
                && std::str::from_utf8(bad).is_err_and(|e| e.error_len().is_none());
            if incomplete {
                self.pending[..bad.len()].copy_from_slice(bad);
                self.pending_len = bad.len();
            } else {
                out.push(char::REPLACEMENT_CHARACTER);
            }
        }
    }

    /// End of the stream: a held incomplete sequence becomes U+FFFD. Resets the decoder.
    pub fn finish(&mut self, out: &mut String) {
        if self.pending_len > 0 {
            out.push(char::REPLACEMENT_CHARACTER);
            self.pending_len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strip(s: &str) -> String {
        strip_str(s).into_owned()
    }

    fn strip_b(b: &[u8]) -> Vec<u8> {
        strip_bytes(b).into_owned()
    }

    fn stream(chunks: &[&[u8]], mode: Mode) -> Vec<u8> {
        let mut s = Stripper::new(mode);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    /// The reference: one unit at a time through `decode` and `step`, no fast paths, no
    /// chunking.
    fn naive(input: &[u8], mode: Mode) -> Vec<u8> {
        let mut s = Stripper::new(mode);
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            let (unit, len) = decode(&input[i..], mode, true).unwrap();
            s.step(unit, &input[i..i + len], &mut out);
            i += len;
        }
        out
    }

    fn one_shot(input: &[u8], mode: Mode) -> Vec<u8> {
        match mode {
            Mode::Text => strip(std::str::from_utf8(input).unwrap()).into_bytes(),
            Mode::Bytes => strip_b(input),
        }
    }

    /// Every 2-way split and 1-byte chunks agree with the one-shot result and the reference.
    fn assert_split_invariant(input: &[u8], mode: Mode) {
        let expected = one_shot(input, mode);
        assert_eq!(
            expected,
            naive(input, mode),
            "fast path vs reference on {input:?}"
        );
        for cut in 0..=input.len() {
            let got = stream(&[&input[..cut], &input[cut..]], mode);
            assert_eq!(got, expected, "split at {cut} of {input:?}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(stream(&bytes, mode), expected, "1-byte chunks of {input:?}");
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            strip_str("héllo › wörld\u{a0}©"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            strip_bytes("héllo › ©".as_bytes()),
            Cow::Borrowed(_)
        ));
        assert!(matches!(strip_str(""), Cow::Borrowed(_)));
    }

    #[test]
    fn sgr_removed() {
        assert_eq!(strip("\x1b[1;31mred\x1b[0m plain"), "red plain");
        assert_eq!(strip("\x1b[38;2;255;0;0mx\x1b[m"), "x");
    }

    #[test]
    fn csi_with_private_marker() {
        assert_eq!(
            strip("a\x1b[?25lb\x1b[?1049hc\x1b[>4;2md\x1b[=5ue\x1b[<1;2;3Mf"),
            "abcdef"
        );
    }

    #[test]
    fn csi_with_intermediate_and_colon_subparams() {
        assert_eq!(
            strip("a\x1b[2 qb\x1b[38:2::255:0:0mc\x1b[4:3md\x1b[!pe"),
            "abcde"
        );
    }

    #[test]
    fn csi_executes_c0_inside() {
        // A C0 control inside a CSI is executed by a terminal and the sequence goes on.
        assert_eq!(strip("a\x1b[1\n;31mb"), "a\nb");
    }

    #[test]
    fn eight_bit_csi() {
        assert_eq!(strip("a\u{9b}31mb"), "ab");
        assert_eq!(strip_b(b"a\x9b31mb"), b"ab");
    }

    #[test]
    fn osc_terminated_by_bel() {
        assert_eq!(strip("a\x1b]0;window title\x07b"), "ab");
    }

    #[test]
    fn osc_terminated_by_st() {
        assert_eq!(strip("a\x1b]2;title\x1b\\b"), "ab");
    }

    #[test]
    fn osc_terminated_by_c1_st() {
        assert_eq!(strip("a\x1b]0;title\u{9c}b"), "ab");
        assert_eq!(strip_b(b"a\x1b]0;title\x9cb"), b"ab");
        assert_eq!(strip("a\u{9d}0;title\u{9c}b"), "ab");
    }

    #[test]
    fn osc_keeps_going_over_utf8_with_9c_continuation() {
        // "Ŝ" is C5 9C: its 0x9C is a continuation byte, not ST.
        let input = "a\x1b]8;;http://x/Ŝ\x1b\\link\x1b]8;;\x1b\\b";
        assert_eq!(strip(input), "alinkb");
        assert_eq!(strip_b(input.as_bytes()), b"alinkb");
    }

    #[test]
    fn osc8_hyperlink_keeps_text() {
        let input = "see \x1b]8;id=1;https://example.com/a?b=c\x1b\\the docs\x1b]8;;\x1b\\ now";
        assert_eq!(strip(input), "see the docs now");
        let bel = "\x1b]8;;file:///tmp/x\x07x.txt\x1b]8;;\x07";
        assert_eq!(strip(bel), "x.txt");
    }

    #[test]
    fn dcs_string() {
        assert_eq!(strip("a\x1bP1$r0m\x1b\\b"), "ab");
        assert_eq!(strip("a\x1bPq#0;2;0;0;0#0~~@@vv\x1b\\b"), "ab"); // sixel
        assert_eq!(strip("a\u{90}payload\u{9c}b"), "ab");
        // C0 controls inside a string are data of the string.
        assert_eq!(strip("a\x1bPx\ny\x1b\\b"), "ab");
    }

    #[test]
    fn sos_pm_apc_strings() {
        assert_eq!(
            strip("a\x1bXsos\x1b\\b\x1b^pm\x1b\\c\x1b_Gf=100;AAAA\x1b\\d"),
            "abcd"
        );
        assert_eq!(strip("a\u{98}s\u{9c}b\u{9e}p\u{9c}c\u{9f}a\u{9c}d"), "abcd");
    }

    #[test]
    fn strings_tolerate_bel() {
        assert_eq!(strip("a\x1b_apc\x07b\x1bPdcs\x07c\x1bXsos\x07d"), "abcd");
    }

    #[test]
    fn two_byte_escapes() {
        for seq in [
            "\x1b(B",
            "\x1b)0",
            "\x1b7",
            "\x1b8",
            "\x1b=",
            "\x1b>",
            "\x1bM",
            "\x1bc",
            "\x1b#8",
            "\x1b%G",
            "\x1b \x46",
            "\x1bN",
            "\x1b\\",
        ] {
            assert_eq!(strip(&format!("a{seq}b")), "ab", "{seq:?}");
        }
    }

    #[test]
    fn c1_controls_removed() {
        assert_eq!(strip("a\u{85}b\u{84}c\u{8d}d"), "abcd");
        assert_eq!(strip_b(b"a\x85b\x84c"), b"abc");
    }

    #[test]
    fn c1_byte_inside_utf8_kept() {
        // 0x9B inside "›" (E2 80 BA is U+203A; E2 80 9B is U+201B), 0xA9 of "é", 0x9C of "Ŝ".
        let text = "é ‛ › Ŝ ƛ 𐀀 \u{a0}";
        assert_eq!(strip_b(text.as_bytes()), text.as_bytes());
        assert_eq!(strip(text), text);
    }

    #[test]
    fn lone_c1_byte_after_invalid_lead_is_control() {
        // E0 9B is not UTF-8 (E0 needs A0..BF next), so 0x9B is an 8-bit CSI.
        assert_eq!(strip_b(b"\xe0\x9b31mx"), b"\xe0x");
        // A stray continuation byte 0x9B with no lead byte.
        assert_eq!(strip_b(b"x\x9b1my"), b"xy");
        // Invalid bytes above 0x9F pass through.
        assert_eq!(strip_b(b"\xff\xfe\xa0x"), b"\xff\xfe\xa0x");
    }

    #[test]
    fn c0_controls_kept_except_esc() {
        let c0: String = (0u8..0x20).filter(|&b| b != ESC).map(char::from).collect();
        let input = format!("{c0}\x7f");
        assert_eq!(strip(&input), input);
    }

    #[test]
    fn can_aborts_sequence() {
        assert_eq!(strip("a\x1b[31\x18mb"), "a\x18mb");
        assert_eq!(strip("a\x1b]0;title\x1aafter"), "a\x1aafter");
        assert_eq!(strip("a\x1b(\x18B"), "a\x18B");
    }

    #[test]
    fn esc_restarts_sequence() {
        assert_eq!(strip("a\x1b[31\x1b[32mb"), "ab");
        assert_eq!(strip("a\x1b]0;t\x1b[1mb"), "ab");
        assert_eq!(strip("a\x1b\x1b[1mb"), "ab");
    }

    #[test]
    fn non_ascii_aborts_csi_and_is_kept() {
        assert_eq!(strip("a\x1b[3é"), "aé");
        assert_eq!(strip("a\x1bé"), "aé");
        assert_eq!(strip("a\x1b(é"), "aé");
        assert_eq!(strip_b(b"a\x1b[3\xffb"), b"a\xffb");
    }

    #[test]
    fn unterminated_sequence_dropped() {
        assert_eq!(strip("abc\x1b[31"), "abc");
        assert_eq!(strip("abc\x1b]0;title"), "abc");
        assert_eq!(strip("abc\x1b"), "abc");
        assert_eq!(strip("abc\u{90}x"), "abc");
    }

    #[test]
    fn partial_utf8_into_esc() {
        // A lead byte cut off by ESC is invalid UTF-8 and passes through; the CSI is removed;
        // the orphan continuation byte passes through too, re-forming "é" in the output.
        let input = b"a\xc3\x1b[0m\xa9b";
        assert_eq!(strip_b(input), b"a\xc3\xa9b");
        assert_split_invariant(input, Mode::Bytes);
        // A lead byte cut off by ESC before a continuation in 0x80..=0x9F: that byte is C1.
        assert_eq!(strip_b(b"a\xe2\x1b[0m\x80b"), b"a\xe2b");
    }

    #[test]
    fn partial_utf8_at_end_of_stream() {
        assert_eq!(strip_b(b"ab\xe2\x80"), b"ab\xe2");
        assert_eq!(strip_b(b"ab\xf0\x9f\x98"), b"ab\xf0");
        assert_eq!(stream(&[b"ab\xe2", b"\x80"], Mode::Bytes), b"ab\xe2");
        assert_eq!(
            stream(&[b"ab\xe2", b"\x80", b"\xba"], Mode::Bytes),
            "ab›".as_bytes()
        );
    }

    #[test]
    fn finish_resets() {
        let mut s = Stripper::new(Mode::Bytes);
        let mut out = Vec::new();
        s.feed(b"x\x1b]0;unterminated", &mut out);
        s.finish(&mut out);
        s.feed(b"y\xc3", &mut out);
        s.finish(&mut out);
        s.feed(b"\xa9", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"xy\xc3\xa9");
    }

    #[test]
    fn passes_through_only_between_sequences() {
        let mut s = Stripper::new(Mode::Text);
        let mut out = Vec::new();
        assert!(s.passes_through(b"plain \xc3\xa9"));
        assert!(!s.passes_through(b"a\x1b[1m"));
        s.feed(b"x\x1b[3", &mut out);
        assert!(!s.passes_through(b"plain"));
        s.feed(b"1m", &mut out);
        assert!(s.passes_through(b"plain"));
        let b = Stripper::new(Mode::Bytes);
        assert!(!b.passes_through(b"\xff"));
    }

    #[test]
    fn empty_feeds_are_harmless() {
        assert_eq!(
            stream(&[b"", b"\x1b[", b"", b"1m", b"", b"x", b""], Mode::Text),
            b"x"
        );
    }

    const SPLIT_CASES: &[&str] = &[
        "\x1b[1;31mred\x1b[0m plain",
        "a\x1b]8;;http://x/Ŝ\x1b\\link\x1b]8;;\x1b\\b",
        "é\x1b[38:2::1:2:3m›\u{9b}1m‛\u{9d}0;t\u{9c}Ŝ",
        "a\x1bP1$r0m\x1b\\b\x1b_apc\x07c\x1b(Bd\x1b#8e",
        "\x1b[31\x18m\x1b]0;t\x1a\x1b\x1b7x\x1b",
        "😀\x1b[3😀\x1b😀\u{85}\u{a0}\u{c2}",
        "no escapes at all, only text ©",
    ];

    #[test]
    fn every_split_point_text() {
        for case in SPLIT_CASES {
            assert_split_invariant(case.as_bytes(), Mode::Text);
        }
    }

    #[test]
    fn every_split_point_bytes() {
        for case in SPLIT_CASES {
            assert_split_invariant(case.as_bytes(), Mode::Bytes);
        }
        for case in [
            &b"a\xc3\x1b[0m\xa9b\xe0\x9b31mx\xff\x9c\xf0\x9f\x98"[..],
            b"\x1b]0;\xe2\x80\x9c\xe2\x80\x9d\x9c\xe2\x80",
            b"\xed\xa0\x80\xf4\x90\x80\x80\xc2\xc2\x9b1m",
        ] {
            assert_split_invariant(case, Mode::Bytes);
        }
    }

    /// Feed `input` as code units cut at `cuts` (as [`chunked`]).
    fn units_stream<T: CodeUnit + std::fmt::Debug>(input: &[T], cuts: &[usize]) -> Vec<T> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        at.push(0);
        at.push(input.len());
        at.sort_unstable();
        let mut s = Stripper::new(Mode::Text);
        let mut out = Vec::new();
        for w in at.windows(2) {
            s.feed_units(&input[w[0]..w[1]], &mut out);
        }
        s.finish(&mut Vec::new());
        out
    }

    #[test]
    fn code_units_every_split_point() {
        for case in SPLIT_CASES
            .iter()
            .copied()
            .chain(["中\x1b[1m文😀\u{9b}2K한\x1b]0;😀 t\x07\u{ff}\x1b[3中x"])
        {
            let expected: Vec<u32> = strip(case).chars().map(u32::from).collect();
            let u32s: Vec<u32> = case.chars().map(u32::from).collect();
            assert_eq!(&strip_units(&u32s)[..], &expected[..], "{case:?}");
            for cut in 0..=u32s.len() {
                assert_eq!(
                    units_stream(&u32s, &[cut]),
                    expected,
                    "{case:?} cut at {cut}"
                );
            }
            assert!(!matches!(strip_units(&u32s), Cow::Borrowed(_)) || expected == u32s);
        }
    }

    /// Byte strings built mostly from pieces that stress the parser.
    fn soup() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\x1b".to_vec()),
            Just(b"\x1b[".to_vec()),
            Just(b"\x1b]8;;".to_vec()),
            Just(b"\x1b\\".to_vec()),
            Just(b"\x1bP".to_vec()),
            Just(b"\x1b_".to_vec()),
            Just(b"\x1b(".to_vec()),
            Just(b"\x07".to_vec()),
            Just(b"\x18".to_vec()),
            Just("\u{9b}".as_bytes().to_vec()),
            Just("\u{9c}".as_bytes().to_vec()),
            Just("é›Ŝ😀".as_bytes().to_vec()),
            Just(b"\x9b".to_vec()),
            Just(b"\x9c".to_vec()),
            Just(b"\xe2\x80".to_vec()),
            Just(b"\xc2".to_vec()),
            "[0-9;:?<>m ]{0,4}".prop_map(String::into_bytes),
            "[a-zA-Z \n\r\t]{0,6}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..4),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|ps| ps.concat())
    }

    fn chunked(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut idx: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        idx.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in idx.into_iter().chain([input.len()]) {
            chunks.push(input[prev..c].to_vec());
            prev = c;
        }
        chunks
    }

    fn decode_chunks(chunks: &[&[u8]]) -> String {
        let mut d = Utf8Decoder::new();
        let mut out = String::new();
        for c in chunks {
            d.push(c, &mut out);
        }
        d.finish(&mut out);
        out
    }

    #[test]
    fn decoder_every_split_matches_lossy() {
        let cases: &[&[u8]] = &[
            "é›😀".as_bytes(),
            b"a\xe2\x80b\xf0\x9f\x98\xff\xc3",
            b"\xed\xa0\x80\xe0\x80\xf4\x90\x80\x80\xf0\x90\x80A",
        ];
        for input in cases {
            let expected = String::from_utf8_lossy(input);
            for cut in 0..=input.len() {
                assert_eq!(
                    decode_chunks(&[&input[..cut], &input[cut..]]),
                    expected,
                    "{input:?} at {cut}"
                );
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode_chunks(&bytes), expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_chunking_matches_one_shot(input in soup(), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let chunks = chunked(&input, &cuts);
            let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            let expected = strip_b(&input);
            prop_assert_eq!(&expected, &naive(&input, Mode::Bytes));
            prop_assert_eq!(&stream(&refs, Mode::Bytes), &expected);
            prop_assert!(!expected.contains(&ESC));
        }

        #[test]
        fn text_mode_matches_bytes_mode(input in soup(), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let text = String::from_utf8_lossy(&input).into_owned();
            let expected = strip(&text);
            prop_assert_eq!(expected.as_bytes(), &strip_b(text.as_bytes())[..]);
            prop_assert_eq!(expected.as_bytes(), &naive(text.as_bytes(), Mode::Text)[..]);
            let chunks = chunked(text.as_bytes(), &cuts);
            let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            prop_assert_eq!(&stream(&refs, Mode::Text), expected.as_bytes());
        }

        #[test]
        fn decoder_any_chunking_matches_lossy(input in soup(), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let chunks = chunked(&input, &cuts);
            let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            prop_assert_eq!(decode_chunks(&refs), String::from_utf8_lossy(&input));
        }

        #[test]
        fn code_units_match_utf8(input in soup(), extra in "[a\u{e9}\u{a0}\u{9b}\u{9c}\u{85}\u{1b}\u{4e2d}\u{d55c}\u{1f600}\u{10ffff}\\[m;0-9]{0,24}", cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let text = String::from_utf8_lossy(&input).into_owned() + &extra;
            let expected: Vec<u32> = strip(&text).chars().map(u32::from).collect();
            let u32s: Vec<u32> = text.chars().map(u32::from).collect();
            prop_assert_eq!(&strip_units(&u32s)[..], &expected[..]);
            prop_assert_eq!(&units_stream(&u32s, &cuts), &expected);
            if u32s.iter().all(|&c| c <= 0xFFFF) {
                let u16s: Vec<u16> = u32s.iter().map(|&c| c as u16).collect();
                let got: Vec<u32> = strip_units(&u16s).iter().map(|&c| u32::from(c)).collect();
                prop_assert_eq!(&got, &expected);
                let got: Vec<u32> = units_stream(&u16s, &cuts).into_iter().map(u32::from).collect();
                prop_assert_eq!(&got, &expected);
            }
            if u32s.iter().all(|&c| c <= 0xFF) {
                let u8s: Vec<u8> = u32s.iter().map(|&c| c as u8).collect();
                let got: Vec<u32> = strip_units(&u8s).iter().map(|&c| u32::from(c)).collect();
                prop_assert_eq!(&got, &expected);
                let got: Vec<u32> = units_stream(&u8s, &cuts).into_iter().map(u32::from).collect();
                prop_assert_eq!(&got, &expected);
            }
        }

        #[test]
        fn text_without_esc_or_c1_unchanged(text in "[^\u{1b}\u{80}-\u{9f}]{0,64}") {
            prop_assert_eq!(strip_str(&text), Cow::Borrowed(text.as_str()));
            prop_assert!(matches!(strip_str(&text), Cow::Borrowed(_)));
            prop_assert!(matches!(strip_bytes(text.as_bytes()), Cow::Borrowed(_)));
        }
    }

    /// Long colored output: mostly whole SGR sequences and short text, as terminals get, with
    /// now and then a piece of [`soup`], so inputs span many windows of the fast path.
    fn colored() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            6 => "\x1b\\[[0-9;]{0,9}m".prop_map(String::into_bytes),
            2 => "\x1b\\[[0-9:;?<>= !\"#/]{0,5}[@-~]".prop_map(String::into_bytes),
            6 => "[a-z \n]{0,12}".prop_map(String::into_bytes),
            2 => "[é›Ŝ😀\u{a9}\u{100}\u{ffff}]{1,3}".prop_map(String::into_bytes),
            1 => soup(),
        ];
        proptest::collection::vec(piece, 10..80).prop_map(|ps| ps.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn long_colored_matches_reference(input in colored(), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
            let expected = strip_b(&input);
            prop_assert_eq!(&expected, &naive(&input, Mode::Bytes));
            let chunks = chunked(&input, &cuts);
            let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            prop_assert_eq!(&stream(&refs, Mode::Bytes), &expected);

            let text = String::from_utf8_lossy(&input).into_owned();
            let expected = strip(&text);
            prop_assert_eq!(expected.as_bytes(), &naive(text.as_bytes(), Mode::Text)[..]);
            let expected: Vec<u32> = expected.chars().map(u32::from).collect();
            let u32s: Vec<u32> = text.chars().map(u32::from).collect();
            prop_assert_eq!(&strip_units(&u32s)[..], &expected[..]);
            prop_assert_eq!(&units_stream(&u32s, &cuts), &expected);
            // The same text squeezed into the narrower str kinds.
            for max in ['\u{ffff}', '\u{ff}'] {
                let narrow: String = text.chars().map(|c| c.min(max)).collect();
                let expected: Vec<u32> = strip(&narrow).chars().map(u32::from).collect();
                let u16s: Vec<u16> = narrow.chars().map(|c| c as u16).collect();
                let got: Vec<u32> = strip_units(&u16s).iter().map(|&c| u32::from(c)).collect();
                prop_assert_eq!(&got, &expected);
                let got: Vec<u32> = units_stream(&u16s, &cuts).into_iter().map(u32::from).collect();
                prop_assert_eq!(&got, &expected);
                if max == '\u{ff}' {
                    let u8s: Vec<u8> = narrow.chars().map(|c| c as u8).collect();
                    let got: Vec<u32> = strip_units(&u8s).iter().map(|&c| u32::from(c)).collect();
                    prop_assert_eq!(&got, &expected);
                    let got: Vec<u32> = units_stream(&u8s, &cuts).into_iter().map(u32::from).collect();
                    prop_assert_eq!(&got, &expected);
                }
            }
        }
    }

    // --- render mode ---------------------------------------------------------------------

    fn render_s(s: &str) -> String {
        String::from_utf8(render(s.as_bytes(), Mode::Text).into_owned()).unwrap()
    }

    fn render_stream(chunks: &[&[u8]], mode: Mode, max: usize) -> Vec<u8> {
        let mut r = Renderer::with_max_line_bytes(mode, max);
        let mut out = Vec::new();
        for c in chunks {
            r.feed(c, &mut out);
        }
        r.finish(&mut out);
        out
    }

    #[test]
    fn render_progress_bar_keeps_final_state() {
        let mut input = String::from("start\n");
        for pct in 0..=500 {
            input.push_str(&format!(
                "\r\x1b[32m{:>3}%\x1b[0m [{}]",
                pct / 5,
                "#".repeat(pct / 50)
            ));
        }
        input.push_str("\ndone\n");
        assert_eq!(render_s(&input), "start\n100% [##########]\ndone\n");
    }

    #[test]
    fn render_cr_overwrites_only_what_it_writes() {
        assert_eq!(render_s("abcdef\rxy\n"), "xycdef\n");
        assert_eq!(render_s("line one\r\nline two\r\n"), "line one\nline two\n");
        assert_eq!(render_s("é›😀x\rab"), "ab😀x");
        assert_eq!(render_s("ab\ré›😀"), "é›😀");
    }

    #[test]
    fn render_backspace() {
        // nroff overstrike: bold "a", underlined "b".
        assert_eq!(render_s("a\x08ab\x08_\n"), "a_\n");
        assert_eq!(render_s("abc\x08\x08X\n"), "aXc\n");
        assert_eq!(render_s("\x08\x08a"), "a");
        assert_eq!(render_s("é›\x08!"), "é!");
    }

    #[test]
    fn render_erase_in_line() {
        assert_eq!(render_s("abcdef\r\x1b[Kxy\n"), "xy\n");
        assert_eq!(render_s("abcdef\r\x1b[0Kxy\n"), "xy\n");
        assert_eq!(render_s("abcdef\x08\x08\x08\x1b[Kxy\n"), "abcxy\n");
        assert_eq!(render_s("abcdef\x08\x08\x08\x1b[1K\n"), "    ef\n");
        assert_eq!(render_s("abcdef\x1b[2K\rxy\n"), "xy\n");
        // Erased cells before the cursor become blanks only if text follows them.
        assert_eq!(render_s("abc\x1b[2Kxy\n"), "   xy\n");
        assert_eq!(render_s("abc\x1b[2K\n"), "\n");
        assert_eq!(render_s("abc\x1b[1K\n"), "\n");
        // DECSEL erases like EL; with an intermediate it is another function, ignored.
        assert_eq!(render_s("abc\r\x1b[?Kx"), "x");
        assert_eq!(render_s("abc\r\x1b[ Kx"), "xbc");
    }

    #[test]
    fn render_horizontal_moves() {
        assert_eq!(render_s("abcdef\x1b[1GX\n"), "Xbcdef\n");
        assert_eq!(render_s("abcdef\x1b[GX\x1b[0GY"), "Ybcdef");
        assert_eq!(render_s("abcdef\x1b[3`X"), "abXdef");
        assert_eq!(render_s("ab\x1b[3CX"), "ab   X");
        assert_eq!(render_s("abcdef\x1b[2DX"), "abcdXf");
        assert_eq!(render_s("ab\x1b[9DX"), "Xb");
        assert_eq!(render_s("ab\x1b[5GX\x1b[1GY"), "Yb  X");
        // Movement across lines is not emulated: the sequence is just removed.
        assert_eq!(render_s("one\ntwo\x1b[1Athree\n"), "one\ntwothree\n");
    }

    #[test]
    fn render_keeps_other_controls_and_drops_sequences() {
        assert_eq!(
            render_s("\x1b]0;title\x07a\tb\x07\x1b[1mc\x1b[0m"),
            "a\tb\x07c"
        );
        assert_eq!(render_s("a\u{9b}2Kb"), " b");
    }

    #[test]
    fn render_plain_is_borrowed() {
        assert!(matches!(
            render(b"plain\ntext \xc3\xa9", Mode::Bytes),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            render("x\ty\n".as_bytes(), Mode::Text),
            Cow::Borrowed(_)
        ));
        assert!(matches!(render(b"x\ry", Mode::Text), Cow::Owned(_)));
        assert!(matches!(render(b"\xff", Mode::Bytes), Cow::Owned(_)));
    }

    #[test]
    fn render_line_bound() {
        assert_eq!(render_stream(&[b"abcdefgh"], Mode::Text, 3), b"abcdefgh");
        assert_eq!(render_stream(&[b"abcde\rX"], Mode::Text, 3), b"abcXe");
        // A character is never cut by the bound.
        let s = "ab€€€\rx".as_bytes();
        assert_eq!(render_stream(&[s], Mode::Text, 3), "ab€€x".as_bytes());
        // Overwriting does not grow the line: no cut.
        assert_eq!(render_stream(&[b"abc\rxyz\rX"], Mode::Text, 3), b"Xyz");
        // Stray continuation bytes are cut at 4 * max_bytes.
        let junk = [b'a'; 1]
            .iter()
            .chain([0xA0u8; 10].iter())
            .copied()
            .collect::<Vec<_>>();
        assert_eq!(render_stream(&[&junk], Mode::Bytes, 2), junk);
        let mut r = Renderer::with_max_line_bytes(Mode::Bytes, 2);
        let mut out = Vec::new();
        r.feed(&junk, &mut out);
        assert_eq!(out.len(), 8, "line held is bounded");
    }

    #[test]
    fn render_every_split_point() {
        let cases: &[&[u8]] = &[
            b"ab\x1b[2Kc\rd\x1b[1Ge\x08\x08f\x1b[3Cg\n",
            "é›\r😀\x1b[K\x1b[1K\u{9b}2G!\x1b]0;t\x07\n\r\n".as_bytes(),
            b"abc\xe2\x80\r\x80\x80\x80\x80x\xc3\x1b[0m\xa9\x08\x08y",
        ];
        for input in cases {
            for mode in [Mode::Text, Mode::Bytes] {
                if mode == Mode::Text && std::str::from_utf8(input).is_err() {
                    continue;
                }
                for max in [2, 5, MAX_LINE_BYTES] {
                    let expected = render_stream(&[input], mode, max);
                    for cut in 0..=input.len() {
                        let got = render_stream(&[&input[..cut], &input[cut..]], mode, max);
                        assert_eq!(got, expected, "{input:?} max {max} cut {cut}");
                    }
                    let bytes: Vec<&[u8]> = input.chunks(1).collect();
                    assert_eq!(render_stream(&bytes, mode, max), expected);
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Tok {
        Text(String),
        Cr,
        Bs,
        Lf,
        El(u32),
        Cha(u32),
        Cuf(u32),
        Cub(u32),
        Sgr,
    }

    fn tok() -> impl Strategy<Value = Tok> {
        prop_oneof![
            4 => "[a-z é›😀\t]{1,6}".prop_map(Tok::Text),
            2 => Just(Tok::Cr),
            1 => Just(Tok::Bs),
            1 => Just(Tok::Lf),
            1 => (0u32..3).prop_map(Tok::El),
            1 => (0u32..9).prop_map(Tok::Cha),
            1 => (0u32..4).prop_map(Tok::Cuf),
            1 => (0u32..4).prop_map(Tok::Cub),
            1 => Just(Tok::Sgr),
        ]
    }

    fn encode(toks: &[Tok]) -> String {
        let mut s = String::new();
        for t in toks {
            match t {
                Tok::Text(x) => s.push_str(x),
                Tok::Cr => s.push('\r'),
                Tok::Bs => s.push('\x08'),
                Tok::Lf => s.push('\n'),
                Tok::El(n) => s.push_str(&format!("\x1b[{n}K")),
                Tok::Cha(n) => s.push_str(&format!("\x1b[{n}G")),
                Tok::Cuf(n) => s.push_str(&format!("\x1b[{n}C")),
                Tok::Cub(n) => s.push_str(&format!("\x1b[{n}D")),
                Tok::Sgr => s.push_str("\x1b[1;38;5;2m"),
            }
        }
        s
    }

    /// The reference: a line of cells (`None` is blank) and a column, no byte offsets.
    fn model(toks: &[Tok]) -> String {
        let mut out = String::new();
        let mut line: Vec<Option<char>> = Vec::new();
        let mut col = 0usize;
        let emit = |line: &Vec<Option<char>>, out: &mut String| {
            out.extend(line.iter().map(|c| c.unwrap_or(' ')));
        };
        for t in toks {
            match t {
                Tok::Text(x) => {
                    for c in x.chars() {
                        if col < line.len() {
                            line[col] = Some(c);
                        } else {
                            line.resize(col, None);
                            line.push(Some(c));
                        }
                        col += 1;
                    }
                }
                Tok::Cr => col = 0,
                Tok::Bs => col = col.saturating_sub(1),
                Tok::Lf => {
                    emit(&line, &mut out);
                    out.push('\n');
                    line.clear();
                    col = 0;
                }
                Tok::El(0) => line.truncate(col),
                Tok::El(1) => {
                    if col + 1 >= line.len() {
                        line.clear();
                    } else {
                        line[..=col].fill(Some(' '));
                    }
                }
                Tok::El(_) => line.clear(),
                Tok::Cha(n) => col = (*n).max(1) as usize - 1,
                Tok::Cuf(n) => col += (*n).max(1) as usize,
                Tok::Cub(n) => col = col.saturating_sub((*n).max(1) as usize),
                Tok::Sgr => {}
            }
        }
        emit(&line, &mut out);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn render_matches_cell_model(toks in proptest::collection::vec(tok(), 0..30)) {
            let input = encode(&toks);
            prop_assert_eq!(render_s(&input), model(&toks), "{:?}", input);
        }

        #[test]
        fn render_any_chunking_matches_one_shot(
            input in soup(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            max in prop_oneof![Just(2usize), Just(7), Just(MAX_LINE_BYTES)],
        ) {
            let mut input = input;
            // Sprinkle the controls render mode interprets.
            for (k, b) in input.clone().iter().enumerate() {
                if b % 7 == 0 { input[k] = [b'\r', 0x08, b'\n', b'K', b'G'][k % 5]; }
            }
            let chunks = chunked(&input, &cuts);
            let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            let expected = render_stream(&[&input], Mode::Bytes, max);
            prop_assert_eq!(&render_stream(&refs, Mode::Bytes, max), &expected);
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            prop_assert_eq!(&render_stream(&bytes, Mode::Bytes, max), &expected);
            prop_assert!(!expected.contains(&ESC));
            if max == MAX_LINE_BYTES {
                prop_assert_eq!(&render(&input, Mode::Bytes)[..], &expected[..]);
            }
            let text = String::from_utf8_lossy(&input).into_owned();
            let t_chunks = chunked(text.as_bytes(), &cuts);
            let t_refs: Vec<&[u8]> = t_chunks.iter().map(|c| c.as_slice()).collect();
            prop_assert_eq!(
                render_stream(&t_refs, Mode::Text, max),
                render_stream(&[text.as_bytes()], Mode::Text, max)
            );
        }

        #[test]
        fn render_text_feeds_emit_whole_characters(text in "[a-z\r\n\x08é›😀\u{1b}\\[K]{0,40}", max in 1usize..6) {
            // Chunks of whole characters (what Python str gives) produce valid UTF-8 per feed.
            let mut r = Renderer::with_max_line_bytes(Mode::Text, max);
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(3) {
                let piece: String = piece.iter().collect();
                let mut out = Vec::new();
                r.feed(piece.as_bytes(), &mut out);
                prop_assert!(std::str::from_utf8(&out).is_ok());
            }
            let mut out = Vec::new();
            r.finish(&mut out);
            prop_assert!(std::str::from_utf8(&out).is_ok());
        }
    }
}
