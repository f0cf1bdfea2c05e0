//! Identical work asked for while it is under way is done once, and every
//! caller that asked gets its outcome.
//!
//! The gateway sends bursts of identical checks (a restart, a rotation):
//! without this, each one that misses the cache would cost an argon2 verify
//! and a unit of the client's throttle budget.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::OnceCell;

/// One piece of work's outcome, once it has one, and how many callers wait
/// on it.
type Flight<V> = (Arc<OnceCell<V>>, usize);

/// Work under way, by key.
pub struct SingleFlight<K, V> {
    in_flight: Mutex<HashMap<K, Flight<V>>>,
}

impl<K: Eq + Hash + Clone, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            in_flight: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash + Clone, V> SingleFlight<K, V> {
    /// Runs `work` for `key`, unless it is already running for that key, and
    /// hands the outcome to `share` (once per caller).
    ///
    /// The key is retired as soon as the work ends, so callers that come
    /// after run it afresh; and a caller that gives up (its future dropped)
    /// never leaves its key behind: if it was running the work, another
    /// waiting caller takes over.
    pub async fn run<Fut, R>(
        &self,
        key: K,
        work: impl FnOnce() -> Fut,
        share: impl FnOnce(&V) -> R,
    ) -> R
    where
        Fut: Future<Output = V>,
    {
        let waiting = Waiting::join(self, key);
        let outcome = waiting
            .shared
            .get_or_init(|| async {
                let outcome = work().await;
                waiting.retire();
                outcome
            })
            .await;
        share(outcome)
    }

    /// Keys in flight now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Flight<V>>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One caller waiting on a key. Counts change only under the map's lock, so
/// the last one out knows it is.
struct Waiting<'a, K: Eq + Hash + Clone, V> {
    flights: &'a SingleFlight<K, V>,
    key: K,
    shared: Arc<OnceCell<V>>,
}

impl<'a, K: Eq + Hash + Clone, V> Waiting<'a, K, V> {
    fn join(flights: &'a SingleFlight<K, V>, key: K) -> Self {
        let mut map = flights.lock();
        let (shared, waiting) = map.entry(key.clone()).or_default();
        *waiting += 1;
        let shared = Arc::clone(shared);
        drop(map);
        Self {
            flights,
            key,
            shared,
        }
    }

    /// Takes the key out of the map, if it is still this flight's.
    fn retire(&self) {
        let mut map = self.flights.lock();
        if map
            .get(&self.key)
            .is_some_and(|(entry, _)| Arc::ptr_eq(entry, &self.shared))
        {
            map.remove(&self.key);
        }
    }
}

impl<K: Eq + Hash + Clone, V> Drop for Waiting<'_, K, V> {
    fn drop(&mut self) {
        let mut map = self.flights.lock();
        if let Some((entry, waiting)) = map.get_mut(&self.key)
            && Arc::ptr_eq(entry, &self.shared)
        {
            *waiting -= 1;
            if *waiting == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_that_arrive_while_the_work_runs_share_one_run() {
        let flights = Arc::new(SingleFlight::<u32, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let (flights, runs) = (Arc::clone(&flights), Arc::clone(&runs));
                tokio::spawn(async move {
                    let work = || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        42
                    };
                    flights.run(7, work, |v| *v).await
                })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.expect("join"), 42);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the work ran once");
        assert!(flights.is_empty(), "the key was retired");
    }

    #[tokio::test]
    async fn a_caller_after_the_work_ended_runs_it_again() {
        let flights = SingleFlight::<u32, usize>::default();
        let runs = AtomicUsize::new(0);
        for expected in 1..=2 {
            let work = || async { runs.fetch_add(1, Ordering::SeqCst) + 1 };
            assert_eq!(flights.run(7, work, |v| *v).await, expected);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_that_give_up_leave_nothing_behind() {
        let flights = Arc::new(SingleFlight::<u32, u32>::default());
        for key in 0..8 {
            let flights = Arc::clone(&flights);
            let caller = tokio::spawn(async move {
                let work = || async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    0
                };
                flights.run(key, work, |v| *v).await
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
            caller.abort();
            let _ = caller.await;
        }
        assert!(flights.is_empty(), "{} keys left behind", flights.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn when_the_caller_running_the_work_gives_up_another_takes_over() {
        let flights = Arc::new(SingleFlight::<u32, u32>::default());
        let first = {
            let flights = Arc::clone(&flights);
            tokio::spawn(async move {
                let work = || async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    1
                };
                flights.run(7, work, |v| *v).await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = {
            let flights = Arc::clone(&flights);
            tokio::spawn(async move { flights.run(7, || async { 2 }, |v| *v).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        first.abort();
        assert_eq!(
            second.await.expect("join"),
            2,
            "the waiter ran the work itself"
        );
        assert!(flights.is_empty());
    }
}
