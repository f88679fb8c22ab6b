//! The ground state's fast path for colored output: 64 units at a time, no stepping.
//!
//! Colored output has a control sequence every few characters (`ESC[0m ` repeated is a whole
//! ANSI-art picture), too close for a scan to the next ESC to pay off: each sequence then costs a
//! scan, a branch on its length and the steps through its bytes. Here a window of 64 units is
//! classified at once into bit masks (bit `k` for unit `k`), the control sequences of the commonest
//! form, a whole `ESC [ params final` (what [`super::whole_csi`] accepts), are found with one
//! addition over those masks, and the units kept are written with one compress (AVX-512 VBMI2) or
//! one 16-byte copy per run of text (SSE2).
//!
//! How a window is decided ([`resolve`]): with `csi` the ESCs followed by `[` and `param` the units
//! `0x20..=0x3F`, `param + (csi << 2)` carries through each CSI's parameter run, starting at the
//! unit after its `[` (which is never a parameter, so each run is entered by one carry only), and
//! leaves one bit set just past each run: the unit that must be the CSI's final byte
//! `0x40..=0x7E`. Everything else in the window is text, up to the first unit the state machine
//! must step through: another ESC, a C1 control, a CSI whose final byte is missing (a C0 control
//! or a character inside it) or lies past the window. The window path keeps the text before that
//! unit and hands the rest back: the result is the same as stepping, and the stripper is in the
//! ground state where the path stops.

/// Units per window: one bit each in a `u64`.
pub(super) const WINDOW: usize = 64;

/// Bit masks over a window of 64 units, bit `k` for unit `k`. Units are classified by their
/// value clamped to a byte (any value above `0xFF` is text, like `0xFF`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Masks {
    esc: u64,
    lbracket: u64,
    /// CSI parameter and intermediate units `0x20..=0x3F`.
    param: u64,
    /// CSI final units `0x40..=0x7E`.
    fin: u64,
    /// `0x80..=0x9F`: C1 controls as code units, UTF-8 continuation bytes that may follow a
    /// `C2` lead to encode one.
    c1: u64,
    /// `C2`, the UTF-8 lead byte of U+0080..U+00BF.
    c2: u64,
}

impl Masks {
    /// The masks of `units`, one at a time: the reference for the SIMD kernels, and the path
    /// on targets without them.
    #[cfg(any(test, not(target_arch = "x86_64")))]
    pub(super) fn of_units<T: Copy + Into<u32>>(units: &[T]) -> Masks {
        use super::ESC;
        let mut m = Masks::default();
        for (k, &u) in units.iter().take(WINDOW).enumerate() {
            let b = u.into().min(0xFF) as u8;
            let bit = 1u64 << k;
            let set = |mask: &mut u64, on: bool| *mask |= if on { bit } else { 0 };
            set(&mut m.esc, b == ESC);
            set(&mut m.lbracket, b == b'[');
            set(&mut m.param, (0x20..=0x3F).contains(&b));
            set(&mut m.fin, (0x40..=0x7E).contains(&b));
            set(&mut m.c1, (0x80..=0x9F).contains(&b));
            set(&mut m.c2, b == 0xC2);
        }
        m
    }
}

/// Decide a window that starts in the ground state: returns `(keep, len)`, where the first
/// `len` units (64 if all) leave the stripper in the ground state having written exactly the
/// units of `keep` (a subset of the bits below `len`), and unit `len` is one the state machine
/// must step through. `utf8`: the units are UTF-8 bytes (valid, as far as the window goes), so a
/// C1 control is `C2` followed by `0x80..=0x9F`; otherwise they are code points.
#[inline(always)]
pub(super) fn resolve(m: &Masks, utf8: bool) -> (u64, u32) {
    let csi = m.esc & (m.lbracket >> 1);
    // A `C2` as the last unit may start a C1 control that the window cannot see the end of.
    let c1 = if utf8 {
        m.c2 & ((m.c1 >> 1) | 1 << 63)
    } else {
        m.c1
    };
    // An ESC in the last unit has no `[` after it in the window, so it is counted here too.
    let mut len = ((m.esc & !csi) | c1).trailing_zeros();
    let (sum, carry) = m.param.overflowing_add(csi << 2);
    // One bit per CSI, just past its parameters: where its final byte must be.
    let ends = sum & !m.param;
    let bad = ends & !m.fin;
    if bad != 0 {
        let below = csi & ((1u64 << bad.trailing_zeros()) - 1);
        len = len.min(63 - below.leading_zeros());
    }
    // The last CSI runs past the window: its parameters carried out of the top bit, or its
    // `[` is the last unit (so `csi << 2` lost it).
    if carry || csi >> 62 != 0 {
        len = len.min(63 - csi.leading_zeros());
    }
    let dropped = csi | csi << 1 | (sum ^ m.param);
    let below_len = if len == 64 { !0 } else { (1u64 << len) - 1 };
    (!dropped & below_len, len)
}

