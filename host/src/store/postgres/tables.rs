//! Generic tables in PostgreSQL: each [`TableDef`] is the real table `warden.<name>`
//! `(key bytea PRIMARY KEY, value bytea NOT NULL, <typed columns>)`. bytea compares bytewise,
//! so key order (and big-endian numbers in keys) is sled's.
//!
//! A batch is one transaction. Each operation's [`Expect`] is checked by the statement that
//! writes it, under the row lock that statement takes (READ COMMITTED re-checks a `WHERE`
//! against the newest row version after waiting for a concurrent writer):
//! `Absent` is `INSERT … ON CONFLICT DO NOTHING` (of two concurrent inserters exactly one
//! inserts), `Present`/`Equals` are `UPDATE`/`DELETE … WHERE key = … [AND value = …]`; a
//! row count other than the expected one rolls the whole transaction back as a
//! [`StoreError::Conflict`]. A delete expecting `Absent` only checks (there is no row to
//! lock): a concurrent insert of that key may still commit. The statements of a batch are
//! pipelined (one round trip).
//!
//! Threat: SQL built from untrusted text. Table and column names come only from the
//! [`TABLES`] whitelist (a name outside it is [`StoreError::Incompatible`]); every key, value
//! and column value is a bound parameter.

use std::error::Error as StdError;

use bytes::BytesMut;
use deadpool_postgres::{Pool, Transaction};
use futures::future::try_join_all;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::{Failure, with_retries};
use crate::store::table::{
    Batch, ColumnValue, Expect, Op, Rows, Scan, Select, StoreError, TableDef,
};

/// The SQL type of a typed column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColumnType {
    Text,
    BigInt,
}

/// A table the schema has: the whitelist SQL is built from.
#[derive(Debug)]
pub(crate) struct TableSchema {
    pub name: &'static str,
    pub columns: &'static [(&'static str, ColumnType)],
}

const fn plain(name: &'static str) -> TableSchema {
    TableSchema { name, columns: &[] }
}

/// Every generic table of the schema (migrations 1 to 4), with its typed columns: the tables of
/// [`crate::store::catalog`] (a test checks both lists agree).
pub(crate) const TABLES: &[TableSchema] = &[
    plain("users"),
    plain("roles"),
    plain("tokens"),
    plain("targets"),
    plain("credentials"),
    plain("leases"),
    plain("leases_by_run"),
    plain("leases_active"),
    plain("modules"),
    plain("module_blobs"),
    plain("publishers"),
    plain("processes"),
    plain("process_names"),
    TableSchema {
        name: "runs",
        columns: &[
            ("state", ColumnType::Text),
            ("process_id", ColumnType::Text),
            ("actor", ColumnType::Text),
            ("created_ms", ColumnType::BigInt),
        ],
    },
    plain("runs_by_time"),
    plain("runs_active"),
    plain("servers"),
    plain("run_cancels"),
    plain("schedules"),
    plain("approvals"),
    plain("notify_sinks"),
    plain("notify_cursors"),
    plain("notify_dead_letters"),
    plain("notify_rules"),
    plain("notify_settings"),
    plain("bridge_tokens"),
    plain("bridges"),
    plain("bridges_seen"),
    // Migration 3 (triggers).
    plain("triggers"),
    plain("trigger_state"),
    plain("trigger_replay"),
    plain("trigger_bodies"),
    // Migration 4 (the web console).
    plain("console_sessions"),
];

fn schema_of(def: &TableDef) -> Result<&'static TableSchema, StoreError> {
    TABLES.iter().find(|t| t.name == def.name).ok_or_else(|| {
        StoreError::Incompatible(format!(
            "table {:?} is not in the PostgreSQL schema this warden knows",
            def.name
        ))
    })
}

