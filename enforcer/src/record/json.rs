//! The few pieces of JSON the recorder writes itself, on every record: UTC timestamps and
//! string literals. `time`'s formatter and `serde_json::to_writer` cost a few hundred
//! instructions per call, and a statement's records make some thirty such calls.

/// `2026-12-07T13:51:38.633709Z` (`digits` fraction digits, 1 to 9) into `out`, unquoted.
pub fn timestamp(at: time::OffsetDateTime, digits: usize, out: &mut Vec<u8>) {
    let digits = digits.clamp(1, 9);
    let mut buf = *b"0000-00-00T00:00:00.000000000Z";
    // Years outside 0..=9999 are not RFC 3339; the clock would have to be far off.
    let year = at.year().clamp(0, 9999) as u32;
    put(&mut buf[0..4], year);
    put(&mut buf[5..7], u32::from(u8::from(at.month())));
    put(&mut buf[8..10], u32::from(at.day()));
    put(&mut buf[11..13], u32::from(at.hour()));
    put(&mut buf[14..16], u32::from(at.minute()));
    put(&mut buf[17..19], u32::from(at.second()));
    put(&mut buf[20..29], at.nanosecond());
    out.extend_from_slice(&buf[..20 + digits]);
    out.push(b'Z');
}

/// `value`'s last `field.len()` decimal digits, zero-padded.
fn put(field: &mut [u8], mut value: u32) {
    for d in field.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `value` as a JSON string literal, quotes included.
pub fn string(value: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    contents(value, out);
    out.push(b'"');
}

/// `value` escaped for inside a JSON string literal.
pub fn contents(value: &str, out: &mut Vec<u8>) {
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    // Something to escape: serde_json knows JSON's rules; its quotes are dropped.
    let start = out.len();
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    out.pop();
    out.remove(start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = time::macros::datetime!(2026-01-02 03:04:05.006007008 UTC);
        let mut out = Vec::new();
        timestamp(at, 6, &mut out);
        assert_eq!(out, b"2026-01-02T03:04:05.006007Z");
        out.clear();
        timestamp(at, 9, &mut out);
        assert_eq!(out, b"2026-01-02T03:04:05.006007008Z");
        let text = String::from_utf8(out).expect("ascii");
        let parsed =
            time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                .expect("parses as RFC 3339");
        assert_eq!(parsed, at);
    }

    proptest! {
        #[test]
        fn strings_are_what_serde_json_writes(value in any::<String>()) {
            let mut out = Vec::new();
            string(&value, &mut out);
            prop_assert_eq!(&out, &serde_json::to_vec(&value).expect("serializes"));
            let back: String = serde_json::from_slice(&out).expect("parses");
            prop_assert_eq!(back, value);
        }

        #[test]
        fn any_instant_round_trips(secs in 0i64..253_402_300_799, nanos in 0u32..1_000_000_000) {
            let at = time::OffsetDateTime::from_unix_timestamp(secs)
                .expect("in range")
                .replace_nanosecond(nanos)
                .expect("valid");
            let mut out = Vec::new();
            timestamp(at, 9, &mut out);
            let text = String::from_utf8(out).expect("ascii");
            let parsed = time::OffsetDateTime::parse(
                &text,
                &time::format_description::well_known::Rfc3339,
            )
            .expect("parses");
            prop_assert_eq!(parsed, at);
        }
    }
}