/// A code-unit type the window path works on: `u8` (UTF-8 bytes, or a Latin-1 `str`), `u16`,
/// `u32`.
pub trait Lanes: Copy + Into<u32> {
    /// Masks of the 64 units at `p`.
    ///
    /// # Safety
    /// `p` is valid for reads of 64 units.
    #[cfg(target_arch = "x86_64")]
    unsafe fn masks_sse2(p: *const Self) -> Masks;

    /// # Safety
    /// As [`masks_sse2`](Self::masks_sse2), and the CPU has AVX-512 F, BW and VBMI2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn masks_avx512(p: *const Self) -> Masks;

    /// Write the units of `src[..64]` whose bit is set in `keep` to `dst`, in order; returns
    /// how many. Writes 64 units at `dst` whatever `keep` is.
    ///
    /// # Safety
    /// `src` is valid for reads of 64 units, `dst` for writes of 64, they do not overlap, and
    /// the CPU has AVX-512 F, BW and VBMI2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn compact_avx512(src: *const Self, dst: *mut Self, keep: u64) -> usize;
}

/// Units one 16-byte vector holds.
const fn lanes<T>() -> usize {
    16 / std::mem::size_of::<T>()
}

/// Write the runs of `keep` from `src` to `dst` with 16-byte copies, each covering its run and
/// up to a vector's worth after it, which the next run or the caller overwrites; returns how
/// many units were kept.
///
/// # Safety
/// `src` is valid for reads of `64 + lanes::<T>()` units, `dst` for writes of as many, and they
/// do not overlap.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn compact_runs<T: Copy>(src: *const T, dst: *mut T, mut keep: u64) -> usize {
    use std::arch::x86_64::*;
    let mut written = 0;
    while keep != 0 {
        let start = keep.trailing_zeros() as usize;
        let run = (!(keep >> start)).trailing_zeros() as usize;
        let mut k = 0;
        loop {
            let v = _mm_loadu_si128(src.add(start + k).cast());
            _mm_storeu_si128(dst.add(written + k).cast(), v);
            k += lanes::<T>();
            if k >= run {
                break;
            }
        }
        written += run;
        // Adding the lowest set bit clears the lowest run.
        keep &= keep.wrapping_add(1 << start);
    }
    written
}

/// [`compact_runs`] with exact copies, for targets without the SIMD kernels.
#[cfg(any(test, not(target_arch = "x86_64")))]
unsafe fn compact_exact<T: Copy>(src: *const T, dst: *mut T, mut keep: u64) -> usize {
    let mut written = 0;
    while keep != 0 {
        let start = keep.trailing_zeros() as usize;
        let run = (!(keep >> start)).trailing_zeros() as usize;
        std::ptr::copy_nonoverlapping(src.add(start), dst.add(written), run);
        written += run;
        keep &= keep.wrapping_add(1 << start);
    }
    written
}

