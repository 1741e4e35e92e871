//! The PostgreSQL backend: a connection pool driven by the backend's own small tokio runtime,
//! behind the synchronous [`Backend`] trait.
//!
//! Layout: this file holds the pool, the sync facade and the error mapping;
//! [`migrations`] the versioned schema (applied at connect), [`tables`] the generic tables
//! and conditional batches, [`audit`] the audit log's rows and its one serialized writer.
//!
//! Every trait method spawns its future on the backend's runtime and waits for the answer on
//! a `std::sync::mpsc` channel, so callers may be plain threads or tasks of any other runtime
//! (a `block_on` there would panic). Every wait is bounded: a connect timeout, a
//! server-side `statement_timeout`, an idle-in-transaction timeout and an overall call
//! timeout, so an unreachable or stuck database is an error ([`StoreError::Unavailable`]),
//! never a hang.
//!
//! Threat: a database password leaking into errors, logs or `warden db status`. Only
//! [`location`](Backend::location) (rebuilt from the parsed configuration, which never
//! includes the password) names the database; driver errors are rendered from their kind and
//! the server's message, neither of which carries the URL.

mod audit;
mod migrations;
mod tables;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use migrations::{BINARY_SCHEMA_VERSION, SERVER_ROLE, server_role_grants};

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;

use super::table::{
    AuditQuery, AuditTip, Backend, Batch, Committed, Rows, Scan, Seal, Select, StoreError, TableDef,
};

/// How the backend talks to the server.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Most connections the pool opens.
    pub pool_size: usize,
    /// Longest one SQL statement may run (server side, `statement_timeout`).
    pub statement_timeout: Duration,
    /// Longest a connection attempt may take.
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// What `warden db status` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbStatus {
    /// The schema version the database holds (0: none yet).
    pub schema_version: u32,
    /// The schema version this binary writes.
    pub binary_version: u32,
    /// The server's `server_version`.
    pub server_version: String,
    /// The database URL without its password.
    pub location: String,
}

/// A PostgreSQL database holding Warden's state.
pub struct PgBackend {
    driver: Driver,
}

impl PgBackend {
    /// Connects to `url` and brings the schema up to date.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &PgOptions::default())
    }

    /// [`Self::connect`] with explicit pool size and timeouts.
    pub fn connect_with(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        let driver = Driver::open(url, options)?;
        driver
            .run(|pool| async move { migrations::migrate(&pool).await.map(drop) })
            .map_err(|e| driver.named(e))?;
        Ok(Self { driver })
    }
}

/// Applies the migrations this binary has to the database at `url`; returns the schema
/// version before and after.
pub fn migrate(url: &str) -> Result<(u32, u32), StoreError> {
    let options = PgOptions {
        pool_size: 1,
        ..PgOptions::default()
    };
    let driver = Driver::open(url, &options)?;
    driver
        .run(|pool| async move { migrations::migrate(&pool).await })
        .map_err(|e| driver.named(e))
}

/// The database's schema version, the server's version and where it is; changes nothing.
pub fn status(url: &str) -> Result<DbStatus, StoreError> {
    let options = PgOptions {
        pool_size: 1,
        ..PgOptions::default()
    };
    let driver = Driver::open(url, &options)?;
    let location = driver.location.clone();
    let (schema_version, server_version) = driver
        .run(|pool| async move { migrations::status(&pool).await })
        .map_err(|e| driver.named(e))?;
    Ok(DbStatus {
        schema_version,
        binary_version: BINARY_SCHEMA_VERSION,
        server_version,
        location,
    })
}

/// The pool and the runtime that drives it.
struct Driver {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    location: String,
    call_timeout: Duration,
}

