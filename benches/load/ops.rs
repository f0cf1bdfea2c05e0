//! What a worker of the load generator sends, call after call.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use integration_service::{domain::ClientSecret, proto};
use support::RawClient;
use tonic::{Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    seed::{COLD, SCALE},
    server::Connection,
};

/// What a worker sends, over and over.
#[derive(Clone)]
pub enum Op {
    /// `grpc.health.v1.Health/Check` of "".
    Health,
    /// ValidateClient of one client with its active secret, from
    /// `remote_address` (empty: none sent).
    Validate {
        client_id: Arc<str>,
        secret: Arc<str>,
        remote_address: Arc<str>,
    },
    /// ValidateClient of a different seeded cold client each call.
    ValidateCold {
        next: Arc<AtomicU64>,
        pool: u64,
        repeats: Arc<AtomicU64>,
        secret: Arc<str>,
    },
    /// GetIntegration of a seeded scale organization drawn at random from
    /// 1..=count.
    GetIntegration { count: u64 },
    /// Well-formed wrong secrets for `client_id`, unknown client IDs with
    /// well-formed secrets, and some secrets with a broken checksum, from
    /// `remote_address` (empty: none sent).
    Flood {
        client_id: Arc<str>,
        kind: FloodKind,
        remote_address: Arc<str>,
    },
}

/// What a flood worker sends; each is a group of its own, so that cheap
/// refusals are not held up behind expensive misses in the same worker.
#[derive(Debug, Clone, Copy)]
pub enum FloodKind {
    /// A fresh, well-formed (valid checksum) wrong secret for the real
    /// client's ID.
    WrongSecret,
    /// A fresh unknown client ID (24 base62 characters) with a fresh,
    /// well-formed secret.
    UnknownClient,
    /// A secret whose checksum fails, for the real client's ID or an unknown
    /// one, alternately.
    BadChecksum,
}

/// What a worker calls through: the health service, and the
/// IntegrationService with the token of the role its op needs. Made once
/// per worker from its connection, so that a call costs no more than the
/// generated client's own; an open-loop worker clones them for each call it
/// starts.
#[derive(Clone)]
pub struct Stubs {
    health: HealthClient<Channel>,
    service: RawClient,
}

impl Stubs {
    pub fn new(op: &Op, connection: &Connection) -> Self {
        let role = match op {
            Op::GetIntegration { .. } => &connection.admin,
            Op::Health | Op::Validate { .. } | Op::ValidateCold { .. } | Op::Flood { .. } => {
                &connection.validator
            }
        };
        Self {
            health: HealthClient::new(connection.channel.clone()),
            service: role.raw(),
        }
    }
}

/// The result of one call: the status, and whether the answer was the
/// positive one (valid=true, SERVING, an integration).
pub type Outcome = Result<bool, Status>;

/// What a worker carries from one call to the next.
pub struct WorkerState {
    pub rng: SplitMix,
    /// The cold organization to retry, if the last call was refused.
    cold: Option<u64>,
}

impl WorkerState {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix(seed),
            cold: None,
        }
    }
}

impl Op {
    pub async fn call(&self, stubs: &mut Stubs, state: &mut WorkerState) -> Outcome {
        let client = &mut stubs.service;
        match self {
            Op::Health => {
                let response = stubs
                    .health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
                Ok(response.into_inner().status == ServingStatus::Serving as i32)
            }
            Op::Validate {
                client_id,
                secret,
                remote_address,
            } => validate(client, client_id, secret, remote_address).await,
            Op::ValidateCold {
                next,
                pool,
                repeats,
                secret,
            } => {
                // A call refused before it was verified (throttled, timed
                // out) left its organization cold: retry the same one, so
                // that an organization is used up only once answered.
                let n = state.cold.take().unwrap_or_else(|| {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n > *pool {
                        repeats.fetch_add(1, Ordering::Relaxed);
                        (n - 1) % pool + 1
                    } else {
                        n
                    }
                });
                let outcome = validate(client, &COLD.client_id(n), secret, "").await;
                if outcome.is_err() {
                    state.cold = Some(n);
                }
                outcome
            }
            Op::GetIntegration { count } => {
                let n = state.rng.below(*count) + 1;
                let response = client
                    .get_integration(proto::GetIntegrationRequest {
                        organization_id: SCALE.organization(n),
                    })
                    .await?;
                Ok(response.into_inner().integration.is_some())
            }
            Op::Flood {
                client_id,
                kind,
                remote_address,
            } => {
                let fresh = ClientSecret::generate().expect("the OS RNG");
                // 24 base62 characters from the random part of another
                // fresh secret: a well-formed client ID nobody has.
                let unknown =
                    || ClientSecret::generate().expect("the OS RNG").expose()[4..28].to_owned();
                let (client_id, secret) = match kind {
                    FloodKind::WrongSecret => (client_id.to_string(), fresh.expose().to_owned()),
                    FloodKind::UnknownClient => (unknown(), fresh.expose().to_owned()),
                    FloodKind::BadChecksum => {
                        let mut broken = fresh.expose().to_owned();
                        let last = if broken.ends_with('A') { "B" } else { "A" };
                        broken.replace_range(63.., last);
                        let id = if state.rng.below(2) == 0 {
                            client_id.to_string()
                        } else {
                            unknown()
                        };
                        (id, broken)
                    }
                };
                validate(client, &client_id, &secret, remote_address).await
            }
        }
    }
}

/// ValidateClient as a gateway sends it; an empty `remote_address` is
/// none.
async fn validate(
    client: &mut RawClient,
    client_id: &str,
    secret: &str,
    remote_address: &str,
) -> Outcome {
    let response = client
        .validate_client(proto::ValidateClientRequest {
            client_id: client_id.to_owned(),
            client_secret: secret.to_owned(),
            remote_address: remote_address.to_owned(),
        })
        .await?;
    Ok(response.into_inner().valid)
}

/// A small, fast PRNG for choosing organizations; no cryptography here.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}
