//! The detectors' gate: what one pass over a value's bytes says about the detectors that
//! could fire. Each detector needs something a value of a result rarely has (an `@`, nine
//! digits in one number, a literal such as `AKIA` or `eyJ`), and one not run on a value that
//! lacks it costs nothing. The pass reads sixteen bytes at a time into bit masks (one bit per
//! byte), so the names, ids, hashes and timestamps most results are made of are passed over
//! at a fraction of a nanosecond per byte.

use super::{Detector, Detectors, starts_with_a_date};

/// One bit per byte of a 16-byte chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Masks {
    digit: u16,
    /// Letters, digits and `_`: what a number must not touch.
    word: u16,
    at: u16,
    /// Digits and what joins a number's groups or opens it: ` .-()`.
    numeric: u16,
    /// Where a literal some detector needs could be anchored: `-`, `_`, capitals.
    anchor: u16,
}

/// Up to 16 bytes as two little-endian words, padded with zero bytes (which are none of
/// the classes). A short value is read in overlapping pieces rather than copied into a
/// zeroed buffer: most values are short, and the copy cost more than the classes.
fn load(piece: &[u8]) -> [u64; 2] {
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&piece[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let half = |at: usize| {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&piece[at..at + 4]);
        u64::from(u32::from_le_bytes(bytes))
    };
    let n = piece.len();
    match n {
        16.. => [word(0), word(8)],
        9..=15 => [word(0), word(n - 8) >> (8 * (16 - n))],
        8 => [word(0), 0],
        // The pieces overlap on bytes they both hold: OR-ing a byte with itself keeps it.
        4..=7 => [half(0) | (half(n - 4) << (8 * (n - 4))), 0],
        1..=3 => {
            let byte = |i: usize| u64::from(piece[i]) << (8 * i);
            [byte(0) | byte(n / 2) | byte(n - 1), 0]
        }
        0 => [0, 0],
    }
}

/// The masks of one chunk (`load`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn masks(chunk: [u64; 2]) -> Masks {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_movemask_epi8,
        _mm_or_si128, _mm_set_epi64x, _mm_set1_epi8,
    };
    // Loaded from integers: no pointer, no unsafe load.
    let v = _mm_set_epi64x(chunk[1] as i64, chunk[0] as i64);
    let bits = |m| _mm_movemask_epi8(m) as u16;
    let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
    // Signed compares: bytes of 0x80 and up are negative, below every ASCII range.
    let within = |x, lo: u8, hi: u8| {
        _mm_and_si128(
            _mm_cmpgt_epi8(x, _mm_set1_epi8(lo as i8 - 1)),
            _mm_cmplt_epi8(x, _mm_set1_epi8(hi as i8 + 1)),
        )
    };
    let digit = within(v, b'0', b'9');
    let upper = within(v, b'A', b'Z');
    let letter = within(_mm_or_si128(v, _mm_set1_epi8(0x20)), b'a', b'z');
    let underscore = eq(b'_');
    let dash = eq(b'-');
    let joins = _mm_or_si128(
        _mm_or_si128(eq(b' '), eq(b'.')),
        _mm_or_si128(dash, _mm_or_si128(eq(b'('), eq(b')'))),
    );
    Masks {
        digit: bits(digit),
        word: bits(_mm_or_si128(_mm_or_si128(digit, letter), underscore)),
        at: bits(eq(b'@')),
        numeric: bits(_mm_or_si128(digit, joins)),
        anchor: bits(_mm_or_si128(_mm_or_si128(dash, underscore), upper)),
    }
}

/// The masks of up to 16 bytes of a value.
#[cfg(target_arch = "x86_64")]
fn chunk_masks(piece: &[u8]) -> Masks {
    // SAFETY: SSE2 is part of x86_64's baseline: every x86_64 CPU has it.
    unsafe { masks(load(piece)) }
}

