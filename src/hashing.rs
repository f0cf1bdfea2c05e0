//! Argon2id work, on threads of its own, bounded to the cores, and yielding
//! the CPU to everything else.
//!
//! One hash or verify costs tens of milliseconds of a core. Run on a tokio
//! worker it would stall every other call multiplexed on that worker, so it
//! runs on a pool of dedicated threads, one per core, fed by a bounded
//! queue:
//!
//! - At idle priority (the default), those threads only get the CPU the rest
//!   of the service leaves. A flood of wrong secrets, each of which costs a
//!   verify, cannot slow the cache hits of real clients, which need only
//!   microseconds of a tokio worker.
//! - A call waits in the queue at most `queue_timeout`, then fails
//!   `UNAVAILABLE`; a full queue fails at once, `RESOURCE_EXHAUSTED`. Work
//!   whose caller has given up is skipped, not computed.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, PoisonError,
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use crate::domain::{ClientSecret, HashParams, Memory, SecretHash};
use crate::error::Error;

/// How the argon2 threads are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Priority {
    /// Linux `SCHED_IDLE`: run only on CPU nothing else wants.
    Idle,
    /// The same priority as the rest of the service.
    Normal,
}

/// How much argon2 work may run and wait.
#[derive(Debug, Clone)]
pub struct HashingSettings {
    pub params: HashParams,
    /// Threads, so at most this many hashes at once: one per core.
    pub threads: usize,
    /// Calls that may wait for a thread before new ones are refused.
    pub queue_capacity: usize,
    /// How long a call may wait for its result before it fails.
    pub queue_timeout: Duration,
    pub priority: Priority,
}

/// Hashes and verifies secrets on the argon2 threads. Cloning is cheap; the
/// threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct Hasher {
    pool: Pool,
    params: HashParams,
    /// A hash of a random value nobody knows, verified against when a client
    /// has no active secret, so that "unknown client" costs what "wrong
    /// secret" costs and the two cannot be told apart by timing.
    decoy: SecretHash,
    /// What one argon2id computation took at start: the unit of the
    /// capacity this service can offer to cold validations.
    verify_time: Duration,
}

/// The queue in front of the argon2 threads.
#[derive(Clone)]
struct Pool {
    jobs: SyncSender<Job>,
    queue_timeout: Duration,
}

/// Work for an argon2 thread, given that thread's reusable memory.
type Job = Box<dyn FnOnce(&mut Memory) + Send>;

impl Hasher {
    /// Starts the threads and makes the decoy hash (one argon2id run, timed).
    pub async fn start(settings: &HashingSettings) -> Result<Self, Error> {
        let threads = settings.threads.max(1);
        let (jobs, queue) = mpsc::sync_channel::<Job>(settings.queue_capacity.max(threads));
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            let priority = settings.priority;
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || work(&queue, priority))
                .map_err(Error::internal)?;
        }
        let pool = Pool {
            jobs,
            queue_timeout: settings.queue_timeout,
        };
        let secret = ClientSecret::generate().map_err(Error::internal)?;
        let params = settings.params;
        let (decoy, verify_time) = pool
            .run(move |memory| {
                let started = Instant::now();
                let decoy =
                    SecretHash::compute(&secret, params, memory).map_err(Error::internal)?;
                Ok((decoy, started.elapsed()))
            })
            .await?;
        Ok(Self {
            pool,
            params,
            decoy,
            verify_time,
        })
    }

    /// How long one argon2id computation took at start.
    pub fn verify_time(&self) -> Duration {
        self.verify_time
    }

    /// Hashes a new secret at the configured cost.
    pub async fn hash(&self, secret: ClientSecret) -> Result<SecretHash, Error> {
        let params = self.params;
        self.pool
            .run(move |memory| {
                SecretHash::compute(&secret, params, memory).map_err(Error::internal)
            })
            .await
    }

    /// Whether `secret` matches `hash`.
    pub async fn verify(&self, secret: ClientSecret, hash: SecretHash) -> Result<bool, Error> {
        self.pool
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
    /// Queues `work` for an argon2 thread and waits for its result.
    async fn run<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(&mut Memory) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move |memory| {
            // The caller gave up (timed out, or its client went away).
            if done.is_closed() {
                return;
            }
            let _ = done.send(span.in_scope(|| work(memory)));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(Error::ResourceExhausted(
                    "too many secrets are waiting to be checked; retry with backoff".into(),
                ));
            }
            Err(TrySendError::Disconnected(_)) => {
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
                        .pool
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
        let pool = hasher.pool.clone();
        let running = tokio::spawn(async move {
            pool.run(|_| {
                std::thread::sleep(Duration::from_millis(800));
                Ok(())
            })
            .await
        });
        // The one thread is busy for 800 ms; the queue has one slot.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = hasher.pool.run(|_| Ok(()));
        let refused = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            hasher.pool.run(|_| Ok(())).await
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
}
