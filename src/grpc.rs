//! The gRPC handlers: parse the request, call one operation, map the result.
//!
//! Every handler runs in a span named after its RPC that carries the
//! organization and client it acts for (recorded once they are parsed, so no
//! unchecked caller input reaches a log), and ends with exactly one log event
//! saying how it went and how long it took. No handler logs a request or a
//! response: several carry a secret value.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use prost_types::Timestamp;
use tonic::{Code, Request, Response, Status};
use tracing::{Span, field::Empty, instrument};

use crate::domain::{ClientId, OrganizationId, SecretState};
use crate::error::Error;
use crate::integrations::{Integrations, Rejection, Validation};
use crate::proto::{self, integration_service_server::IntegrationService};
use crate::store::{Integration, StoredSecret};

/// Longest `client_id` or `client_secret` a request may carry, in bytes.
/// Longer values are refused before any lookup or hash.
pub const MAX_CREDENTIAL_BYTES: usize = 256;

/// The IntegrationService of the contract.
pub struct IntegrationApi {
    integrations: Arc<Integrations>,
    refusals: Refusals,
}

/// Counts what is logged at DEBUG only, so that a flood of calls cannot
/// also flood the log: calls refused because the service was saturated
/// (throttled, or argon2's queue full or too slow), and checks of malformed
/// credentials. Their numbers are reported periodically instead (see
/// `crate::startup`).
#[derive(Debug, Clone, Default)]
pub struct Refusals {
    saturated: Arc<AtomicU64>,
    malformed: Arc<AtomicU64>,
}

impl Refusals {
    /// The numbers of refusals (saturated, malformed) since the last call.
    pub fn take(&self) -> (u64, u64) {
        (
            self.saturated.swap(0, Ordering::Relaxed),
            self.malformed.swap(0, Ordering::Relaxed),
        )
    }
}

impl IntegrationApi {
    pub fn new(integrations: Arc<Integrations>, refusals: Refusals) -> Self {
        Self {
            integrations,
            refusals,
        }
    }

    fn integration(&self, integration: Integration) -> proto::Integration {
        let domain = self
            .integrations
            .domain(integration.custom_domain.as_deref())
            .to_owned();
        proto::Integration {
            organization_id: integration.organization_id.as_str().to_owned(),
            client_id: integration.client_id.as_str().to_owned(),
            domain,
            custom_domain: integration.custom_domain.is_some(),
            active_secret: integration.active_secret.map(secret),
            pending_secret: integration.pending_secret.map(secret),
            // Custom domains come with the lifecycle RPCs (UpdateDomain).
            custom_domain_status: None,
            create_time: Some(timestamp(integration.created_at)),
            update_time: Some(timestamp(integration.updated_at)),
        }
    }
}

#[tonic::async_trait]
impl IntegrationService for IntegrationApi {
    #[instrument(name = "CreateIntegration", skip_all, fields(organization_id = Empty))]
    async fn create_integration(
        &self,
        request: Request<proto::CreateIntegrationRequest>,
    ) -> Result<Response<proto::CreateIntegrationResponse>, Status> {
        self.respond("CreateIntegration", async {
            let organization = organization(request.into_inner().organization_id)?;
            let integration = self.integrations.create(&organization).await?;
            Ok(proto::CreateIntegrationResponse {
                integration: Some(self.integration(integration)),
            })
        })
        .await
    }

    #[instrument(name = "GetIntegration", skip_all, fields(organization_id = Empty))]
    async fn get_integration(
        &self,
        request: Request<proto::GetIntegrationRequest>,
    ) -> Result<Response<proto::GetIntegrationResponse>, Status> {
        self.respond("GetIntegration", async {
            let organization = organization(request.into_inner().organization_id)?;
            let integration = self.integrations.get(&organization).await?;
            Ok(proto::GetIntegrationResponse {
                integration: Some(self.integration(integration)),
            })
        })
        .await
    }

