//! A fresh database for each test or benchmark run: an SQLite file in a
//! temporary directory, or a PostgreSQL database created on a server and
//! dropped with it.

use std::{
    error::Error,
    fmt,
    io::Write,
    path::{Path, PathBuf},
    sync::Once,
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement};

/// The variable naming the PostgreSQL server that tests create their
/// databases on, e.g. `postgres://postgres@127.0.0.1:5432/test`.
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// The database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Both, in the order the suite runs them.
    pub const ALL: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

    /// `sqlite` or `postgres`, as test names and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Whether tests can run on it: SQLite always, PostgreSQL when
    /// [`TEST_DATABASE_URL`] is set. A PostgreSQL test that is not available
    /// passes without running, after one notice on stderr for the whole run.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::Postgres => test_postgres_url().is_some(),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A database created for one test (or one benchmark run), removed when
/// dropped: the SQLite file's directory, or the PostgreSQL database.
pub struct TestDatabase {
    backend: Backend,
    url: String,
    postgres: Option<PostgresDatabase>,
    /// SQLite: the file, and the directory holding it.
    sqlite: Option<SqliteFile>,
}

/// Where an SQLite test database lives; the directory goes with it.
struct SqliteFile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Where a PostgreSQL test database lives, to drop it.
struct PostgresDatabase {
    /// The server's administrative URL, the one the database was created from.
    admin_url: String,
    name: String,
}

/// The prefix of the PostgreSQL databases the tests create.
const TEST_DATABASE_PREFIX: &str = "integration_test";

/// Why a PostgreSQL database could not be created.
#[derive(Debug)]
pub enum CreateDatabaseError {
    /// The administrative URL is not `postgres://user@host:port/database`.
    Url,
    /// The server could not be reached through the administrative URL.
    Connect(DbErr),
    /// The server refused `CREATE DATABASE`.
    Create(DbErr),
}

impl fmt::Display for CreateDatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL itself: it may hold a password.
        match self {
            Self::Url => f.write_str(
                "the PostgreSQL URL does not have the form postgres://user@host:port/database",
            ),
            Self::Connect(e) => write!(f, "connecting to the PostgreSQL server: {e}"),
            Self::Create(e) => write!(f, "CREATE DATABASE: {e}"),
        }
    }
}

impl Error for CreateDatabaseError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Url => None,
            Self::Connect(e) | Self::Create(e) => Some(e),
        }
    }
}

impl TestDatabase {
    /// A new, empty database on `backend`; on PostgreSQL, on the server
    /// [`TEST_DATABASE_URL`] names. `None` for PostgreSQL when that is unset.
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite()),
            Backend::Postgres => {
                let admin_url = test_postgres_url()?;
                Some(Self::postgres(&admin_url, TEST_DATABASE_PREFIX).await)
            }
        }
    }

    /// A new SQLite file in a temporary directory of its own.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("integration.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self {
            backend: Backend::Sqlite,
            url,
            postgres: None,
            sqlite: Some(SqliteFile { path, _dir: dir }),
        }
    }

    /// A new database `<name_prefix>_<random>` on the PostgreSQL server
    /// `admin_url` names (any database of it that the user may connect to),
    /// for callers with a server of their own (the benchmark's
    /// `BENCH_DATABASE_URL`). `name_prefix` must be a valid unquoted SQL
    /// identifier: lower-case letters, digits and underscores. Panics if
    /// the database cannot be created: [`TestDatabase::try_postgres`] says
    /// why instead.
    pub async fn postgres(admin_url: &str, name_prefix: &str) -> Self {
        match Self::try_postgres(admin_url, name_prefix).await {
            Ok(database) => database,
            Err(e) => panic!("a test database can be created: {e}"),
        }
    }

    /// Like [`TestDatabase::postgres`], for a caller that reports a server
    /// it cannot use instead of stopping (the benchmark goes on with its
    /// other backend).
    ///
    /// The database is dropped with the returned value, and also if this
    /// future is dropped half-way: an interrupted run leaves nothing behind.
    pub async fn try_postgres(
        admin_url: &str,
        name_prefix: &str,
    ) -> Result<Self, CreateDatabaseError> {
        assert!(
            !name_prefix.is_empty()
                && name_prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "a database name prefix is a plain SQL identifier: {name_prefix:?}"
        );
        let name = format!("{name_prefix}_{}", uuid::Uuid::new_v4().simple());
        let url = with_database(admin_url, &name).ok_or(CreateDatabaseError::Url)?;
        let admin = Database::connect(admin_url)
            .await
            .map_err(CreateDatabaseError::Connect)?;
        let create = format!("CREATE DATABASE {name}");
        // Armed before CREATE DATABASE: if this future is dropped while the
        // server creates it, the guard drops it (IF EXISTS) all the same.
        let mut database = Self {
            backend: Backend::Postgres,
            url,
            postgres: Some(PostgresDatabase {
                admin_url: admin_url.to_owned(),
                name,
            }),
            sqlite: None,
        };
        let created = admin.execute_unprepared(&create).await;
        let _ = admin.close().await;
        if let Err(e) = created {
            // Nothing was created: nothing to drop.
            database.postgres = None;
            return Err(CreateDatabaseError::Create(e));
        }
        Ok(database)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database's URL, as `DATABASE_URL` or the settings take it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// PostgreSQL: the database's name. `None` on SQLite.
    pub fn name(&self) -> Option<&str> {
        self.postgres.as_ref().map(|p| p.name.as_str())
    }

    /// SQLite: the database file. `None` on PostgreSQL.
    pub fn file(&self) -> Option<&Path> {
        self.sqlite.as_ref().map(|s| s.path.as_path())
    }

    /// PostgreSQL: the administrative URL it was created from. `None` on
    /// SQLite.
    pub fn admin_url(&self) -> Option<&str> {
        self.postgres.as_ref().map(|p| p.admin_url.as_str())
    }

    /// A connection of the caller's own, for reading the tables beside a
    /// server (see [`crate::tables`]).
    pub async fn connect(&self) -> DatabaseConnection {
        Database::connect(&self.url)
            .await
            .expect("the test database is reachable")
    }

    /// PostgreSQL only: lets connections into this database again, or shuts
    /// it off, as an outage would: no new connections, and every open one
    /// terminated. Returns once none is left. Only this database goes away:
    /// other tests share the server.
    pub async fn allow_connections(&self, allow: bool) {
        let postgres = self
            .postgres
            .as_ref()
            .expect("only a PostgreSQL database can be shut off");
        let name = &postgres.name;
        let admin = Database::connect(&postgres.admin_url)
            .await
            .expect("an administrative connection");
        admin
            .execute_unprepared(&format!(
                "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {allow}"
            ))
            .await
            .expect("altered");
        if !allow {
            terminate_backends(&admin, name).await;
        }
        let _ = admin.close().await;
    }
}

