//! The PostgreSQL test cluster: `.ci/postgres start DIR` starts a throwaway one on loopback
//! and prints its URL, which `.ci/run` exports as `WARDEN_TEST_DATABASE_URL`. Each test gets
//! its own freshly created database on it, so tests never see each other's state.

/// The cluster's URL; panics, never skips, when no cluster was started.
pub fn cluster_url() -> String {
    std::env::var("WARDEN_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "WARDEN_TEST_DATABASE_URL is not set: start a test cluster with \
             `.ci/postgres start target/pg` and export the URL it prints \
             (`.ci/run` does both)"
        )
    })
}

/// Creates a uniquely named, empty database on the cluster and returns its URL.
pub fn fresh_database() -> String {
    let base = cluster_url();
    let name = format!("warden_it_{}", uuid::Uuid::new_v4().simple());
    execute(&base, &format!("CREATE DATABASE {name}"));
    warden_host::store::postgres::with_dbname(&base, &name)
}

/// Runs `sql` (one or more statements) on `url`; panics on failure.
pub fn execute(url: &str, sql: &str) {
    let shown: String = sql.chars().take(80).collect();
    let (url, sql) = (url.to_string(), sql.to_string());
    // Its own thread and runtime: callers are often inside a tokio runtime already.
    let done = std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            let driver = tokio::spawn(connection);
            client.batch_execute(&sql).await?;
            drop(client);
            let _ = driver.await;
            Ok(())
        })
    })
    .join();
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("cannot run {shown:?}: {e:#}"),
        Err(_) => panic!("the thread running SQL panicked"),
    }
}

/// Pretends a newer Warden migrated the database at `url` to `version`.
pub fn set_schema_version(url: &str, version: u32) {
    execute(
        url,
        &format!("INSERT INTO warden.schema_version (version, applied_ms) VALUES ({version}, 0)"),
    );
}

/// Cuts the database at `url` off: refuses new connections and ends every open one (as an
/// outage would), until [`restore_database`].
pub fn cut_off_database(url: &str) {
    let name = dbname(url);
    execute(
        &cluster_url(),
        &format!(
            "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ),
    );
}

/// Lets connections to the database at `url` in again.
pub fn restore_database(url: &str) {
    let name = dbname(url);
    execute(
        &cluster_url(),
        &format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"),
    );
}

/// The database name in `url` (test databases only: `warden_it_<hex>`).
fn dbname(url: &str) -> String {
    let name = url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        name.starts_with("warden_it_")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "not a test database: {name}"
    );
    name
}

/// The backends a benchmark measures side by side: sled, and PostgreSQL (a fresh database
/// on the test cluster) when `WARDEN_TEST_DATABASE_URL` names one; otherwise it says how to
/// get the PostgreSQL figures.
pub fn bench_backends() -> Vec<(&'static str, warden_host::store::DatabaseLocation)> {
    use warden_host::store::DatabaseLocation;
    let mut backends = vec![("sled", DatabaseLocation::Embedded)];
    if std::env::var("WARDEN_TEST_DATABASE_URL").is_ok() {
        backends.push(("postgres", DatabaseLocation::Postgres(fresh_database())));
    } else {
        println!(
            "(postgres: not measured; start a cluster with `.ci/postgres start target/pg` and \
             set WARDEN_TEST_DATABASE_URL to the URL it prints)"
        );
    }
    backends
}
