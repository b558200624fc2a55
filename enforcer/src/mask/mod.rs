//! Masking: sensitive values never reach the workload. Columns are masked by name pattern;
//! every text value (not numbers, times or addresses: see the PostgreSQL session) is also
//! scanned by content detectors (emails, card numbers with a Luhn
//! check, IBANs with their checksum, US SSNs, phone numbers, API keys, private keys, JWTs).
//! Strategies: `redact` (a fixed marker), `partial` (keep the last 4 characters), `hash` (a
//! keyed hash, stable for the life of the process, so equal values still compare equal).

mod email;
mod numbers;

use std::{borrow::Cow, ops::Range, sync::OnceLock};

use regex::Regex;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Redact,
    Partial,
    Hash,
}

impl Strategy {
    pub fn parse(name: &str) -> Option<Strategy> {
        Some(match name {
            "redact" => Strategy::Redact,
            "partial" => Strategy::Partial,
            "hash" => Strategy::Hash,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    // In the order of `ALL`, so a detector's discriminant is its index there.
    PrivateKey,
    Jwt,
    ApiKey,
    Email,
    Iban,
    Card,
    Ssn,
    Phone,
}

impl Detector {
    pub const ALL: [Detector; 8] = [
        Detector::PrivateKey,
        Detector::Jwt,
        Detector::ApiKey,
        Detector::Email,
        Detector::Iban,
        Detector::Card,
        Detector::Ssn,
        Detector::Phone,
    ];

    pub fn parse(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Card => "card",
            Detector::Iban => "iban",
            Detector::Ssn => "ssn",
            Detector::Phone => "phone",
            Detector::ApiKey => "api_key",
            Detector::PrivateKey => "private_key",
            Detector::Jwt => "jwt",
        }
    }

    /// The regex of a detector found by one; the others are found by hand (`email`,
    /// `numbers`). ASCII word boundaries: Unicode ones would keep the regex engine off its
    /// fast automaton, and the values looked for are ASCII.
    fn pattern(self) -> Option<&'static str> {
        Some(match self {
            Detector::Iban => {
                r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?-u:\b)"
            }
            Detector::ApiKey => {
                r"(?-u:\b)(?:sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|glpat-[A-Za-z0-9_-]{20})(?-u:\b)"
            }
            Detector::PrivateKey => {
                r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
            }
            Detector::Jwt => r"(?-u:\b)eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
            Detector::Email | Detector::Card | Detector::Ssn | Detector::Phone => return None,
        })
    }

    fn index(self) -> usize {
        self as usize
    }

    fn regex(self) -> Option<&'static Regex> {
        static ALL: OnceLock<Vec<Option<Regex>>> = OnceLock::new();
        let all = ALL.get_or_init(|| {
            Detector::ALL
                .iter()
                .map(|d| {
                    // The patterns are constants checked by the tests below.
                    #[allow(clippy::expect_used)]
                    d.pattern()
                        .map(|p| Regex::new(p).expect("detector pattern compiles"))
                })
                .collect()
        });
        all[self.index()].as_ref()
    }

    /// A match that is really this kind of value (checksums).
    fn confirms(self, text: &str) -> bool {
        match self {
            Detector::Iban => iban_checksum(text),
            _ => true,
        }
    }
}