impl Driver {
    fn open(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            StoreError::Unavailable(format!("invalid database URL: {}", render(&e)))
        })?;
        let location = location_of(&config);
        config.connect_timeout(options.connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("warden");
        }
        // Durability and bounded waits do not depend on the server's defaults: a commit is
        // acknowledged once on disk, no statement or idle transaction holds locks for long.
        let statement_ms = options.statement_timeout.as_millis();
        let session = format!(
            "-c statement_timeout={statement_ms} -c lock_timeout={statement_ms} \
             -c idle_in_transaction_session_timeout={} -c synchronous_commit=on",
            statement_ms.saturating_mul(2)
        );
        let combined = match config.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {session}"),
            _ => session,
        };
        config.options(combined);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("warden-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the database runtime: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .wait_timeout(Some(options.statement_timeout))
            .build()
            .map_err(|e| StoreError::Io(format!("cannot build the connection pool: {e}")))?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            pool,
            location,
            // A call may wait for a pool slot, connect, then run statements.
            call_timeout: options.statement_timeout * 3 + options.connect_timeout,
        })
    }

    /// `e` with the database's location in front, for errors at connect (which database
    /// could not be reached matters to whoever reads it).
    fn named(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("{}: {m}", self.location))
            }
            StoreError::Io(m) => StoreError::Io(format!("{}: {m}", self.location)),
            other => other,
        }
    }

    /// Runs the future `make` builds on the driver's runtime and waits for its result.
    fn run<T, F>(&self, make: impl FnOnce(Pool) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let future = make(self.pool.clone());
        let timeout = self.call_timeout;
        let location = self.location.clone();
        self.handle.spawn(async move {
            let result = match tokio::time::timeout(timeout, future).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "the database at {location} did not answer within {}s",
                    timeout.as_secs()
                ))),
            };
            let _ = tx.send(result);
        });
        rx.recv()
            .map_err(|_| StoreError::Unavailable("the database task stopped".into()))?
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.pool.close();
        // Dropping a runtime blocks, which panics inside another runtime (a store dropped by
        // an async test or handler); in-flight transactions are rolled back by the server
        // when their connections close.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `postgres://user@host:port/dbname`, rebuilt from the parsed configuration: never the
/// password, whatever the URL held.
fn location_of(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let ports = config.get_ports();
    let mut hosts = Vec::new();
    let mut sockets = Vec::new();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        match host {
            Host::Tcp(name) if name.contains(':') => hosts.push(format!("[{name}]:{port}")),
            Host::Tcp(name) => hosts.push(format!("{name}:{port}")),
            Host::Unix(path) => sockets.push(path.display().to_string()),
        }
    }
    let db = config.get_dbname().unwrap_or(user);
    let at = if user.is_empty() { "" } else { "@" };
    let mut location = format!("postgres://{user}{at}{}/{db}", hosts.join(","));
    if !sockets.is_empty() {
        location.push_str("?host=");
        location.push_str(&sockets.join(","));
    }
    location
}

