//! The databases a run creates, and their removal: a temporary SQLite file,
//! or a fresh PostgreSQL database on the server that BENCH_DATABASE_URL
//! names (`bench_<random>` for the service, `bench_pgbench_<random>` for
//! pgbench). Every PostgreSQL database is dropped at the end of its use,
//! and after an interruption by [`drop_pending`].

use std::sync::Mutex;

use sea_orm::{ConnectionTrait, Database};

use crate::{Context, Res, lock, options::Backend};

/// PostgreSQL databases to drop if the run is interrupted: (admin URL, name).
static PENDING_DROPS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Drops every PostgreSQL database that a run interrupted left behind.
pub async fn drop_pending() {
    let pending = std::mem::take(&mut *lock(&PENDING_DROPS));
    for (admin_url, name) in pending {
        drop_database(&admin_url, &name).await;
    }
}

/// A database of its own on the PostgreSQL server of BENCH_DATABASE_URL,
/// created empty; [`PostgresDatabase::remove`] drops it.
pub struct PostgresDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PostgresDatabase {
    /// Creates `<prefix><random>` through the database of `admin_url`.
    pub async fn create(admin_url: &str, prefix: &str) -> Res<Self> {
        let name = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
        let url = with_database(admin_url, &name)?;
        let admin = Database::connect(admin_url)
            .await
            .context("connecting to BENCH_DATABASE_URL")?;
        let created = admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .context("CREATE DATABASE");
        let _ = admin.close().await;
        created?;
        lock(&PENDING_DROPS).push((admin_url.to_owned(), name.clone()));
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this database: BENCH_DATABASE_URL with its name.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn remove(self) {
        drop_database(&self.admin_url, &self.name).await;
        lock(&PENDING_DROPS).retain(|(_, name)| *name != self.name);
    }
}

/// The database of one backend's run.
pub struct BenchDatabase {
    pub backend: Backend,
    pub url: String,
    /// What the report calls it: the SQLite file, or `database <name>`.
    pub label: String,
    postgres: Option<PostgresDatabase>,
    /// Removed, with the SQLite file in it, when this is dropped.
    _dir: Option<tempfile::TempDir>,
}

impl BenchDatabase {
    pub async fn create(backend: Backend, postgres_url: Option<&str>) -> Res<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().context("a temporary directory")?;
                let path = dir.path().join("bench.db");
                Ok(Self {
                    backend,
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    label: path.display().to_string(),
                    postgres: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_url.ok_or("no BENCH_DATABASE_URL")?;
                let database = PostgresDatabase::create(admin_url, "bench_").await?;
                Ok(Self {
                    backend,
                    url: database.url().to_owned(),
                    label: format!("database {}", database.name()),
                    postgres: Some(database),
                    _dir: None,
                })
            }
        }
    }

    pub async fn remove(self) {
        if let Some(database) = self.postgres {
            database.remove().await;
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    match Database::connect(admin_url).await {
        Ok(admin) => {
            if let Err(e) = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
            {
                eprintln!("warning: could not drop database {name}: {e}");
            }
            let _ = admin.close().await;
        }
        Err(e) => eprintln!("warning: could not drop database {name}: {e}"),
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> Res<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .map(|i| i + 3)
        .ok_or("BENCH_DATABASE_URL has the form postgres://user@host:port/database")?;
    let server = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    Ok(match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    })
}