/// `2026-12-03 15…` or `03.12.2026 …` has the digit groups of a phone number; timestamps
/// written as text are everywhere (logs, exports), phone numbers never start with a date.
fn starts_with_a_date(text: &[u8]) -> bool {
    let Some(&[a, b, c, d, e, f, g, h, i, j]) = text.get(..10) else {
        return false;
    };
    let num = |x: &[u8]| -> Option<u32> {
        x.iter().try_fold(0, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let month_day =
        |m: Option<u32>, dd: Option<u32>| matches!((m, dd), (Some(1..=12), Some(1..=31)));
    let separators = |s: u8, t: u8| s == t && matches!(s, b'-' | b'.' | b'/');
    // year first (ISO) or day first
    (separators(e, h) && num(&[a, b, c, d]).is_some() && month_day(num(&[f, g]), num(&[i, j])))
        || (separators(c, f)
            && num(&[g, h, i, j]).is_some()
            && month_day(num(&[d, e]), num(&[a, b])))
}

/// What one pass over a value's bytes says about the detectors that could fire: each
/// detector needs some bytes (an `@`, nine digits, the letters of `BEGIN`), and one not run
/// on a value that lacks them costs nothing. Most values of a result (names, words, ids,
/// hashes, timestamps) then cost a table lookup per byte.
struct Facts {
    digits: usize,
    /// Whether some digit follows no letter, digit or `_`: card, SSN and phone numbers must
    /// start at one, and hex ids, hashes and tokens have none most of the time.
    number_start: bool,
    /// Where numbers may start (`numbers::is_start`), one bit per byte, in values of 64
    /// bytes or fewer (`None` in longer ones).
    starts: Option<u64>,
    seen: u32,
}

const AT: u32 = 1;
const DASH: u32 = 1 << 1;
const UNDERSCORE: u32 = 1 << 2;
const UPPER: u32 = 1 << 3;
/// Letters, digits and `_`: what a number must not touch.
const WORD: u32 = 1 << 31;
/// One bit per letter some detector's literal needs, from bit 4 on.
const LETTERS: &[u8] = b"skghlxoeyAKIJBEGN";

const fn letter(c: u8) -> u32 {
    let mut i = 0;
    while i < LETTERS.len() {
        if LETTERS[i] == c {
            return 1 << (4 + i);
        }
        i += 1;
    }
    0
}

const fn letters(word: &[u8]) -> u32 {
    let mut bits = 0;
    let mut i = 0;
    while i < word.len() {
        bits |= letter(word[i]);
        i += 1;
    }
    bits
}

// What the literal-led detectors need: sk-, AKIA, gh?_, xox?-, glpat-; BEGIN and dashes;
// eyJ.
const API_KEYS: [u32; 5] = [
    letters(b"sk") | DASH,
    letters(b"AKI"),
    letters(b"gh") | UNDERSCORE,
    letters(b"xo") | DASH,
    letters(b"gl") | DASH,
];
const PRIVATE_KEY: u32 = letters(b"BEGIN") | DASH;
const JWT: u32 = letters(b"eyJ");

static CLASS: [u32; 256] = {
    let mut table = [0; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = letter(b)
            | match b {
                b'@' => AT,
                b'-' => DASH,
                b'_' => UNDERSCORE,
                b'A'..=b'Z' => UPPER,
                _ => 0,
            }
            | if b.is_ascii_alphanumeric() || b == b'_' {
                WORD
            } else {
                0
            };
        c += 1;
    }
    table
};

impl Facts {
    fn of(text: &[u8]) -> Facts {
        // No branch per byte: values mix letters and digits, and a branch on each would
        // be mispredicted at every change.
        let (seen, digits, starts, _) = text.iter().enumerate().fold(
            (0, 0, 0u64, 0),
            |(seen, digits, starts, previous), (i, &b)| {
                let class = CLASS[usize::from(b)];
                let digit = u32::from(b.wrapping_sub(b'0') < 10);
                let start = u64::from(digit & !previous);
                (
                    seen | class,
                    digits + digit as usize,
                    // Past 64 bytes every start lands on the top bit: `starts` still
                    // says whether there is one.
                    starts | (start << i.min(63)),
                    class >> 31,
                )
            },
        );
        Facts {
            digits,
            number_start: starts != 0,
            starts: (text.len() <= 64).then_some(starts),
            seen: seen & !WORD,
        }
    }

    fn has(&self, bits: u32) -> bool {
        self.seen & bits == bits
    }

    /// Which of the `wanted` detectors could find something in `text` (never leaving out
    /// one that could). Bit arithmetic rather than a match per detector: this runs for every
    /// value, and most values end here with nothing to run.
    fn possible(&self, wanted: Detected, text: &[u8]) -> Detected {
        let bit = |detector: Detector, on: bool| u8::from(on) << detector.index();
        let numbers =
            bit(Detector::Card, true) | bit(Detector::Ssn, true) | bit(Detector::Phone, true);
        // The longest number is only measured where the counts leave one possible: most
        // values stop at the counts, and timestamps (twenty digits) at the measure.
        let longest = if self.number_start && self.digits >= 9 && wanted.0 & numbers != 0 {
            longest_number(text)
        } else {
            0
        };
        let mut bits = bit(Detector::Email, self.has(AT))
            | bit(Detector::Card, longest >= 13)
            | bit(Detector::Ssn, longest >= 9)
            | bit(Detector::Phone, longest >= 9)
            | bit(
                Detector::ApiKey,
                API_KEYS.iter().any(|&bits| self.has(bits)),
            )
            | bit(Detector::PrivateKey, self.has(PRIVATE_KEY))
            | bit(Detector::Jwt, self.has(JWT));
        if wanted.contains(Detector::Iban)
            && self.digits >= 2
            && self.has(UPPER)
            && iban_start(text)
        {
            bits |= bit(Detector::Iban, true);
        }
        Detected(bits & wanted.0)
    }
}

/// At least the digits of any number `numbers::find` could read in `text`: digits counted in
/// runs that only the bytes a number holds (digits, ` .-()`) continue, after a leading date,
/// which the finder skips.
fn longest_number(text: &[u8]) -> usize {
    let body = match text.get(10..) {
        Some(rest) if starts_with_a_date(text) => rest,
        _ => text,
    };
    let (mut run, mut longest) = (0, 0);
    for &b in body {
        let digit = usize::from(b.is_ascii_digit());
        let inside = usize::from(matches!(b, b' ' | b'.' | b'-' | b'(' | b')'));
        run = (run + digit) * (digit | inside);
        longest = longest.max(run);
    }
    longest
}

/// Two capitals then two digits: where an IBAN starts.
fn iban_start(text: &[u8]) -> bool {
    text.windows(4).any(|w| {
        w[0].is_ascii_uppercase()
            && w[1].is_ascii_uppercase()
            && w[2].is_ascii_digit()
            && w[3].is_ascii_digit()
    })
}

fn iban_checksum(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 15 || compact.len() > 34 {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u64 = 0;
    for c in tail.chars().chain(head.chars()) {
        let value = match c.to_digit(36) {
            Some(v) => v as u64,
            None => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// What a resource's masking section says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Column name patterns (`*` matches any run of characters), lower-case.
    pub columns: Vec<String>,
    pub detectors: Vec<Detector>,
    pub strategy: Strategy,
    /// Kubernetes: ConfigMap keys and env var names masked, lower-case patterns.
    pub keys: Vec<String>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            columns: Vec::new(),
            detectors: Detector::ALL.to_vec(),
            strategy: Strategy::Redact,
            keys: Vec::new(),
        }
    }
}

fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, rest)) => {
            let Some(mut remaining) = name.strip_prefix(prefix) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            loop {
                if glob(rest, remaining) {
                    return true;
                }
                let mut chars = remaining.chars();
                if chars.next().is_none() {
                    return false;
                }
                remaining = chars.as_str();
            }
        }
    }
}

