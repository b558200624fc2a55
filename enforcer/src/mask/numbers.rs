//! Card numbers, US social security numbers and phone numbers, found in one pass over a
//! value's digit groups.
//!
//! Written by hand rather than as three regexes: a regex search costs a start-up per value
//! that dwarfs the scan itself when a result has millions of short values, and the checks
//! that decide (Luhn, digit counts, a leading date) need the groups anyway.
//!
//! A *number* is a run of digit groups, each joined to the next by one of ` .-` (an opening
//! `(` and a leading `+` belong to it, as in `+1 (415) 555-0123`). It stands alone: no letter,
//! digit or `_` touches it on either side. A date at its start (`2026-12-03`,
//! `03.12.2026`) is not part of it: what follows the date is read as a number of its own.
//! A number is then, first match wins:
//! - a card: 13 to 19 digits joined only by spaces or dashes, passing the Luhn check;
//! - an SSN: three groups of 3, 2 and 4 digits joined by dashes;
//! - a phone number: 9 to 15 digits whose groups after the first have two digits or more.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Card,
    Ssn,
    Phone,
}

/// Which kinds the profile masks.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Wanted {
    pub card: bool,
    pub ssn: bool,
    pub phone: bool,
}

impl Wanted {
    pub fn any(self) -> bool {
        self.card || self.ssn || self.phone
    }
}

const SPACE: u8 = 1;
const DOT: u8 = 2;
const DASH: u8 = 4;

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Calls `each` with the byte range and kind of every number in `text` that is one of the
/// kinds wanted, left to right, ranges not overlapping.
pub(super) fn find(text: &[u8], wanted: Wanted, each: impl FnMut(Range<usize>, Kind)) {
    let starts = (0..text.len()).filter(|&i| is_start(text, i));
    find_from(text, wanted, starts, each);
}

/// Where a number may start: a digit no letter, digit or `_` precedes.
pub(super) fn is_start(text: &[u8], i: usize) -> bool {
    text[i].is_ascii_digit() && (i == 0 || !is_word(text[i - 1]))
}

/// `find`, given every place a number may start (`is_start`), in order: a caller that has
/// already passed over the bytes (the detectors' gate) saves a second pass, branchy on text
/// that mixes letters and digits.
pub(super) fn find_from(
    text: &[u8],
    wanted: Wanted,
    starts: impl Iterator<Item = usize>,
    mut each: impl FnMut(Range<usize>, Kind),
) {
    // Where the last number (or date) ended: starts before it were part of it.
    let mut floor = 0;
    for i in starts {
        if i < floor {
            continue;
        }
        if super::starts_with_a_date(&text[i..]) {
            floor = i + 10;
            continue;
        }
        // Most numbers are short (`17` of `17:40`, a house number): their digits are
        // counted before any is recorded.
        let (mut digits, mut end) = (0, i);
        walk(text, i, |group| {
            digits += group.end - group.start;
            end = group.end;
            true
        });
        if digits < 9 {
            floor = end;
            continue;
        }
        let number = Number::read(text, i);
        floor = number.end();
        if !number.touches_word {
            number.split(text, wanted, &mut each);
        }
    }
}

/// Follows the groups of the number whose first digit is at `first_digit`, handing each to
/// `group` until it returns false or the number ends; returns whether a `)` closed the first
/// group (its `(` standing just before `first_digit`).
fn walk(text: &[u8], first_digit: usize, mut group: impl FnMut(Group) -> bool) -> bool {
    let n = text.len();
    let open = first_digit > 0 && text[first_digit - 1] == b'(';
    let mut closed = false;
    let mut j = first_digit;
    loop {
        let start = j;
        while j < n && text[j].is_ascii_digit() {
            j += 1;
        }
        let mut k = j;
        if open && start == first_digit && text.get(k) == Some(&b')') {
            k += 1;
            closed = true;
        }
        let separator = match text.get(k) {
            Some(b' ') => SPACE,
            Some(b'.') => DOT,
            Some(b'-') => DASH,
            _ => 0,
        };
        if separator != 0 {
            k += 1;
        }
        let joined = k > j && text.get(k).is_some_and(u8::is_ascii_digit);
        let after = if joined { separator } else { 0 };
        if !group(Group {
            start,
            end: j,
            after,
        }) || !joined
        {
            return closed;
        }
        j = k;
    }
}

/// More groups than this end a number (the rest is read as another): it bounds the work
/// an adversarial value of endless short groups can cause.
const MAX_GROUPS: usize = 32;

#[derive(Debug, Clone, Copy, Default)]
struct Group {
    start: usize,
    end: usize,
    /// The separator before it (`SPACE`, `DOT`, `DASH`, or 0 for none or a parenthesis).
    after: u8,
}

/// Digit groups read from one position.
struct Number {
    /// Where its first group's `+` or `(` is, else its first digit.
    prefix: usize,
    groups: [Group; MAX_GROUPS],
    count: usize,
    /// A letter, digit or `_` right after its last digit.
    touches_word: bool,
}

