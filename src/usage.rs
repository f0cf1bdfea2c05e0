//! When each secret was last used (`Secret.last_use_time`), and when a
//! retired one was last presented (`Secret.last_retired_use_time`),
//! recorded off the request path.
//!
//! The gateway validates the same client over and over, so what a
//! validation does here must cost it nothing it could see: a
//! [`UsageRecorder`] call asks a per-secret gate whether this is the first
//! use of the interval (one lookup in a bounded map, and no allocation, when
//! the secret was recorded within the interval) and, if it is, puts the use
//! in a bounded queue with `try_send`. Nothing waits: a full queue drops the
//! use, counts it, and opens the secret's gate again so that its next use
//! tries again. A task of its own ([`UsageQueue::write_to`]) takes what is
//! queued and writes it in batches, one `UPDATE … WHERE id IN (…)` per kind,
//! after a pause of [`WRITE_EVERY`] since the last write.
//!
//! So the first use of a secret on a replica reaches the database within
//! that pause and a write (well under a second), and later ones at most
//! once per interval (`UsageSettings::interval`: a minute, not a flag) per
//! secret per replica. A recorded time lags the true last use by at most
//! that interval. Recording a use is not a change: it touches neither the
//! integration's `updated_at` nor the audit trail, and announces nothing.
//!
//! A retired (revoked or discarded) value still answers `valid: false`;
//! here it is also counted, recorded through the same kind of gate, and
//! logged at WARN once per interval per secret, with the client ID and the
//! secret's id, never the value.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::policy::EvictionPolicy;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::UsageSettings;
use crate::domain::ClientId;
use crate::store::Store;

/// Uses that may wait for the writer, at most; more are dropped (and
/// counted). A write every [`WRITE_EVERY`] takes them all.
const QUEUE_CAPACITY: usize = 4096;

/// The writer's pause after a write, in which the next uses gather: the
/// longest a queued use waits for its write to start.
pub const WRITE_EVERY: Duration = Duration::from_millis(250);

/// Secret ids per `UPDATE`, far below every backend's limit on bound
/// parameters.
const IDS_PER_STATEMENT: usize = 500;

/// What one validation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// The secret validated.
    Valid(Uuid),
    /// The secret is revoked or discarded, and was presented anyway.
    Retired(Uuid),
}

/// Records uses of secrets from the validation path. Cloning is cheap; every
/// method returns at once.
#[derive(Clone)]
pub struct UsageRecorder {
    shared: Arc<Shared>,
}

struct Shared {
    valid: Gate,
    retired: Gate,
    queue: mpsc::Sender<Use>,
    counters: Arc<Counters>,
}

/// The recorder's counters, shared with the writer.
#[derive(Debug, Default)]
struct Counters {
    recorded: AtomicU64,
    dropped: AtomicU64,
    retired_seen: AtomicU64,
}

/// What the recorder has counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    /// Uses written to the database.
    pub recorded: u64,
    /// Uses that passed their gate but were never written: the queue was
    /// full (or the writer had stopped), or their write failed.
    pub dropped: u64,
    /// Validations that presented a revoked or discarded value, every one
    /// of them, not only those recorded (identical checks under way at once
    /// share one verify, and count once).
    pub retired_seen: u64,
}

/// The receiving end of a recorder's queue: uses waiting for their write.
pub struct UsageQueue {
    receiver: mpsc::Receiver<Use>,
    counters: Arc<Counters>,
}

/// A recorder and its queue, which [`UsageQueue::write_to`] empties into
/// the database.
pub fn recorder(settings: &UsageSettings) -> (UsageRecorder, UsageQueue) {
    recorder_with_queue(settings, QUEUE_CAPACITY)
}

fn recorder_with_queue(settings: &UsageSettings, capacity: usize) -> (UsageRecorder, UsageQueue) {
    let (queue, receiver) = mpsc::channel(capacity.max(1));
    let counters = Arc::new(Counters::default());
    let recorder = UsageRecorder {
        shared: Arc::new(Shared {
            valid: Gate::new(settings),
            retired: Gate::new(settings),
            queue,
            counters: Arc::clone(&counters),
        }),
    };
    (recorder, UsageQueue { receiver, counters })
}