impl Profile {
    /// A result column labelled `column` is masked whole, whatever its content (patterns
    /// without a dot name columns).
    pub fn masks_column(&self, column: &str) -> bool {
        let lower = column.to_ascii_lowercase();
        self.columns
            .iter()
            .any(|p| !p.contains('.') && glob(p, &lower))
    }

    /// The table column `schema.table.column` is masked whole: a pattern without a dot names
    /// the column, `table.column` or `schema.table.column` qualify it.
    pub fn masks_table_column(&self, schema: &str, table: &str, column: &str) -> bool {
        let column = column.to_ascii_lowercase();
        let in_table = format!("{}.{column}", table.to_ascii_lowercase());
        let in_schema = format!("{}.{in_table}", schema.to_ascii_lowercase());
        self.columns.iter().any(|p| match p.matches('.').count() {
            0 => glob(p, &column),
            1 => glob(p, &in_table),
            _ => glob(p, &in_schema),
        })
    }

    /// A ConfigMap key or environment variable name whose value is masked.
    pub fn masks_key(&self, key: &str) -> bool {
        let lower = key.to_ascii_lowercase();
        self.keys.iter().any(|p| glob(p, &lower))
    }

    /// Whether any rule masks by column (so a column whose table is unknown must be masked).
    pub fn has_column_rules(&self) -> bool {
        !self.columns.is_empty()
    }

