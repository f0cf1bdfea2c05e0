//! Argon2id work, kept off the async runtime and bounded to the cores.
//!
//! One hash or verify costs tens of milliseconds of a core. Run on a tokio
//! worker it would stall every other call multiplexed on that worker, so each
//! one runs on the blocking pool; and because that pool grows to hundreds of
//! threads, a semaphore sized to the cores admits only as many at once as
//! there are cores to run them. The rest wait their turn without holding a
//! thread or 19 MiB of argon2 memory.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::domain::{ClientSecret, HashParams, SecretHash};
use crate::error::Error;

/// Hashes and verifies secrets on a bounded set of blocking threads.
#[derive(Clone)]
pub struct Hasher {
    params: HashParams,
    permits: Arc<Semaphore>,
    /// A hash of a random value nobody knows, verified against when a client
    /// has no active secret, so that "unknown client" costs what "wrong
    /// secret" costs and the two cannot be told apart by timing.
    decoy: SecretHash,
}

impl Hasher {
    /// Builds the hasher, computing its decoy hash (one argon2id run).
    pub async fn new(params: HashParams, concurrency: usize) -> Result<Self, Error> {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let decoy_secret = ClientSecret::generate().map_err(Error::internal)?;
        let decoy = run(&permits, move || {
            SecretHash::compute(&decoy_secret, params).map_err(Error::internal)
        })
        .await?;
        Ok(Self {
            params,
            permits,
            decoy,
        })
    }

    /// Hashes a new secret at the configured cost.
    pub async fn hash(&self, secret: ClientSecret) -> Result<SecretHash, Error> {
        let params = self.params;
        run(&self.permits, move || {
            SecretHash::compute(&secret, params).map_err(Error::internal)
        })
        .await
    }

    /// Whether `secret` matches `hash`.
    pub async fn verify(&self, secret: ClientSecret, hash: SecretHash) -> Result<bool, Error> {
        run(&self.permits, move || {
            hash.matches(&secret).map_err(Error::internal)
        })
        .await
    }

    /// Spends exactly what [`Hasher::verify`] spends, and answers `false`.
    pub async fn verify_decoy(&self, secret: ClientSecret) -> Result<bool, Error> {
        self.verify(secret, self.decoy.clone()).await?;
        Ok(false)
    }
}

/// Runs `work` on the blocking pool once a permit is free.
///
/// The permit moves into the blocking task, so a caller that gives up (its
/// client went away) does not free the core early while the work still runs.
async fn run<T, F>(permits: &Arc<Semaphore>, work: F) -> Result<T, Error>
where
    F: FnOnce() -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(Error::internal)?;
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        span.in_scope(work)
    })
    .await
    .map_err(Error::internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hashed_secret_verifies_and_the_decoy_never_does() {
        let hasher = Hasher::new(HashParams::MINIMUM, 2).await.expect("hasher");
        let secret = ClientSecret::generate().expect("RNG");
        let hash = hasher.hash(secret.clone()).await.expect("hash");
        assert!(hasher.verify(secret.clone(), hash).await.expect("verify"));
        assert!(!hasher.verify_decoy(secret).await.expect("decoy"));
    }

    #[tokio::test]
    async fn no_more_than_the_permitted_number_run_at_once() {
        let permits = Arc::new(Semaphore::new(2));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (permits, running, peak) = (permits.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    run(&permits, move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        peak.fetch_max(now, SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
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
}