/// Checks that every operation names a known table and gives its typed columns values of
/// the right types, before anything is sent.
pub(crate) fn check_batch(batch: &Batch) -> Result<(), StoreError> {
    for op in &batch.ops {
        let schema = schema_of(op.table())?;
        let def = op.table();
        let mut types = Vec::with_capacity(def.columns.len());
        for name in def.columns {
            let Some((_, ty)) = schema.columns.iter().find(|(c, _)| c == name) else {
                return Err(StoreError::Incompatible(format!(
                    "table {} has no column {name:?}",
                    schema.name
                )));
            };
            types.push(*ty);
        }
        if let Op::Put { columns, .. } = op {
            if !columns.is_empty() && columns.len() != def.columns.len() {
                return Err(StoreError::Incompatible(format!(
                    "a put on {} gives {} column values for {} columns",
                    schema.name,
                    columns.len(),
                    def.columns.len()
                )));
            }
            for ((value, ty), name) in columns.iter().zip(&types).zip(def.columns) {
                let fits = matches!(
                    (value, ty),
                    (ColumnValue::Null, _)
                        | (ColumnValue::Text(_), ColumnType::Text)
                        | (ColumnValue::Int(_), ColumnType::BigInt)
                );
                if !fits {
                    return Err(StoreError::Incompatible(format!(
                        "column {}.{name} is {ty:?}, the put gave {value:?}",
                        schema.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// A typed column's value as a statement parameter (text loses any NUL, which PostgreSQL
/// text cannot hold).
#[derive(Debug)]
struct Column(ColumnValue);

impl Column {
    fn new(value: &ColumnValue) -> Self {
        match value {
            ColumnValue::Text(text) if text.contains('\0') => {
                Column(ColumnValue::Text(text.replace('\0', "")))
            }
            other => Column(other.clone()),
        }
    }
}

impl ToSql for Column {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match (&self.0, ty) {
            (ColumnValue::Null, _) => Ok(IsNull::Yes),
            (ColumnValue::Text(text), &Type::TEXT) => text.as_str().to_sql(ty, out),
            (ColumnValue::Int(n), &Type::INT8) => n.to_sql(ty, out),
            (value, ty) => Err(format!("{value:?} does not fit a {ty} column").into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT || *ty == Type::INT8
    }

    to_sql_checked!();
}

/// What a statement's row count must be for its expectation to hold.
#[derive(Clone, Copy, Debug)]
enum Check {
    None,
    Exactly(u64),
}

/// One operation turned into a statement and its parameters.
struct Planned<'a> {
    sql: String,
    key: &'a [u8],
    value: Option<&'a [u8]>,
    columns: Vec<Column>,
    old: Option<&'a [u8]>,
    check: Check,
}

impl Planned<'_> {
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.key];
        if let Some(value) = &self.value {
            params.push(value);
        }
        for column in &self.columns {
            params.push(column);
        }
        if let Some(old) = &self.old {
            params.push(old);
        }
        params
    }
}

fn plan(op: &Op) -> Result<Planned<'_>, StoreError> {
    let schema = schema_of(op.table())?;
    let t = schema.name;
    match op {
        Op::Put {
            table,
            key,
            value,
            columns,
            expect,
        } => {
            let names = table.columns;
            let columns: Vec<Column> = if columns.is_empty() {
                names.iter().map(|_| Column(ColumnValue::Null)).collect()
            } else {
                columns.iter().map(Column::new).collect()
            };
            let list: String = names.iter().map(|c| format!(", {c}")).collect();
            let slots: String = (0..names.len()).map(|i| format!(", ${}", i + 3)).collect();
            let sets: String = names
                .iter()
                .enumerate()
                .map(|(i, c)| format!(", {c} = ${}", i + 3))
                .collect();
            let (sql, old, check) = match expect {
                Expect::Any => {
                    let excluded: String = names
                        .iter()
                        .map(|c| format!(", {c} = EXCLUDED.{c}"))
                        .collect();
                    let sql = format!(
                        "INSERT INTO warden.{t} (key, value{list}) VALUES ($1, $2{slots}) \
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value{excluded}"
                    );
                    (sql, None, Check::None)
                }
                Expect::Absent => {
                    let sql = format!(
                        "INSERT INTO warden.{t} (key, value{list}) VALUES ($1, $2{slots}) \
                         ON CONFLICT (key) DO NOTHING"
                    );
                    (sql, None, Check::Exactly(1))
                }
                Expect::Present => {
                    let sql = format!("UPDATE warden.{t} SET value = $2{sets} WHERE key = $1");
                    (sql, None, Check::Exactly(1))
                }
                Expect::Equals(old) => {
                    let n = names.len() + 3;
                    let sql = format!(
                        "UPDATE warden.{t} SET value = $2{sets} WHERE key = $1 AND value = ${n}"
                    );
                    (sql, Some(old.as_slice()), Check::Exactly(1))
                }
            };
            Ok(Planned {
                sql,
                key,
                value: Some(value),
                columns,
                old,
                check,
            })
        }
        Op::Delete { key, expect, .. } => {
            let (sql, old, check) = match expect {
                Expect::Any => (
                    format!("DELETE FROM warden.{t} WHERE key = $1"),
                    None,
                    Check::None,
                ),
                // Nothing to delete; the key must not be there.
                Expect::Absent => (
                    format!("SELECT 1 FROM warden.{t} WHERE key = $1"),
                    None,
                    Check::Exactly(0),
                ),
                Expect::Present => (
                    format!("DELETE FROM warden.{t} WHERE key = $1"),
                    None,
                    Check::Exactly(1),
                ),
                Expect::Equals(old) => (
                    format!("DELETE FROM warden.{t} WHERE key = $1 AND value = $2"),
                    Some(old.as_slice()),
                    Check::Exactly(1),
                ),
            };
            Ok(Planned {
                sql,
                key,
                value: None,
                columns: Vec::new(),
                old,
                check,
            })
        }
    }
}

/// Runs a batch's operations inside the open transaction `tx` (pipelined); a failed
/// expectation is a [`StoreError::Conflict`] and leaves `tx` to be rolled back.
pub(crate) async fn apply_ops(tx: &Transaction<'_>, batch: &Batch) -> Result<(), Failure> {
    let planned = batch.ops.iter().map(plan).collect::<Result<Vec<_>, _>>()?;
    let statements = try_join_all(planned.iter().map(|p| tx.prepare_cached(&p.sql))).await?;
    let params: Vec<_> = planned.iter().map(Planned::params).collect();
    let counts = try_join_all(
        statements
            .iter()
            .zip(&params)
            .map(|(statement, params)| tx.execute(statement, params)),
    )
    .await?;
    for ((planned, op), count) in planned.iter().zip(&batch.ops).zip(counts) {
        if let Check::Exactly(want) = planned.check
            && count != want
        {
            return Err(StoreError::conflict(op.table().name, op.key()).into());
        }
    }
    Ok(())
}

/// Applies `batch` in one transaction; `Ok` once committed.
pub(crate) async fn apply(pool: &Pool, batch: &Batch) -> Result<(), StoreError> {
    with_retries(false, || async move {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        apply_ops(&tx, batch).await?;
        tx.commit().await.map_err(commit_failure)?;
        Ok(())
    })
    .await
}

/// A failed COMMIT: refused by the server (nothing written), or the connection went away
/// while it was under way (the outcome is unknown; never retried).
pub(crate) fn commit_failure(e: tokio_postgres::Error) -> Failure {
    if e.as_db_error().is_some() {
        return Failure::Pg(e);
    }
    Failure::Store(StoreError::Unavailable(format!(
        "the connection to the database was lost during a commit, which may or may not \
         have been applied: {}",
        super::render(&e)
    )))
}

pub(crate) async fn get(
    pool: &Pool,
    table: &'static TableDef,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    let t = schema_of(table)?.name;
    let sql = format!("SELECT value FROM warden.{t} WHERE key = $1");
    with_retries(true, || async {
        let client = pool.get().await?;
        let statement = client.prepare_cached(&sql).await?;
        let row = client.query_opt(&statement, &[&key]).await?;
        Ok(match row {
            Some(row) => Some(row.try_get::<_, Vec<u8>>(0)?),
            None => None,
        })
    })
    .await
}

pub(crate) async fn scan(
    pool: &Pool,
    table: &'static TableDef,
    scan: &Scan,
) -> Result<Rows, StoreError> {
    let t = schema_of(table)?.name;
    let start = scan.start();
    let end = scan.end();
    if end.as_ref().is_some_and(|end| *end <= start) {
        return Ok(Vec::new());
    }
    let limit: Option<i64> = scan.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let order = if scan.reverse { "DESC" } else { "ASC" };
    let sql = match end {
        Some(_) => format!(
            "SELECT key, value FROM warden.{t} WHERE key >= $1 AND key < $2 \
             ORDER BY key {order} LIMIT $3"
        ),
        None => format!(
            "SELECT key, value FROM warden.{t} WHERE key >= $1 ORDER BY key {order} LIMIT $2"
        ),
    };
    with_retries(true, || async {
        let client = pool.get().await?;
        let statement = client.prepare_cached(&sql).await?;
        let rows = match &end {
            Some(end) => client.query(&statement, &[&start, end, &limit]).await?,
            None => client.query(&statement, &[&start, &limit]).await?,
        };
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<_>, Failure>>()
    })
    .await
}

/// Rows matching `select`, from the typed columns (the names are checked against the schema,
/// the values are parameters).
pub(crate) async fn select(
    pool: &Pool,
    table: &'static TableDef,
    select: &Select,
) -> Result<Rows, StoreError> {
    let schema = schema_of(table)?;
    let known = |name: &str| schema.columns.iter().any(|(c, _)| *c == name);
    for name in select
        .equals
        .iter()
        .map(|(c, _)| *c)
        .chain([select.order_by])
    {
        if !known(name) {
            return Err(StoreError::Incompatible(format!(
                "table {} has no column {name:?}",
                schema.name
            )));
        }
    }
    let (t, order) = (schema.name, select.order_by);
    let mut conditions = Vec::new();
    let mut n = 0;
    for (name, _) in &select.equals {
        n += 1;
        conditions.push(format!("{name} = ${n}"));
    }
    if select.before.is_some() {
        conditions.push(format!("({order}, key) < (${}, ${})", n + 1, n + 2));
        n += 2;
    }
    if select.since.is_some() {
        conditions.push(format!("{order} >= ${}", n + 1));
        n += 1;
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT key, value FROM warden.{t} {filter} ORDER BY {order} DESC, key DESC LIMIT ${}",
        n + 1
    );
    let values: Vec<Column> = select.equals.iter().map(|(_, v)| Column::new(v)).collect();
    let before = select
        .before
        .as_ref()
        .map(|(value, key)| (Column::new(value), key.clone()));
    let since = select.since.as_ref().map(Column::new);
    let limit = i64::try_from(select.limit).unwrap_or(i64::MAX);
    with_retries(true, || async {
        let client = pool.get().await?;
        let statement = client.prepare_cached(&sql).await?;
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        for value in &values {
            params.push(value);
        }
        if let Some((value, key)) = &before {
            params.push(value);
            params.push(key);
        }
        if let Some(since) = &since {
            params.push(since);
        }
        params.push(&limit);
        let rows = client.query(&statement, &params).await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<_>, Failure>>()
    })
    .await
}
