//! The change feed behind WatchIntegrations: every committed change of any
//! replica, read once and handed to every open stream of this process.
//!
//! # Where changes come from
//!
//! One dispatcher task takes the changes this replica commits
//! ([`Store::subscribe`], any backend) and, on PostgreSQL, the changes other
//! replicas announce, which the notification listener hands over
//! ([`RemoteChanges`], fed by `crate::invalidation`). On SQLite only this
//! process's changes are heard: another process sharing the file has no way
//! to tell it.
//!
//! For a creation or an update the dispatcher reads the integration once,
//! after the change has committed (a notification arrives, and a local
//! change is published, only then), and sends one [`Event`] to every
//! stream. Reads happen one after the other, so the last event of an
//! organization always carries a state at least as new as its last change.
//!
//! # When something may have been missed
//!
//! Nothing is dropped silently; a stream is told [`Event::Resync`] instead,
//! after which it must read again what it derived from earlier events:
//!
//! - when the stream falls more than the feed's capacity behind (its reader
//!   is slow, or it is not read at); the other streams are not held back,
//!   each has its own place in one bounded broadcast;
//! - when the dispatcher itself falls behind its inputs;
//! - when the listener loses its connection (and again once it listens
//!   again: what committed in between was never heard), or hears a change
//!   it cannot read, or one from a replica of an earlier version that
//!   announces activations only;
//! - when the changed integration cannot be read.
//!
//! Every stream starts with a RESYNC, sent once it is subscribed, so that
//! a caller who reads the state after that first message misses nothing.
//!
//! # Shutdown
//!
//! [`ChangeFeed::close`] ends every stream at once: the server's graceful
//! shutdown waits for the calls in flight, and a change stream never ends
//! by itself.

use std::sync::Arc;

use tokio::{
    sync::{
        broadcast::{self, error::RecvError},
        watch,
    },
    task::JoinHandle,
};
use tracing::warn;
use uuid::Uuid;

use crate::domain::OrganizationId;
use crate::store::{Change, ChangeKind, Integration, Store};

/// Events a stream may fall behind by, by default, before it is sent
/// RESYNC instead.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Other replicas' changes the dispatcher may fall behind by before the
/// streams are sent RESYNC. The listener never waits for the dispatcher.
const REMOTE_CAPACITY: usize = 4096;

/// What a stream is sent.
#[derive(Debug)]
pub enum Event {
    /// Changes may have been missed: what was derived from earlier events
    /// must be read again.
    Resync,
    /// One committed change.
    Changed {
        change: Change,
        /// The integration after the change, read once it committed;
        /// `None` for a deletion, and for a change whose integration is
        /// gone by the time it is read (its deletion's event follows).
        integration: Option<Box<Integration>>,
    },
}

impl Event {
    fn concerns(&self, organization: &OrganizationId) -> bool {
        match self {
            Self::Resync => true,
            Self::Changed { change, .. } => &change.organization_id == organization,
        }
    }
}

/// The feed every stream of this process subscribes to. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ChangeFeed {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    events: broadcast::Sender<Arc<Event>>,
    remote: broadcast::Sender<Heard>,
    closed: watch::Sender<bool>,
    replica: Uuid,
}

/// What the listener hands the dispatcher.
#[derive(Debug, Clone)]
enum Heard {
    Changed(Change),
    /// Changes of other replicas may have gone unheard.
    Missed,
}

impl ChangeFeed {
    /// A feed of `store`'s changes whose streams may each fall `capacity`
    /// events behind, and the dispatcher that feeds it, to be started with
    /// [`Dispatcher::spawn`]. Subscribes to `store` at once, so that no
    /// change committed from now on is missed, however late it starts.
    pub fn new(store: &Store, capacity: usize) -> (Self, Dispatcher) {
        let (events, _) = broadcast::channel(capacity.max(1));
        let (remote, remote_changes) = broadcast::channel(REMOTE_CAPACITY);
        let shared = Arc::new(Shared {
            events,
            remote,
            closed: watch::Sender::new(false),
            replica: store.replica(),
        });
        let dispatcher = Dispatcher {
            store: store.clone(),
            local: store.subscribe(),
            remote: remote_changes,
            shared: Arc::clone(&shared),
        };
        (Self { shared }, dispatcher)
    }

