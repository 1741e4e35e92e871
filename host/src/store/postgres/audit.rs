//! The audit log in PostgreSQL: `warden.audit_records`, one row per record (its canonical
//! bytes plus indexed filter columns), and `warden.audit_head`, whose single row is the
//! chain's lock and holds the signed checkpoint.
//!
//! One commit is one transaction: lock the head row (`FOR UPDATE`: every writer of the chain,
//! on any server, queues here), read the last record, let the caller `seal` rows onto it,
//! check they continue it, insert them in one statement, update the checkpoint, then apply
//! each `then` batch inside its own savepoint (one that conflicts is rolled back to its
//! savepoint and reported, the rest commit), and COMMIT. Any failure before COMMIT writes
//! nothing.
//!
//! Threat: a forked or gapped chain (two servers appending at once, a seal that skips or
//! repeats a sequence number) and rewritten history. The head lock serializes writers, the
//! continuity check and the primary key on `seq` refuse forks, and the schema's trigger
//! refuses UPDATE, DELETE and TRUNCATE of records.

use deadpool_postgres::Pool;

use super::{Driver, Failure, tables, with_retries};
use crate::store::table::{
    AuditBatch, AuditQuery, AuditRow, AuditTip, Batch, Committed, Seal, StoreError,
};

/// What the commit task tells the caller's thread: the tip to seal onto, then the outcome.
enum Step {
    Tip(AuditTip),
    Done(Outcome),
}

type Outcome = Result<Committed, StoreError>;

const LOCK_HEAD: &str = "SELECT checkpoint FROM warden.audit_head WHERE id = 1 FOR UPDATE";
const LAST: &str = "SELECT seq, hash, record FROM warden.audit_records ORDER BY seq DESC LIMIT 1";
const INSERT: &str = "INSERT INTO warden.audit_records \
     (seq, time_ms, run_id, actor, action, resource, credential, hash, prev_hash, record) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[])";
const SET_CHECKPOINT: &str = "UPDATE warden.audit_head SET checkpoint = $1 WHERE id = 1";

/// Runs one audit commit: the transaction on the driver's runtime, `seal` on this thread
/// (it need not be `Send`), between them the tip and the sealed batch over channels.
pub(super) fn commit(driver: &Driver, seal: Seal<'_>, then: Vec<Batch>) -> Outcome {
    let (step_tx, step_rx) = std::sync::mpsc::channel();
    let (sealed_tx, sealed_rx) = tokio::sync::oneshot::channel();
    let pool = driver.pool.clone();
    let timeout = driver.call_timeout;
    driver.handle.spawn(async move {
        let done =
            match tokio::time::timeout(timeout, write(&pool, &step_tx, sealed_rx, &then)).await {
                Ok(done) => done.map_err(Failure::into_store),
                Err(_) => Err(StoreError::Unavailable(format!(
                    "the audit commit did not finish within {}s",
                    timeout.as_secs()
                ))),
            };
        let _ = step_tx.send(Step::Done(done));
    });
    let lost = || StoreError::Unavailable("the database task stopped".into());
    match step_rx.recv().map_err(|_| lost())? {
        Step::Done(done) => return done,
        // If `seal` panics, the sender drops and the transaction rolls back.
        Step::Tip(tip) => drop(sealed_tx.send(seal(&tip))),
    }
    match step_rx.recv().map_err(|_| lost())? {
        Step::Done(done) => done,
        Step::Tip(_) => Err(lost()),
    }
}