    /// Applies the strategy to a whole value.
    pub fn mask_value(&self, value: &str, what: &str) -> String {
        let mut out = String::new();
        apply(self.strategy, value, what, &mut out);
        out
    }

    /// Writes the strategy's mask of a whole value into `out` (cleared first).
    pub fn mask_value_into(&self, value: &str, what: &str, out: &mut String) {
        out.clear();
        apply(self.strategy, value, what, out);
    }

    /// Masks whatever the detectors find in `text`; borrowed if nothing was found. Also
    /// returns the names of the detectors that fired.
    pub fn scan<'a>(&self, text: &'a str) -> (Cow<'a, str>, Vec<&'static str>) {
        let mut out = String::new();
        let detected = self.scan_into(text.as_bytes(), &mut out, &mut Scratch::default());
        if detected.is_empty() {
            return (Cow::Borrowed(text), Vec::new());
        }
        (Cow::Owned(out), detected.names().collect())
    }

    /// Masks whatever the detectors find in `value`, the result's hot path: when something
    /// was found, `out` holds the masked value (bytes that are not UTF-8 replaced: a masked
    /// value need not keep them); otherwise `out` is unspecified. Once `out` and `scratch`
    /// have grown, nothing is allocated, and a value no detector could match is not even
    /// checked for UTF-8.
    pub fn scan_into(&self, value: &[u8], out: &mut String, scratch: &mut Scratch) -> Detected {
        self.scan_gated(value, out, scratch, true)
    }

    /// `gated: false` runs every detector: what the gate must agree with. Card, SSN and
    /// phone numbers are looked for last, in one pass, whatever their place in the list.
    fn scan_gated(
        &self,
        value: &[u8],
        out: &mut String,
        scratch: &mut Scratch,
        gated: bool,
    ) -> Detected {
        let mut detected = Detected::default();
        if self.detectors.is_empty() {
            return detected;
        }
        // The facts are the unmasked value's: masking only takes away what detectors need.
        let facts = Facts::of(value);
        let mut wanted = Detected::default();
        for &detector in &self.detectors {
            wanted.insert(detector);
        }
        let run = if gated {
            facts.possible(wanted, value)
        } else {
            wanted
        };
        if run.is_empty() {
            return detected;
        }
        // The strict check first: it is faster than the lossy one on the valid text most
        // values are.
        let text = match std::str::from_utf8(value) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(value),
        };
        let mut masked = false;
        let Scratch { found, spare } = scratch;
        for &detector in &self.detectors {
            if !run.contains(detector) {
                continue;
            }
            found.clear();
            let current: &str = if masked { out.as_str() } else { &text };
            match detector {
                Detector::Card | Detector::Ssn | Detector::Phone => continue,
                Detector::Email => {
                    email::find(current.as_bytes(), |r| found.push((r, detector)));
                }
                _ => {
                    let Some(re) = detector.regex() else { continue };
                    // Only matches that pass the detector's own check (checksums) count.
                    found.extend(
                        re.find_iter(current)
                            .filter(|m| detector.confirms(m.as_str()))
                            .map(|m| (m.range(), detector)),
                    );
                }
            }
            self.replace(&text, &mut masked, out, spare, found, &mut detected);
        }
        let numbers = numbers::Wanted {
            card: run.contains(Detector::Card),
            ssn: run.contains(Detector::Ssn),
            phone: run.contains(Detector::Phone),
        };
        if numbers.any() {
            found.clear();
            let current: &str = if masked { out.as_str() } else { &text };
            let each = |r, kind| {
                let detector = match kind {
                    numbers::Kind::Card => Detector::Card,
                    numbers::Kind::Ssn => Detector::Ssn,
                    numbers::Kind::Phone => Detector::Phone,
                };
                found.push((r, detector));
            };
            // The gate's starts are where the value's bytes are: not after masking moved
            // them or invalid UTF-8 was replaced.
            let unmoved = !masked && matches!(text, Cow::Borrowed(_));
            match facts.starts.filter(|_| gated && unmoved) {
                Some(starts) => {
                    let at = BitPositions(starts);
                    numbers::find_from(current.as_bytes(), numbers, at, each);
                }
                None => numbers::find(current.as_bytes(), numbers, each),
            }
            self.replace(&text, &mut masked, out, spare, found, &mut detected);
        }
        detected
    }

    /// Masks the ranges found (in order, not overlapping) in the value as masked so far:
    /// `text` until something was masked, `out` after; the result is in `out`.
    fn replace(
        &self,
        text: &str,
        masked: &mut bool,
        out: &mut String,
        spare: &mut String,
        found: &[(Range<usize>, Detector)],
        detected: &mut Detected,
    ) {
        if found.is_empty() {
            return;
        }
        let source: &str = if *masked {
            std::mem::swap(out, spare);
            spare
        } else {
            text
        };
        out.clear();
        let mut last = 0;
        for (range, detector) in found {
            out.push_str(&source[last..range.start]);
            apply(self.strategy, &source[range.clone()], detector.name(), out);
            last = range.end;
            detected.insert(*detector);
        }
        out.push_str(&source[last..]);
        *masked = true;
    }
}

