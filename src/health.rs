//! `grpc.health.v1.Health`, driven by whether the database answers.
//!
//! A background probe pings the database every interval and reports the
//! whole server (`""`) and the IntegrationService SERVING or NOT_SERVING, so
//! that a load balancer stops sending calls while the database is away and
//! resumes as soon as it is back.
//!
//! [`LIVENESS`] is SERVING from the start until shutdown, whatever the
//! database does: it is what a liveness probe asks, so that an outage of the
//! database takes replicas out of rotation without restarting them (a
//! restart would not bring the database back, and a replica cannot start
//! without it).

use std::time::Duration;

use tokio::task::JoinHandle;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::proto::SERVICE_NAME;
use crate::store::Store;

/// The health service name a liveness probe asks: SERVING while the process
/// serves, even while its database is away.
pub const LIVENESS: &str = "liveness";

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

/// Why `health-check` could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot reach {address}: {source}")]
    Connect {
        address: std::net::SocketAddr,
        source: tonic::transport::Error,
    },
    #[error("{address} did not answer within {seconds} s")]
    Timeout {
        address: std::net::SocketAddr,
        seconds: u64,
    },
    #[error("{address} refused the health check: {message}")]
    Refused {
        address: std::net::SocketAddr,
        message: String,
    },
}

/// Asks the health service at `check.address` (plain gRPC) for the status
/// of `check.service`, and returns its name (`SERVING`, `NOT_SERVING`, …).
/// An unspecified address means this machine's loopback.
pub async fn check(check: &crate::config::HealthCheckSettings) -> Result<&'static str, CheckError> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut address = check.address;
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let timeout = CheckError::Timeout {
        address,
        seconds: check.timeout.as_secs(),
    };
    let asked = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|source| CheckError::Connect { address, source })?
            .connect()
            .await
            .map_err(|source| CheckError::Connect { address, source })?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: check.service.clone(),
            })
            .await
            .map_err(|status| CheckError::Refused {
                address,
                message: status.message().to_owned(),
            })
    };
    let answer = tokio::time::timeout(check.timeout, asked)
        .await
        .map_err(|_| timeout)??;
    let status = tonic_health::pb::health_check_response::ServingStatus::try_from(
        answer.into_inner().status,
    )
    .unwrap_or(tonic_health::pb::health_check_response::ServingStatus::Unknown);
    Ok(status.as_str_name())
}