impl Number {
    fn read(text: &[u8], first_digit: usize) -> Number {
        let mut number = Number {
            prefix: first_digit,
            groups: [Group::default(); MAX_GROUPS],
            count: 0,
            touches_word: false,
        };
        let closed = walk(text, first_digit, |group| {
            number.groups[number.count] = group;
            number.count += 1;
            number.count < MAX_GROUPS
        });
        // `(415)` and `+(415)`: the parenthesis and the plus are the number's; an unclosed
        // parenthesis is punctuation before it.
        if closed {
            number.prefix -= 1;
        }
        if number.prefix > 0 && text[number.prefix - 1] == b'+' {
            number.prefix -= 1;
        }
        number.touches_word = text.get(number.end()).is_some_and(|&b| is_word(b));
        number
    }

    fn end(&self) -> usize {
        self.groups[self.count - 1].end
    }

    /// Reports the numbers wanted in these groups: from the first group on, the first kind
    /// that fits (cards, then SSNs, then phone numbers; how many groups each takes is
    /// [`Number::fit`]'s), then on from the group after it; a group in none is passed over.
    fn split(&self, text: &[u8], wanted: Wanted, each: &mut impl FnMut(Range<usize>, Kind)) {
        let mut a = 0;
        // A phone number starts where the number does or where the last one found ended,
        // never in the middle of groups that were none (`4111 1111 1111 1112` is no phone
        // number followed by another).
        let mut fresh = true;
        while a < self.count {
            let fit = [
                (wanted.card, Kind::Card),
                (wanted.ssn, Kind::Ssn),
                (wanted.phone && fresh, Kind::Phone),
            ]
            .into_iter()
            .filter(|(on, _)| *on)
            .find_map(|(_, kind)| self.fit(kind, a, text).map(|b| (b, kind)));
            match fit {
                Some((b, kind)) => {
                    let start = if a == 0 && kind == Kind::Phone {
                        self.prefix
                    } else {
                        self.groups[a].start
                    };
                    each(start..self.groups[b - 1].end, kind);
                    a = b;
                    fresh = true;
                }
                None => {
                    a += 1;
                    fresh = false;
                }
            }
        }
    }

    /// Where a number of this kind starting at group `a` ends (its last group + 1). A card
    /// takes the most groups that pass Luhn. A phone number takes the fewest groups that
    /// have nine digits, and the groups after those too if they have fewer than nine
    /// between them (`0 800 11 22 33 44` is one number, `415 555 0123 650 555 0199` two,
    /// and `4111 1111 1111 1112` none: more digits than a phone number has).
    fn fit(&self, kind: Kind, a: usize, text: &[u8]) -> Option<usize> {
        match kind {
            Kind::Card => (a + 1..=self.count)
                .rev()
                .find(|&b| self.is(kind, a, b, text)),
            Kind::Ssn => (a + 3 <= self.count && self.is(kind, a, a + 3, text)).then_some(a + 3),
            Kind::Phone => {
                let shortest = (a + 1..=self.count).find(|&b| self.digits(a, b) >= 9)?;
                let b = if self.digits(shortest, self.count) < 9 {
                    self.count
                } else {
                    shortest
                };
                self.is(kind, a, b, text).then_some(b)
            }
        }
    }

    fn digits(&self, a: usize, b: usize) -> usize {
        self.groups[a..b].iter().map(|g| g.end - g.start).sum()
    }

    /// Whether groups `a..b` are a number of this kind.
    fn is(&self, kind: Kind, a: usize, b: usize, text: &[u8]) -> bool {
        let groups = &self.groups[a..b];
        let digits = self.digits(a, b);
        let separators = groups[..groups.len() - 1]
            .iter()
            .fold(0, |s, g| s | g.after);
        let plain = a > 0 || self.prefix == self.groups[0].start;
        match kind {
            Kind::Card => {
                plain
                    && separators & DOT == 0
                    && (13..=19).contains(&digits)
                    && luhn(&text[groups[0].start..groups[groups.len() - 1].end])
            }
            Kind::Ssn => {
                plain
                    && separators == DASH
                    && groups.len() == 3
                    && groups
                        .iter()
                        .zip([3, 2, 4])
                        .all(|(g, size)| g.end - g.start == size)
                    && groups.iter().take(2).all(|g| g.after == DASH)
            }
            Kind::Phone => {
                (9..=15).contains(&digits) && groups[1..].iter().all(|g| g.end - g.start >= 2)
            }
        }
    }
}

