//! Telling every replica of every change: one PostgreSQL connection that
//! keeps this replica's credential cache honest and feeds its change
//! streams.
//!
//! Every change notifies the `integration_changed` channel inside its
//! transaction (see `crate::store`), so PostgreSQL delivers the
//! notification when, and only if, the change commits. Every replica
//! listens on a connection of its own: it forgets what its cache holds for
//! the client and hands the change to its change streams
//! (`crate::changes`). It also listens on the channel of earlier versions,
//! `integration_secret_activated`, to hear replicas not yet upgraded during
//! a rolling upgrade. A replica of this version notifies both, so the cache
//! may forget a client twice, which is harmless; the streams get events
//! from the new channel only, and a RESYNC for a change announced on the
//! old channel alone.
//!
//! A replica that loses the connection may have missed notifications: it
//! forgets its whole cache and sends its streams RESYNC, and does both
//! again once it listens again, since what committed in between was never
//! heard. The cache's revalidation interval bounds what a lost notification
//! can cost in the meantime.
//!
//! SQLite has no notifications: the changing process forgets at once and
//! tells its own streams; other processes sharing the file rely on the
//! revalidation interval, and their streams hear nothing of it.

use std::{collections::HashSet, sync::Arc, time::Duration};

use sea_orm::{
    DbBackend, sqlx,
    sqlx::postgres::{PgListener, PgNotification, PgPool},
};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use uuid::Uuid;

use crate::changes::RemoteChanges;
use crate::domain::ClientId;
use crate::store::{ActivationNotice, Change, INTEGRATION_CHANGED, SECRET_ACTIVATED, Store};
use crate::validation::cache::CredentialCache;

/// How long to wait before retrying a failed listener connection.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A connection listening for changes made by any replica.
pub struct Subscription {
    listener: PgListener,
    pool: PgPool,
    /// This process: its own notices are ignored, since it forgot (and may
    /// have remembered the new secret) when it made the change, and told
    /// its streams once it committed.
    replica: Uuid,
    /// Where other replicas' changes go besides the cache, if anywhere.
    changes: Option<RemoteChanges>,
}

/// Starts listening, when the database can tell (PostgreSQL). Done before
/// the service serves, so that nothing is cached, and no stream opened,
/// before it listens.
pub async fn subscribe(store: &Store) -> Result<Option<Subscription>, sqlx::Error> {
    if store.backend() != DbBackend::Postgres {
        return Ok(None);
    }
    let pool = store.connection().get_postgres_connection_pool().clone();
    Ok(Some(Subscription {
        listener: listen(&pool).await?,
        pool,
        replica: store.replica(),
        changes: None,
    }))
}

/// A listener on both channels that reports a lost connection at once.
/// (By default sqlx first tries to reconnect, to a database that may just
/// have gone away, and only then reports the loss: the cache would go on
/// trusting its entries, and the streams on waiting, for as long as that
/// attempt takes.)
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.eager_reconnect(false);
    listener
        .listen_all([INTEGRATION_CHANGED, SECRET_ACTIVATED])
        .await?;
    Ok(listener)
}

impl Subscription {
    /// Also hands other replicas' changes, and the news of a lost
    /// connection, to `changes`: the change streams' feed.
    pub fn feeding(mut self, changes: RemoteChanges) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Applies notifications to `cache` (and the feed, if any) until the
    /// returned handle is aborted, reconnecting whenever the connection is
    /// lost: at once, then every [`RETRY_AFTER`].
    pub fn follow(self, cache: Arc<CredentialCache>) -> JoinHandle<()> {
        let Self {
            mut listener,
            pool,
            replica,
            changes,
        } = self;
        tokio::spawn(async move {
            let mut hearing = Hearing {
                cache: &cache,
                changes: changes.as_ref(),
                replica,
                announcers: Announcers::default(),
            };
            loop {
                follow(&mut listener, &mut hearing).await;
                // Notices sent until the connection is back are lost:
                // nothing cached before now is trusted without a database
                // read, and the streams are told at once.
                hearing.missed();
                listener = reconnect(&pool).await;
                // Nor what was read, or missed, while nobody listened.
                hearing.missed();
                info!("listening again for changes on other replicas");
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
                warn!(%error, "cannot listen for changes on other replicas; retrying");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Applies notifications until the listener's connection is lost.
async fn follow(listener: &mut PgListener, hearing: &mut Hearing<'_>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => hearing.apply(&notification),
            Ok(None) => {
                warn!(
                    "lost the connection that listens for changes on other replicas; reconnecting"
                );
                return;
            }
            Err(error) => {
                warn!(%error, "listening for changes on other replicas failed; reconnecting");
                return;
            }
        }
    }
}

/// What the listener applies its notifications to.
struct Hearing<'a> {
    cache: &'a CredentialCache,
    changes: Option<&'a RemoteChanges>,
    replica: Uuid,
    announcers: Announcers,
}

impl Hearing<'_> {
    fn apply(&mut self, notification: &PgNotification) {
        if notification.channel() == INTEGRATION_CHANGED {
            self.changed(notification.payload());
        } else {
            self.activated(notification.payload());
        }
    }

    /// A change announced on the changes channel.
    fn changed(&mut self, payload: &str) {
        match Change::parse(payload) {
            Some(change) if change.replica == self.replica => {}
            Some(change) => {
                self.announcers.heard(change.replica);
                // A generation, say, changes no answer: cached ones stay.
                if change.revalidates {
                    self.cache.forget(&change.client_id);
                }
                if let Some(changes) = self.changes {
                    changes.changed(change);
                }
            }
            // Not ours to read: assume anything changed.
            None => self.missed(),
        }
    }

    /// An activation announced on the channel of earlier versions.
    fn activated(&mut self, payload: &str) {
        match ActivationNotice::parse(payload) {
            Some(notice) if notice.replica == self.replica => {}
            // A replica of this version sends its change on the changes
            // channel first, in the same transaction: heard already, and
            // forgetting again would only overtake reads confirming the
            // client's new secret.
            Some(notice) if self.announcers.announces(notice.replica) => {}
            Some(notice) => {
                match ClientId::parse(notice.client_id) {
                    Some(client_id) => self.cache.forget(&client_id),
                    None => self.cache.forget_all(),
                }
                self.streams_missed();
            }
            None => self.missed(),
        }
    }

    /// Anything may have changed unheard.
    fn missed(&self) {
        self.cache.forget_all();
        self.streams_missed();
    }

    fn streams_missed(&self) {
        if let Some(changes) = self.changes {
            changes.missed();
        }
    }
}

/// The replicas heard announcing their changes on the changes channel.
///
/// A replica of an earlier version announces activations on the older
/// channel only: what it changes reaches no stream as an event, so the
/// streams are sent RESYNC instead. A replica of this version notifies the
/// changes channel first, in the same transaction, and PostgreSQL delivers
/// a transaction's notifications in order: by the time its notice on the
/// older channel arrives, it is known.
#[derive(Debug, Default)]
struct Announcers(HashSet<Uuid>);

/// Replicas remembered at most (each process is one, with an id of its
/// own); then forgotten all at once, which costs nothing: a replica is
/// remembered again by the notice that precedes its next activation's.
const ANNOUNCERS: usize = 1024;

impl Announcers {
    fn heard(&mut self, replica: Uuid) {
        if self.0.len() >= ANNOUNCERS && !self.0.contains(&replica) {
            self.0.clear();
        }
        self.0.insert(replica);
    }

    fn announces(&self, replica: Uuid) -> bool {
        self.0.contains(&replica)
    }
}
