//! The append-only, hash-chained audit file.
//!
//! Each line is a JSON object `{"seq":N,"time":"…","prev":"<hash of line N-1>","event":{…},
//! "hash":"<sha256>"}` where the hash covers every byte of the line before `,"hash"` plus the
//! closing brace. Editing a line breaks its own hash; deleting or reordering lines breaks the
//! `prev` link or the sequence; cutting lines off the end is caught by the head file
//! (`<audit>.head`), rewritten after every batch. An attacker who can rewrite the whole file and
//! the head can forge a new chain: ship the head to somewhere the workload cannot write to stop
//! that (noted for the store issue).

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use std::os::unix::fs::OpenOptionsExt;

use sha2::{Digest, Sha256};

use super::Event;

/// Hash that the first record points back to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write audit log {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another enforcer is writing the audit log {path}; give this one its own --state directory"
    )]
    Busy { path: PathBuf },
    #[error("cannot encode audit event: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The appending end of the chain.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    seq: u64,
    prev: String,
    appended: u64,
    /// The seq of the last line in the file.
    written: u64,
    /// Whole lines chained but not yet written: appends that may wait go out with the next
    /// one that may not, or at the next sync, in one write.
    pending: Vec<u8>,
}

/// Lines held back beyond this are written at once: a bound on what a crash of enforcer
/// itself could take, and on memory.
const PENDING_MAX: usize = 64 << 10;

/// The last link of the chain: `(seq, hash)`.
pub type Link = (u64, String);

/// Syncs a chain's file from another thread than the one appending, and records its head.
pub struct SyncHandle {
    path: PathBuf,
    file: File,
}

impl SyncHandle {
    /// Makes everything appended so far durable, then records `link` as the head.
    pub fn sync(&self, link: &Link) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|source| AuditError::Write {
            path: self.path.clone(),
            source,
        })?;
        write_head(&self.path, link)
    }
}

