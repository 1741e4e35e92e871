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
    let sql = format!("CREATE DATABASE {name}");
    let admin = base.clone();
    // Its own thread and runtime: callers are often inside a tokio runtime already.
    let created = std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let (client, connection) =
                tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
            let driver = tokio::spawn(connection);
            client.batch_execute(&sql).await?;
            drop(client);
            let _ = driver.await;
            Ok(())
        })
    })
    .join();
    match created {
        Ok(Ok(())) => with_dbname(&base, &name),
        Ok(Err(e)) => panic!("cannot create a test database on {base}: {e:#}"),
        Err(_) => panic!("the thread creating a test database panicked"),
    }
}

/// `url` with its database name replaced by `name`.
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
mod tests {
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
