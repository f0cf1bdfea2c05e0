//! The gRPC handlers: parse the request once ([`requests`]), call one
//! operation, map the result ([`responses`]), and log how it went
//! ([`outcome`]).
//!
//! Every handler but ValidateClient runs in a span named after its RPC that
//! carries the organization it acts for, recorded once parsed, so that no
//! unchecked caller input reaches a log. No handler logs a request or a
//! response: several carry a secret value.

pub mod outcome;
pub mod requests;
pub mod responses;

use std::{future::Future, time::Instant};

use tonic::{Request, Response, Status};
use tracing::{Span, field::Empty, instrument};

use self::outcome::{CallLog, Outcome};
use self::requests::{ClientCheck, SecretActivation};
use crate::domain::OrganizationId;
use crate::error::Error;
use crate::integrations::Integrations;
use crate::proto::{self, integration_service_server::IntegrationService};
use crate::store::Integration;
use crate::validation::{Validation, Validator};

/// The IntegrationService of the contract.
pub struct IntegrationApi {
    integrations: Integrations,
    validator: Validator,
    log: CallLog,
}

impl IntegrationApi {
    pub fn new(integrations: Integrations, validator: Validator, log: CallLog) -> Self {
        Self {
            integrations,
            validator,
            log,
        }
    }

    fn integration(&self, integration: Integration) -> proto::Integration {
        let domain = self.integrations.login_domain(&integration).to_owned();
        responses::integration(integration, domain)
    }

    /// Runs an admin call's work, logs its one outcome, and maps its error to
    /// the status the caller gets.
    async fn respond<T>(
        &self,
        rpc: &'static str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        match work.await {
            Ok(response) => {
                self.log.record(rpc, Outcome::Completed, started);
                Ok(Response::new(response))
            }
            Err(error) => {
                self.log.record(rpc, Outcome::Failed(&error), started);
                Err(Status::from(error))
            }
        }
    }
}

/// Parses a request into what its operation takes, and records the
/// organization it concerns on the request's span.
fn parse<M, P>(request: Request<M>) -> Result<P, Error>
where
    P: TryFrom<M, Error = Error> + ForOrganization,
{
    let parsed = P::try_from(request.into_inner())?;
    Span::current().record("organization_id", parsed.organization().as_str());
    Ok(parsed)
}

/// A parsed request that acts for one organization.
trait ForOrganization {
    fn organization(&self) -> &OrganizationId;
}

impl ForOrganization for OrganizationId {
    fn organization(&self) -> &OrganizationId {
        self
    }
}

impl ForOrganization for SecretActivation {
    fn organization(&self) -> &OrganizationId {
        &self.organization
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
            let organization: OrganizationId = parse(request)?;
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
            let organization: OrganizationId = parse(request)?;
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
            let organization: OrganizationId = parse(request)?;
            let (value, stored) = self.integrations.generate_secret(&organization).await?;
            Ok(proto::GenerateSecretResponse {
                client_secret: value.expose().to_owned(),
                secret: Some(responses::secret(stored)),
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
            let activation: SecretActivation = parse(request)?;
            let integration = self
                .integrations
                .activate_secret(&activation.organization, &activation.value)
                .await?;
            Ok(proto::ActivateSecretResponse {
                integration: Some(self.integration(integration)),
            })
        })
        .await
    }

    /// The gateway's hot path: its span is at DEBUG and carries no field,
    /// and its outcome's fields are on the event itself (see
    /// [`outcome`]).
    #[instrument(name = "ValidateClient", level = "debug", skip_all)]
    async fn validate_client(
        &self,
        request: Request<proto::ValidateClientRequest>,
    ) -> Result<Response<proto::ValidateClientResponse>, Status> {
        let started = Instant::now();
        let check = match ClientCheck::try_from(request.into_inner()) {
            Ok(check) => check,
            Err(error) => {
                self.log
                    .record_check(None, None, Outcome::Failed(&error), started);
                return Err(Status::from(error));
            }
        };
        match self
            .validator
            .validate(&check.credentials, check.source)
            .await
        {
            Ok(validation) => {
                let (outcome, organization_id) = match &validation {
                    Validation::Valid(client) => {
                        (Outcome::Validated, Some(client.organization_id.as_str()))
                    }
                    Validation::Invalid(rejection) => (Outcome::Rejected(*rejection), None),
                };
                self.log
                    .record_check(Some(&check), organization_id, outcome, started);
                Ok(Response::new(validation.into()))
            }
            Err(error) => {
                self.log
                    .record_check(Some(&check), None, Outcome::Failed(&error), started);
                Err(Status::from(error))
            }
        }
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

/// The answer of an RPC the contract has and this version does not serve
/// yet.
fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is in the contract but not served by this version of the service yet"
    ))
}
