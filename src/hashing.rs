//! Argon2id work, on threads of its own, bounded to the cores, and yielding
//! the CPU to everything else.
//!
//! One hash or verify costs tens of milliseconds of a core. Run on a tokio
//! worker it would stall every other call multiplexed on that worker, so it
//! runs on dedicated threads fed by bounded queues, in two lanes:
//!
//! - **The gateway's lane**: ValidateClient's cache misses, on one thread per
//!   core. At idle priority (the default) those threads only get the CPU the
//!   rest of the service leaves: a flood of wrong secrets, each of which
//!   costs a verify, cannot slow the cache hits of real clients, which need
//!   only microseconds of a tokio worker. The price: while requests keep
//!   every core busy, cache misses wait, and fail at their deadline. It has
//!   two queues, one per [`Precedence`]: its threads take every
//!   [`Precedence::High`] verify before any [`Precedence::Normal`] one, and
//!   each queue has a bound of its own, so a flood that fills the Normal
//!   queue neither delays nor refuses High work.
//! - **The dashboard's lane**: hashing new secrets and checking the value an
//!   activation sends, on one thread at normal priority, so that people can
//!   still rotate a secret while the gateway's lane is starved or flooded.
//!
//! Rehashes of secrets stored below the configured cost (`crate::rehash`)
//! run in the gateway's lane, in its Normal queue, never more than
//! [`REHASHES_AT_ONCE`] at a time: after the cost is raised, the wave of
//! them neither takes the dashboard's lane from people nor the CPU from
//! requests.
//!
//! A call waits for its result at most `queue_timeout`, then fails
//! `UNAVAILABLE`. A call that could not start before its deadline anyway
//! (more waiting in its queue than the threads can finish in that time, or
//! a full queue) fails at once, `RESOURCE_EXHAUSTED`. Work whose caller has
//! given up is skipped, not computed.

use std::{
    collections::VecDeque,
    panic::AssertUnwindSafe,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::{Semaphore, oneshot};

use crate::config::{HashingSettings, Priority};
use crate::domain::{ClientSecret, HashParams, Memory, SecretHash};
use crate::error::Error;

/// Rehashes that may be under way at once; more are refused, not queued.
pub const REHASHES_AT_ONCE: usize = 2;

/// Hashes and verifies secrets on the argon2 threads. Cloning is cheap; the
/// threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct Hasher {
    gateway: Pool,
    dashboard: Pool,
    params: HashParams,
    /// A permit per rehash under way, [`REHASHES_AT_ONCE`] in all.
    rehashes: Arc<Semaphore>,
    /// A hash of a random value nobody knows, verified against when a client
    /// has no active secret, so that "unknown client" costs what "wrong
    /// secret" costs and the two cannot be told apart by timing.
    decoy: SecretHash,
    /// What one argon2id computation took at start: the unit of the
    /// capacity this service can offer to cold validations.
    verify_time: Duration,
}

/// Which of the gateway lane's queues a verify waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precedence {
    /// Taken before any Normal work, whenever a thread comes free.
    High,
    /// Taken, first come first served, when no High work waits.
    Normal,
}

/// One lane: its queues and the threads that empty them. The dashboard's
/// lane has one queue: its callers all wait in the Normal one.
#[derive(Clone)]
struct Pool {
    queues: Arc<Sender>,
    queue_timeout: Duration,
}

/// A lane's queues, shared by its callers and its threads.
struct Queues {
    waiting: Mutex<Waiting>,
    /// Signalled when work is queued, and when the last caller is gone.
    ready: Condvar,
}

/// The work queued in a lane and not yet started.
struct Waiting {
    high: VecDeque<Job>,
    normal: VecDeque<Job>,
    /// More waiting in one queue than this could not start before the
    /// deadline.
    most: usize,
    /// No caller is left: the threads finish what is queued and stop.
    closed: bool,
}

/// The callers' side of a lane's queues: when the last clone of the lane
/// drops it, its threads stop.
struct Sender(Arc<Queues>);

/// Work for an argon2 thread, given that thread's reusable memory.
type Job = Box<dyn FnOnce(&mut Memory) + Send>;