async fn write(
    pool: &Pool,
    steps: &std::sync::mpsc::Sender<Step>,
    sealed: tokio::sync::oneshot::Receiver<Result<AuditBatch, String>>,
    then: &[Batch],
) -> Result<Committed, Failure> {
    let mut client = pool.get().await?;
    let mut tx = client.transaction().await?;
    let head = tx
        .query_opt(&tx.prepare_cached(LOCK_HEAD).await?, &[])
        .await?;
    let Some(head) = head else {
        return Err(StoreError::Incompatible("the audit head row is missing".into()).into());
    };
    let checkpoint: Option<Vec<u8>> = head.try_get(0)?;
    let last = match tx.query_opt(&tx.prepare_cached(LAST).await?, &[]).await? {
        Some(row) => Some((
            row.try_get::<_, i64>(0)?,
            row.try_get::<_, String>(1)?,
            row.try_get::<_, Vec<u8>>(2)?,
        )),
        None => None,
    };
    let tip = AuditTip {
        last: last.as_ref().map(|(_, _, record)| record.clone()),
        checkpoint,
    };
    if steps.send(Step::Tip(tip)).is_err() {
        return Err(StoreError::Io("the audit writer went away".into()).into());
    }
    let sealed = match sealed.await {
        Ok(Ok(sealed)) => sealed,
        Ok(Err(why)) => return Err(StoreError::Io(why).into()),
        Err(_) => return Err(StoreError::Io("the audit seal was abandoned".into()).into()),
    };
    if sealed.rows.is_empty() {
        return Ok((sealed, Vec::new()));
    }
    check_continues(
        last.as_ref().map(|(seq, hash, _)| (*seq, hash.as_str())),
        &sealed.rows,
    )?;
    insert_rows(&tx, &sealed.rows).await?;
    tx.execute(
        &tx.prepare_cached(SET_CHECKPOINT).await?,
        &[&sealed.checkpoint],
    )
    .await?;
    let mut outcomes = Vec::with_capacity(then.len());
    for batch in then {
        let savepoint = tx.savepoint("warden_then").await?;
        match tables::apply_ops(&savepoint, batch).await {
            Ok(()) => {
                savepoint.commit().await?;
                outcomes.push(Ok(()));
            }
            Err(e) => {
                savepoint.rollback().await?;
                outcomes.push(Err(e.into_store()));
            }
        }
    }
    tx.commit().await.map_err(tables::commit_failure)?;
    Ok((sealed, outcomes))
}

/// Refuses rows that do not continue the stored chain: the next sequence number, each
/// row's `prev_hash` the previous row's `hash`.
fn check_continues(last: Option<(i64, &str)>, rows: &[AuditRow]) -> Result<(), StoreError> {
    let mut next = match last {
        Some((seq, _)) => u64::try_from(seq).unwrap_or(u64::MAX).saturating_add(1),
        None => 0,
    };
    let mut prev = last.map(|(_, hash)| hash.to_owned());
    for row in rows {
        if row.seq != next {
            return Err(StoreError::Io(format!(
                "audit rows do not continue the chain: seq {} where {next} was next",
                row.seq
            )));
        }
        if prev.as_ref().is_some_and(|prev| *prev != row.prev_hash) {
            return Err(StoreError::Io(format!(
                "audit record {} does not link to the record before it",
                row.seq
            )));
        }
        prev = Some(row.hash.clone());
        next = next.saturating_add(1);
    }
    Ok(())
}

fn to_i64(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Io(format!("{what} {n} is out of range")))
}

/// All rows in one statement (arrays, `unnest`): one round trip however many.
async fn insert_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[AuditRow],
) -> Result<(), Failure> {
    let seqs = rows
        .iter()
        .map(|r| to_i64(r.seq, "audit seq"))
        .collect::<Result<Vec<_>, _>>()?;
    let times = rows
        .iter()
        .map(|r| to_i64(r.time_ms, "audit time"))
        .collect::<Result<Vec<_>, _>>()?;
    let text = |f: fn(&AuditRow) -> Option<&str>| -> Vec<Option<String>> {
        rows.iter()
            .map(|r| f(r).map(|s| s.replace('\0', "")))
            .collect()
    };
    let run_ids = text(|r| r.run_id.as_deref());
    let actors = text(|r| Some(&r.actor));
    let actions = text(|r| Some(&r.action));
    let resources = text(|r| r.resource.as_deref());
    let credentials = text(|r| r.credential.as_deref());
    let hashes = text(|r| Some(&r.hash));
    let prevs = text(|r| Some(&r.prev_hash));
    let records: Vec<&[u8]> = rows.iter().map(|r| r.canonical.as_slice()).collect();
    let inserted = tx
        .execute(
            &tx.prepare_cached(INSERT).await?,
            &[
                &seqs,
                &times,
                &run_ids,
                &actors,
                &actions,
                &resources,
                &credentials,
                &hashes,
                &prevs,
                &records,
            ],
        )
        .await?;
    if inserted != rows.len() as u64 {
        return Err(StoreError::Io(format!(
            "{inserted} of {} audit rows were written",
            rows.len()
        ))
        .into());
    }
    Ok(())
}