    #[instrument(name = "GenerateSecret", skip_all, fields(organization_id = Empty))]
    async fn generate_secret(
        &self,
        request: Request<proto::GenerateSecretRequest>,
    ) -> Result<Response<proto::GenerateSecretResponse>, Status> {
        self.respond("GenerateSecret", async {
            let organization = organization(request.into_inner().organization_id)?;
            let (value, stored) = self.integrations.generate_secret(&organization).await?;
            Ok(proto::GenerateSecretResponse {
                client_secret: value.expose().to_owned(),
                secret: Some(secret(stored)),
            })
        })
        .await
    }

    #[instrument(name = "ActivateSecret", skip_all, fields(organization_id = Empty))]
    async fn activate_secret(
        &self,
        request: Request<proto::ActivateSecretRequest>,
    ) -> Result<Response<proto::ActivateSecretResponse>, Status> {
        self.respond("ActivateSecret", async {
            let request = request.into_inner();
            let organization = organization(request.organization_id)?;
            let value = credential("client_secret", &request.client_secret)?;
            let integration = self
                .integrations
                .activate_secret(&organization, value)
                .await?;
            Ok(proto::ActivateSecretResponse {
                integration: Some(self.integration(integration)),
            })
        })
        .await
    }

    /// The gateway's hot path, so it logs as little as it can: a
    /// successful check at DEBUG, a failed one at INFO with its reason, with
    /// the fields on the event itself (a span's fields are formatted when
    /// they are recorded, even when nothing is logged).
    #[instrument(name = "ValidateClient", level = "debug", skip_all)]
    async fn validate_client(
        &self,
        request: Request<proto::ValidateClientRequest>,
    ) -> Result<Response<proto::ValidateClientResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let validation = match (
            credential("client_id", &request.client_id),
            credential("client_secret", &request.client_secret),
        ) {
            (Ok(client_id), Ok(value)) => self.integrations.validate_client(client_id, value).await,
            (Err(error), _) | (_, Err(error)) => Err(error),
        };
        let latency_ms = milliseconds_since(started);
        let response = match validation {
            Ok(Validation::Valid {
                organization_id,
                domain,
            }) => {
                tracing::debug!(
                    client_id = %request.client_id,
                    organization_id = %organization_id,
                    latency_ms,
                    "client validated"
                );
                proto::ValidateClientResponse {
                    valid: true,
                    organization_id: organization_id.as_str().to_owned(),
                    domain,
                }
            }
            Ok(Validation::Invalid(Rejection::Malformed)) => {
                self.refusals.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    latency_ms,
                    "client validation failed: malformed credentials"
                );
                proto::ValidateClientResponse::default()
            }
            Ok(Validation::Invalid(rejection)) => {
                tracing::info!(
                    client_id = %request.client_id,
                    outcome = rejection.as_str(),
                    latency_ms,
                    "client validation failed"
                );
                proto::ValidateClientResponse::default()
            }
            Err(error) => {
                // Only a well-formed client ID is safe to echo into the log.
                let client_id = ClientId::parse(&request.client_id);
                let client_id = client_id.as_ref().map(ClientId::as_str);
                return Err(self.refuse("ValidateClient", client_id, error, latency_ms));
            }
        };
        Ok(Response::new(response))
    }
    async fn update_domain(
        &self,
        _request: Request<proto::UpdateDomainRequest>,
    ) -> Result<Response<proto::UpdateDomainResponse>, Status> {
        Err(not_yet("UpdateDomain"))
    }

    async fn verify_domain(
        &self,
        _request: Request<proto::VerifyDomainRequest>,
    ) -> Result<Response<proto::VerifyDomainResponse>, Status> {
        Err(not_yet("VerifyDomain"))
    }

    async fn list_secrets(
        &self,
        _request: Request<proto::ListSecretsRequest>,
    ) -> Result<Response<proto::ListSecretsResponse>, Status> {
        Err(not_yet("ListSecrets"))
    }

    async fn revoke_secret(
        &self,
        _request: Request<proto::RevokeSecretRequest>,
    ) -> Result<Response<proto::RevokeSecretResponse>, Status> {
        Err(not_yet("RevokeSecret"))
    }

    async fn list_audit_events(
        &self,
        _request: Request<proto::ListAuditEventsRequest>,
    ) -> Result<Response<proto::ListAuditEventsResponse>, Status> {
        Err(not_yet("ListAuditEvents"))
    }

    type WatchIntegrationsStream = tonic::codegen::BoxStream<proto::WatchIntegrationsResponse>;

    async fn watch_integrations(
        &self,
        _request: Request<proto::WatchIntegrationsRequest>,
    ) -> Result<Response<Self::WatchIntegrationsStream>, Status> {
        Err(not_yet("WatchIntegrations"))
    }

    async fn delete_integration(
        &self,
        _request: Request<proto::DeleteIntegrationRequest>,
    ) -> Result<Response<proto::DeleteIntegrationResponse>, Status> {
        Err(not_yet("DeleteIntegration"))
    }
}