/// The positions of a mask's set bits, lowest first.
struct BitPositions(u64);

impl Iterator for BitPositions {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let at = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(at)
    }
}

/// Buffers a scan reuses from value to value.
#[derive(Debug, Default)]
pub struct Scratch {
    found: Vec<(Range<usize>, Detector)>,
    spare: String,
}

/// The detectors that found something in one value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Detected(u8);

impl Detected {
    fn insert(&mut self, detector: Detector) {
        self.0 |= 1 << detector.index();
    }

    fn contains(self, detector: Detector) -> bool {
        self.0 & (1 << detector.index()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Detector::ALL
            .into_iter()
            .filter(move |d| self.contains(*d))
            .map(Detector::name)
    }
}

/// Appends the strategy's mask of `value` to `out`.
fn apply(strategy: Strategy, value: &str, what: &str, out: &mut String) {
    match strategy {
        Strategy::Redact => {
            out.push('[');
            out.push_str(what);
            out.push_str(" redacted]");
        }
        Strategy::Partial if value.is_ascii() => {
            // Most masked values (emails, card numbers) are ASCII: one byte, one char.
            let hidden = value.len() - if value.len() > 8 { 4 } else { 0 };
            out.extend(value.bytes().enumerate().map(|(i, b)| {
                if i < hidden && b.is_ascii_alphanumeric() {
                    '*'
                } else {
                    char::from(b)
                }
            }));
        }
        Strategy::Partial => {
            let count = value.chars().count();
            let hidden = count - if count > 8 { 4 } else { 0 };
            out.extend(value.chars().enumerate().map(|(i, c)| {
                if i < hidden && c.is_alphanumeric() {
                    '*'
                } else {
                    c
                }
            }));
        }
        Strategy::Hash => {
            let mut h = Sha256::new();
            h.update(hash_key());
            h.update(value.as_bytes());
            let mut hex = [0u8; 16];
            // 8 bytes always fit 16 hex digits.
            let _ = hex::encode_to_slice(&h.finalize()[..8], &mut hex);
            out.push_str(what);
            out.push(':');
            out.extend(hex.iter().map(|&b| char::from(b)));
        }
    }
}

fn hash_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> (String, Vec<&'static str>) {
        let (out, fired) = Profile::default().scan(text);
        (out.into_owned(), fired)
    }

    #[test]
    fn detectors_find_what_they_should_and_leave_the_rest() {
        for (i, detector) in Detector::ALL.into_iter().enumerate() {
            assert_eq!(detector.index(), i, "{detector:?}");
        }
        let (out, fired) = scan("mail ada@example.com now");
        assert_eq!(out, "mail [email redacted] now");
        assert_eq!(fired, ["email"]);
        assert_eq!(scan("card 4111 1111 1111 1111").1, ["card"]);
        assert_eq!(scan("not a card 4111 1111 1111 1112").1, Vec::<&str>::new());
        assert_eq!(scan("GB82 WEST 1234 5698 7654 32").1, ["iban"]);
        assert_eq!(scan("ssn 078-05-1120").1, ["ssn"]);
        assert_eq!(scan("call +44 20 7946 0958").1, ["phone"]);
        assert_eq!(scan("key AKIAIOSFODNN7EXAMPLE").1, ["api_key"]);
        assert_eq!(
            scan("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----").1,
            ["private_key"]
        );
        assert_eq!(scan("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig").1, ["jwt"]);
        for plain in ["order 42", "2026-11-22", "total 1234.50", "Ada Lovelace"] {
            assert_eq!(scan(plain).0, plain);
        }
    }