/// The Luhn check over the digits of `text` (other bytes are skipped).
pub(super) fn luhn(text: &[u8]) -> bool {
    let (count, sum) = text
        .iter()
        .rev()
        .filter(|b| b.is_ascii_digit())
        .map(|c| u32::from(c - b'0'))
        .fold((0usize, 0u32), |(i, sum), d| {
            let d = if i % 2 == 1 { d * 2 } else { d };
            (i + 1, sum + if d > 9 { d - 9 } else { d })
        });
    (13..=19).contains(&count) && sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Wanted = Wanted {
        card: true,
        ssn: true,
        phone: true,
    };

    fn found(text: &str) -> Vec<(&str, Kind)> {
        let mut out = Vec::new();
        find(text.as_bytes(), ALL, |r, k| out.push((&text[r], k)));
        out
    }

    #[test]
    fn numbers_are_told_apart() {
        use Kind::*;
        assert_eq!(
            found("card 4111 1111 1111 1111."),
            [("4111 1111 1111 1111", Card)]
        );
        assert_eq!(
            found("4111-1111-1111-1111"),
            [("4111-1111-1111-1111", Card)]
        );
        assert_eq!(found("4111111111111111"), [("4111111111111111", Card)]);
        // Luhn fails and 16 digits are too many for a phone number.
        assert_eq!(found("4111 1111 1111 1112"), []);
        assert_eq!(found("ssn 078-05-1120, ok"), [("078-05-1120", Ssn)]);
        assert_eq!(found("+44 20 7946 0958"), [("+44 20 7946 0958", Phone)]);
        assert_eq!(found("+(415) 555-0123"), [("+(415) 555-0123", Phone)]);
        // A country code before a parenthesis is a number of its own (and too short).
        assert_eq!(found("+1 (415) 555-0123"), [("(415) 555-0123", Phone)]);
        assert_eq!(found("(415) 555 0123"), [("(415) 555 0123", Phone)]);
        assert_eq!(
            found("call 415.555.0123 or 650 555 0199"),
            [("415.555.0123", Phone), ("650 555 0199", Phone)]
        );
        assert_eq!(found("4155550123"), [("4155550123", Phone)]);
    }

    #[test]
    fn what_is_not_a_number_stays() {
        for text in [
            "order 42",
            "total 1234.50",
            "id4155550123",
            "4155550123abc",
            "a_4155550123",
            "1 2 3 4 5 6 7 8 9 10",
            "2026-12-03 15:06:06.407537+00",
            "03.12.2026 15 04 05",
            "12345678",
            "(415 555 0123",
        ] {
            let hits = found(text);
            assert!(
                hits.iter().all(|(t, _)| !t.contains('(')),
                "{text}: {hits:?}"
            );
            if text != "(415 555 0123" {
                assert_eq!(hits, [], "{text}");
            }
        }
        // The unclosed parenthesis is left out of the phone number.
        assert_eq!(found("(415 555 0123"), [("415 555 0123", Kind::Phone)]);
    }

    #[test]
    fn what_follows_a_date_is_read_on_its_own() {
        assert_eq!(
            found("2026-12-03 415 555 0123"),
            [("415 555 0123", Kind::Phone)]
        );
        assert_eq!(found("on 2026-12-031"), []);
    }

    #[test]
    fn kinds_not_wanted_are_not_reported() {
        let phone_only = Wanted {
            phone: true,
            ..Wanted::default()
        };
        let mut out = Vec::new();
        find(b"078-05-1120 4111 1111 1111 1111", phone_only, |r, k| {
            out.push((r, k))
        });
        // The SSN has the digits of a phone number; the card has too many.
        assert_eq!(out, [(0..11, Kind::Phone)]);
        assert_eq!(
            found("078-05-1120 4111 1111 1111 1111"),
            [
                ("078-05-1120", Kind::Ssn),
                ("4111 1111 1111 1111", Kind::Card)
            ]
        );
        assert_eq!(
            found("415 555 0123 650 555 0199"),
            [("415 555 0123", Kind::Phone), ("650 555 0199", Kind::Phone)]
        );
        assert_eq!(
            found("tel 0 800 11 22 33 44."),
            [("0 800 11 22 33 44", Kind::Phone)]
        );
    }

    proptest::proptest! {
        #[test]
        fn a_card_in_any_text_is_found(
            before in "[a-z ,.:;]{0,12}",
            after in "[a-z ,.:;]{0,12}",
            body in "[0-9]{15}",
            separator in "[ -]?",
        ) {
            // Complete the body with the check digit that makes it Luhn-valid.
            let check = (0..10u8)
                .find(|d| luhn(format!("{body}{d}").as_bytes()))
                .unwrap_or(0);
            let digits = format!("{body}{check}");
            let card = digits
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(&separator);
            let before = if before.is_empty() || before.ends_with(' ') { before } else { before + " " };
            let after = if after.is_empty() || after.starts_with(' ') { after } else { format!(" {after}") };
            let text = format!("{before}{card}{after}");
            let hits = found(&text);
            proptest::prop_assert_eq!(hits, vec![(card.as_str(), Kind::Card)]);
        }

        #[test]
        fn ranges_are_in_order_and_inside_the_text(text in "[0-9 .()+-]{0,40}|\\PC{0,40}") {
            let mut last = 0;
            find(text.as_bytes(), ALL, |r, _| {
                assert!(r.start >= last && r.start < r.end && r.end <= text.len());
                assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
                last = r.end;
            });
        }
    }
}