/// Strip windows of `input[i..end]` from the ground state for as long as they decide at least
/// one unit, writing what is kept at `dst`; returns `(index reached, units written)`. It stops
/// at a unit the state machine must step through, or where fewer than a window (and a vector)
/// of units is left.
///
/// # Safety
/// `dst` is valid for writes of `end - i` units and does not overlap `input`.
#[inline]
pub(super) unsafe fn strip_windows<T: Lanes, const UTF8: bool>(
    input: &[T],
    i: usize,
    end: usize,
    dst: *mut T,
) -> (usize, usize) {
    debug_assert!(end <= input.len());
    #[cfg(target_arch = "x86_64")]
    {
        if end - i < WINDOW + lanes::<T>() {
            return (i, 0);
        }
        if std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi2")
        {
            windows_avx512::<T, UTF8>(input, i, end, dst)
        } else {
            windows_sse2::<T, UTF8>(input, i, end, dst)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        windows_portable::<T, UTF8>(input, i, end, dst)
    }
}

/// The window loop on one unit at a time (and the reference for the SIMD loops).
#[cfg(any(test, not(target_arch = "x86_64")))]
unsafe fn windows_portable<T: Lanes, const UTF8: bool>(
    input: &[T],
    mut i: usize,
    end: usize,
    dst: *mut T,
) -> (usize, usize) {
    let mut written = 0;
    while i + WINDOW <= end {
        let p = input.as_ptr().add(i);
        let (keep, len) = resolve(&Masks::of_units(&input[i..i + WINDOW]), UTF8);
        written += compact_exact(p, dst.add(written), keep);
        if len == 0 {
            break;
        }
        i += len as usize;
    }
    (i, written)
}

/// The window loop of [`strip_windows`] with SSE2 (part of x86-64).
///
/// A window that stops early (at a CSI running past it, say) is followed by one starting at
/// the unit it stopped on, so the loop ends only on a unit no window can decide.
#[cfg(target_arch = "x86_64")]
unsafe fn windows_sse2<T: Lanes, const UTF8: bool>(
    input: &[T],
    mut i: usize,
    end: usize,
    dst: *mut T,
) -> (usize, usize) {
    let mut written = 0;
    // Room: `compact_runs` reads and writes up to a vector past the window; `written` never
    // passes the input index, so the writes stay within `end - i` of `dst`.
    while i + WINDOW + lanes::<T>() <= end {
        let p = input.as_ptr().add(i);
        let (keep, len) = resolve(&T::masks_sse2(p), UTF8);
        written += compact_runs(p, dst.add(written), keep);
        if len == 0 {
            break;
        }
        i += len as usize;
    }
    (i, written)
}

/// The window loop with AVX-512 (mask compares and compress).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
unsafe fn windows_avx512<T: Lanes, const UTF8: bool>(
    input: &[T],
    mut i: usize,
    end: usize,
    dst: *mut T,
) -> (usize, usize) {
    let mut written = 0;
    while i + WINDOW <= end {
        let p = input.as_ptr().add(i);
        let (keep, len) = resolve(&T::masks_avx512(p), UTF8);
        written += T::compact_avx512(p, dst.add(written), keep);
        if len == 0 {
            break;
        }
        i += len as usize;
    }
    (i, written)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, Masks};
    use std::arch::x86_64::*;

    /// Masks of 16 bytes, shifted to `at`.
    #[inline(always)]
    unsafe fn or_sse2(m: &mut Masks, v: __m128i, at: u32) {
        let bits = |x: __m128i| u64::from(_mm_movemask_epi8(x) as u16) << at;
        let set1 = |b: u8| _mm_set1_epi8(b as i8);
        m.esc |= bits(_mm_cmpeq_epi8(v, set1(0x1B)));
        m.lbracket |= bits(_mm_cmpeq_epi8(v, set1(b'[')));
        m.param |= bits(_mm_cmpeq_epi8(_mm_and_si128(v, set1(0xE0)), set1(0x20)));
        // As i8, 0x40..=0x7E are 64..=126 and every byte from 0x80 is negative.
        m.fin |= bits(_mm_and_si128(
            _mm_cmpgt_epi8(v, set1(0x3F)),
            _mm_cmplt_epi8(v, set1(0x7F)),
        ));
        // As i8, 0x80..=0x9F are the only bytes below 0xA0 (-96).
        m.c1 |= bits(_mm_cmplt_epi8(v, set1(0xA0)));
        m.c2 |= bits(_mm_cmpeq_epi8(v, set1(0xC2)));
    }

    /// Masks of the 64 bytes in `v`.
    #[inline(always)]
    unsafe fn bytes_sse2(v: [__m128i; 4]) -> Masks {
        let mut m = Masks::default();
        for (k, &v) in v.iter().enumerate() {
            or_sse2(&mut m, v, 16 * k as u32);
        }
        m
    }

    /// Masks of the 64 bytes in `v`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn bytes_avx512(v: __m512i) -> Masks {
        let set1 = |b: u8| _mm512_set1_epi8(b as i8);
        // `x - lo < n` unsigned: x in lo..lo + n.
        let range = |lo: u8, n: u8| _mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, set1(lo)), set1(n));
        Masks {
            esc: _mm512_cmpeq_epi8_mask(v, set1(0x1B)),
            lbracket: _mm512_cmpeq_epi8_mask(v, set1(b'[')),
            param: range(0x20, 0x20),
            fin: range(0x40, 0x3F),
            c1: range(0x80, 0x20),
            c2: _mm512_cmpeq_epi8_mask(v, set1(0xC2)),
        }
    }

    impl Lanes for u8 {
        #[inline(always)]
        unsafe fn masks_sse2(p: *const u8) -> Masks {
            let load = |k: usize| _mm_loadu_si128(p.add(16 * k).cast());
            bytes_sse2([load(0), load(1), load(2), load(3)])
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
        unsafe fn masks_avx512(p: *const u8) -> Masks {
            bytes_avx512(_mm512_loadu_si512(p.cast()))
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
        unsafe fn compact_avx512(src: *const u8, dst: *mut u8, keep: u64) -> usize {
            // The register form: compress straight to memory is microcoded on some CPUs.
            let v = _mm512_maskz_compress_epi8(keep, _mm512_loadu_si512(src.cast()));
            _mm512_storeu_si512(dst.cast(), v);
            keep.count_ones() as usize
        }
    }

    impl Lanes for u16 {
        #[inline(always)]
        unsafe fn masks_sse2(p: *const u16) -> Masks {
            // Signed saturation sends 0x100..=0x7FFF to 0xFF and 0x8000.. to 0: text either way.
            let load = |k: usize| _mm_loadu_si128(p.add(8 * k).cast());
            let pack = |k: usize| _mm_packus_epi16(load(2 * k), load(2 * k + 1));
            bytes_sse2([pack(0), pack(1), pack(2), pack(3)])
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
        unsafe fn masks_avx512(p: *const u16) -> Masks {
            // Unsigned saturation: every unit above 0xFF becomes 0xFF.
            let lo = _mm512_cvtusepi16_epi8(_mm512_loadu_si512(p.cast()));
            let hi = _mm512_cvtusepi16_epi8(_mm512_loadu_si512(p.add(32).cast()));
            bytes_avx512(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi))
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
        unsafe fn compact_avx512(src: *const u16, dst: *mut u16, keep: u64) -> usize {
            let mut written = 0;
            for half in 0..2 {
                let k = (keep >> (32 * half)) as u32;
                let v = _mm512_loadu_si512(src.add(32 * half).cast());
                _mm512_storeu_si512(dst.add(written).cast(), _mm512_maskz_compress_epi16(k, v));
                written += k.count_ones() as usize;
            }
            written
        }
    }

    impl Lanes for u32 {
        #[inline(always)]
        unsafe fn masks_sse2(p: *const u32) -> Masks {
            // Code points are at most 0x10FFFF: signed saturation to i16 keeps them
            // non-negative, then unsigned saturation sends 0x100.. to 0xFF.
            let load = |k: usize| _mm_loadu_si128(p.add(4 * k).cast());
            let pack = |k: usize| {
                let a = _mm_packs_epi32(load(4 * k), load(4 * k + 1));
                let b = _mm_packs_epi32(load(4 * k + 2), load(4 * k + 3));
                _mm_packus_epi16(a, b)
            };
            bytes_sse2([pack(0), pack(1), pack(2), pack(3)])
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
        unsafe fn masks_avx512(p: *const u32) -> Masks {
            let q = |k: usize| _mm512_cvtusepi32_epi8(_mm512_loadu_si512(p.add(16 * k).cast()));
            let mut v = _mm512_castsi128_si512(q(0));
            v = _mm512_inserti32x4::<1>(v, q(1));
            v = _mm512_inserti32x4::<2>(v, q(2));
            v = _mm512_inserti32x4::<3>(v, q(3));
            bytes_avx512(v)
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
        unsafe fn compact_avx512(src: *const u32, dst: *mut u32, keep: u64) -> usize {
            let mut written = 0;
            for quarter in 0..4 {
                let k = (keep >> (16 * quarter)) as u16;
                let v = _mm512_loadu_si512(src.add(16 * quarter).cast());
                _mm512_storeu_si512(dst.add(written).cast(), _mm512_maskz_compress_epi32(k, v));
                written += k.count_ones() as usize;
            }
            written
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference for one window: step the masks' meaning one unit at a time.
    fn resolve_naive(units: &[u32], utf8: bool) -> (u64, u32) {
        let units = &units[..WINDOW];
        let mut keep = 0u64;
        let mut k = 0;
        while k < WINDOW {
            let u = units[k];
            let c1 = if utf8 {
                u == 0xC2 && units.get(k + 1).is_none_or(|&n| (0x80..=0x9F).contains(&n))
            } else {
                (0x80..=0x9F).contains(&u)
            };
            if c1 || (u == 0x1B && units.get(k + 1) != Some(&(b'[' as u32))) {
                return (keep, k as u32);
            }
            if u == 0x1B {
                // ESC [ params final, wholly in the window.
                let mut j = k + 2;
                while j < WINDOW && (0x20..=0x3F).contains(&units[j]) {
                    j += 1;
                }
                if j >= WINDOW || !(0x40..=0x7E).contains(&units[j]) {
                    return (keep, k as u32);
                }
                k = j + 1;
            } else {
                keep |= 1 << k;
                k += 1;
            }
        }
        (keep, 64)
    }

    /// 80 units: windows of well-formed CSIs and text (where every edge case is at the
    /// window's end), or of pieces that stop the window anywhere.
    fn window_units() -> impl Strategy<Value = Vec<u32>> {
        let text = prop_oneof![0u32..0x1B, 0x1Cu32..0x80, 0xA0u32..0x110000];
        let clean = prop_oneof![
            (
                proptest::collection::vec(0x20u32..=0x3F, 0..4),
                0x40u32..=0x7E
            )
                .prop_map(|(params, fin)| [
                    vec![0x1B, u32::from(b'[')],
                    params,
                    vec![fin]
                ]
                .concat()),
            proptest::collection::vec(text.clone(), 0..4),
        ];
        let mixed = prop_oneof![
            4 => Just(vec![0x1B, u32::from(b'[')]),
            2 => proptest::collection::vec(0x20u32..=0x3F, 0..4),
            2 => (0x40u32..=0x7E).prop_map(|c| vec![c]),
            1 => Just(vec![0x1B]),
            1 => Just(vec![0xC2, 0x9B]),
            1 => Just(vec![0xC2, 0xA9]),
            1 => (0x80u32..=0x9F).prop_map(|c| vec![c]),
            1 => text.prop_map(|c| vec![c]),
        ];
        prop_oneof![
            proptest::collection::vec(clean, 20..60),
            proptest::collection::vec(mixed, 20..60),
        ]
        .prop_map(|ps| {
            let mut v: Vec<u32> = ps.concat();
            v.resize(WINDOW + 16, u32::from(b'x'));
            v
        })
    }

    /// Many windows' worth of the same pieces.
    fn long_units() -> impl Strategy<Value = Vec<u32>> {
        proptest::collection::vec((window_units(), 20usize..80), 2..8).prop_map(|ws| {
            ws.into_iter()
                .flat_map(|(w, n)| w.into_iter().take(n))
                .collect()
        })
    }

    type Loop<T> = unsafe fn(&[T], usize, usize, *mut T) -> (usize, usize);

    /// Run a window loop over `input` as its callers do: where it stops on a unit, the unit is
    /// kept (by this test, not by the stripper) and the loop restarted after it, until less
    /// than a window and a vector are left. `end` is what the loop is given as the input's
    /// end: the SSE2 loop keeps a vector of room itself. Returns the output and the stops.
    fn drive<T: Lanes + Default>(input: &[T], end: usize, f: Loop<T>) -> (Vec<T>, Vec<usize>) {
        let mut out = vec![T::default(); input.len()];
        let (mut i, mut w, mut stops) = (0, 0, Vec::new());
        loop {
            // SAFETY: `out` has room for `input.len() - i` units past `w <= i`.
            let (next, written) = unsafe { f(input, i, end, out.as_mut_ptr().add(w)) };
            w += written;
            stops.push(next);
            if next + WINDOW + 16 > input.len() {
                break;
            }
            out[w] = input[next];
            w += 1;
            i = next + 1;
        }
        out.truncate(w);
        (out, stops)
    }

    #[test]
    fn window_examples() {
        let bytes = |s: &[u8]| {
            let mut v: Vec<u32> = s.iter().map(|&b| u32::from(b)).collect();
            v.resize(WINDOW, u32::from(b' '));
            v
        };
        let run = |s: &[u8]| resolve(&Masks::of_units(&bytes(s)), true);
        assert_eq!(run(b"\x1b[0m \x1b[38;5;227mx"), ((1 << 4) | !0 << 16, 64));
        // A C0 control inside the CSI: the state machine steps from its ESC.
        assert_eq!(run(b"ab\x1b[1\n;31mc"), (0b11, 2));
        // Other escape sequences and C1 controls are stepped through.
        assert_eq!(run(b"ab\x1b(Bc"), (0b11, 2));
        assert_eq!(run(b"abc\xc2\x9b1m"), (0b111, 3));
        assert_eq!(run(b"abc\xc2\xa9x").1, 64);
        // A CSI cut by the window's end.
        let mut cut = vec![b'a'; 60];
        cut.extend_from_slice(b"\x1b[1;");
        assert_eq!(run(&cut), ((1 << 60) - 1, 60));
        let mut cut = vec![b'a'; 62];
        cut.extend_from_slice(b"\x1b[");
        assert_eq!(run(&cut), ((1 << 62) - 1, 62));
        let mut cut = vec![b'a'; 63];
        cut.push(0x1B);
        assert_eq!(run(&cut), ((1 << 63) - 1, 63));
        let mut end = vec![b'a'; 61];
        end.extend_from_slice(b"\x1b[m");
        assert_eq!(run(&end), ((1 << 61) - 1, 64));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn resolve_matches_stepping(units in window_units(), utf8 in any::<bool>()) {
            // Every alignment of the pieces against the window's edges.
            for at in 0..16 {
                let m = Masks::of_units(&units[at..]);
                prop_assert_eq!(resolve(&m, utf8), resolve_naive(&units[at..], utf8), "at {}", at);
            }
        }

        #[test]
        #[cfg(target_arch = "x86_64")]
        fn simd_masks_match_scalar(units in window_units()) {
            let expected = Masks::of_units(&units);
            let u32s = units.clone();
            let u16s: Vec<u16> = units.iter().map(|&c| c.min(0xFFFF) as u16).collect();
            let u8s: Vec<u8> = units.iter().map(|&c| c.min(0xFF) as u8).collect();
            let avx512 = std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vbmi2");
            // SAFETY: each vector holds at least 64 units; AVX-512 only when present.
            unsafe {
                prop_assert_eq!(u8::masks_sse2(u8s.as_ptr()), expected);
                prop_assert_eq!(u16::masks_sse2(u16s.as_ptr()), Masks::of_units(&u16s));
                prop_assert_eq!(u32::masks_sse2(u32s.as_ptr()), expected);
                if avx512 {
                    prop_assert_eq!(u8::masks_avx512(u8s.as_ptr()), expected);
                    prop_assert_eq!(u16::masks_avx512(u16s.as_ptr()), Masks::of_units(&u16s));
                    prop_assert_eq!(u32::masks_avx512(u32s.as_ptr()), expected);
                }
            }
        }

        #[test]
        #[cfg(target_arch = "x86_64")]
        fn simd_loops_match_portable(units in long_units()) {
            let avx512 = std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vbmi2");
            let u8s: Vec<u8> = units.iter().map(|&c| c.min(0xFF) as u8).collect();
            let u16s: Vec<u16> = units.iter().map(|&c| c.min(0xFFFF) as u16).collect();
            macro_rules! check {
                ($v:expr, $t:ty, $utf8:expr) => {
                    let (n, lanes) = ($v.len(), lanes::<$t>());
                    let expected = drive::<$t>(&$v, n - lanes, windows_portable::<$t, $utf8>);
                    let got = drive::<$t>(&$v, n, windows_sse2::<$t, $utf8>);
                    prop_assert_eq!(&got, &expected);
                    if avx512 {
                        let got = drive::<$t>(&$v, n - lanes, windows_avx512::<$t, $utf8>);
                        prop_assert_eq!(&got, &expected);
                    }
                };
            }
            check!(u8s, u8, true);
            check!(u8s, u8, false);
            check!(u16s, u16, false);
            check!(units, u32, false);
        }

        #[test]
        #[cfg(target_arch = "x86_64")]
        fn compaction_keeps_the_masked_units(units in window_units(), keep in any::<u64>()) {
            let expected: Vec<u32> =
                (0..WINDOW).filter(|k| keep >> k & 1 == 1).map(|k| units[k]).collect();
            let avx512 = std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vbmi2");
            let mut out = vec![0u32; WINDOW + 16];
            // SAFETY: 64 + 4 units readable and writable; AVX-512 only when present.
            unsafe {
                let n = compact_runs(units.as_ptr(), out.as_mut_ptr(), keep);
                prop_assert_eq!(&out[..n], &expected[..]);
                if avx512 {
                    let n = u32::compact_avx512(units.as_ptr(), out.as_mut_ptr(), keep);
                    prop_assert_eq!(&out[..n], &expected[..]);
                }
            }
        }
    }
}
