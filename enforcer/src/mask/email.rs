//! Email addresses: `local@domain.tld`, found from each `@` outwards.
//!
//! Written by hand: the regex `[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}`
//! finds the same matches (a property test holds the two together), but its search start-up
//! per value cost more than the whole scan in results of many short values.

use std::ops::Range;

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_label(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// Calls `each` with the byte range of every address in `text`, left to right.
pub(super) fn find(text: &[u8], each: impl FnMut(Range<usize>)) {
    find_from(text, memchr::memchr_iter(b'@', text), each);
}

/// `find`, given where every `@` of `text` is, in order: the detectors' gate knows where
/// they are in short values, and a search for them costs more than the rest there.
pub(super) fn find_from(
    text: &[u8],
    ats: impl Iterator<Item = usize>,
    mut each: impl FnMut(Range<usize>),
) {
    // Where the last address ended: the next one's local part starts at or after it.
    let mut floor = 0;
    for at in ats {
        if at < floor {
            continue;
        }
        let mut start = at;
        while start > floor && is_local(text[start - 1]) {
            start -= 1;
        }
        if start == at {
            continue;
        }
        if let Some(end) = domain_end(text, at + 1) {
            each(start..end);
            floor = end;
        }
    }
}

/// The end of the longest `label(.label)*.letters` from `from`: the regex's greedy choice,
/// since every label is taken whole and the address ends with the letters that start the
/// last label reached.
fn domain_end(text: &[u8], from: usize) -> Option<usize> {
    let label = |at: usize| {
        let mut end = at;
        while end < text.len() && is_label(text[end]) {
            end += 1;
        }
        end
    };
    let mut at = label(from);
    if at == from {
        return None;
    }
    let mut end = None;
    while text.get(at) == Some(&b'.') {
        let mut letters = at + 1;
        while letters < text.len() && text[letters].is_ascii_alphabetic() {
            letters += 1;
        }
        if letters - (at + 1) >= 2 {
            end = Some(letters);
        }
        let next = label(at + 1);
        if next == at + 1 {
            break;
        }
        at = next;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find(text.as_bytes(), |r| out.push(&text[r]));
        out
    }

    #[test]
    fn addresses() {
        assert_eq!(found("mail ada@example.com now"), ["ada@example.com"]);
        assert_eq!(
            found("a.b+c@mail.example.co.uk."),
            ["a.b+c@mail.example.co.uk"]
        );
        assert_eq!(found("x@y.c1 z@host.io"), ["z@host.io"]);
        assert_eq!(found("a@b.cc1"), ["a@b.cc"]);
        assert_eq!(found("@nobody.com user@ @x"), Vec::<&str>::new());
        assert_eq!(found("a@b.com@c.org"), ["a@b.com"]);
    }

    proptest::proptest! {
        /// The same addresses as the regex this replaces, on text built of what addresses
        /// are made of.
        #[test]
        fn as_the_regex_finds_them(text in "([a-z]{1,3}|[A-Z0-9]|[.@_%+-]|\\.(com|io|c)|é| ){0,24}") {
            let re = regex::Regex::new(
                r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            )
            .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let expected: Vec<&str> = re.find_iter(&text).map(|m| m.as_str()).collect();
            proptest::prop_assert_eq!(found(&text), expected);
        }
    }
}