fn write_head(path: &Path, (seq, prev): &Link) -> Result<(), AuditError> {
    let write_err = |source| AuditError::Write {
        path: path.to_owned(),
        source,
    };
    let head = head_path(path);
    let tmp = head.with_extension("head.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut head_file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_err)?;
    head_file
        .write_all(format!("{seq} {prev}\n").as_bytes())
        .map_err(write_err)?;
    std::fs::rename(&tmp, &head).map_err(write_err)?;
    Ok(())
}

impl AuditLog {
    /// Opens (creating if needed, mode 0600) and continues the chain where it ends.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let open_err = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        // O_NOFOLLOW: a symlink planted in the state directory must not make root append to
        // some other file.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(open_err)?;
        // One writer per chain: a second enforcer appending to the same file would fork it.
        // The lock lives as long as the file handle.
        // SAFETY: a valid, open fd.
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            return Err(AuditError::Busy {
                path: path.to_owned(),
            });
        }
        // Read where the chain ends only now that nobody else can extend it.
        let (seq, prev) = last_link(path).map_err(open_err)?;
        let mut log = AuditLog {
            path: path.to_owned(),
            file,
            seq,
            prev,
            appended: 0,
            pending: Vec::with_capacity(PENDING_MAX),
            written: seq,
        };
        // A head exists from the start, so that a missing head always means tampering.
        if !head_path(path).exists() {
            log.sync()?;
        }
        Ok(log)
    }

    /// Chains `event` and writes it, with any lines held back before it, to the file.
    pub fn append(&mut self, event: &Event) -> Result<(), AuditError> {
        self.append_at(event, time::OffsetDateTime::now_utc(), true)
    }

    /// Chains `event` stamped `at`. With `now`, the line (and every line held back before
    /// it) is in the file when this returns; otherwise it may wait for the next such append
    /// or [`AuditLog::flush`], which the recorder runs at least every 50 ms. The chain's
    /// order is the order of the calls either way.
    pub fn append_at(
        &mut self,
        event: &Event,
        at: time::OffsetDateTime,
        now: bool,
    ) -> Result<(), AuditError> {
        let seq = self.seq + 1;
        let start = self.pending.len();
        let built = (|| -> Result<(), AuditError> {
            let line = &mut self.pending;
            line.extend_from_slice(b"{\"seq\":");
            line.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
            line.extend_from_slice(b",\"time\":\"");
            super::json::timestamp(at, 9, line);
            line.extend_from_slice(b"\",\"prev\":\"");
            line.extend_from_slice(self.prev.as_bytes());
            line.extend_from_slice(b"\",\"event\":");
            serde_json::to_writer(&mut *line, event)?;
            Ok(())
        })();
        if let Err(e) = built {
            self.pending.truncate(start);
            return Err(e);
        }
        let hash = chain_hash_hex(&self.pending[start..]);
        self.pending.extend_from_slice(b",\"hash\":\"");
        self.pending.extend_from_slice(&hash);
        self.pending.extend_from_slice(b"\"}\n");
        self.seq = seq;
        self.prev.clear();
        // Hex digits are ASCII.
        self.prev.extend(hash.iter().map(|&b| char::from(b)));
        self.appended += 1;
        if now || self.pending.len() >= PENDING_MAX {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the lines held back.
    pub fn flush(&mut self) -> Result<(), AuditError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.pending);
        // Written or not, the lines are not written twice: a failed write fails the recorder
        // for good (it refuses everything from then on).
        self.pending.clear();
        written.map_err(|source| AuditError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.written = self.seq;
        Ok(())
    }

    /// The seq of the last record in the file (those held back are not).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The last link written to the file (lines held back are not in it yet: call
    /// [`AuditLog::flush`] first to include them).
    pub fn link(&self) -> Link {
        debug_assert!(self.pending.is_empty(), "link() with lines held back");
        (self.seq, self.prev.clone())
    }

    /// Records appended since the log was opened.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    pub fn sync_handle(&self) -> Result<SyncHandle, AuditError> {
        Ok(SyncHandle {
            path: self.path.clone(),
            file: self.file.try_clone().map_err(|source| AuditError::Write {
                path: self.path.clone(),
                source,
            })?,
        })
    }

    /// Makes what was appended durable and records the chain head.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.flush()?;
        self.sync_handle()?.sync(&self.link())
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// `(seq, hash)` of the last readable record, or the genesis link for an empty log.
fn last_link(path: &Path) -> std::io::Result<(u64, String)> {
    let (mut seq, mut prev) = (0, GENESIS.to_owned());
    for line in BufReader::new(File::open(path)?).lines() {
        if let Some(record) = Record::parse(&line?) {
            seq = record.seq;
            prev = record.hash;
        }
    }
    Ok((seq, prev))
}

/// `(seq, hash)` from the head file, if there is a readable one.
fn read_head(path: &Path) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(head_path(path)).ok()?;
    let mut parts = text.split_whitespace();
    let seq = parts.next()?.parse().ok()?;
    let hash = parts.next()?.to_owned();
    Some((seq, hash))
}

fn head_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

fn chain_hash(body: &str) -> String {
    let hex = chain_hash_hex(body.as_bytes());
    hex.iter().map(|&b| char::from(b)).collect()
}

/// The SHA-256 of `body` and a closing brace, as lowercase hex.
fn chain_hash_hex(body: &[u8]) -> [u8; 64] {
    let mut hasher = Sha256::new();
    hasher.update(body);
    hasher.update(b"}");
    let mut hex = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(hasher.finalize(), &mut hex);
    hex
}

struct Record {
    seq: u64,
    prev: String,
    hash: String,
    body: String,
}

impl Record {
    fn parse(line: &str) -> Option<Record> {
        const MARK: &str = ",\"hash\":\"";
        let at = line.rfind(MARK)?;
        let body = &line[..at];
        let hash = line[at + MARK.len()..].strip_suffix("\"}")?.to_owned();
        #[derive(serde::Deserialize)]
        struct Head {
            seq: u64,
            prev: String,
        }
        let head: Head = serde_json::from_str(&format!("{body}}}")).ok()?;
        Some(Record {
            seq: head.seq,
            prev: head.prev,
            hash,
            body: body.to_owned(),
        })
    }
}