/// Why one database step failed, before it becomes a [`StoreError`]: kept apart so retryable
/// server errors (deadlock, serialization failure) can be told from the rest.
#[derive(Debug)]
pub(crate) enum Failure {
    Store(StoreError),
    Pg(tokio_postgres::Error),
    Pool(PoolError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

impl From<PoolError> for Failure {
    fn from(e: PoolError) -> Self {
        Failure::Pool(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl Failure {
    /// The server aborted the transaction for a reason that a retry may not meet again.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            Failure::Pg(e) => {
                e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
                    || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
            }
            _ => false,
        }
    }

    /// The connection was gone before anything could happen (a read may simply retry).
    pub(crate) fn connection_lost(&self) -> bool {
        matches!(self, Failure::Pg(e) if e.is_closed())
    }

    pub(crate) fn into_store(self) -> StoreError {
        match self {
            Failure::Store(e) => e,
            Failure::Pg(e) => pg_error(&e),
            Failure::Pool(PoolError::Backend(e)) => {
                StoreError::Unavailable(format!("cannot connect to the database: {}", render(&e)))
            }
            Failure::Pool(PoolError::Timeout(TimeoutType::Create)) => StoreError::Unavailable(
                "cannot connect to the database: no answer within the connect timeout".into(),
            ),
            Failure::Pool(PoolError::Timeout(TimeoutType::Wait)) => {
                StoreError::Unavailable("every database connection of the pool stayed busy".into())
            }
            Failure::Pool(e) => StoreError::Unavailable(format!("database connection pool: {e}")),
        }
    }
}

/// Maps a driver error: a missing table or column means a schema this binary does not know;
/// anything else means the database cannot do the work now (503, nothing written).
fn pg_error(e: &tokio_postgres::Error) -> StoreError {
    let message = render(e);
    match e.code() {
        Some(code)
            if *code == SqlState::UNDEFINED_TABLE
                || *code == SqlState::UNDEFINED_COLUMN
                || *code == SqlState::UNDEFINED_FUNCTION
                || *code == SqlState::INVALID_SCHEMA_NAME =>
        {
            StoreError::Incompatible(message)
        }
        Some(code) if *code == SqlState::QUERY_CANCELED => {
            StoreError::Unavailable(format!("statement timed out or was cancelled: {message}"))
        }
        _ => StoreError::Unavailable(message),
    }
}

/// The error and its causes on one line (the driver's `Display` shows only the kind).
fn render(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Retries `attempt` when the server aborted it for a deadlock or serialization failure
/// (nothing was written), and, for reads (`idempotent`), when its connection was found
/// closed; up to a few times. A write whose connection dies is not retried: its commit may
/// or may not have happened, and the caller is told so.
pub(crate) async fn with_retries<T, F, Fut>(
    idempotent: bool,
    mut attempt: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    const ATTEMPTS: u32 = 5;
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e)
                if tries < ATTEMPTS && (e.retryable() || (idempotent && e.connection_lost())) =>
            {
                tokio::time::sleep(Duration::from_millis(5 * u64::from(tries))).await;
            }
            Err(e) => return Err(e.into_store()),
        }
    }
}

impl Backend for PgBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn location(&self) -> String {
        self.driver.location.clone()
    }

    fn get(&self, table: &'static TableDef, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.driver
            .run(|pool| async move { tables::get(&pool, table, &key).await })
    }

    fn scan(&self, table: &'static TableDef, scan: &Scan) -> Result<Rows, StoreError> {
        let scan = scan.clone();
        self.driver
            .run(|pool| async move { tables::scan(&pool, table, &scan).await })
    }

    fn select(
        &self,
        table: &'static TableDef,
        select: &Select,
    ) -> Result<Option<Rows>, StoreError> {
        let select = select.clone();
        self.driver
            .run(|pool| async move { tables::select(&pool, table, &select).await })
            .map(Some)
    }

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        tables::check_batch(batch)?;
        let batch = batch.clone();
        self.driver
            .run(|pool| async move { tables::apply(&pool, &batch).await })
    }

    fn audit_commit(&self, seal: Seal<'_>, then: &[Batch]) -> Result<Committed, StoreError> {
        for batch in then {
            tables::check_batch(batch)?;
        }
        audit::commit(&self.driver, seal, then.to_vec())
    }

    fn audit_tip(&self) -> Result<AuditTip, StoreError> {
        self.driver
            .run(|pool| async move { audit::tip(&pool).await })
    }

    fn audit_range(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.driver
            .run(move |pool| async move { audit::range(&pool, from, limit).await })
    }

    fn audit_query(&self, query: &AuditQuery) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let query = query.clone();
        self.driver
            .run(|pool| async move { audit::query(&pool, &query).await })
    }
}

/// `url` with its database name replaced by `name`.
/// (Used by the test harnesses to make one database per test.)
pub fn with_dbname(url: &str, name: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let (head, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let host_end = head[after_scheme..]
        .find('/')
        .map_or(head.len(), |i| after_scheme + i);
    format!("{}/{name}{query}", &head[..host_end])
}

#[cfg(test)]
mod url_tests {
    use super::with_dbname;

    #[test]
    fn replaces_only_the_database_name() {
        assert_eq!(
            with_dbname("postgres://warden@127.0.0.1:5432/postgres", "x"),
            "postgres://warden@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_dbname("postgres://w@h:1/db?sslmode=disable", "x"),
            "postgres://w@h:1/x?sslmode=disable"
        );
        assert_eq!(with_dbname("postgres://w@h:1", "x"), "postgres://w@h:1/x");
    }
}