#[cfg(not(target_arch = "x86_64"))]
fn chunk_masks(piece: &[u8]) -> Masks {
    scalar_masks(load(piece))
}

/// The card, SSN and phone detectors, which the one number finder serves.
const NUMBERS: u8 =
    (1 << Detector::Card as u8) | (1 << Detector::Ssn as u8) | (1 << Detector::Phone as u8);

/// The masks byte by byte: the other targets' gate, and what the vector one must agree with.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn scalar_masks(chunk: [u64; 2]) -> Masks {
    let mut m = Masks::default();
    let bytes = [chunk[0].to_le_bytes(), chunk[1].to_le_bytes()];
    for (i, &b) in bytes.iter().flatten().enumerate() {
        let bit = 1u16 << i;
        let on = |yes: bool| if yes { bit } else { 0 };
        m.digit |= on(b.is_ascii_digit());
        m.word |= on(b.is_ascii_alphanumeric() || b == b'_');
        m.at |= on(b == b'@');
        m.numeric |= on(b.is_ascii_digit() || matches!(b, b' ' | b'.' | b'-' | b'(' | b')'));
        m.anchor |= on(b.is_ascii_uppercase() || matches!(b, b'-' | b'_'));
    }
    m
}

/// Whether a value of 16 bytes or fewer certainly holds nothing the `wanted` detectors
/// could find: no `@`, fewer than nine digits, no literal at any anchor. Most values of a
/// result are short and end here, spared the bookkeeping of `Facts`; `false` says only
/// that `Facts` must look.
pub(super) fn short_and_plain(text: &[u8], wanted: Detectors) -> bool {
    if text.len() > 16 {
        return false;
    }
    let m = chunk_masks(text);
    let numbers = wanted.0 & NUMBERS != 0;
    if (m.at != 0 && wanted.contains(Detector::Email)) || (m.digit.count_ones() >= 9 && numbers) {
        return false;
    }
    let mut anchors = m.anchor;
    while anchors != 0 {
        let at = anchors.trailing_zeros() as usize;
        anchors &= anchors - 1;
        if literal_at(text, at).0 & wanted.0 != 0 {
            return false;
        }
    }
    true
}

/// What the gate learnt about one value.
pub(super) struct Facts {
    digits: u32,
    /// Whether some digit follows no letter, digit or `_`: card, SSN and phone numbers must
    /// start at one, and hex ids, hashes and tokens have none most of the time.
    number_start: bool,
    /// Where numbers may start (`numbers::is_start`), one bit per byte, in values of 64
    /// bytes or fewer (`None` in longer ones).
    pub starts: Option<u64>,
    /// Digits and ` .-()` (`numeric`) and digits alone, one bit per byte, for values of 64
    /// bytes or fewer.
    numeric: u64,
    digit: u64,
    /// Detectors whose literal (or, for IBANs, whose start) is in the value.
    literals: Detectors,
    at: bool,
    /// Where the `@`s are, in values of 64 bytes or fewer.
    pub ats: Option<u64>,
}

impl Facts {
    pub(super) fn of(text: &[u8]) -> Facts {
        let mut facts = Facts {
            digits: 0,
            number_start: false,
            starts: None,
            numeric: 0,
            digit: 0,
            literals: Detectors::default(),
            at: false,
            ats: None,
        };
        let (mut starts, mut ats) = (0u64, 0u64);
        // Whether the byte before the chunk is a word byte.
        let mut word_before = 0u16;
        for (k, piece) in text.chunks(16).enumerate() {
            let m = chunk_masks(piece);
            facts.digits += m.digit.count_ones();
            let start = m.digit & !((m.word << 1) | word_before);
            word_before = m.word >> 15;
            facts.number_start |= start != 0;
            facts.at |= m.at != 0;
            if k < 4 {
                let shift = 16 * k;
                starts |= u64::from(start) << shift;
                ats |= u64::from(m.at) << shift;
                facts.numeric |= u64::from(m.numeric) << shift;
                facts.digit |= u64::from(m.digit) << shift;
            }
            let mut anchors = m.anchor;
            while anchors != 0 {
                let at = 16 * k + anchors.trailing_zeros() as usize;
                anchors &= anchors - 1;
                facts.literals.0 |= literal_at(text, at).0;
            }
        }
        if text.len() <= 64 {
            facts.starts = Some(starts);
            facts.ats = Some(ats);
        }
        facts
    }