/// The outcome of checking a chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact { records: u64, head: String },
    Broken { line: usize, problem: String },
}

/// Checks every link of the chain in `path` (and its head file, if present) and reports the
/// first broken one.
pub fn verify(path: &Path) -> Result<Verdict, AuditError> {
    let open_err = |source| AuditError::Open {
        path: path.to_owned(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(open_err)?);
    let (mut seq, mut prev) = (0u64, GENESIS.to_owned());
    let head = read_head(path);
    // The hash of the record the head file names, once the chain reaches it.
    let mut at_head: Option<String> = head
        .as_ref()
        .filter(|(s, _)| *s == 0)
        .map(|_| GENESIS.to_owned());
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(open_err)?;
        let broken = |problem: String| {
            Ok(Verdict::Broken {
                line: number,
                problem,
            })
        };
        let Some(record) = Record::parse(&line) else {
            return broken("not an audit record (edited or corrupted)".into());
        };
        if chain_hash(&record.body) != record.hash {
            return broken(format!(
                "record {} was edited: its hash does not match",
                record.seq
            ));
        }
        if record.seq != seq + 1 {
            return broken(format!(
                "record {} follows record {seq}: records were deleted or reordered",
                record.seq
            ));
        }
        if record.prev != prev {
            return broken(format!(
                "record {} does not link to the record before it: records were deleted or reordered",
                record.seq
            ));
        }
        seq = record.seq;
        prev = record.hash;
        if head.as_ref().is_some_and(|(s, _)| *s == seq) {
            at_head = Some(prev.clone());
        }
    }
    // The head is written when the log is created and rewritten after records are synced, so
    // it may lag behind the file after a crash (more records than it names: fine) but never
    // be missing or run ahead of it (records cut off).
    let Some((head_seq, head_hash)) = head else {
        return Ok(Verdict::Broken {
            line: usize::try_from(seq).unwrap_or(usize::MAX),
            problem: format!(
                "{} is missing or unreadable: the end of the chain cannot be checked (deleted with cut-off records?)",
                head_path(path).display()
            ),
        });
    };
    {
        let line = usize::try_from(seq).unwrap_or(usize::MAX);
        match at_head {
            None => {
                return Ok(Verdict::Broken {
                    line,
                    problem: format!(
                        "the chain ends at record {seq} but {} says it reached record {head_seq}: records were cut off the end",
                        head_path(path).display()
                    ),
                });
            }
            Some(hash) if hash != head_hash => {
                return Ok(Verdict::Broken {
                    line: usize::try_from(head_seq).unwrap_or(usize::MAX),
                    problem: format!(
                        "record {head_seq} is not the one {} recorded: the chain was rewritten",
                        head_path(path).display()
                    ),
                });
            }
            Some(_) => {}
        }
    }
    Ok(Verdict::Intact {
        records: seq,
        head: prev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ConnectionClosed, Event};

    fn event(n: u64) -> Event {
        Event::ConnectionClosed(ConnectionClosed {
            connection: n,
            workload: "w".into(),
            rule: Some("r".into()),
            bytes_to_upstream: n,
            bytes_to_client: 2 * n,
            duration_ms: 1,
            error: None,
        })
    }

    fn chain(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path).expect("open");
        for i in 1..=n {
            log.append(&event(i)).expect("append");
        }
        log.sync().expect("sync");
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").expect("write");
    }

    #[test]
    fn intact_chain_verifies_and_reopening_continues_it() {
        let (_dir, path) = chain(5);
        assert!(matches!(
            verify(&path).expect("verify"),
            Verdict::Intact { records: 5, .. }
        ));
        let mut log = AuditLog::open(&path).expect("reopen");
        assert_eq!(log.seq(), 5);
        log.append(&event(6)).expect("append");
        log.sync().expect("sync");
        assert!(matches!(
            verify(&path).expect("verify"),
            Verdict::Intact { records: 6, .. }
        ));
    }

    #[test]
    fn held_back_lines_go_out_in_order_with_the_next_written_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path).expect("open");
        log.append_at(&event(1), time::OffsetDateTime::now_utc(), false)
            .expect("append");
        log.append_at(&event(2), time::OffsetDateTime::now_utc(), false)
            .expect("append");
        assert!(lines(&path).is_empty(), "held back until written");
        log.append_at(&event(3), time::OffsetDateTime::now_utc(), true)
            .expect("append");
        let written = lines(&path);
        assert_eq!(written.len(), 3);
        for (n, line) in written.iter().enumerate() {
            assert!(line.starts_with(&format!("{{\"seq\":{},", n + 1)), "{line}");
        }
        log.append_at(&event(4), time::OffsetDateTime::now_utc(), false)
            .expect("append");
        log.sync().expect("sync writes what is held back first");
        assert_eq!(lines(&path).len(), 4);
        assert_eq!(
            verify(&path).expect("verify"),
            Verdict::Intact {
                records: 4,
                head: log.link().1
            }
        );
    }

    #[test]
    fn any_edit_is_detected() {
        let (_dir, path) = chain(5);
        let original = lines(&path);
        for i in 0..original.len() {
            let mut edited = original.clone();
            edited[i] = edited[i].replacen("\"bytes_to_upstream\":", "\"bytes_to_upstream\":1", 1);
            write(&path, &edited);
            let verdict = verify(&path).expect("verify");
            assert!(
                matches!(&verdict, Verdict::Broken { line, problem } if *line == i + 1 && problem.contains("edited")),
                "line {i}: {verdict:?}"
            );
        }
    }

    #[test]
    fn any_deletion_or_reorder_is_detected() {
        let (_dir, path) = chain(5);
        let original = lines(&path);
        for i in 0..original.len() {
            let mut deleted = original.clone();
            deleted.remove(i);
            write(&path, &deleted);
            assert!(
                matches!(verify(&path).expect("verify"), Verdict::Broken { .. }),
                "delete {i}"
            );
        }
        for i in 0..original.len() - 1 {
            let mut swapped = original.clone();
            swapped.swap(i, i + 1);
            write(&path, &swapped);
            assert!(
                matches!(verify(&path).expect("verify"), Verdict::Broken { line, .. } if line == i + 1),
                "swap {i}"
            );
        }
    }

    #[test]
    fn a_head_lagging_after_a_crash_is_fine_a_rewritten_one_is_not() {
        let (_dir, path) = chain(3);
        // Records appended after the last head update (enforcer killed before syncing).
        let mut log = AuditLog::open(&path).expect("reopen");
        log.append(&event(4)).expect("append");
        drop(log);
        assert!(matches!(
            verify(&path).expect("verify"),
            Verdict::Intact { records: 4, .. }
        ));
        // A head naming a record whose hash differs: the chain was rebuilt.
        std::fs::write(head_path(&path), format!("2 {GENESIS}\n")).expect("write head");
        assert!(matches!(
            verify(&path).expect("verify"),
            Verdict::Broken { line: 2, .. }
        ));
    }

    #[test]
    fn a_second_writer_is_refused() {
        let (_dir, path) = chain(1);
        let first = AuditLog::open(&path).expect("first writer");
        assert!(matches!(
            AuditLog::open(&path),
            Err(AuditError::Busy { .. })
        ));
        drop(first);
        assert_eq!(
            AuditLog::open(&path)
                .expect("after the first is gone")
                .seq(),
            1
        );
    }

    #[test]
    fn a_missing_head_is_tampering() {
        let (_dir, path) = chain(3);
        std::fs::remove_file(head_path(&path)).expect("rm head");
        assert!(matches!(
            verify(&path).expect("verify"),
            Verdict::Broken { .. }
        ));
    }

    #[test]
    fn garbage_lines_are_reported_not_panicked_on() {
        let (_dir, path) = chain(2);
        let mut l = lines(&path);
        l.push("{\"seq\":3,\"hash\":\"\u{1F600}".into());
        write(&path, &l);
        assert!(matches!(
            verify(&path).expect("verify"),
            Verdict::Broken { line: 3, .. }
        ));
    }
}
