//! Test support: a fresh, uniquely named database on the test cluster
//! (`WARDEN_TEST_DATABASE_URL`, started by `.ci/postgres start DIR`), and raw SQL on it.

/// The test cluster's URL; panics (never skips) when it is not set.
pub(crate) fn cluster_url() -> String {
    std::env::var("WARDEN_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "WARDEN_TEST_DATABASE_URL is not set: start a test cluster with \
             `.ci/postgres start target/pg` and export the URL it prints"
        )
    })
}

/// Creates an empty database with a unique name; returns its URL.
pub(crate) fn fresh_database() -> String {
    let base = cluster_url();
    let name = format!("warden_test_{}", uuid::Uuid::new_v4().simple());
    execute(&base, &format!("CREATE DATABASE {name}"));
    super::with_dbname(&base, &name)
}

/// Runs `sql` (one or more statements) on `url`, panicking on error.
pub(crate) fn execute(url: &str, sql: &str) {
    if let Err(e) = try_execute(url, sql) {
        panic!("{sql}: {e}");
    }
}

/// Runs `sql` on `url`; the server's message on error.
pub(crate) fn try_execute(url: &str, sql: &str) -> Result<(), String> {
    query(url, sql).map(drop)
}

/// Runs one query on `url` and returns every column of every row as text (simple protocol).
pub(crate) fn query(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    // Its own thread and runtime: the caller may be inside one.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("{e:?}"))?;
            tokio::spawn(connection);
            let messages = client
                .simple_query(&sql)
                .await
                .map_err(|e| e.as_db_error().map_or(e.to_string(), |d| d.to_string()))?;
            Ok(messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect())
        })
    })
    .join()
    .unwrap_or_else(|_| Err("query thread panicked".into()))
}

/// Drops the database `url` names (closing its connections), on the cluster.
pub(crate) fn drop_database(url: &str) {
    let path = url.split('?').next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or_default();
    if name.starts_with("warden_test_")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        let _ = try_execute(
            &cluster_url(),
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
    }
}

/// A transaction on its own connection that runs `sql` (taking row locks) and holds them
/// until dropped.
pub(crate) struct Locker {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Locker {
    pub(crate) fn hold(url: &str, sql: &str) -> Self {
        let (url, sql) = (url.to_owned(), sql.to_owned());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                let _ = ready_tx.send(Err("no runtime".into()));
                return;
            };
            runtime.block_on(async move {
                let connected = tokio_postgres::connect(&url, tokio_postgres::NoTls).await;
                let (client, connection) = match connected {
                    Ok(pair) => pair,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let driver = tokio::spawn(connection);
                let locked = client.batch_execute(&format!("BEGIN; {sql}")).await;
                let _ = ready_tx.send(locked.map_err(|e| e.to_string()));
                // Wait for the release without blocking the connection's task.
                let _ = tokio::task::spawn_blocking(move || release_rx.recv()).await;
                let _ = client.batch_execute("ROLLBACK").await;
                drop(client);
                let _ = driver.await;
            });
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("locker {e}"),
            Err(_) => panic!("locker thread died"),
        }
        Locker {
            release: Some(release_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits (bounded, 20 s) until a `warden` connection to `url`'s database (not another
/// test's) is waiting for a lock; its pid.
pub(crate) fn wait_for_blocked_warden(url: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let rows = query(
            url,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'warden' \
             AND wait_event_type = 'Lock' AND datname = current_database()",
        )
        .unwrap_or_default();
        if let Some(pid) = rows.first().and_then(|r| r[0].clone()) {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warden connection blocked"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
