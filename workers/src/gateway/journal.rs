//! The gateway's memory across restarts: an append-only file of JSON lines, one per
//! charge made, each written whole before the charge is answered.
//!
//! A line goes to the kernel in one `write_all` with nothing buffered in the process,
//! so a SIGKILL after an answer never loses the charge or its key (the page cache
//! outlives the process; only a machine crash could, and a simulator need not survive
//! one). Opening reads every line, drops the records older than the key retention,
//! and rewrites the file with the rest (a temporary file renamed over it); a last line
//! cut short by a kill mid-write is skipped with a warning. A lock file beside the
//! journal keeps a second gateway off the same state.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::answer::Answer;
use super::params::ChargeParams;

/// A charge's outcome, as Stripe's charge object names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChargeStatus {
    Succeeded,
    Failed,
}

/// One line of the journal: a charge made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The request's idempotency key, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub charge_id: String,
    pub status: ChargeStatus,
    /// The charge was made but its answer was dropped (a simulated 502).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost_answer: bool,
    pub params: ChargeParams,
    /// What the request was, or would have been, answered: replayed for its key.
    pub answer: Answer,
}

/// The earliest time still within `retention` of `now`; `None` when the retention
/// reaches back past any representable time.
pub fn cutoff(now: OffsetDateTime, retention: Duration) -> Option<OffsetDateTime> {
    time::Duration::try_from(retention).ok().and_then(|retention| now.checked_sub(retention))
}

/// The journal file, open for appending.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// The file's length after the last whole line, to cut a failed append back to.
    len: u64,
    /// Held for the process's life; the kernel releases it when the process dies.
    _lock: File,
}

impl Journal {
    /// Opens the journal at `path` (created if absent), returning the records made
    /// within `retention` of `now`, oldest first; the file is rewritten to hold only them.
    pub fn open(path: &Path, retention: Duration, now: OffsetDateTime) -> anyhow::Result<(Self, Vec<Record>)> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| format!("creating the state directory {}", dir.display()))?;
        }
        let lock = lock_beside(path)?;
        let data = match fs::read(path) {
            Ok(data) => data,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error).with_context(|| format!("reading the journal {}", path.display())),
        };
        let loaded = parse(&data).with_context(|| format!("reading the journal {}", path.display()))?;
        if let Some(line) = loaded.torn_line {
            tracing::warn!(path = %path.display(), line, "skipping the journal's last line, cut short by a stop mid-write");
        }
        let cutoff = cutoff(now, retention);
        let total = loaded.records.len();
        let records: Vec<Record> =
            loaded.records.into_iter().filter(|record| cutoff.is_none_or(|cutoff| record.at >= cutoff)).collect();
        rewrite(path, &records)?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening the journal {} for appending", path.display()))?;
        let len = file.metadata().with_context(|| format!("reading the size of {}", path.display()))?.len();
        tracing::info!(path = %path.display(), kept = records.len(), dropped = total - records.len(), "journal loaded");
        Ok((Self { path: path.to_owned(), file, len, _lock: lock }, records))
    }

    /// Writes `record` as one line, whole, before returning.
    pub fn append(&mut self, record: &Record) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(record).context("encoding a journal record")?;
        line.push(b'\n');
        if let Err(error) = self.file.write_all(&line) {
            // A part written (a full disk) would glue the next line to it.
            let _ = self.file.set_len(self.len);
            return Err(error).with_context(|| format!("appending to the journal {}", self.path.display()));
        }
        self.len += line.len() as u64;
        Ok(())
    }
}

struct Loaded {
    records: Vec<Record>,
    /// The number of the last line when it was cut short and skipped.
    torn_line: Option<usize>,
}

/// Reads the records of a journal's bytes; only a last line without its newline may
/// fail to parse.
fn parse(data: &[u8]) -> anyhow::Result<Loaded> {
    let mut loaded = Loaded { records: Vec::new(), torn_line: None };
    for (index, line) in data.split_inclusive(|byte| *byte == b'\n').enumerate() {
        let complete = line.ends_with(b"\n");
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(text) {
            Ok(record) => loaded.records.push(record),
            Err(_) if !complete => loaded.torn_line = Some(index + 1),
            Err(error) => bail!("line {} is not a charge record: {error}", index + 1),
        }
    }
    Ok(loaded)
}