/// The answer of an RPC the contract has and this version does not serve yet.
fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is in the contract but not served by this version of the service yet"
    ))
}

/// Parses the organization id and records it on the request's span.
pub fn organization(value: String) -> Result<OrganizationId, Error> {
    let organization = OrganizationId::parse(value).map_err(|e| Error::InvalidArgument(e.0))?;
    Span::current().record("organization_id", organization.as_str());
    Ok(organization)
}

/// A client ID or secret as sent: required, and at most
/// [`MAX_CREDENTIAL_BYTES`].
pub fn credential<'a>(field: &str, value: &'a str) -> Result<&'a str, Error> {
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("{field} is required")));
    }
    if value.len() > MAX_CREDENTIAL_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{field} must be at most {MAX_CREDENTIAL_BYTES} bytes, not {}",
            value.len()
        )));
    }
    Ok(value)
}

impl IntegrationApi {
    /// Runs a handler's work, logs its one outcome event, and maps its error
    /// to the status the caller gets.
    async fn respond<T>(
        &self,
        rpc: &'static str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = work.await;
        let latency_ms = milliseconds_since(started);
        match result {
            Ok(response) => {
                tracing::info!(code = ?Code::Ok, latency_ms, "request completed");
                Ok(Response::new(response))
            }
            Err(error) => Err(self.refuse(rpc, None, error, latency_ms)),
        }
    }

    /// Logs a failed call once, at the level its cause deserves, and turns
    /// it into the status the caller gets.
    fn refuse(
        &self,
        rpc: &'static str,
        client_id: Option<&str>,
        error: Error,
        latency_ms: f64,
    ) -> Status {
        let code = error.code();
        match &error {
            Error::Internal(_) => {
                tracing::error!(rpc, client_id, ?code, latency_ms, error = %error, "request failed");
            }
            Error::Unavailable(_) => {
                tracing::warn!(rpc, client_id, ?code, latency_ms, error = %error, "request failed");
            }
            Error::ResourceExhausted(_) | Error::Overloaded(_) => {
                self.refusals.saturated.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(rpc, client_id, ?code, latency_ms, reason = %error, "request refused");
            }
            _ => {
                tracing::info!(rpc, client_id, ?code, latency_ms, reason = %error, "request refused");
            }
        }
        Status::from(error)
    }
}

/// Milliseconds since `started`, to the microsecond: plenty, and readable.
fn milliseconds_since(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

fn secret(secret: StoredSecret) -> proto::Secret {
    proto::Secret {
        id: secret.id.to_string(),
        state: proto::SecretState::from(secret.state).into(),
        hint: secret.hint,
        create_time: Some(timestamp(secret.created_at)),
        activate_time: secret.activated_at.map(timestamp),
        revoke_time: secret.revoked_at.map(timestamp),
        // Use and expiry are not recorded yet.
        last_use_time: None,
        expire_time: None,
        last_retired_use_time: None,
    }
}

impl From<SecretState> for proto::SecretState {
    fn from(state: SecretState) -> Self {
        match state {
            SecretState::Pending => Self::Pending,
            SecretState::Active => Self::Active,
            SecretState::Revoked => Self::Revoked,
            SecretState::Discarded => Self::Discarded,
        }
    }
}

fn timestamp(time: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}