impl UsageRecorder {
    /// `secret_id` validated: recorded if it is the secret's first use in
    /// the interval.
    pub fn used(&self, secret_id: Uuid) {
        let shared = &*self.shared;
        if shared.valid.first(secret_id) {
            shared.queue(Use::Valid(secret_id), &shared.valid);
        }
    }

    /// `client_id` presented the value of its retired secret `secret_id`
    /// (and was answered `valid: false`): counted every time; logged and
    /// recorded on the secret's first such use in the interval.
    pub fn retired_used(&self, secret_id: Uuid, client_id: &ClientId) {
        let shared = &*self.shared;
        shared.counters.retired_seen.fetch_add(1, Ordering::Relaxed);
        if shared.retired.first(secret_id) {
            warn!(
                client_id = client_id.as_str(),
                %secret_id,
                "a retired secret was presented: answered invalid; whoever holds it still \
                 uses it"
            );
            shared.queue(Use::Retired(secret_id), &shared.retired);
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> UsageCounts {
        self.shared.counters.snapshot()
    }
}

impl Shared {
    /// Queues `usage` without waiting; if the queue is full, drops it and
    /// opens its secret's `gate` again, so that the next use tries again.
    fn queue(&self, usage: Use, gate: &Gate) {
        if self.queue.try_send(usage).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            gate.reopen(usage.secret_id());
        }
    }
}

impl Counters {
    fn snapshot(&self) -> UsageCounts {
        UsageCounts {
            recorded: self.recorded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retired_seen: self.retired_seen.load(Ordering::Relaxed),
        }
    }
}

impl Use {
    fn secret_id(self) -> Uuid {
        match self {
            Self::Valid(id) | Self::Retired(id) => id,
        }
    }
}

/// The secrets whose use was recorded within the interval, keyed exactly by
/// secret id: one secret's use never holds back another's. Bounded by
/// configuration; a full gate forgets the secret recorded longest ago (the
/// next to be let through anyway), which can only make a record early,
/// never miss one.
struct Gate {
    recent: moka::sync::Cache<Uuid, ()>,
}

impl Gate {
    fn new(settings: &UsageSettings) -> Self {
        Self {
            recent: moka::sync::Cache::builder()
                .max_capacity(settings.tracked_secrets.max(1))
                .time_to_live(settings.interval)
                // Admit every secret (one kept out would be recorded on each
                // of its uses); lookups record no reads (see `first`), so
                // the least recently used is the least recently recorded.
                .eviction_policy(EvictionPolicy::lru())
                .build(),
        }
    }

    /// Whether this is the first use of `secret_id` in its interval: true
    /// for exactly one of the callers that race for it.
    fn first(&self, secret_id: Uuid) -> bool {
        // The common case, a secret recorded within the interval: one
        // lookup, which neither allocates nor queues a read for the
        // cache's bookkeeping.
        if self.recent.contains_key(&secret_id) {
            return false;
        }
        // `or_insert_with`, not `or_insert`: only it runs one insertion of
        // a key however many callers race for it, and says fresh to that
        // one alone.
        self.recent
            .entry_by_ref(&secret_id)
            .or_insert_with(|| ())
            .is_fresh()
    }

