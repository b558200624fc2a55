//! Masking: sensitive values never reach the workload. Columns are masked by name pattern;
//! every text value (not numbers, times or addresses: see the PostgreSQL session) is also
//! scanned by content detectors (emails, card numbers with a Luhn
//! check, IBANs with their checksum, US SSNs, phone numbers, API keys, private keys, JWTs).
//! Strategies: `redact` (a fixed marker), `partial` (keep the last 4 characters), `hash` (a
//! keyed hash, stable for the life of the process, so equal values still compare equal).

mod email;
mod gate;
mod numbers;

use std::{borrow::Cow, ops::Range, sync::OnceLock};

use regex::bytes::Regex;
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
    fn confirms(self, text: &[u8]) -> bool {
        match self {
            Detector::Iban => iban_checksum(text),
            _ => true,
        }
    }
}

/// `2026-12-03 15…` or `03.12.2026 …` has the digit groups of a phone number; timestamps
/// written as text are everywhere (logs, exports), phone numbers never start with a date.
fn starts_with_a_date(text: &[u8]) -> bool {
    let Some(t) = text.get(..10) else {
        return false;
    };
    let digit = |i: usize| u32::from(t[i].wrapping_sub(b'0'));
    let digits = |from: usize, to: usize| t[from..to].iter().all(u8::is_ascii_digit);
    let two = |i: usize| (digit(i) < 10 && digit(i + 1) < 10).then(|| digit(i) * 10 + digit(i + 1));
    let month_day =
        |m: Option<u32>, dd: Option<u32>| matches!((m, dd), (Some(1..=12), Some(1..=31)));
    let separators = |i: usize, j: usize| t[i] == t[j] && matches!(t[i], b'-' | b'.' | b'/');
    // Year first (ISO), or day first; the separators are the cheap test, and no text
    // has both (a day-first date has a digit where an ISO one has its first separator).
    if separators(4, 7) {
        digits(0, 4) && month_day(two(5), two(8))
    } else {
        separators(2, 5) && digits(6, 10) && month_day(two(3), two(0))
    }
}

