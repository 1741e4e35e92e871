//! One read of the committed audit log, shared by all its readers: every sink and the rule
//! engine. They are woken by the same commit and usually read from the same place, so the
//! chunks read last are kept for a moment: a record is read and decoded once, not once per
//! reader, and its exported JSON is encoded once for every sink that sends it. A reader
//! elsewhere in the log (a sink added `from: start`, one retrying after an outage) reads its
//! own chunk, which is kept too.
//!
//! Only non-empty chunks are kept, and a chunk never reaches past the signed head
//! ([`read_chunk`]): the records in it never change, so a kept chunk stays true. A chunk kept
//! from an earlier read may end before today's head; its reader then reads on from its end.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use super::export::{ExportLine, read_chunk};
use crate::store::{Database, StoreError};

/// Records read per chunk.
pub const CHUNK: usize = 256;

/// Chunks kept (each at most [`CHUNK`] records and their encodings).
const KEPT: usize = 8;

/// An exported line and its JSON, encoded on first use.
#[derive(Debug)]
pub struct Line {
    pub line: ExportLine,
    json: OnceLock<String>,
}

impl Line {
    pub fn new(line: ExportLine) -> Self {
        Self {
            line,
            json: OnceLock::new(),
        }
    }

    /// [`ExportLine::to_json`], computed once for all its readers.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| self.line.to_json())
    }
}

/// Lines from one position on, and the position after them.
#[derive(Debug, Default)]
pub struct Chunk {
    pub lines: Vec<Line>,
    pub next: u64,
}

/// The shared reader; cheap to clone.
#[derive(Clone)]
pub struct Tail {
    db: Database,
    kept: Arc<Mutex<VecDeque<(u64, Arc<Chunk>)>>>,
    /// One store read at a time, so readers asking for the same position wait for the first
    /// one's read instead of repeating it.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl Tail {
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            kept: Arc::default(),
            reading: Arc::default(),
        }
    }

    /// The committed lines from `from` on (at most [`CHUNK`] records, and the checkpoint when
    /// they reach the signed head); empty when there is nothing new.
    pub async fn read(&self, from: u64) -> Result<Arc<Chunk>, StoreError> {
        if let Some(chunk) = self.kept_at(from) {
            return Ok(chunk);
        }
        let _one = self.reading.lock().await;
        if let Some(chunk) = self.kept_at(from) {
            return Ok(chunk);
        }
        let db = self.db.clone();
        let read = tokio::task::spawn_blocking(move || read_chunk(&db, from, CHUNK))
            .await
            .map_err(|_| StoreError::Io("the audit read task failed".into()))??;
        let chunk = Arc::new(Chunk {
            lines: read.lines.into_iter().map(Line::new).collect(),
            next: read.next,
        });
        if !chunk.lines.is_empty()
            && let Ok(mut kept) = self.kept.lock()
        {
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back((from, Arc::clone(&chunk)));
        }
        Ok(chunk)
    }

    fn kept_at(&self, from: u64) -> Option<Arc<Chunk>> {
        let kept = self.kept.lock().ok()?;
        kept.iter()
            .rev()
            .find(|(at, _)| *at == from)
            .map(|(_, chunk)| Arc::clone(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEntry, AuditLog, Decision};
    use crate::store::DataDir;

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            run_id: None,
            actor: "test".into(),
            action: format!("test.{i}"),
            target: None,
            credential: None,
            decision: Decision::Allowed,
            outcome: "ok".into(),
            duration_us: 0,
            detail: None,
        }
    }

    #[tokio::test]
    async fn readers_at_one_place_share_one_read_and_one_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::init(&dir.path().join("data")).unwrap();
        let audit = AuditLog::open(&data.db, data.server_key.clone()).unwrap();
        for i in 0..3 {
            audit.append(entry(i)).await.unwrap();
        }
        let tail = Tail::new(&data.db);
        let first = tail.read(0).await.unwrap();
        let second = tail.read(0).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second), "the second reader re-read");
        // Three records and the checkpoint that covers them.
        assert_eq!(first.lines.len(), 4);
        assert_eq!(first.next, 3);
        let json = first.lines[0].json();
        assert!(std::ptr::eq(json, second.lines[0].json()));
        assert_eq!(json, first.lines[0].line.to_json());
    }

    #[tokio::test]
    async fn a_kept_chunk_never_hides_records_committed_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::init(&dir.path().join("data")).unwrap();
        let audit = AuditLog::open(&data.db, data.server_key.clone()).unwrap();
        let tail = Tail::new(&data.db);
        assert!(tail.read(0).await.unwrap().lines.is_empty());
        audit.append(entry(0)).await.unwrap();
        // The empty read was not kept: the new record is seen.
        let chunk = tail.read(0).await.unwrap();
        assert_eq!(chunk.next, 1);
        audit.append(entry(1)).await.unwrap();
        // A reader at 0 gets the kept chunk (ending at 1), then reads on from there.
        let again = tail.read(0).await.unwrap();
        assert_eq!(again.next, 1);
        let on = tail.read(again.next).await.unwrap();
        assert_eq!(on.next, 2);
        let actions: Vec<_> = on
            .lines
            .iter()
            .filter_map(|l| l.line.as_record())
            .map(|r| r.entry.action.clone())
            .collect();
        assert_eq!(actions, ["test.1"]);
    }
}
