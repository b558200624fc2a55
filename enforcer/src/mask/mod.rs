//! Masking: sensitive values never reach the workload. Columns are masked by name pattern;
//! every text value is also scanned by content detectors (emails, card numbers with a Luhn
//! check, IBANs with their checksum, US SSNs, phone numbers, API keys, private keys, JWTs).
//! Strategies: `redact` (a fixed marker), `partial` (keep the last 4 characters), `hash` (a
//! keyed hash, stable for the life of the process, so equal values still compare equal).

use std::{borrow::Cow, sync::OnceLock};

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
    Email,
    Card,
    Iban,
    Ssn,
    Phone,
    ApiKey,
    PrivateKey,
    Jwt,
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

    /// ASCII word boundaries and digits: Unicode ones would keep the regex engine off its
    /// fast automaton, and the values looked for are ASCII.
    fn pattern(self) -> &'static str {
        match self {
            Detector::Email => r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            Detector::Card => r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)",
            Detector::Iban => {
                r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?-u:\b)"
            }
            Detector::Ssn => r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)",
            Detector::Phone => r"\+?\(?[0-9]{1,4}\)?(?:[ .-]?[0-9]{2,4}){2,5}(?-u:\b)",
            Detector::ApiKey => {
                r"(?-u:\b)(?:sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|glpat-[A-Za-z0-9_-]{20})(?-u:\b)"
            }
            Detector::PrivateKey => {
                r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
            }
            Detector::Jwt => r"(?-u:\b)eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
        }
    }

    fn index(self) -> usize {
        Detector::ALL.iter().position(|d| *d == self).unwrap_or(0)
    }

    fn regex(self) -> &'static Regex {
        static ALL: OnceLock<Vec<Regex>> = OnceLock::new();
        let all = ALL.get_or_init(|| {
            Detector::ALL
                .iter()
                .map(|d| {
                    // The patterns are constants checked by the tests below.
                    #[allow(clippy::expect_used)]
                    Regex::new(d.pattern()).expect("detector pattern compiles")
                })
                .collect()
        });
        &all[self.index()]
    }

    /// Every detector at once: one pass over a value says which detectors may fire, and most
    /// values need no other.
    fn set() -> &'static regex::RegexSet {
        static SET: OnceLock<regex::RegexSet> = OnceLock::new();
        SET.get_or_init(|| {
            #[allow(clippy::expect_used)]
            regex::RegexSet::new(Detector::ALL.map(Detector::pattern))
                .expect("detector patterns compile")
        })
    }

    /// A match that is really this kind of value (checksums, digit counts).
    fn confirms(self, text: &str) -> bool {
        match self {
            Detector::Card => luhn(text),
            Detector::Iban => iban_checksum(text),
            Detector::Phone => {
                let digits = text.chars().filter(char::is_ascii_digit).count();
                (9..=15).contains(&digits)
            }
            _ => true,
        }
    }
}

fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
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
        apply(self.strategy, value, what)
    }

    /// Masks whatever the detectors find in `text`; `None` if nothing was found. Also
    /// returns the names of the detectors that fired.
    pub fn scan<'a>(&self, text: &'a str) -> (Cow<'a, str>, Vec<&'static str>) {
        let mut out: Cow<'a, str> = Cow::Borrowed(text);
        let mut fired = Vec::new();
        if self.detectors.is_empty() {
            return (out, fired);
        }
        let candidates = Detector::set().matches(text);
        if !candidates.matched_any() {
            return (out, fired);
        }
        for detector in &self.detectors {
            if !candidates.matched(detector.index()) {
                continue;
            }
            let re = detector.regex();
            // Only matches that pass the detector's own check (checksums, digit counts)
            // are masked; a value without one is left as it is, uncopied.
            let mut masked = String::new();
            let mut last = 0;
            for m in re.find_iter(&out) {
                if detector.confirms(m.as_str()) {
                    masked.push_str(&out[last..m.start()]);
                    masked.push_str(&apply(self.strategy, m.as_str(), detector.name()));
                    last = m.end();
                }
            }
            if last > 0 {
                masked.push_str(&out[last..]);
                fired.push(detector.name());
                out = Cow::Owned(masked);
            }
        }
        (out, fired)
    }
}

fn apply(strategy: Strategy, value: &str, what: &str) -> String {
    match strategy {
        Strategy::Redact => format!("[{what} redacted]"),
        Strategy::Partial => {
            // Runs once per masked value of every row: one pass, one allocation.
            let count = value.chars().count();
            let hidden = count - if count > 8 { 4 } else { 0 };
            let mut out = String::with_capacity(value.len());
            for (i, c) in value.chars().enumerate() {
                out.push(if i < hidden && c.is_alphanumeric() {
                    '*'
                } else {
                    c
                });
            }
            out
        }
        Strategy::Hash => {
            let mut h = Sha256::new();
            h.update(hash_key());
            h.update(value.as_bytes());
            format!("{what}:{}", hex::encode(&h.finalize()[..8]))
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

    proptest::proptest! {
        #[test]
        fn scanning_never_panics(text in "\\PC{0,80}") {
            let _ = Profile::default().scan(&text);
            let _ = Profile { strategy: Strategy::Partial, ..Profile::default() }.scan(&text);
        }
    }
}
