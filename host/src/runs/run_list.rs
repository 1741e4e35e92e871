//! Listing runs: the filter, the page cursor, and the two ways to answer — PostgreSQL's
//! typed-column indexes, or a walk of the time index a page at a time (sled).

use serde::{Deserialize, Serialize};

use super::{MAX_LIST_RUNS, RunHead, RunRecord, RunStore, corrupt, decode, time_key};
use crate::runs::{RunState, RunsError, is_valid_name};
use crate::store::{ColumnValue, Scan, Select};

/// Index entries read per round trip while listing.
const LIST_PAGE: usize = 256;

/// Which runs [`RunStore::list`] returns; `None` fields match every run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFilter {
    pub process_id: Option<String>,
    pub actor: Option<String>,
    pub state: Option<RunState>,
    /// Only runs created at or after this time (Unix ms). Bounds the walk: the time index
    /// is read from `before` (or now) down to here and no further.
    #[serde(default)]
    pub since_ms: Option<u64>,
    /// Only runs older than this one (the last run of the previous page).
    #[serde(default)]
    pub before: Option<RunCursor>,
    /// At most this many runs, capped at (and defaulting to) [`MAX_LIST_RUNS`].
    pub limit: Option<usize>,
}

/// Where a page of [`RunStore::list`] ends: a run's creation time and id, written
/// `created_ms:id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCursor {
    pub created_ms: u64,
    pub id: String,
}

impl RunCursor {
    /// The cursor after `run`.
    pub fn after(run: &RunRecord) -> Self {
        Self {
            created_ms: run.created_ms,
            id: run.id.clone(),
        }
    }
}

impl std::fmt::Display for RunCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.created_ms, self.id)
    }
}

impl std::str::FromStr for RunCursor {
    type Err = RunsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || super::invalid("before", "expected created_ms:run-id");
        let (ms, id) = s.split_once(':').ok_or_else(bad)?;
        let created_ms = ms.parse().map_err(|_| bad())?;
        if !is_valid_name(id) {
            return Err(bad());
        }
        Ok(Self {
            created_ms,
            id: id.to_string(),
        })
    }
}

impl RunFilter {
    fn matches(&self, head: &RunHead) -> bool {
        self.process_id
            .as_ref()
            .is_none_or(|p| *p == head.process_id)
            && self.actor.as_ref().is_none_or(|a| *a == head.actor)
            && self.state.is_none_or(|s| s == head.state)
    }
}

impl RunStore {
    /// Runs matching `filter`, newest first (ties in `created_ms` by id, descending), at most
    /// [`MAX_LIST_RUNS`].
    pub fn list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, RunsError> {
        let limit = filter.limit.unwrap_or(MAX_LIST_RUNS).min(MAX_LIST_RUNS);
        if let Some(rows) = self.runs.select(&select_of(filter, limit))? {
            // The backend keeps the typed columns (PostgreSQL): answered from its indexes.
            return rows
                .iter()
                .map(|(id, bytes)| decode(&String::from_utf8_lossy(id), bytes))
                .collect();
        }
        let mut found = Vec::new();
        // Newest first, a page of the index at a time, so a listing never loads the whole
        // history.
        let mut page = Scan::all().reversed().limit(LIST_PAGE);
        page.until = filter
            .before
            .as_ref()
            .map(|c| time_key(c.created_ms, &c.id));
        page.from = filter.since_ms.map(|since| time_key(since, ""));
        loop {
            let entries = self.by_time.scan(&page)?;
            for (_, id) in &entries {
                if found.len() >= limit {
                    return Ok(found);
                }
                let Some(bytes) = self.runs.get(id)? else {
                    continue;
                };
                let id = String::from_utf8_lossy(id);
                let head: RunHead = serde_json::from_slice(&bytes).map_err(|_| corrupt(&id))?;
                if filter.matches(&head) {
                    found.push(decode(&id, &bytes)?);
                }
            }
            match entries.last() {
                Some((key, _)) if entries.len() == LIST_PAGE => page.until = Some(key.clone()),
                _ => return Ok(found),
            }
        }
    }
}

/// `filter` as a query on the typed columns of [`RUNS`].
fn select_of(filter: &RunFilter, limit: usize) -> Select {
    let mut equals = Vec::new();
    if let Some(state) = filter.state {
        equals.push(("state", ColumnValue::Text(state.as_str().to_string())));
    }
    if let Some(process) = &filter.process_id {
        equals.push(("process_id", ColumnValue::Text(process.clone())));
    }
    if let Some(actor) = &filter.actor {
        equals.push(("actor", ColumnValue::Text(actor.clone())));
    }
    Select {
        equals,
        order_by: "created_ms",
        before: filter.before.as_ref().map(|c| {
            (
                ColumnValue::Int(i64::try_from(c.created_ms).unwrap_or(i64::MAX)),
                c.id.as_bytes().to_vec(),
            )
        }),
        since: filter
            .since_ms
            .map(|ms| ColumnValue::Int(i64::try_from(ms).unwrap_or(i64::MAX))),
        limit,
    }
}
