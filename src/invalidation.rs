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

use sea_orm::{DbBackend, sqlx::postgres::PgListener};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::cache::CredentialCache;
use crate::store::{SECRET_ACTIVATED, Store};

/// How long to wait before retrying a failed listener connection.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Starts listening for activations made by any replica, when the database
/// can tell. The task runs until the returned handle is aborted.
pub fn listen(store: &Store, cache: Arc<CredentialCache>) -> Option<JoinHandle<()>> {
    if store.backend() != DbBackend::Postgres {
        return None;
    }
    let pool = store.connection().get_postgres_connection_pool().clone();
    Some(tokio::spawn(async move {
        // Warn once per outage, not once per retry.
        let mut warned = false;
        loop {
            let listening = match PgListener::connect_with(&pool).await {
                Ok(mut listener) => listener.listen(SECRET_ACTIVATED).await.map(|()| listener),
                Err(error) => Err(error),
            };
            match listening {
                Ok(mut listener) => {
                    // Whatever changed before this point went unheard.
                    cache.forget_all();
                    info!("listening for secret activations on other replicas");
                    warned = false;
                    follow(&mut listener, &cache).await;
                }
                Err(error) if !warned => {
                    warn!(%error, "cannot listen for secret activations; retrying");
                    warned = true;
                }
                Err(_) => {}
            }
            cache.forget_all();
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }))
}

/// Applies notifications until the listener fails for good.
async fn follow(listener: &mut PgListener, cache: &CredentialCache) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => cache.forget(notification.payload()),
            Ok(None) => {
                // The connection dropped; the next receive reconnects and
                // listens again, but what happened in between is lost.
                warn!("lost the connection that listens for secret activations; reconnecting");
                cache.forget_all();
            }
            Err(error) => {
                warn!(%error, "listening for secret activations failed");
                return;
            }
        }
    }
}