    /// Where the notification listener tells of other replicas' changes.
    pub fn remote(&self) -> RemoteChanges {
        RemoteChanges {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A new stream's subscription: every organization's changes, or
    /// `organization`'s only. Its first event is RESYNC.
    pub fn watch(&self, organization: Option<OrganizationId>) -> Watcher {
        Watcher {
            events: self.shared.events.subscribe(),
            closed: self.shared.closed.subscribe(),
            organization,
            greeted: false,
            _open: crate::metrics::OpenStream::open(),
        }
    }

    /// Ends every stream, and every stream opened from now on: the service
    /// is shutting down.
    pub fn close(&self) {
        self.shared.closed.send_replace(true);
    }
}

/// The notification listener's side of the feed: other replicas' changes,
/// and the news that some may have gone unheard. Never waits.
#[derive(Clone, Debug)]
pub struct RemoteChanges {
    shared: Arc<Shared>,
}

impl RemoteChanges {
    /// A change another replica announced. This replica's own are ignored:
    /// they were published here when they committed.
    pub fn changed(&self, change: Change) {
        if change.replica != self.shared.replica {
            // No dispatcher listening is no error.
            let _ = self.shared.remote.send(Heard::Changed(change));
        }
    }

    /// Other replicas' changes may have gone unheard: every stream is sent
    /// RESYNC.
    pub fn missed(&self) {
        let _ = self.shared.remote.send(Heard::Missed);
    }
}

/// One stream's place in the feed.
#[derive(Debug)]
pub struct Watcher {
    events: broadcast::Receiver<Arc<Event>>,
    closed: watch::Receiver<bool>,
    organization: Option<OrganizationId>,
    greeted: bool,
    /// Counts the stream among those open while it lives.
    _open: crate::metrics::OpenStream,
}

impl Watcher {
    /// The stream's next event: RESYNC first, then the changes of the
    /// organizations it watches, with a RESYNC wherever it fell behind and
    /// lost some. `None` once the feed is closed.
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        if *self.closed.borrow() {
            return None;
        }
        if !self.greeted {
            self.greeted = true;
            return Some(Arc::new(Event::Resync));
        }
        loop {
            let received = tokio::select! {
                biased;
                _ = self.closed.wait_for(|closed| *closed) => return None,
                received = self.events.recv() => received,
            };
            match received {
                Ok(event) => {
                    if self
                        .organization
                        .as_ref()
                        .is_none_or(|organization| event.concerns(organization))
                    {
                        return Some(event);
                    }
                }
                // The receiver has moved on to the oldest event still held.
                Err(RecvError::Lagged(_)) => return Some(Arc::new(Event::Resync)),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// The task that reads each change once and sends it to every stream.
pub struct Dispatcher {
    store: Store,
    local: broadcast::Receiver<Change>,
    remote: broadcast::Receiver<Heard>,
    shared: Arc<Shared>,
}

impl Dispatcher {
    /// Dispatches until the returned handle is aborted.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(mut self) {
        loop {
            let heard = tokio::select! {
                local = self.local.recv() => match local {
                    Ok(change) => Heard::Changed(change),
                    Err(RecvError::Lagged(missed)) => {
                        warn!(missed, "change streams fell behind this replica's changes; resyncing them");
                        Heard::Missed
                    }
                    // The store holds its sender, and this task the store.
                    Err(RecvError::Closed) => return,
                },
                remote = self.remote.recv() => match remote {
                    Ok(heard) => heard,
                    Err(RecvError::Lagged(missed)) => {
                        warn!(missed, "change streams fell behind other replicas' changes; resyncing them");
                        Heard::Missed
                    }
                    Err(RecvError::Closed) => return,
                },
            };
            // Nobody watches: nothing to read, nobody to tell.
            if self.shared.events.receiver_count() == 0 {
                continue;
            }
            let event = match heard {
                Heard::Changed(change) => self.read(change).await,
                Heard::Missed => Event::Resync,
            };
            let _ = self.shared.events.send(Arc::new(event));
        }
    }

    /// The event of `change`, with the integration as it is now.
    async fn read(&self, change: Change) -> Event {
        if change.kind == ChangeKind::Deleted {
            return Event::Changed {
                change,
                integration: None,
            };
        }
        match self.store.integration(&change.organization_id).await {
            Ok(found) => Event::Changed {
                // Deleted since, and perhaps created again: not the
                // integration this change was made to.
                integration: found
                    .filter(|found| found.client_id == change.client_id)
                    .map(Box::new),
                change,
            },
            Err(error) => {
                warn!(
                    %error,
                    organization_id = change.organization_id.as_str(),
                    "cannot read a changed integration; resyncing the change streams"
                );
                Event::Resync
            }
        }
    }
}