pub(super) async fn tip(pool: &Pool) -> Result<AuditTip, StoreError> {
    const TIP: &str = "SELECT \
        (SELECT record FROM warden.audit_records ORDER BY seq DESC LIMIT 1), \
        (SELECT checkpoint FROM warden.audit_head WHERE id = 1)";
    with_retries(true, || async {
        let client = pool.get().await?;
        let row = client
            .query_one(&client.prepare_cached(TIP).await?, &[])
            .await?;
        Ok(AuditTip {
            last: row.try_get(0)?,
            checkpoint: row.try_get(1)?,
        })
    })
    .await
}

pub(super) async fn range(
    pool: &Pool,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    const RANGE: &str =
        "SELECT seq, record FROM warden.audit_records WHERE seq >= $1 ORDER BY seq LIMIT $2";
    let Ok(from) = i64::try_from(from) else {
        return Ok(Vec::new());
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    with_retries(true, || async {
        let client = pool.get().await?;
        let statement = client.prepare_cached(RANGE).await?;
        let rows = client.query(&statement, &[&from, &limit]).await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get(0)?;
                Ok((u64::try_from(seq).unwrap_or(u64::MAX), row.try_get(1)?))
            })
            .collect::<Result<Vec<_>, Failure>>()
    })
    .await
}

/// The SQL for `query` and its parameters: only the set filters, each on an indexed column,
/// in sequence order from the cursor.
pub(crate) fn query_sql(query: &AuditQuery) -> (String, Vec<QueryParam>) {
    let mut sql = String::from("SELECT seq, record FROM warden.audit_records WHERE seq > $1");
    let after = query
        .after_seq
        .map_or(-1, |seq| i64::try_from(seq).unwrap_or(i64::MAX));
    let mut params = vec![QueryParam::Int(after)];
    let mut text = |column: &str, value: &Option<String>, params: &mut Vec<QueryParam>| {
        if let Some(value) = value {
            params.push(QueryParam::Text(value.clone()));
            sql.push_str(&format!(" AND {column} = ${}", params.len()));
        }
    };
    text("run_id", &query.run_id, &mut params);
    text("actor", &query.actor, &mut params);
    text("action", &query.action, &mut params);
    text("resource", &query.resource, &mut params);
    let clamp = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
    if let Some(since) = query.since_ms {
        params.push(QueryParam::Int(clamp(since)));
        sql.push_str(&format!(" AND time_ms >= ${}", params.len()));
    }
    if let Some(until) = query.until_ms {
        params.push(QueryParam::Int(clamp(until)));
        sql.push_str(&format!(" AND time_ms <= ${}", params.len()));
    }
    params.push(QueryParam::Int(
        i64::try_from(query.limit).unwrap_or(i64::MAX),
    ));
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", params.len()));
    (sql, params)
}

/// A parameter of [`query_sql`].
#[derive(Debug)]
pub(crate) enum QueryParam {
    Int(i64),
    Text(String),
}

impl QueryParam {
    pub(crate) fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            QueryParam::Int(n) => n,
            QueryParam::Text(s) => s,
        }
    }
}

pub(super) async fn query(
    pool: &Pool,
    query: &AuditQuery,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    if query.after_seq.is_some_and(|seq| seq >= i64::MAX as u64) || query.limit == 0 {
        return Ok(Vec::new());
    }
    let (sql, params) = query_sql(query);
    let params: Vec<_> = params.iter().map(QueryParam::as_sql).collect();
    with_retries(true, || async {
        let client = pool.get().await?;
        let statement = client.prepare_cached(&sql).await?;
        let rows = client.query(&statement, &params).await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get(0)?;
                Ok((u64::try_from(seq).unwrap_or(u64::MAX), row.try_get(1)?))
            })
            .collect::<Result<Vec<_>, Failure>>()
    })
    .await
}