impl Hasher {
    /// Starts both lanes and makes the decoy hash (one argon2id run, timed).
    pub async fn start(settings: &HashingSettings) -> Result<Self, Error> {
        let threads = settings.threads.max(1);
        let gateway = Pool::start("argon2", threads, settings.priority, settings)?;
        let dashboard = Pool::start("argon2-dashboard", 1, Priority::Normal, settings)?;
        let secret = ClientSecret::generate().map_err(Error::internal)?;
        let params = settings.params;
        let (decoy, verify_time) = dashboard
            .run(Precedence::Normal, move |memory| {
                let started = Instant::now();
                let decoy =
                    SecretHash::compute(&secret, params, memory).map_err(Error::internal)?;
                Ok((decoy, started.elapsed()))
            })
            .await?;
        // Work beyond what the threads can finish before the deadline would
        // only time out: refuse it at once instead.
        let per_thread = settings.queue_timeout.as_secs_f64() / verify_time.as_secs_f64().max(1e-3);
        for (pool, threads) in [(&gateway, threads), (&dashboard, 1)] {
            let finishable = (per_thread * threads as f64) as usize;
            pool.limit_waiting(finishable.clamp(threads, settings.queue_capacity.max(threads)));
        }
        Ok(Self {
            gateway,
            dashboard,
            params,
            rehashes: Arc::new(Semaphore::new(REHASHES_AT_ONCE)),
            decoy,
            verify_time,
        })
    }

    /// argon2id computations queued in both lanes and not yet started.
    pub fn waiting(&self) -> usize {
        self.gateway.waiting() + self.dashboard.waiting()
    }

    /// What one argon2id computation took at start.
    pub fn verify_time(&self) -> Duration {
        self.verify_time
    }

    /// Hashes a new secret at the configured cost, in the dashboard's lane.
    pub async fn hash(&self, secret: ClientSecret) -> Result<SecretHash, Error> {
        let params = self.params;
        self.dashboard
            .run(Precedence::Normal, move |memory| {
                SecretHash::compute(&secret, params, memory).map_err(Error::internal)
            })
            .await
    }

    /// Whether `hash` is below the configured cost in any dimension (memory,
    /// passes, lanes): then the value, once a verify proves it, is worth
    /// hashing again at the configured cost. A hash above it in every
    /// dimension is kept: lowering the cost weakens no stored hash.
    pub fn needs_rehash(&self, hash: &SecretHash) -> bool {
        !hash.params().at_least(self.params)
    }

    /// Hashes `secret` again at the configured cost, in the gateway's lane
    /// behind every good-standing verify (at its idle priority, so neither
    /// people's work in the dashboard's lane nor requests wait for it): a
    /// future that holds one of the [`REHASHES_AT_ONCE`] places
    /// until it ends or is dropped. `None`, at once and at no cost, when
    /// every place is taken.
    pub fn rehash(
        &self,
        secret: ClientSecret,
    ) -> Option<impl Future<Output = Result<SecretHash, Error>> + Send + 'static> {
        let place = Arc::clone(&self.rehashes).try_acquire_owned().ok()?;
        let (gateway, params) = (self.gateway.clone(), self.params);
        Some(async move {
            let hashed = gateway
                .run(Precedence::Normal, move |memory| {
                    SecretHash::compute(&secret, params, memory).map_err(Error::internal)
                })
                .await;
            drop(place);
            hashed
        })
    }

    /// Whether the value an activation sends matches `hash`, in the
    /// dashboard's lane.
    pub async fn check_possession(
        &self,
        secret: ClientSecret,
        hash: SecretHash,
    ) -> Result<bool, Error> {
        self.dashboard
            .run(Precedence::Normal, move |memory| {
                hash.matches(&secret, memory).map_err(Error::internal)
            })
            .await
    }

    /// Whether a client's `secret` matches `hash`, in the gateway's lane,
    /// in the queue of `precedence`.
    pub async fn verify(
        &self,
        secret: ClientSecret,
        hash: SecretHash,
        precedence: Precedence,
    ) -> Result<bool, Error> {
        self.gateway
            .run(precedence, move |memory| {
                hash.matches(&secret, memory).map_err(Error::internal)
            })
            .await
    }

    /// Spends exactly what [`Hasher::verify`] spends, waiting in the same
    /// queue, and answers `false`.
    pub async fn verify_decoy(
        &self,
        secret: ClientSecret,
        precedence: Precedence,
    ) -> Result<bool, Error> {
        self.verify(secret, self.decoy.clone(), precedence).await?;
        Ok(false)
    }
}