    /// Which of the `wanted` detectors could find something in `text` (never leaving out
    /// one that could). Bit arithmetic rather than a match per detector: this runs for every
    /// value, and most values end here with nothing to run.
    #[inline]
    pub(super) fn possible(&self, wanted: Detectors, text: &[u8]) -> Detectors {
        let bit = |detector: Detector, on: bool| u8::from(on) << detector.index();
        // The longest number is only measured where the counts leave one possible: most
        // values stop at the counts, and timestamps (twenty digits) at the measure.
        let longest = if self.number_start && self.digits >= 9 && wanted.0 & NUMBERS != 0 {
            self.longest_number(text)
        } else {
            0
        };
        let bits = bit(Detector::Email, self.at)
            | bit(Detector::Card, longest >= 13)
            | bit(Detector::Ssn, longest >= 9)
            | bit(Detector::Phone, longest >= 9)
            | self.literals.0;
        Detectors(bits & wanted.0)
    }

    /// At least the digits of any number `numbers::find` could read in `text`: digits counted
    /// in runs that only the bytes a number holds (digits, ` .-()`) continue, after a leading
    /// date, which the finder skips.
    fn longest_number(&self, text: &[u8]) -> u32 {
        let dated = starts_with_a_date(text);
        if text.len() > 64 {
            return longest_number(if dated { &text[10..] } else { text });
        }
        let mut numeric = self.numeric;
        if dated {
            numeric &= !0x3ff;
        }
        let mut longest = 0;
        while numeric != 0 {
            let from = numeric.trailing_zeros();
            let len = (!(numeric >> from)).trailing_zeros();
            let run = if len == 64 {
                u64::MAX
            } else {
                ((1u64 << len) - 1) << from
            };
            longest = longest.max((self.digit & run).count_ones());
            numeric &= !run;
        }
        longest
    }
}

/// The runs of `Facts::longest_number` counted byte by byte, for values longer than its masks.
fn longest_number(text: &[u8]) -> u32 {
    let (mut run, mut longest) = (0, 0);
    for &b in text {
        let digit = u32::from(b.is_ascii_digit());
        let inside = u32::from(matches!(b, b' ' | b'.' | b'-' | b'(' | b')'));
        run = (run + digit) * (digit | inside);
        longest = longest.max(run);
    }
    longest
}

