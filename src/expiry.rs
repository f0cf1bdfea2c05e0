//! Discarding pending secrets that were not activated in time.
//!
//! Each replica runs one sweeper. It sleeps until the next pending secret
//! is due (at most [`MAX_NAP`], so that secrets generated meanwhile, or by
//! other replicas, are seen), then discards what is due through
//! [`Store::expire_due`], which lets only one replica discard (and audit)
//! each secret however many sweep at once. A secret is discarded within
//! about [`MAX_NAP`] of its expiry while any replica runs; and since an
//! activation checks the expiry itself, one that expired while no replica
//! ran can never be activated.

use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::store::Store;

/// The longest the sweeper sleeps between two looks.
pub const MAX_NAP: Duration = Duration::from_millis(500);

/// The shortest: a burst of secrets due together is discarded in one go.
const MIN_NAP: Duration = Duration::from_millis(20);

/// Secrets discarded per transaction batch.
const BATCH: u64 = 100;

/// Starts the sweeper; it runs until the handle is aborted.
pub fn sweep(store: Store) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            match sweep_once(&store).await {
                Ok(nap) => {
                    if failing {
                        info!("expiring pending secrets again");
                        failing = false;
                    }
                    tokio::time::sleep(nap).await;
                }
                Err(error) => {
                    if !failing {
                        warn!(%error, "cannot expire pending secrets; retrying");
                        failing = true;
                    }
                    tokio::time::sleep(MAX_NAP).await;
                }
            }
        }
    })
}

/// Discards what is due; how long to sleep before looking again.
async fn sweep_once(store: &Store) -> Result<Duration, crate::error::Error> {
    loop {
        let expired = store.expire_due(BATCH).await?;
        for secret in &expired {
            info!(
                organization_id = %secret.organization_id,
                secret_id = %secret.secret_id,
                "pending secret expired without being activated"
            );
        }
        if (expired.len() as u64) < BATCH {
            break;
        }
    }
    let nap = match store.next_expiry().await? {
        Some(at) => (at - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .clamp(MIN_NAP, MAX_NAP),
        None => MAX_NAP,
    };
    Ok(nap)
}