/// The check of an IBAN the pattern found: ASCII capitals and digits, spaced or not.
fn iban_checksum(text: &[u8]) -> bool {
    let compact = || text.iter().copied().filter(|&b| b != b' ');
    let len = compact().count();
    if !(15..=34).contains(&len) {
        return false;
    }
    let mut remainder: u64 = 0;
    for c in compact().skip(4).chain(compact().take(4)) {
        let value = match char::from(c).to_digit(36) {
            Some(v) => u64::from(v),
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
    pub detectors: Detectors,
    pub strategy: Strategy,
    /// Kubernetes: ConfigMap keys and env var names masked, lower-case patterns.
    pub keys: Vec<String>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            columns: Vec::new(),
            detectors: Detectors::all(),
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
        let mut out = Vec::new();
        apply(self.strategy, value.as_bytes(), what, &mut out);
        into_text(out)
    }

    /// Writes the strategy's mask of a whole value into `out` (cleared first): UTF-8 text.
    pub fn mask_value_into(&self, value: &str, what: &str, out: &mut Vec<u8>) {
        out.clear();
        apply(self.strategy, value.as_bytes(), what, out);
    }

    /// Masks whatever the detectors find in `text`; borrowed if nothing was found. Also
    /// returns the names of the detectors that fired.
    pub fn scan<'a>(&self, text: &'a str) -> (Cow<'a, str>, Vec<&'static str>) {
        let mut out = Vec::new();
        let detected = self.scan_into(text.as_bytes(), &mut out, &mut Scratch::default());
        if detected.is_empty() {
            return (Cow::Borrowed(text), Vec::new());
        }
        (Cow::Owned(into_text(out)), detected.names().collect())
    }

    /// Masks whatever the detectors find in `value`, the result's hot path: when something
    /// was found, `out` holds the masked value, UTF-8 text (bytes of `value` that were not
    /// UTF-8 replaced: a masked value need not keep them); otherwise `out` is unspecified.
    /// Once `out` and `scratch` have grown, nothing is allocated, and a value no detector
    /// could match is not even checked for UTF-8.
    pub fn scan_into(&self, value: &[u8], out: &mut Vec<u8>, scratch: &mut Scratch) -> Detectors {
        self.scan_gated(value, out, scratch, true)
    }

    /// `gated: false` runs every detector: what the gate must agree with. Detectors run in
    /// the order of `Detector::ALL`, whatever the profile's, each over what the ones before
    /// left: a private key's body is masked whole before anything in it is looked at. Card,
    /// SSN and phone numbers are looked for last, in one pass.
    fn scan_gated(
        &self,
        value: &[u8],
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
        gated: bool,
    ) -> Detectors {
        let mut detected = Detectors::default();
        if self.detectors.is_empty() {
            return detected;
        }
        if gated && gate::short_and_plain(value, self.detectors) {
            return detected;
        }
        // The facts are the unmasked value's: masking only takes away what detectors need.
        let facts = gate::Facts::of(value);
        let run = if gated {
            facts.possible(self.detectors, value)
        } else {
            self.detectors
        };
        if run.is_empty() {
            return detected;
        }
        // The strict check first: it is faster than the lossy one on the valid text most
        // values are.
        let text: Cow<[u8]> = match std::str::from_utf8(value) {
            Ok(_) => Cow::Borrowed(value),
            Err(_) => match String::from_utf8_lossy(value) {
                Cow::Owned(fixed) => Cow::Owned(fixed.into_bytes()),
                Cow::Borrowed(_) => Cow::Borrowed(value),
            },
        };
        // Where the gate saw `@`s and number starts is where the value's bytes are: not
        // after masking moved them or invalid UTF-8 was replaced.
        let gate_holds = |masked: bool| gated && !masked && matches!(text, Cow::Borrowed(_));
        let mut masked = false;
        let Scratch { found, spare } = scratch;
        for detector in run.iter() {
            found.clear();
            let current: &[u8] = if masked { out } else { &text };
            match detector {
                Detector::Card | Detector::Ssn | Detector::Phone => continue,
                Detector::Email => {
                    let each = |r| found.push((r, detector));
                    match facts.ats.filter(|_| gate_holds(masked)) {
                        Some(ats) => email::find_from(current, BitPositions(ats), each),
                        None => email::find(current, each),
                    }
                }
                _ => {
                    let Some(re) = detector.regex() else { continue };
                    // Only matches that pass the detector's own check (checksums) count.
                    found.extend(
                        re.find_iter(current)
                            .filter(|m| detector.confirms(m.as_bytes()))
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
            let current: &[u8] = if masked { out } else { &text };
            let each = |r, kind| {
                let detector = match kind {
                    numbers::Kind::Card => Detector::Card,
                    numbers::Kind::Ssn => Detector::Ssn,
                    numbers::Kind::Phone => Detector::Phone,
                };
                found.push((r, detector));
            };
            match facts.starts.filter(|_| gate_holds(masked)) {
                Some(starts) => {
                    let at = BitPositions(starts);
                    numbers::find_from(current, numbers, at, each);
                }
                None => numbers::find(current, numbers, each),
            }
            self.replace(&text, &mut masked, out, spare, found, &mut detected);
        }
        detected
    }

    /// Masks the ranges found (in order, not overlapping) in the value as masked so far:
    /// `text` until something was masked, `out` after; the result is in `out`.
    fn replace(
        &self,
        text: &[u8],
        masked: &mut bool,
        out: &mut Vec<u8>,
        spare: &mut Vec<u8>,
        found: &[(Range<usize>, Detector)],
        detected: &mut Detectors,
    ) {
        if found.is_empty() {
            return;
        }
        let source: &[u8] = if *masked {
            std::mem::swap(out, spare);
            spare
        } else {
            text
        };
        out.clear();
        let mut last = 0;
        for (range, detector) in found {
            out.extend_from_slice(&source[last..range.start]);
            apply(self.strategy, &source[range.clone()], detector.name(), out);
            last = range.end;
            detected.insert(*detector);
        }
        out.extend_from_slice(&source[last..]);
        *masked = true;
    }
}

/// What the scan wrote: UTF-8 by construction (ranges cut at ASCII bytes or at a regex's
/// char boundaries, masks made of whole characters), checked all the same.
fn into_text(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
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
    spare: Vec<u8>,
}

/// A set of detectors: a profile's, or those that found something in one value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Detectors(u8);

impl Detectors {
    pub fn all() -> Detectors {
        Detectors(u8::MAX >> (8 - Detector::ALL.len()))
    }

    pub fn insert(&mut self, detector: Detector) {
        self.0 |= 1 << detector.index();
    }

    pub fn contains(self, detector: Detector) -> bool {
        self.0 & (1 << detector.index()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// In the order of `Detector::ALL`.
    pub fn iter(self) -> impl Iterator<Item = Detector> {
        Detector::ALL.into_iter().filter(move |d| self.contains(*d))
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        self.iter().map(Detector::name)
    }
}

/// Appends the strategy's mask of `value` (UTF-8 text) to `out`.
fn apply(strategy: Strategy, value: &[u8], what: &str, out: &mut Vec<u8>) {
    match strategy {
        Strategy::Redact => {
            out.push(b'[');
            out.extend_from_slice(what.as_bytes());
            out.extend_from_slice(b" redacted]");
        }
        Strategy::Partial if value.is_ascii() => {
            // Most masked values (emails, card numbers) are ASCII: one byte, one character,
            // and the mask is a loop over bytes with no branch, copied then overwritten.
            let hidden = value.len() - if value.len() > 8 { 4 } else { 0 };
            let from = out.len();
            out.extend_from_slice(value);
            for b in &mut out[from..from + hidden] {
                let alphanumeric = (*b | 0x20).wrapping_sub(b'a') < 26 || b.wrapping_sub(b'0') < 10;
                *b = if alphanumeric { b'*' } else { *b };
            }
        }
        Strategy::Partial => {
            let value = String::from_utf8_lossy(value);
            let count = value.chars().count();
            let hidden = count - if count > 8 { 4 } else { 0 };
            let mut utf8 = [0u8; 4];
            for (i, c) in value.chars().enumerate() {
                let c = if i < hidden && c.is_alphanumeric() {
                    '*'
                } else {
                    c
                };
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
        Strategy::Hash => {
            let mut h = Sha256::new();
            h.update(hash_key());
            h.update(value);
            let mut hex = [0u8; 16];
            // 8 bytes always fit 16 hex digits.
            let _ = hex::encode_to_slice(&h.finalize()[..8], &mut hex);
            out.extend_from_slice(what.as_bytes());
            out.push(b':');
            out.extend_from_slice(&hex);
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
    use proptest::strategy::Strategy as _;

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
                let mut out = Vec::new();
                let detected = profile.scan_gated(text.as_bytes(), &mut out, &mut Scratch::default(), gated);
                (detected, if detected.is_empty() { Vec::new() } else { out })
            };
            proptest::prop_assert_eq!(run(true), run(false));
        }

        /// The same on bytes that need not be UTF-8 (scanned as lossy text), mixed with
        /// what detectors look for.
        #[test]
        fn the_gate_changes_nothing_on_any_bytes(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::collection::vec(proptest::num::u8::ANY, 1..4),
                    "(ada@x.io|4111 1111 1111 1111|078-05-1120|AKIA[A-Z0-9]{16}|GB82 WEST 1234 5698 7654 32| )"
                        .prop_map(String::into_bytes),
                ],
                0..12,
            ),
        ) {
            let value = pieces.concat();
            let profile = Profile::default();
            let run = |gated| {
                let mut out = Vec::new();
                let detected = profile.scan_gated(&value, &mut out, &mut Scratch::default(), gated);
                (detected, if detected.is_empty() { Vec::new() } else { out })
            };
            let (detected, out) = run(true);
            proptest::prop_assert!(detected.is_empty() || std::str::from_utf8(&out).is_ok());
            proptest::prop_assert_eq!((detected, out), run(false));
        }

        #[test]
        fn scanning_never_panics(text in "\\PC{0,80}") {
            let _ = Profile::default().scan(&text);
            let _ = Profile { strategy: Strategy::Partial, ..Profile::default() }.scan(&text);
        }
    }
}
