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
//!   every core busy, cache misses wait, and fail at their deadline.
//! - **The dashboard's lane**: hashing new secrets and checking the value an
//!   activation sends, on one thread at normal priority, so that people can
//!   still rotate a secret while the gateway's lane is starved or flooded.
//!
//! A call waits for its result at most `queue_timeout`, then fails
//! `UNAVAILABLE`. A call that could not start before its deadline anyway
//! (more waiting than the threads can finish in that time, or a full queue)
//! fails at once, `RESOURCE_EXHAUSTED`. Work whose caller has given up is
//! skipped, not computed.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use crate::config::{HashingSettings, Priority};
use crate::domain::{ClientSecret, HashParams, Memory, SecretHash};
use crate::error::Error;

/// Hashes and verifies secrets on the argon2 threads. Cloning is cheap; the
/// threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct Hasher {
    gateway: Pool,
    dashboard: Pool,
    params: HashParams,
    /// A hash of a random value nobody knows, verified against when a client
    /// has no active secret, so that "unknown client" costs what "wrong
    /// secret" costs and the two cannot be told apart by timing.
    decoy: SecretHash,
    /// What one argon2id computation took at start: the unit of the
    /// capacity this service can offer to cold validations.
    verify_time: Duration,
}

/// One lane: a queue and the threads that empty it.
#[derive(Clone)]
struct Pool {
    jobs: SyncSender<Job>,
    queue_timeout: Duration,
    /// Calls queued and not yet started.
    waiting: Arc<AtomicUsize>,
    /// More waiting than this could not start before the deadline.
    most_waiting: Arc<AtomicUsize>,
}

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
            .run(move |memory| {
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
            pool.most_waiting.store(
                finishable.clamp(threads, settings.queue_capacity.max(threads)),
                Ordering::Release,
            );
        }
        Ok(Self {
            gateway,
            dashboard,
            params,
            decoy,
            verify_time,
        })
    }

    /// How long one argon2id computation took at start.
    pub fn verify_time(&self) -> Duration {
        self.verify_time
    }

    /// Hashes a new secret at the configured cost, in the dashboard's lane.
    pub async fn hash(&self, secret: ClientSecret) -> Result<SecretHash, Error> {
        let params = self.params;
        self.dashboard
            .run(move |memory| {
                SecretHash::compute(&secret, params, memory).map_err(Error::internal)
            })
            .await
    }

    /// Whether the value an activation sends matches `hash`, in the
    /// dashboard's lane.
    pub async fn check_possession(
        &self,
        secret: ClientSecret,
        hash: SecretHash,
    ) -> Result<bool, Error> {
        self.dashboard
            .run(move |memory| hash.matches(&secret, memory).map_err(Error::internal))
            .await
    }

    /// Whether a client's `secret` matches `hash`, in the gateway's lane.
    pub async fn verify(&self, secret: ClientSecret, hash: SecretHash) -> Result<bool, Error> {
        self.gateway
            .run(move |memory| hash.matches(&secret, memory).map_err(Error::internal))
            .await
    }

    /// Spends exactly what [`Hasher::verify`] spends, and answers `false`.
    pub async fn verify_decoy(&self, secret: ClientSecret) -> Result<bool, Error> {
        self.verify(secret, self.decoy.clone()).await?;
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
        let capacity = settings.queue_capacity.max(threads);
        let (jobs, queue) = mpsc::sync_channel::<Job>(capacity);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || work(&queue, priority))
                .map_err(Error::internal)?;
        }
        Ok(Self {
            jobs,
            queue_timeout: settings.queue_timeout,
            waiting: Arc::default(),
            most_waiting: Arc::new(AtomicUsize::new(capacity)),
        })
    }

    /// Queues `work` for a thread of this lane and waits for its result.
    async fn run<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(&mut Memory) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let full = || {
            Error::ResourceExhausted(
                "too many secrets are waiting to be checked; retry with backoff".into(),
            )
        };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.most_waiting.load(Ordering::Acquire)
        {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(full());
        }
        let (done, result) = oneshot::channel();
        let span = tracing::Span::current();
        let waiting = Arc::clone(&self.waiting);
        let job: Job = Box::new(move |memory| {
            waiting.fetch_sub(1, Ordering::AcqRel);
            // The caller gave up (timed out, or its client went away).
            if done.is_closed() {
                return;
            }
            let _ = done.send(span.in_scope(|| work(memory)));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                return Err(full());
            }
            Err(TrySendError::Disconnected(_)) => {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                return Err(Error::internal("the argon2 threads have stopped"));
            }
        }
        match tokio::time::timeout(self.queue_timeout, result).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(Error::internal("an argon2 computation panicked")),
            Err(_) => Err(Error::Overloaded(
                "the service is too busy to check a secret in time; retry with backoff".into(),
            )),
        }
    }
}

/// An argon2 thread: sets its priority, then runs jobs until the queue's
/// last sender is gone.
fn work(queue: &Mutex<Receiver<Job>>, priority: Priority) {
    if priority == Priority::Idle {
        lower_priority();
    }
    // Reused by every computation on this thread: a fresh 19 MiB each time
    // would cost page faults that show in every cold validation.
    let mut memory = Memory::default();
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else {
            return;
        };
        // A panic fails that one call (its result channel is dropped), not
        // the thread.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory)));
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
        assert!(hasher.verify(secret.clone(), hash).await.expect("verify"));
        assert!(!hasher.verify_decoy(secret).await.expect("decoy"));
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
                        .run(move |_| {
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
        let hasher = Hasher::start(&settings(1, 1, Duration::from_millis(200)))
            .await
            .expect("hasher");
        let pool = hasher.gateway.clone();
        let running = tokio::spawn(async move {
            pool.run(|_| {
                std::thread::sleep(Duration::from_millis(800));
                Ok(())
            })
            .await
        });
        // The one thread is busy for 800 ms; the queue has one slot.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = hasher.gateway.run(|_| Ok(()));
        let refused = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            hasher.gateway.run(|_| Ok(())).await
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
    async fn the_dashboards_lane_is_not_held_up_by_the_gateways() {
        let hasher = Hasher::start(&settings(1, 8, Duration::from_secs(10)))
            .await
            .expect("hasher");
        let gateway = hasher.gateway.clone();
        let busy = tokio::spawn(async move {
            gateway
                .run(|_| {
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