    /// The record of `secret_id`'s use was lost: its next use is a first
    /// one again.
    fn reopen(&self, secret_id: Uuid) {
        self.recent.invalidate(&secret_id);
    }
}

/// The task that writes queued uses; see [`UsageWriter::finish`].
pub struct UsageWriter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl UsageQueue {
    /// Starts the task that writes what is queued to `store`: a batch as
    /// soon as a use arrives, then, after a pause of [`WRITE_EVERY`] in
    /// which the next ones gather, the next batch. A failed write is
    /// dropped, with a warning once per outage, and the task goes on.
    pub fn write_to(self, store: Store) -> UsageWriter {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(write(self, store, stopped));
        UsageWriter { stop, task }
    }
}

impl UsageWriter {
    /// Writes what is queued now and stops, waiting for that at most
    /// `within`; uses recorded after this are dropped.
    pub async fn finish(self, within: Duration) {
        // Gone already if the task ended; then there is nothing to stop.
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(within, self.task).await.is_err() {
            abort.abort();
            warn!(
                waited_ms = within.as_millis() as u64,
                "stopped before every queued use of a secret was written"
            );
        }
    }
}

/// The writer's loop: see [`UsageQueue::write_to`]. Ends when it is told to
/// stop (or its [`UsageWriter`] is dropped), after one last write of what
/// is queued, or when every recorder is gone and the queue is empty.
async fn write(queue: UsageQueue, store: Store, mut stopped: oneshot::Receiver<()>) {
    let UsageQueue {
        mut receiver,
        counters,
    } = queue;
    let mut writer = Batches {
        store,
        counters,
        failing: false,
    };
    let mut batch = Vec::with_capacity(QUEUE_CAPACITY);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            received = receiver.recv_many(&mut batch, QUEUE_CAPACITY) => {
                if received == 0 {
                    return;
                }
            }
        }
        writer.write(&mut batch).await;
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            () = tokio::time::sleep(WRITE_EVERY) => {}
        }
    }
    // Take nothing more, and write what came before.
    receiver.close();
    while receiver.recv_many(&mut batch, QUEUE_CAPACITY).await > 0 {
        writer.write(&mut batch).await;
    }
}

/// Writes batches of uses and keeps the count of what became of them.
struct Batches {
    store: Store,
    counters: Arc<Counters>,
    /// The last write failed: the next failure says nothing more.
    failing: bool,
}

impl Batches {
    /// Writes `batch` (and empties it): each kind of use in statements of
    /// at most [`IDS_PER_STATEMENT`] secrets.
    async fn write(&mut self, batch: &mut Vec<Use>) {
        let (mut valid, mut retired): (Vec<Uuid>, Vec<Uuid>) = (Vec::new(), Vec::new());
        for usage in batch.drain(..) {
            match usage {
                Use::Valid(id) => valid.push(id),
                Use::Retired(id) => retired.push(id),
            }
        }
        for ids in [&mut valid, &mut retired] {
            // A gate reopened after a drop may have let a secret in twice.
            ids.sort_unstable();
            ids.dedup();
        }
        for ids in valid.chunks(IDS_PER_STATEMENT) {
            let written = self.store.record_uses(ids).await;
            self.count(ids.len(), written);
        }
        for ids in retired.chunks(IDS_PER_STATEMENT) {
            let written = self.store.record_retired_uses(ids).await;
            self.count(ids.len(), written);
        }
    }

