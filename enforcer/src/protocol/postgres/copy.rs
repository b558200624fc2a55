//! Masking the rows of `COPY … TO STDOUT`. They travel as CopyData in PostgreSQL's text or
//! CSV format, with no column description: the session learns the columns from the catalog
//! ([`super::catalog`]) and this module cuts the stream into rows and fields, masks values
//! and writes them back in the same format. Written here because no crate parses COPY's
//! text format (backslash escapes, custom delimiter and NULL string) and the CSV dialect
//! must follow the statement's own QUOTE/ESCAPE options exactly.

/// How the rows are written, as the statement's options say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFormat {
    Text {
        delimiter: u8,
        null: String,
        header: bool,
    },
    Csv {
        delimiter: u8,
        null: String,
        quote: u8,
        escape: u8,
        header: bool,
    },
    /// Binary, or options enforcer cannot follow: such a COPY is refused, never passed
    /// unmasked.
    Unmaskable(String),
}

/// What to do with one value: `None` leaves it, `Some(None)` makes it NULL.
pub type Decision = Option<Option<String>>;

/// Masks a COPY stream fed in arbitrary pieces.
pub struct CopyMasker {
    format: CopyFormat,
    pending: Vec<u8>,
    skip_header: bool,
}

impl CopyMasker {
    pub fn new(format: CopyFormat) -> CopyMasker {
        let skip_header = matches!(
            format,
            CopyFormat::Text { header: true, .. } | CopyFormat::Csv { header: true, .. }
        );
        CopyMasker {
            format,
            pending: Vec::new(),
            skip_header,
        }
    }

    /// Masks every complete row in `data` (after what came before); a trailing partial row
    /// waits for the next piece.
    pub fn feed(&mut self, data: &[u8], mask: &mut impl FnMut(usize, &str) -> Decision) -> Vec<u8> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::with_capacity(self.pending.len());
        let mut start = 0;
        while let Some(end) = self.row_end(start) {
            let row = &self.pending[start..end];
            if self.skip_header {
                self.skip_header = false;
                out.extend_from_slice(row);
                out.push(b'\n');
            } else {
                self.mask_row(row, &mut out, mask);
            }
            start = end + 1;
        }
        self.pending.drain(..start);
        out
    }

    /// What is left when the COPY ends (a last row without a newline).
    pub fn finish(&mut self, mask: &mut impl FnMut(usize, &str) -> Decision) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        if !rest.is_empty() {
            self.mask_row(&rest, &mut out, mask);
            // mask_row ends rows with a newline this one did not have.
            out.pop();
        }
        out
    }

    /// Index of the newline ending the row that starts at `start`.
    fn row_end(&self, start: usize) -> Option<usize> {
        let bytes = self.pending.get(start..)?;
        match &self.format {
            // In text format a newline inside a value is written as `\n`.
            CopyFormat::Text { .. } | CopyFormat::Unmaskable(_) => {
                bytes.iter().position(|&b| b == b'\n').map(|i| start + i)
            }
            CopyFormat::Csv { quote, escape, .. } => {
                let mut quoted = false;
                let mut i = 0;
                while i < bytes.len() {
                    let b = bytes[i];
                    if quoted {
                        if b == *escape && bytes.get(i + 1) == Some(quote) && escape != quote {
                            i += 2;
                            continue;
                        }
                        if b == *quote {
                            if escape == quote && bytes.get(i + 1) == Some(quote) {
                                i += 2;
                                continue;
                            }
                            quoted = false;
                        }
                    } else if b == *quote {
                        quoted = true;
                    } else if b == b'\n' {
                        return Some(start + i);
                    }
                    i += 1;
                }
                None
            }
        }
    }

    fn mask_row(
        &self,
        row: &[u8],
        out: &mut Vec<u8>,
        mask: &mut impl FnMut(usize, &str) -> Decision,
    ) {
        match &self.format {
            CopyFormat::Text {
                delimiter, null, ..
            } => {
                for (i, raw) in split_text(row, *delimiter).into_iter().enumerate() {
                    if i > 0 {
                        out.push(*delimiter);
                    }
                    if raw == null.as_bytes() {
                        out.extend_from_slice(raw);
                        continue;
                    }
                    let value = unescape_text(raw);
                    match mask(i, &String::from_utf8_lossy(&value)) {
                        None => out.extend_from_slice(raw),
                        Some(None) => out.extend_from_slice(null.as_bytes()),
                        Some(Some(masked)) => escape_text(&masked, *delimiter, out),
                    }
                }
            }
            CopyFormat::Csv {
                delimiter,
                null,
                quote,
                escape,
                ..
            } => {
                for (i, field) in split_csv(row, *delimiter, *quote, *escape)
                    .into_iter()
                    .enumerate()
                {
                    if i > 0 {
                        out.push(*delimiter);
                    }
                    if !field.quoted && field.raw == null.as_bytes() {
                        out.extend_from_slice(field.raw);
                        continue;
                    }
                    match mask(i, &String::from_utf8_lossy(&field.value)) {
                        None => out.extend_from_slice(field.raw),
                        Some(None) => out.extend_from_slice(null.as_bytes()),
                        Some(Some(masked)) => quote_csv(&masked, *quote, *escape, out),
                    }
                }
            }
            // Never constructed for a running COPY; nothing passes.
            CopyFormat::Unmaskable(_) => {}
        }
        out.push(b'\n');
    }
}

