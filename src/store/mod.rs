//! Storage: the tables, every query, and the transactions that keep the
//! secret state machine consistent across replicas.
//!
//! Every query that reads or changes an organization's data takes the
//! [`OrganizationId`] it acts for. The exceptions serve the gateway and the
//! service itself: the gateway's lookup by client ID, which is how it
//! learns the organization; the rehash of a secret it has just verified, by
//! that secret's id (which changes the hash only of the same row, still
//! active, still holding the hash that verified); the record of when secrets
//! were used, by their ids (`usage`); and the expiry sweep, which finds what
//! is due across organizations and then discards each under its own
//! organization's lock (`expiry`).
//!
//! Transactions that change secrets begin by touching the organization's
//! `integrations` row. On PostgreSQL that takes the row lock, so concurrent
//! changes to one organization (from any replica) run one after the other
//! while other organizations proceed in parallel; on SQLite, whose writers
//! are serialized anyway, it makes the transaction a writer from its first
//! statement so it never has to upgrade a stale read snapshot.

mod audit;
mod changes;
mod domains;
mod expiry;
mod integrations;
mod pages;
pub mod schema;
mod secrets;
mod usage;

use std::time::Duration;

use chrono::{DateTime, Utc};
use migrations::MigrationStatus;
use migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr,
    TransactionTrait,
};
use uuid::Uuid;

pub use audit::AuditEvent;
pub use changes::{Change, ChangeKind, INTEGRATION_CHANGED};
pub use domains::{DomainUpdate, DomainVerification};
pub use expiry::Expired;
pub use integrations::{Candidates, Created, Deleted, RetiredSecret};
pub use pages::{Cursor, Page, Paged};
pub use secrets::{
    Activation, ActivationNotice, Generated, NewSecret, Revocation, SECRET_ACTIVATED,
};

use crate::config::DatabaseSettings;
use crate::domain::{ClientId, DomainState, OrganizationId, SecretHash, SecretState};
use crate::error::Error;

/// The database's schema, against this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    /// Every migration applied.
    Current,
    /// No migration applied: a new database.
    Empty,
    /// Some applied, `pending` not yet.
    Behind { pending: usize },
    /// Migrations applied that this binary does not know: a newer version
    /// migrated the database. The text names them.
    Ahead(String),
}

/// The database, shared by every handler. Cloning is cheap (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// This process, as its notifications name it.
    replica: Uuid,
    /// This process's committed changes, for its own subscribers.
    changes: tokio::sync::broadcast::Sender<Change>,
}

/// How many connections the pool holds, in use and idle, and its bound.
#[derive(Debug, Clone, Copy)]
pub struct PoolConnections {
    pub in_use: usize,
    pub idle: usize,
    pub max: u32,
}

/// Committed changes this process's subscribers may fall behind by before
/// they are told they lagged.
const LOCAL_CHANGES: usize = 4096;

/// An integration and the secrets the Integration tab shows.
#[derive(Debug, Clone)]
pub struct Integration {
    pub organization_id: OrganizationId,
    pub client_id: ClientId,
    pub custom_domain: Option<CustomDomain>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub active_secret: Option<SecretMetadata>,
    pub pending_secret: Option<SecretMetadata>,
}

impl Integration {
    /// The custom domain, once it is proven: what users log in at instead
    /// of the default.
    pub fn verified_domain(&self) -> Option<&str> {
        self.custom_domain
            .as_ref()
            .filter(|domain| domain.state == DomainState::Verified)
            .map(|domain| domain.name.as_str())
    }
}

/// The custom domain an organization set, and how far its proof got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomDomain {
    /// In ASCII (punycode), lower case.
    pub name: String,
    pub state: DomainState,
    /// What the TXT record `_centralauth.<name>` must hold.
    pub verification_code: String,
    pub verified_at: Option<DateTime<Utc>>,
}

/// What may be shown of a stored secret: never its value, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMetadata {
    pub id: Uuid,
    pub state: SecretState,
    /// The value's last four characters.
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// PENDING only: when it is discarded unless activated first.
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_retired_use_at: Option<DateTime<Utc>>,
}