/// Replaces the file at `path` with `records`, through a temporary file renamed over it.
fn rewrite(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    let temporary = sibling(path, "compacting");
    let write = || -> anyhow::Result<()> {
        let mut out = BufWriter::new(File::create(&temporary)?);
        for record in records {
            serde_json::to_writer(&mut out, record)?;
            out.write_all(b"\n")?;
        }
        // The rename must not replace the journal with a file still being written.
        out.into_inner().map_err(|error| error.into_error())?.sync_all()?;
        fs::rename(&temporary, path)?;
        Ok(())
    };
    write().with_context(|| format!("compacting the journal {} through {}", path.display(), temporary.display()))
}

/// Takes the lock file beside `path`, refusing a state another gateway holds.
fn lock_beside(path: &Path) -> anyhow::Result<File> {
    let lock_path = sibling(path, "lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening the lock file {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => {
            bail!("another jetway-gateway uses the state {} (it holds {})", path.display(), lock_path.display())
        }
        Err(TryLockError::Error(error)) => Err(error).with_context(|| format!("locking {}", lock_path.display())),
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, at: OffsetDateTime) -> Record {
        let params = ChargeParams::parse(format!("amount=100&currency=eur&metadata[order]={key}").as_bytes()).unwrap();
        let charge_id = format!("ch_{key}");
        Record {
            at,
            key: Some(key.to_owned()),
            answer: Answer::charged(&charge_id, &params, at),
            charge_id,
            status: ChargeStatus::Succeeded,
            lost_answer: false,
            params,
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_reopened_journal_holds_the_records_appended_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/journal.jsonl");
        let (mut journal, records) = Journal::open(&path, DAY, now()).unwrap();
        assert!(records.is_empty(), "a new journal is empty");
        journal.append(&record("a", now())).unwrap();
        journal.append(&record("b", now())).unwrap();
        drop(journal);

        let (_, records) = Journal::open(&path, DAY, now()).unwrap();
        assert_eq!(records, [record("a", now()), record("b", now())]);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let whole = serde_json::to_string(&record("a", now())).unwrap();
        fs::write(&path, format!("{whole}\n{}", &whole[..whole.len() / 2])).unwrap();

        let (mut journal, records) = Journal::open(&path, DAY, now()).unwrap();
        assert_eq!(records, [record("a", now())]);
        journal.append(&record("b", now())).unwrap();
        drop(journal);
        let (_, records) = Journal::open(&path, DAY, now()).unwrap();
        assert_eq!(records.len(), 2, "the line after the torn one reads whole");
    }

    #[test]
    fn a_broken_line_before_the_last_fails_the_start_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let whole = serde_json::to_string(&record("a", now())).unwrap();
        fs::write(&path, format!("{whole}\nnot json\n{whole}\n")).unwrap();

        let error = format!("{:#}", Journal::open(&path, DAY, now()).err().unwrap());
        assert!(error.contains("line 2 is not a charge record"), "{error}");
    }

    #[test]
    fn records_older_than_the_retention_are_dropped_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (mut journal, _) = Journal::open(&path, DAY, now()).unwrap();
        journal.append(&record("old", now() - DAY * 2)).unwrap();
        journal.append(&record("new", now() - DAY / 2)).unwrap();
        drop(journal);

        let (_, records) = Journal::open(&path, DAY, now()).unwrap();
        assert_eq!(records, [record("new", now() - DAY / 2)]);
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 1, "the file was rewritten");
    }

    #[test]
    fn a_second_gateway_on_the_same_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let _first = Journal::open(&path, DAY, now()).unwrap();
        let error = format!("{:#}", Journal::open(&path, DAY, now()).err().unwrap());
        assert!(error.contains("another jetway-gateway uses the state"), "{error}");
    }

    #[test]
    fn a_retention_longer_than_time_keeps_everything() {
        assert_eq!(cutoff(now(), Duration::MAX), None);
        assert_eq!(cutoff(now(), DAY), Some(now() - DAY));
    }
}