/// Fields of a text-format row, still escaped. A backslash escapes the byte after it, so
/// an escaped delimiter does not split.
fn split_text(row: &[u8], delimiter: u8) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < row.len() {
        if row[i] == b'\\' {
            i += 2;
            continue;
        }
        if row[i] == delimiter {
            fields.push(&row[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    fields.push(&row[start.min(row.len())..]);
    fields
}

fn unescape_text(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 >= raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| char::from(*d).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    out
}

fn escape_text(value: &str, delimiter: u8, out: &mut Vec<u8>) {
    for &b in value.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b if b == delimiter => {
                out.push(b'\\');
                out.push(b);
            }
            b => out.push(b),
        }
    }
}

struct CsvField<'a> {
    raw: &'a [u8],
    quoted: bool,
    value: Vec<u8>,
}

fn split_csv(row: &[u8], delimiter: u8, quote: u8, escape: u8) -> Vec<CsvField<'_>> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut value = Vec::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut i = 0;
    while i < row.len() {
        let b = row[i];
        if in_quotes {
            if b == escape && escape != quote && row.get(i + 1) == Some(&quote) {
                value.push(quote);
                i += 2;
                continue;
            }
            if b == quote {
                if escape == quote && row.get(i + 1) == Some(&quote) {
                    value.push(quote);
                    i += 2;
                    continue;
                }
                in_quotes = false;
            } else {
                value.push(b);
            }
        } else if b == quote {
            in_quotes = true;
            quoted = true;
        } else if b == delimiter {
            fields.push(CsvField {
                raw: &row[start..i],
                quoted,
                value: std::mem::take(&mut value),
            });
            quoted = false;
            start = i + 1;
        } else {
            value.push(b);
        }
        i += 1;
    }
    fields.push(CsvField {
        raw: &row[start.min(row.len())..],
        quoted,
        value,
    });
    fields
}

fn quote_csv(value: &str, quote: u8, escape: u8, out: &mut Vec<u8>) {
    out.push(quote);
    for &b in value.as_bytes() {
        if b == quote || (b == escape && escape != quote) {
            out.push(escape);
        }
        out.push(b);
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> CopyFormat {
        CopyFormat::Text {
            delimiter: b'\t',
            null: "\\N".into(),
            header: false,
        }
    }

    fn csv(header: bool) -> CopyFormat {
        CopyFormat::Csv {
            delimiter: b',',
            null: String::new(),
            quote: b'"',
            escape: b'"',
            header,
        }
    }

    /// Masks column 1 and any value containing "secret".
    fn rule(i: usize, v: &str) -> Decision {
        if i == 1 {
            Some(Some("***".into()))
        } else if v.contains("secret") {
            Some(None)
        } else {
            None
        }
    }

    #[test]
    fn text_rows_are_masked_in_place() {
        let mut m = CopyMasker::new(text());
        let out = m.feed(b"1\tann@x.com\tok\\tfine\n2\t\\N\tmy\\nsecret\n", &mut rule);
        assert_eq!(out, b"1\t***\tok\\tfine\n2\t\\N\t\\N\n");
    }

    #[test]
    fn rows_split_across_pieces_are_joined() {
        let mut m = CopyMasker::new(text());
        let mut out = m.feed(b"1\tab", &mut rule);
        assert!(out.is_empty());
        out.extend(m.feed(b"c\tz\n2\tq", &mut rule));
        out.extend(m.finish(&mut rule));
        assert_eq!(out, b"1\t***\tz\n2\t***");
    }

    #[test]
    fn escaped_values_are_read_as_the_server_meant() {
        assert_eq!(unescape_text(b"a\\\\b\\x41\\101\\tz"), b"a\\bAA\tz");
        let mut out = Vec::new();
        escape_text("a\tb\\c\nd", b'\t', &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\nd");
        assert_eq!(split_text(b"a\\\tb\tc", b'\t'), vec![&b"a\\\tb"[..], b"c"]);
    }

    #[test]
    fn csv_quotes_newlines_and_header() {
        let mut m = CopyMasker::new(csv(true));
        let out = m.feed(
            b"id,email,note\n1,\"a,b\",\"multi\nline \"\"secret\"\"\"\n2,,\"\"\n",
            &mut rule,
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "id,email,note\n1,\"***\",\n2,,\"\"\n"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_safe(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            for format in [text(), csv(false)] {
                let mut m = CopyMasker::new(format);
                let _ = m.feed(&bytes, &mut rule);
                let _ = m.finish(&mut rule);
            }
        }

        #[test]
        fn unmasked_text_rows_pass_unchanged(rows in proptest::collection::vec("[a-z0-9 ,\\\\\\t]{0,20}", 0..5)) {
            let data: String = rows.iter().map(|r| format!("{r}\n")).collect();
            let mut m = CopyMasker::new(text());
            let out = m.feed(data.as_bytes(), &mut |_, _| None);
            proptest::prop_assert_eq!(out, data.into_bytes());
        }
    }
}