/// What the gateway's check needs: whose client this is, and the hash of its
/// active secret.
#[derive(Debug, Clone)]
pub struct ActiveCredentials {
    pub organization_id: OrganizationId,
    /// The organization's custom domain, if it is verified.
    pub verified_domain: Option<String>,
    pub secret_id: Uuid,
    pub hash: SecretHash,
}

/// How long a pooled connection may sit idle before it is pinged on its
/// next use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Any value that fits in a PostgreSQL `bigint`; it names the lock that
/// serializes migrations across replicas.
const MIGRATION_LOCK: i64 = 0x6361_735f_6d69_6772; // "cas_migr"

impl Store {
    /// Opens a pool on `options.url`: `sqlite://…` or `postgres://…`.
    ///
    /// The password is taken out of the URL and handed to the driver alone,
    /// so that no log line or error message built from the URL can carry it.
    ///
    /// SQLite runs in WAL mode (readers never wait for the writer), waits up
    /// to five seconds for a busy writer, syncs every commit to disk, and
    /// enforces foreign keys.
    pub async fn connect(options: &DatabaseSettings) -> Result<Self, DbErr> {
        let (url, password) = split_password(&options.url)?;
        let mut connect = ConnectOptions::new(url);
        connect
            .max_connections(options.max_connections)
            .min_connections(1)
            .connect_timeout(options.acquire_timeout)
            .acquire_timeout(options.acquire_timeout)
            // A pooled connection that sat idle long enough to have died
            // with the database (or a proxy's idle timeout) is pinged and
            // replaced instead of failing the next call that draws it. A
            // busy connection is not: pinging it would double the round
            // trips of every query. If one died anyway, its call fails
            // UNAVAILABLE and the pool closes it (it tests every connection
            // it takes back).
            .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
            .sqlx_logging(false)
            .map_sqlx_postgres_opts(move |postgres| match &password {
                Some(password) => postgres.password(password),
                None => postgres,
            })
            .map_sqlx_sqlite_opts(|sqlite| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                sqlite
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
            });
        let db = Database::connect(connect).await?;
        Ok(Self {
            db,
            replica: Uuid::new_v4(),
            changes: tokio::sync::broadcast::channel(LOCAL_CHANGES).0,
        })
    }

    /// Applies pending migrations. Replicas that start together take turns:
    /// on PostgreSQL the whole run holds an advisory lock and commits as one
    /// transaction, so a replica sees either no schema or all of it.
    pub async fn migrate(&self) -> Result<Vec<String>, DbErr> {
        let txn = self.db.begin().await?;
        if self.backend() == DbBackend::Postgres {
            txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
                .await?;
        }
        let pending: Vec<String> = Migrator::get_pending_migrations(&txn)
            .await?
            .iter()
            .map(|migration| migration.name().to_owned())
            .collect();
        Migrator::up(&txn, None).await?;
        txn.commit().await?;
        Ok(pending)
    }

    /// How the database's schema compares with the migrations this binary
    /// knows, without changing anything.
    pub async fn schema(&self) -> Result<Schema, DbErr> {
        match Migrator::get_migration_with_status_read_only(&self.db).await {
            Ok(migrations) => {
                let pending = migrations
                    .iter()
                    .filter(|migration| migration.status() == MigrationStatus::Pending)
                    .count();
                Ok(if pending == 0 {
                    Schema::Current
                } else if pending == migrations.len() {
                    Schema::Empty
                } else {
                    Schema::Behind { pending }
                })
            }
            // Applied migrations this binary has no file for: a newer
            // version migrated the database.
            Err(DbErr::Custom(message)) if message.contains("is missing") => {
                Ok(Schema::Ahead(message))
            }
            Err(error) => Err(error),
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.db.ping().await
    }

    /// The connection pool's size, for the metrics.
    pub fn pool_connections(&self) -> Option<PoolConnections> {
        let of = |size: u32, idle: usize, max: u32| PoolConnections {
            in_use: (size as usize).saturating_sub(idle),
            idle,
            max,
        };
        match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                Some(of(
                    pool.size(),
                    pool.num_idle(),
                    pool.options().get_max_connections(),
                ))
            }
            DbBackend::Sqlite => {
                let pool = self.db.get_sqlite_connection_pool();
                Some(of(
                    pool.size(),
                    pool.num_idle(),
                    pool.options().get_max_connections(),
                ))
            }
            _ => None,
        }
    }

    /// This process's id in the notifications it sends.
    pub fn replica(&self) -> Uuid {
        self.replica
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The underlying connection, for tests that inspect the tables.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(self) -> Result<(), DbErr> {
        self.db.close().await
    }
}