impl Pool {
    /// Starts `threads` threads named `name-<n>` at `priority`.
    fn start(
        name: &str,
        threads: usize,
        priority: Priority,
        settings: &HashingSettings,
    ) -> Result<Self, Error> {
        let params = settings.params;
        let queues = Arc::new(Queues {
            waiting: Mutex::new(Waiting {
                high: VecDeque::new(),
                normal: VecDeque::new(),
                most: settings.queue_capacity.max(threads),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for n in 0..threads {
            let queues = Arc::clone(&queues);
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || work(&queues, priority, params))
                .map_err(Error::internal)?;
        }
        Ok(Self {
            queues: Arc::new(Sender(queues)),
            queue_timeout: settings.queue_timeout,
        })
    }

    /// Computations queued in this lane and not yet started.
    fn waiting(&self) -> usize {
        let waiting = self.queues.0.lock();
        waiting.high.len() + waiting.normal.len()
    }

    /// Refuses work beyond `most` waiting in one queue.
    fn limit_waiting(&self, most: usize) {
        self.queues.0.lock().most = most;
    }

    /// Queues `work` for a thread of this lane, in the queue of
    /// `precedence`, and waits for its result.
    async fn run<T, F>(&self, precedence: Precedence, work: F) -> Result<T, Error>
    where
        F: FnOnce(&mut Memory) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let span = tracing::Span::current();
        let queued = Instant::now();
        let job: Job = Box::new(move |memory| {
            crate::metrics::argon2_waited(queued.elapsed());
            // The caller gave up (timed out, or its client went away).
            if done.is_closed() {
                return;
            }
            let _ = done.send(span.in_scope(|| work(memory)));
        });
        self.queues.0.push(precedence, job)?;
        match tokio::time::timeout(self.queue_timeout, result).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(Error::internal("an argon2 computation panicked")),
            Err(_) => Err(Error::Overloaded(
                "the service is too busy to check a secret in time; retry with backoff".into(),
            )),
        }
    }
}

impl Queues {
    /// The queues, whatever a panicking holder left: no code panics while
    /// holding them, and a queue is consistent between any two statements.
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` behind the work of its precedence, unless that queue
    /// already holds as much as could start before the deadline.
    fn push(&self, precedence: Precedence, job: Job) -> Result<(), Error> {
        let mut waiting = self.lock();
        let most = waiting.most;
        let queue = match precedence {
            Precedence::High => &mut waiting.high,
            Precedence::Normal => &mut waiting.normal,
        };
        if queue.len() >= most {
            return Err(Error::ResourceExhausted(
                "too many secrets are waiting to be checked; retry with backoff".into(),
            ));
        }
        queue.push_back(job);
        drop(waiting);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, High work first; waits for one. `None` once the last
    /// caller is gone and nothing is left.
    fn next(&self) -> Option<Job> {
        let mut waiting = self.lock();
        loop {
            if let Some(job) = waiting.high.pop_front() {
                return Some(job);
            }
            if let Some(job) = waiting.normal.pop_front() {
                return Some(job);
            }
            if waiting.closed {
                return None;
            }
            waiting = self
                .ready
                .wait(waiting)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// How many wait in the queue of `precedence`.
    #[cfg(test)]
    fn len(&self, precedence: Precedence) -> usize {
        let waiting = self.lock();
        match precedence {
            Precedence::High => waiting.high.len(),
            Precedence::Normal => waiting.normal.len(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_all();
    }
}

/// An argon2 thread: sets its priority, then runs jobs until the lane's
/// last caller is gone.
fn work(queues: &Queues, priority: Priority, params: HashParams) {
    if priority == Priority::Idle {
        lower_priority();
    }
    // Reused by every computation on this thread: a fresh 19 MiB each time
    // would cost page faults that show in every cold validation.
    let mut memory = Memory::default();
    while let Some(job) = queues.next() {
        // A panic fails that one call (its result channel is dropped), not
        // the thread.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory)));
        // A stored hash costlier than the configured cost (from before the
        // cost was lowered, or a row up to the ceiling) must not keep its
        // memory on every thread it ever met: what the configured cost
        // needs is kept, the rest given back.
        memory.give_back_beyond(params);
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(error) =
        set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
    {
        tracing::warn!(
            ?error,
            "cannot run argon2 at idle priority; it competes with requests"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {
    use thread_priority::{ThreadPriority, set_current_thread_priority};
    if let Err(error) = set_current_thread_priority(ThreadPriority::Min) {
        tracing::warn!(?error, "cannot lower the priority of argon2 threads");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(threads: usize, queue_capacity: usize, queue_timeout: Duration) -> HashingSettings {
        HashingSettings {
            params: HashParams::MINIMUM,
            threads,
            queue_capacity,
            queue_timeout,
            priority: Priority::Normal,
        }
    }

    #[tokio::test]
    async fn a_hashed_secret_verifies_and_the_decoy_never_does() {
        let hasher = Hasher::start(&settings(2, 8, Duration::from_secs(10)))
            .await
            .expect("hasher");
        assert!(
            hasher.verify_time() > Duration::ZERO,
            "the start timed a hash"
        );
        let secret = ClientSecret::generate().expect("RNG");
        let hash = hasher.hash(secret.clone()).await.expect("hash");
        for precedence in [Precedence::High, Precedence::Normal] {
            assert!(
                hasher
                    .verify(secret.clone(), hash.clone(), precedence)
                    .await
                    .expect("verify"),
                "{precedence:?}"
            );
            assert!(
                !hasher
                    .verify_decoy(secret.clone(), precedence)
                    .await
                    .expect("decoy"),
                "{precedence:?}"
            );
        }
    }

    #[tokio::test]
    async fn no_more_than_one_computation_per_thread_runs_at_once() {
        let hasher = Hasher::start(&settings(2, 64, Duration::from_secs(10)))
            .await
            .expect("hasher");
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (hasher, running, peak) = (hasher.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    hasher
                        .gateway
                        .run(Precedence::Normal, move |_| {
                            use std::sync::atomic::Ordering::SeqCst;
                            let now = running.fetch_add(1, SeqCst) + 1;
                            peak.fetch_max(now, SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            running.fetch_sub(1, SeqCst);
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("join").expect("work");
        }
        let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(peak, 2, "at most two ran at once, and two did");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_long_wait_times_out() {
        // The lane alone: a whole Hasher would first hash its decoy within
        // the same 200 ms, which a busy machine can miss.
        let settings = settings(1, 1, Duration::from_millis(200));
        let gateway = Pool::start("argon2-test", 1, Priority::Normal, &settings).expect("lane");
        let pool = gateway.clone();
        let running = tokio::spawn(async move {
            pool.run(Precedence::Normal, |_| {
                std::thread::sleep(Duration::from_millis(800));
                Ok(())
            })
            .await
        });
        // The one thread is busy for 800 ms; the queue has one slot.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = gateway.run(Precedence::Normal, |_| Ok(()));
        let refused = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            gateway.run(Precedence::Normal, |_| Ok(())).await
        };
        let (waiting, refused) = tokio::join!(waiting, refused);
        let code = |r: Result<(), Error>| r.err().map(|e| e.code());
        assert_eq!(
            code(refused),
            Some(tonic::Code::ResourceExhausted),
            "the queue was full"
        );
        assert_eq!(
            code(waiting),
            Some(tonic::Code::Unavailable),
            "it waited past the deadline"
        );
        let running = running.await.expect("join");
        assert_eq!(
            code(running),
            Some(tonic::Code::Unavailable),
            "its result came too late"
        );
    }

    #[tokio::test]
    async fn a_hash_below_the_configured_cost_in_any_dimension_needs_a_rehash() {
        let configured = HashParams::new(32_768, 3, 2).expect("valid");
        let mut settings = settings(1, 8, Duration::from_secs(30));
        settings.params = configured;
        let hasher = Hasher::start(&settings).await.expect("hasher");
        let secret = ClientSecret::generate().expect("RNG");
        for (m, t, p, needed) in [
            (19_456, 2, 1, true),
            (32_768, 3, 1, true),
            (32_768, 2, 2, true),
            (19_456, 3, 2, true),
            // More memory does not make up for fewer passes.
            (65_536, 2, 2, true),
            (32_768, 3, 2, false),
            (65_536, 4, 4, false),
        ] {
            let params = HashParams::new(m, t, p).expect("valid");
            let hash = SecretHash::compute(&secret, params, &mut Memory::default()).expect("hash");
            assert_eq!(
                hasher.needs_rehash(&hash),
                needed,
                "a hash at {params} against {configured}"
            );
        }
        let rehashed = hasher.rehash(secret).expect("a place").await.expect("hash");
        assert_eq!(rehashed.params(), configured, "at the configured cost");
        assert!(!hasher.needs_rehash(&rehashed), "and so needs no other");
    }

    #[tokio::test]
    async fn no_more_rehashes_than_allowed_are_under_way_at_once() {
        let hasher = Hasher::start(&settings(1, 8, Duration::from_secs(30)))
            .await
            .expect("hasher");
        let secret = || ClientSecret::generate().expect("RNG");
        let under_way: Vec<_> = (0..REHASHES_AT_ONCE)
            .map(|n| {
                hasher
                    .rehash(secret())
                    .unwrap_or_else(|| panic!("place {n}"))
            })
            .collect();
        assert!(
            hasher.rehash(secret()).is_none(),
            "every place is taken, even before any rehash ran"
        );
        let mut under_way = under_way.into_iter();
        let first = under_way.next().expect("one");
        first.await.expect("hash");
        let freed = hasher
            .rehash(secret())
            .expect("the finished rehash's place");
        drop(under_way);
        assert!(
            hasher.rehash(secret()).is_some(),
            "a dropped rehash's place is free"
        );
        freed.await.expect("hash");
    }

    /// Occupies the lane's one thread until the returned sender sends (or
    /// is dropped); returns once the work has started.
    async fn occupy(pool: &Pool) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (started, busy) = oneshot::channel::<()>();
        let pool = pool.clone();
        let task = tokio::spawn(async move {
            pool.run(Precedence::Normal, move |_| {
                let _ = started.send(());
                let _ = gate.recv();
                Ok(())
            })
            .await
            .expect("the occupying work runs");
        });
        busy.await.expect("the thread took the occupying work");
        (release, task)
    }

    /// Waits until `condition` holds; fails after ten seconds.
    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn high_work_runs_before_normal_work_that_was_queued_earlier() {
        let hasher = Hasher::start(&settings(1, 8, Duration::from_secs(30)))
            .await
            .expect("hasher");
        let (release, occupied) = occupy(&hasher.gateway).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let queue = |label: &'static str, precedence| {
            let (pool, order) = (hasher.gateway.clone(), Arc::clone(&order));
            tokio::spawn(async move {
                pool.run(precedence, move |_| {
                    order.lock().expect("not poisoned").push(label);
                    Ok(())
                })
                .await
            })
        };
        let queued = |precedence| hasher.gateway.queues.0.len(precedence);
        let first = queue("normal 1", Precedence::Normal);
        until("the first Normal work waits", || {
            queued(Precedence::Normal) == 1
        })
        .await;
        let second = queue("normal 2", Precedence::Normal);
        until("both Normal works wait", || queued(Precedence::Normal) == 2).await;
        let high = queue("high", Precedence::High);
        until("the High work waits", || queued(Precedence::High) == 1).await;

        release.send(()).expect("the occupying work waits for it");
        occupied.await.expect("join");
        for task in [first, second, high] {
            task.await.expect("join").expect("work");
        }
        assert_eq!(
            *order.lock().expect("not poisoned"),
            ["high", "normal 1", "normal 2"],
            "the High work went first, then the Normal work in its order"
        );
    }

    #[tokio::test]
    async fn a_full_normal_queue_does_not_refuse_high_work() {
        let hasher = Hasher::start(&settings(1, 2, Duration::from_secs(30)))
            .await
            .expect("hasher");
        let (release, occupied) = occupy(&hasher.gateway).await;
        let queue = |precedence| {
            let pool = hasher.gateway.clone();
            tokio::spawn(async move { pool.run(precedence, |_| Ok(())).await })
        };
        let queued = |precedence| hasher.gateway.queues.0.len(precedence);
        let normal = [queue(Precedence::Normal), queue(Precedence::Normal)];
        until("the Normal queue is full", || {
            queued(Precedence::Normal) == 2
        })
        .await;
        let refused = hasher.gateway.run(Precedence::Normal, |_| Ok(())).await;
        assert_eq!(
            refused.err().map(|e| e.code()),
            Some(tonic::Code::ResourceExhausted),
            "a third Normal work is refused at once"
        );
        let high = [queue(Precedence::High), queue(Precedence::High)];
        until("the High work waits", || queued(Precedence::High) == 2).await;

        release.send(()).expect("the occupying work waits for it");
        occupied.await.expect("join");
        for (what, task) in [("High", high), ("Normal", normal)]
            .into_iter()
            .flat_map(|(what, tasks)| tasks.map(|task| (what, task)))
        {
            let done = task.await.expect("join");
            assert!(done.is_ok(), "{what} work queued in time ran: {done:?}");
        }
    }

    #[tokio::test]
    async fn a_thread_gives_back_the_memory_a_costlier_hash_took() {
        let hasher = Hasher::start(&settings(1, 8, Duration::from_secs(30)))
            .await
            .expect("hasher");
        let held = || {
            hasher
                .gateway
                .run(Precedence::Normal, |memory| Ok(memory.blocks_held()))
        };
        let secret = ClientSecret::generate().expect("RNG");
        let usual = hasher.hash(secret.clone()).await.expect("hash");
        let verified = hasher.verify(secret.clone(), usual, Precedence::Normal);
        assert!(
            verified.await.expect("verify"),
            "a hash at the configured cost"
        );
        let configured = held().await.expect("runs");
        assert_eq!(configured, 19_456, "what the configured cost fills");
        let costlier = HashParams::new(32_768, 2, 1).expect("valid");
        let hash = SecretHash::compute(&secret, costlier, &mut Memory::default()).expect("hash");
        let (verified, during) = {
            let (secret, hash) = (secret.clone(), hash.clone());
            hasher
                .gateway
                .run(Precedence::Normal, move |memory| {
                    let verified = hash.matches(&secret, memory).map_err(Error::internal)?;
                    Ok((verified, memory.blocks_held()))
                })
                .await
                .expect("runs")
        };
        assert!(verified, "the costlier hash verifies");
        assert_eq!(during, 32_768, "the thread's memory grew for it");
        assert_eq!(
            held().await.expect("runs"),
            configured,
            "and was given back after"
        );
        assert!(
            hasher
                .verify(secret, hash, Precedence::High)
                .await
                .expect("verify"),
            "verified again"
        );
        assert_eq!(held().await.expect("runs"), configured, "given back again");
    }

    #[tokio::test]
    async fn the_dashboards_lane_is_not_held_up_by_the_gateways() {
        let hasher = Hasher::start(&settings(1, 8, Duration::from_secs(10)))
            .await
            .expect("hasher");
        let gateway = hasher.gateway.clone();
        let busy = tokio::spawn(async move {
            gateway
                .run(Precedence::Normal, |_| {
                    std::thread::sleep(Duration::from_secs(2));
                    Ok(())
                })
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let hashed = hasher.hash(ClientSecret::generate().expect("RNG"));
        let hashed = tokio::time::timeout(Duration::from_secs(1), hashed).await;
        assert!(
            matches!(hashed, Ok(Ok(_))),
            "a new secret was hashed while the gateway's lane was busy"
        );
        assert!(
            !busy.is_finished(),
            "the gateway's lane was busy throughout"
        );
        busy.await.expect("join").expect("work");
    }
}
