//! Telling every replica that a client's active secret changed.
//!
//! An activation notifies the `integration_secret_activated` channel with the
//! client ID, inside its transaction, so PostgreSQL delivers the notification
//! when, and only if, the change commits. Every replica listens on a
//! connection of its own and forgets what its cache holds for that client.
//! A replica that loses the connection forgets its whole cache, since it may
//! have missed notifications, and reconnects. The cache's revalidation
//! interval bounds what a lost notification can cost in the meantime.
//!
//! SQLite has no notifications: the activating process forgets at once, and
//! other processes sharing the file rely on the revalidation interval.

use std::{sync::Arc, time::Duration};

use sea_orm::{
    DbBackend, sqlx,
    sqlx::postgres::{PgListener, PgPool},
};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use uuid::Uuid;

use crate::domain::ClientId;
use crate::store::{ActivationNotice, SECRET_ACTIVATED, Store};
use crate::validation::cache::CredentialCache;

/// How long to wait before retrying a failed listener connection.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A connection listening for activations made by any replica.
pub struct Subscription {
    listener: PgListener,
    pool: PgPool,
    /// This process: its own notices are ignored, since it forgot (and may
    /// have remembered the new secret) when it activated.
    replica: Uuid,
}

/// Starts listening, when the database can tell (PostgreSQL). Done before
/// the service serves, so that nothing is cached before it listens.
pub async fn subscribe(store: &Store) -> Result<Option<Subscription>, sqlx::Error> {
    if store.backend() != DbBackend::Postgres {
        return Ok(None);
    }
    let pool = store.connection().get_postgres_connection_pool().clone();
    Ok(Some(Subscription {
        listener: listen(&pool).await?,
        pool,
        replica: store.replica(),
    }))
}

/// A listener on the activations channel that reports a lost connection
/// at once. (By default sqlx first tries to reconnect, to a database that
/// may just have gone away, and only then reports the loss: the cache would
/// go on trusting its entries for as long as that attempt takes.)
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.eager_reconnect(false);
    listener.listen(SECRET_ACTIVATED).await?;
    Ok(listener)
}

impl Subscription {
    /// Applies notifications to `cache` until the returned handle is
    /// aborted, reconnecting whenever the connection is lost: at once, then
    /// every [`RETRY_AFTER`].
    pub fn follow(self, cache: Arc<CredentialCache>) -> JoinHandle<()> {
        let Self {
            mut listener,
            pool,
            replica,
        } = self;
        tokio::spawn(async move {
            loop {
                follow(&mut listener, &cache, replica).await;
                // Notices sent until the connection is back are lost:
                // nothing cached before now is trusted without a database
                // read.
                cache.forget_all();
                listener = reconnect(&pool).await;
                // Nor what was read while nobody listened.
                cache.forget_all();
                info!("listening again for secret activations on other replicas");
            }
        })
    }
}

/// Listens again, retrying until it can; warns once per outage, not once
/// per retry.
async fn reconnect(pool: &PgPool) -> PgListener {
    let mut warned = false;
    loop {
        match listen(pool).await {
            Ok(listener) => return listener,
            Err(error) if !warned => {
                warn!(%error, "cannot listen for secret activations; retrying");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Applies notifications until the listener's connection is lost.
async fn follow(listener: &mut PgListener, cache: &CredentialCache, replica: Uuid) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => match ActivationNotice::parse(notification.payload()) {
                Some(notice) if notice.replica == replica => {}
                Some(notice) => match ClientId::parse(notice.client_id) {
                    Some(client_id) => cache.forget(&client_id),
                    None => cache.forget_all(),
                },
                // Not ours to read: assume anything changed.
                None => cache.forget_all(),
            },
            Ok(None) => {
                warn!("lost the connection that listens for secret activations; reconnecting");
                return;
            }
            Err(error) => {
                warn!(%error, "listening for secret activations failed; reconnecting");
                return;
            }
        }
    }
}