/// The detectors whose literal is anchored at `at` (a `-`, `_` or capital): `sk-`, `xox?-`,
/// `glpat-`, `gh?_`, `AKIA` (API keys), `-----BEGIN` (private keys), `eyJ` (JWTs), and two
/// capitals then two digits (an IBAN's start). Word boundaries are not checked: the gate
/// may let a detector run that finds nothing, never the other way round.
fn literal_at(text: &[u8], at: usize) -> Detectors {
    let before = |n: usize, literal: &[u8]| at >= n && text[at - n..].starts_with(literal);
    let from_here = |literal: &[u8]| text[at..].starts_with(literal);
    let digit = |i: usize| text.get(i).is_some_and(u8::is_ascii_digit);
    let mut found = Detectors::default();
    match text[at] {
        b'-' => {
            if before(2, b"sk") || before(4, b"xox") || before(5, b"glpat") {
                found.insert(Detector::ApiKey);
            }
        }
        b'_' => {
            if before(3, b"gh") {
                found.insert(Detector::ApiKey);
            }
        }
        capital => {
            match capital {
                b'A' if from_here(b"AKIA") => found.insert(Detector::ApiKey),
                b'B' if before(5, b"-----BEGIN") => found.insert(Detector::PrivateKey),
                b'J' if before(2, b"eyJ") => found.insert(Detector::Jwt),
                _ => {}
            }
            if text.get(at + 1).is_some_and(u8::is_ascii_uppercase)
                && digit(at + 2)
                && digit(at + 3)
            {
                found.insert(Detector::Iban);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_found_where_they_are_anchored() {
        let fired = |text: &str| {
            let facts = Facts::of(text.as_bytes());
            facts.literals.names().collect::<Vec<_>>()
        };
        assert_eq!(fired("key sk-abc"), ["api_key"]);
        assert_eq!(fired("AKIAXX"), ["api_key"]);
        assert_eq!(fired("ghp_x xoxb-1 glpat-2"), ["api_key"]);
        assert_eq!(fired("-----BEGIN RSA"), ["private_key"]);
        assert_eq!(fired("eyJhbGciOi"), ["jwt"]);
        assert_eq!(fired("GB82 WEST"), ["iban"]);
        assert_eq!(fired("Customer 12 in Street-9_x"), Vec::<&str>::new());
    }

    #[test]
    fn short_plain_values_end_at_once() {
        let all = Detectors::all();
        for plain in ["", "Customer 12", "City 7", "plain note 4711", "12345678"] {
            assert!(short_and_plain(plain.as_bytes(), all), "{plain}");
        }
        for rich in [
            "a@b.io",
            "123456789",
            "AKIAXX",
            "x eyJhbGc",
            "GB82",
            "more than sixteen bytes",
        ] {
            assert!(!short_and_plain(rich.as_bytes(), all), "{rich}");
        }
        // Only what the profile wants counts.
        let mut email = Detectors::default();
        email.insert(Detector::Email);
        assert!(short_and_plain(b"123456789 AKIA", email));
    }

    #[test]
    fn numbers_are_measured_across_chunks() {
        // A number that straddles the first chunk's end, and one past 64 bytes.
        let text = format!("{}+1 (415) 555-0123", "x".repeat(10));
        let facts = Facts::of(text.as_bytes());
        assert_eq!(facts.longest_number(text.as_bytes()), 11);
        let long = format!("{} 4111 1111 1111 1111", "y".repeat(70));
        let facts = Facts::of(long.as_bytes());
        assert_eq!(facts.starts, None);
        assert_eq!(facts.longest_number(long.as_bytes()), 16);
        assert!(
            Facts::of(b"2026-12-03 15:06:06.407537+00")
                .longest_number(b"2026-12-03 15:06:06.407537+00")
                < 9
        );
    }

    proptest::proptest! {
        /// The vector masks are the byte-by-byte ones.
        #[test]
        fn vector_masks_are_the_scalar_ones(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..=16)) {
            let chunk = load(&bytes);
            let mut padded = [0u8; 16];
            padded[..bytes.len()].copy_from_slice(&bytes);
            let expected = [0, 8].map(|at| {
                let mut word = [0u8; 8];
                word.copy_from_slice(&padded[at..at + 8]);
                u64::from_le_bytes(word)
            });
            proptest::prop_assert_eq!(chunk, expected, "load");
            proptest::prop_assert_eq!(chunk_masks(&bytes), scalar_masks(chunk));
        }

        /// The masks' measure of the longest number is the byte-by-byte one.
        #[test]
        fn longest_number_as_counted_byte_by_byte(text in "([0-9]{1,6}|[ .()-]|[a-z_]|2026-12-0[1-9]){0,20}") {
            let bytes = text.as_bytes();
            let facts = Facts::of(bytes);
            let body = if starts_with_a_date(bytes) { &bytes[10..] } else { bytes };
            proptest::prop_assert_eq!(facts.longest_number(bytes), longest_number(body));
        }
    }
}