/// Terminates every connection to `name` until none is left: a backend
/// exits some time after it is told to, and an outage begins when none is
/// left.
async fn terminate_backends(admin: &DatabaseConnection, name: &str) {
    let started = Instant::now();
    loop {
        admin
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ))
            .await
            .expect("backends terminated");
        let left: i64 = admin
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{name}'"),
            ))
            .await
            .expect("pg_stat_activity is readable")
            .expect("one row")
            .try_get("", "n")
            .expect("a count");
        if left == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{left} connections to {name} survive pg_terminate_backend"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl fmt::Display for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.postgres {
            Some(postgres) => write!(f, "PostgreSQL database {}", postgres.name),
            None => write!(f, "SQLite file {}", self.url),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(PostgresDatabase { admin_url, name }) = self.postgres.take() else {
            return;
        };
        // Drop may run inside a runtime, which cannot block on async work:
        // drop the database from a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let dropped = match Database::connect(&admin_url).await {
                    Ok(admin) => {
                        let dropped = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                        let _ = admin.close().await;
                        dropped.map(|_| ())
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = dropped {
                    // Straight to stderr, as the harness captures print!:
                    // whoever cleans up needs the name.
                    let _ = writeln!(
                        std::io::stderr(),
                        "warning: could not drop database {name}: {e}"
                    );
                }
            });
        });
        let _ = dropped.join();
    }
}

/// [`TEST_DATABASE_URL`], or `None` after saying once, on the terminal, that
/// the PostgreSQL half of the suite is skipped.
pub fn test_postgres_url() -> Option<String> {
    static NOTICE: Once = Once::new();
    let url = std::env::var(TEST_DATABASE_URL)
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        NOTICE.call_once(|| {
            // Straight to stderr: the test harness captures print!.
            let _ = writeln!(
                std::io::stderr(),
                "\nnote: {TEST_DATABASE_URL} is not set, so the PostgreSQL tests pass without \
                 running; set it (e.g. postgres://postgres@127.0.0.1:5432/test) to run them\n"
            );
        });
    }
    url
}

/// `url` with its database name replaced by `name`; `None` unless `url`
/// has the form `postgres://user@host:port/database`.
fn with_database(url: &str, name: &str) -> Option<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (server, _) = base
        .rsplit_once('/')
        .filter(|(server, _)| server.contains("//") && !server.ends_with('/'))?;
    Some(match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        for (url, expected) in [
            ("postgres://u@h:5432/test", "postgres://u@h:5432/other"),
            (
                "postgres://u:p@h/test?sslmode=disable",
                "postgres://u:p@h/other?sslmode=disable",
            ),
        ] {
            assert_eq!(
                with_database(url, "other").as_deref(),
                Some(expected),
                "for {url}"
            );
        }
    }

    #[test]
    fn a_url_without_a_database_is_refused() {
        for url in ["postgres://u@h:5432", "not a url"] {
            assert_eq!(with_database(url, "other"), None, "for {url}");
        }
    }
}
