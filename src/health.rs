//! `grpc.health.v1.Health`, driven by whether the database answers.
//!
//! A background probe pings the database every interval and reports the
//! whole server (`""`) and the IntegrationService SERVING or NOT_SERVING, so
//! that a load balancer stops sending calls while the database is away and
//! resumes as soon as it is back.

use std::time::Duration;

use tokio::task::JoinHandle;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::proto::SERVICE_NAME;
use crate::store::Store;

/// Reports `status` for the whole server and for the IntegrationService.
pub async fn report(reporter: &HealthReporter, status: ServingStatus) {
    for service in ["", SERVICE_NAME] {
        reporter.set_service_status(service, status).await;
    }
}

/// Starts the probe. It runs until the returned handle is aborted.
pub fn watch_database(store: Store, reporter: HealthReporter, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = ServingStatus::Serving;
        loop {
            ticks.tick().await;
            // A probe that hangs (a half-open connection) counts as down.
            let status = match tokio::time::timeout(every, store.ping()).await {
                Ok(Ok(())) => ServingStatus::Serving,
                Ok(Err(error)) => {
                    if last == ServingStatus::Serving {
                        warn!(%error, "database unreachable; reporting NOT_SERVING");
                    }
                    ServingStatus::NotServing
                }
                Err(_) => {
                    if last == ServingStatus::Serving {
                        warn!("database did not answer in time; reporting NOT_SERVING");
                    }
                    ServingStatus::NotServing
                }
            };
            if status != last {
                if status == ServingStatus::Serving {
                    info!("database reachable again; reporting SERVING");
                }
                report(&reporter, status).await;
                last = status;
            }
        }
    })
}