    #[test]
    fn strategies() {
        let p = |s| Profile {
            strategy: s,
            ..Profile::default()
        };
        assert_eq!(
            p(Strategy::Partial).mask_value("4111111111111111", "card"),
            "************1111"
        );
        // Separators stay, short values keep nothing, characters (not bytes) are counted.
        assert_eq!(
            p(Strategy::Partial).mask_value("ada@example.com", "email"),
            "***@*******.com"
        );
        assert_eq!(p(Strategy::Partial).mask_value("secret", "x"), "******");
        assert_eq!(
            p(Strategy::Partial).mask_value("zürich-straße-9", "x"),
            "******-****ße-9"
        );
        let h = p(Strategy::Hash);
        assert_eq!(
            h.mask_value("a@b.io", "email"),
            h.mask_value("a@b.io", "email")
        );
        assert_ne!(
            h.mask_value("a@b.io", "email"),
            h.mask_value("c@b.io", "email")
        );
        let cols = Profile {
            columns: vec!["*email*".into(), "ssn".into()],
            ..Profile::default()
        };
        assert!(cols.masks_column("Customer_Email") && cols.masks_column("ssn"));
        assert!(!cols.masks_column("ssn_hint") && !cols.masks_column("name"));
        let qualified = Profile {
            columns: vec!["customers.card".into(), "hr.*.salary".into(), "ssn".into()],
            ..Profile::default()
        };
        assert!(qualified.masks_table_column("public", "Customers", "card"));
        assert!(!qualified.masks_table_column("public", "orders", "card"));
        assert!(
            !qualified.masks_column("card"),
            "a qualified rule needs the table"
        );
        assert!(qualified.masks_table_column("hr", "staff", "salary"));
        assert!(!qualified.masks_table_column("public", "staff", "salary"));
        assert!(qualified.masks_table_column("x", "y", "SSN"));
    }

    #[test]
    fn dates_are_not_phone_numbers() {
        for date in [
            "2026-12-03 15:06:06.407537+00",
            "03.12.2026 15 04 05",
            "backup of 2026-12-03 15 done",
        ] {
            assert_eq!(scan(date).0, date, "{date}");
        }
        assert_eq!(scan("call 2026 120 3150").1, ["phone"]);
        // The gate measures a timestamp's numbers short, so the finder is not even run.
        assert!(longest_number(b"2026-12-03 15:06:06.407537+00") < 9);
        assert_eq!(longest_number(b"+1 (415) 555-0123"), 11);
        assert_eq!(scan("call 0794-61-23 456").1, ["phone"]);
    }

    proptest::proptest! {
        /// The byte gate never skips a detector that would have masked something.
        #[test]
        fn the_gate_changes_nothing(
            text in "([0-9]{1,5}|2026-12-0[1-9]|0[1-9]\\.12\\.2026|[A-Z]{1,4}|[a-z]{1,4}|[A-Za-z0-9_-]{16,40}|[ .@+()/_-]|eyJ|sk-|AKIA|ghp_|xoxb-|glpat-|-----(BEGIN|END) PRIVATE KEY-----|\\n){0,24}",
            partial in proptest::bool::ANY,
        ) {
            let profile = Profile {
                strategy: if partial { Strategy::Partial } else { Strategy::Redact },
                ..Profile::default()
            };
            let run = |gated| {
                let mut out = String::new();
                let detected = profile.scan_gated(text.as_bytes(), &mut out, &mut Scratch::default(), gated);
                (detected, if detected.is_empty() { String::new() } else { out })
            };
            proptest::prop_assert_eq!(run(true), run(false));
        }

        #[test]
        fn scanning_never_panics(text in "\\PC{0,80}") {
            let _ = Profile::default().scan(&text);
            let _ = Profile { strategy: Strategy::Partial, ..Profile::default() }.scan(&text);
        }
    }
}