    fn count(&mut self, uses: usize, written: Result<u64, crate::error::Error>) {
        let uses = uses as u64;
        match written {
            Ok(_) => {
                self.counters.recorded.fetch_add(uses, Ordering::Relaxed);
                if self.failing {
                    info!("recording when secrets are used again");
                    self.failing = false;
                }
            }
            Err(error) => {
                self.counters.dropped.fetch_add(uses, Ordering::Relaxed);
                if !self.failing {
                    warn!(
                        %error,
                        "cannot record when secrets were used: dropping those records until \
                         the database answers"
                    );
                    self.failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(interval: Duration) -> UsageSettings {
        UsageSettings {
            interval,
            tracked_secrets: 1_000,
        }
    }

    fn client_id() -> ClientId {
        ClientId::generate().expect("RNG")
    }

    /// Takes what is queued, without waiting.
    fn queued(queue: &mut UsageQueue) -> Vec<Use> {
        let mut uses = Vec::new();
        while let Ok(usage) = queue.receiver.try_recv() {
            uses.push(usage);
        }
        uses
    }

    #[test]
    fn only_the_first_use_of_a_secret_in_its_interval_is_queued() {
        let (recorder, mut queue) = recorder(&settings(Duration::from_secs(60)));
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        for _ in 0..3 {
            recorder.used(a);
        }
        recorder.used(b);
        recorder.used(a);
        assert_eq!(
            queued(&mut queue),
            [Use::Valid(a), Use::Valid(b)],
            "once per secret, and one secret's use does not hold back another's"
        );
    }

    #[test]
    fn a_secret_is_queued_again_once_its_interval_has_passed() {
        let interval = Duration::from_millis(100);
        let (recorder, mut queue) = recorder(&settings(interval));
        let secret = Uuid::now_v7();
        recorder.used(secret);
        recorder.used(secret);
        assert_eq!(
            queued(&mut queue),
            [Use::Valid(secret)],
            "within the interval"
        );
        std::thread::sleep(interval * 2);
        recorder.used(secret);
        recorder.used(secret);
        assert_eq!(
            queued(&mut queue),
            [Use::Valid(secret)],
            "once more after the interval, and again only once"
        );
    }

    #[test]
    fn valid_and_retired_uses_have_gates_of_their_own_and_retired_ones_are_all_counted() {
        let (recorder, mut queue) = recorder(&settings(Duration::from_secs(60)));
        let (secret, client_id) = (Uuid::now_v7(), client_id());
        recorder.used(secret);
        // Revoked since: its first retired use is not held back by its
        // last valid one.
        for _ in 0..3 {
            recorder.retired_used(secret, &client_id);
        }
        assert_eq!(
            queued(&mut queue),
            [Use::Valid(secret), Use::Retired(secret)],
            "each kind once"
        );
        assert_eq!(
            recorder.counts().retired_seen,
            3,
            "every retired use is counted"
        );
    }

    #[test]
    fn many_secrets_first_used_at_once_are_each_queued_exactly_once() {
        let (recorder, mut queue) = recorder(&settings(Duration::from_secs(60)));
        let secrets: Vec<Uuid> = (0..64).map(|_| Uuid::now_v7()).collect();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for &secret in &secrets {
                        recorder.used(secret);
                    }
                });
            }
        });
        let mut uses = queued(&mut queue);
        uses.sort_unstable_by_key(|usage| usage.secret_id());
        let expected: Vec<Use> = secrets.iter().map(|&id| Use::Valid(id)).collect();
        assert_eq!(uses, expected, "racing first uses queue each secret once");
    }

    #[test]
    fn a_full_gate_still_lets_every_first_use_through() {
        let (recorder, mut queue) = recorder(&UsageSettings {
            interval: Duration::from_secs(60),
            tracked_secrets: 4,
        });
        let secrets: Vec<Uuid> = (0..32).map(|_| Uuid::now_v7()).collect();
        for &secret in &secrets {
            recorder.used(secret);
        }
        let expected: Vec<Use> = secrets.iter().map(|&id| Use::Valid(id)).collect();
        assert_eq!(
            queued(&mut queue),
            expected,
            "eight times more secrets than the gate holds, each recorded"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting_and_lets_the_next_use_try_again() {
        let (recorder, mut queue) = recorder_with_queue(&settings(Duration::from_secs(60)), 4);
        let secrets: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
        // Nothing empties the queue, and nothing here could wait for it:
        // this is not an async context.
        for &secret in &secrets {
            recorder.used(secret);
        }
        assert_eq!(
            recorder.counts(),
            UsageCounts {
                recorded: 0,
                dropped: 6,
                retired_seen: 0,
            },
            "four queued, six dropped and counted"
        );
        assert_eq!(queued(&mut queue).len(), 4, "the queue held what it could");
        recorder.used(secrets[9]);
        recorder.used(secrets[0]);
        assert_eq!(
            queued(&mut queue),
            [Use::Valid(secrets[9])],
            "a dropped use is tried again on the next use; a queued one is not"
        );
    }
}