/// Splits a database URL into the URL without its password, fit for logs
/// and error messages, and the password itself (percent-decoded).
pub fn split_password(url: &str) -> Result<(String, Option<String>), DbErr> {
    // url::ParseError names the fault, never the input.
    let mut parsed = url::Url::parse(url)
        .map_err(|e| DbErr::Custom(format!("the database URL is not a valid URL: {e}")))?;
    let Some(encoded) = parsed.password().map(str::to_owned) else {
        return Ok((url.to_owned(), None));
    };
    let password = percent_encoding::percent_decode_str(&encoded)
        .decode_utf8()
        .map_err(|_| DbErr::Custom("the database password is not UTF-8".into()))?
        .into_owned();
    parsed
        .set_password(None)
        .map_err(|()| DbErr::Custom("the database URL cannot hold a password".into()))?;
    Ok((parsed.into(), Some(password)))
}

/// The current time at the precision every backend keeps (PostgreSQL
/// stores microseconds), so that what a call returns equals what a later
/// read of the same row returns.
fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

impl From<DbErr> for Error {
    fn from(error: DbErr) -> Self {
        if is_transient(&error) {
            Error::unavailable(error)
        } else {
            Error::internal(error)
        }
    }
}

/// Whether a database error means "not reachable now" (down, restarting,
/// overloaded, busy) rather than "this query is wrong". Transient errors are
/// answered `UNAVAILABLE`, which tells callers to retry.
pub fn is_transient(error: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                Sqlx::Io(_)
                | Sqlx::Tls(_)
                | Sqlx::Protocol(_)
                | Sqlx::PoolTimedOut
                | Sqlx::PoolClosed
                | Sqlx::WorkerCrashed
                | Sqlx::BeginFailed => true,
                Sqlx::Database(db) => db.code().is_some_and(|code| transient_code(&code)),
                _ => false,
            }
        }
        _ => false,
    }
}

/// SQLSTATEs (PostgreSQL) and result codes (SQLite) that pass with time.
fn transient_code(code: &str) -> bool {
    matches!(
        code,
        // PostgreSQL: connection exception, insufficient resources, operator
        // intervention (shutdown, crash recovery), serialization failure,
        // deadlock, lock not available.
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")
    ) || matches!(
        code,
        "40001" | "40P01" | "55P03"
        // SQLite: SQLITE_BUSY and SQLITE_LOCKED, and their extended codes.
        | "5" | "6" | "261" | "262" | "517" | "773"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url_and_is_decoded() {
        let (url, password) = split_password(
            "postgres://svc:p%40ss%2Fw0rd@db.internal:5432/integration?sslmode=require",
        )
        .expect("a valid URL");
        assert_eq!(
            url,
            "postgres://svc@db.internal:5432/integration?sslmode=require"
        );
        assert_eq!(password.as_deref(), Some("p@ss/w0rd"));
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/test",
            "sqlite://data/integration-service.db?mode=rwc",
            "sqlite:///var/lib/integration/db.sqlite",
        ] {
            assert_eq!(split_password(url).expect("valid"), (url.to_owned(), None));
        }
    }

    #[test]
    fn an_unparseable_url_is_refused_without_repeating_it() {
        let error = split_password("postgres://svc:hunter2@db:notaport/x").expect_err("invalid");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}

#[cfg(test)]
mod notice_tests {
    use super::*;

    #[test]
    fn an_activation_notice_reads_back_what_was_written() {
        let notice = ActivationNotice {
            client_id: "abcDEF0123456789abcdefGH",
            replica: Uuid::new_v4(),
        };
        let payload = notice.to_string();
        assert_eq!(ActivationNotice::parse(&payload), Some(notice));
        assert_eq!(ActivationNotice::parse("no-replica"), None);
        assert_eq!(ActivationNotice::parse("id not-a-uuid"), None);
    }
}
