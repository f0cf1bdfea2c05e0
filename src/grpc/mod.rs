//! The gRPC handlers: parse the request once ([`requests`]), call one
//! operation, map the result ([`responses`]), and log how it went
//! ([`outcome`]).
//!
//! Every handler but ValidateClient runs in a span named after its RPC that
//! carries the organization it acts for, recorded once parsed, so that no
//! unchecked caller input reaches a log. No handler logs a request or a
//! response: several carry a secret value.

pub mod outcome;
pub mod page_token;
pub mod requests;
pub mod responses;
mod watch;

use std::{future::Future, sync::Arc, time::Instant};

use tonic::{Request, Response, Status};
use tracing::{Span, field::Empty, instrument};

use crate::request_id::Unspanned;

use self::outcome::{CallLog, Outcome};
use self::page_token::List;
use self::requests::{ClientCheck, DomainChange, Listing, SecretActivation, SecretRevocation};
use crate::audit::Attribution;
use crate::auth::Caller;
use crate::changes::ChangeFeed;
use crate::domain::OrganizationId;
use crate::error::Error;
use crate::integrations::Integrations;
use crate::proto::{self, integration_service_server::IntegrationService};
use crate::store::Integration;
use crate::validation::{Validation, Validator};

/// The IntegrationService of the contract.
pub struct IntegrationApi {
    /// Shared with the change streams, which show each integration's login
    /// domain too.
    integrations: Arc<Integrations>,
    validator: Validator,
    changes: ChangeFeed,
    log: CallLog,
}

impl IntegrationApi {
    pub fn new(
        integrations: Integrations,
        validator: Validator,
        changes: ChangeFeed,
        log: CallLog,
    ) -> Self {
        Self {
            integrations: Arc::new(integrations),
            validator,
            changes,
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

/// Parses a request that changes something, as [`parse`] does, and says
/// who asks for the change, for the audit trail.
fn parse_change<M, P>(request: Request<M>) -> Result<(P, Attribution), Error>
where
    P: TryFrom<M, Error = Error> + ForOrganization,
{
    let by = Attribution::of(request.extensions().get::<Caller>(), request.metadata())?;
    Ok((parse(request)?, by))
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

impl ForOrganization for SecretRevocation {
    fn organization(&self) -> &OrganizationId {
        &self.organization
    }
}

impl ForOrganization for DomainChange {
    fn organization(&self) -> &OrganizationId {
        &self.organization
    }
}

impl ForOrganization for Listing {
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
            let (organization, by): (OrganizationId, _) = parse_change(request)?;
            let integration = self.integrations.create(&organization, &by).await?;
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
            let (organization, by): (OrganizationId, _) = parse_change(request)?;
            let (value, stored) = self
                .integrations
                .generate_secret(&organization, &by)
                .await?;
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
            let (activation, by): (SecretActivation, _) = parse_change(request)?;
            let integration = self
                .integrations
                .activate_secret(&activation.organization, &activation.value, &by)
                .await?;
            Ok(proto::ActivateSecretResponse {
                integration: Some(self.integration(integration)),
            })
        })
        .await
    }

    /// The gateway's hot path: its span is at DEBUG and carries no field,
    /// and its outcome's fields are on the event itself (see
    /// [`outcome`]), its request id too while it runs without a `request`
    /// span.
    #[instrument(name = "ValidateClient", level = "debug", skip_all)]
    async fn validate_client(
        &self,
        request: Request<proto::ValidateClientRequest>,
    ) -> Result<Response<proto::ValidateClientResponse>, Status> {
        let started = Instant::now();
        // Without its `request` span (see `crate::request_id`), the call's
        // outcome carries its request id itself.
        let unspanned = request.extensions().get::<Unspanned>().cloned();
        let request_id = unspanned.as_ref().map(Unspanned::as_str);
        let check = match ClientCheck::try_from(request.into_inner()) {
            Ok(check) => check,
            Err(error) => {
                self.log
                    .record_check(None, request_id, None, Outcome::Failed(&error), started);
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
                    .record_check(Some(&check), request_id, organization_id, outcome, started);
                Ok(Response::new(validation.into()))
            }
            Err(error) => {
                self.log.record_check(
                    Some(&check),
                    request_id,
                    None,
                    Outcome::Failed(&error),
                    started,
                );
                Err(Status::from(error))
            }
        }
    }

    #[instrument(name = "UpdateDomain", skip_all, fields(organization_id = Empty))]
    async fn update_domain(
        &self,
        request: Request<proto::UpdateDomainRequest>,
    ) -> Result<Response<proto::UpdateDomainResponse>, Status> {
        self.respond("UpdateDomain", async {
            let (change, by): (DomainChange, _) = parse_change(request)?;
            let integration = self
                .integrations
                .update_domain(&change.organization, change.name.as_ref(), &by)
                .await?;
            Ok(proto::UpdateDomainResponse {
                integration: Some(self.integration(integration)),
            })
        })
        .await
    }

    #[instrument(name = "VerifyDomain", skip_all, fields(organization_id = Empty))]
    async fn verify_domain(
        &self,
        request: Request<proto::VerifyDomainRequest>,
    ) -> Result<Response<proto::VerifyDomainResponse>, Status> {
        self.respond("VerifyDomain", async {
            let (organization, by): (OrganizationId, _) = parse_change(request)?;
            let integration = self.integrations.verify_domain(&organization, &by).await?;
            Ok(proto::VerifyDomainResponse {
                integration: Some(self.integration(integration)),
            })
        })
        .await
    }

    #[instrument(name = "ListSecrets", skip_all, fields(organization_id = Empty))]
    async fn list_secrets(
        &self,
        request: Request<proto::ListSecretsRequest>,
    ) -> Result<Response<proto::ListSecretsResponse>, Status> {
        self.respond("ListSecrets", async {
            let listing: Listing = parse(request)?;
            let page = self
                .integrations
                .secrets(&listing.organization, listing.page)
                .await?;
            Ok(proto::ListSecretsResponse {
                secrets: page.items.into_iter().map(responses::secret).collect(),
                next_page_token: page
                    .next
                    .map(|cursor| page_token::encode(List::Secrets, &listing.organization, cursor))
                    .unwrap_or_default(),
            })
        })
        .await
    }

    #[instrument(name = "RevokeSecret", skip_all, fields(organization_id = Empty))]
    async fn revoke_secret(
        &self,
        request: Request<proto::RevokeSecretRequest>,
    ) -> Result<Response<proto::RevokeSecretResponse>, Status> {
        self.respond("RevokeSecret", async {
            let (revocation, by): (SecretRevocation, _) = parse_change(request)?;
            let integration = self
                .integrations
                .revoke_secret(&revocation.organization, revocation.secret_id, &by)
                .await?;
            Ok(proto::RevokeSecretResponse {
                integration: Some(self.integration(integration)),
            })
        })
        .await
    }

    #[instrument(name = "ListAuditEvents", skip_all, fields(organization_id = Empty))]
    async fn list_audit_events(
        &self,
        request: Request<proto::ListAuditEventsRequest>,
    ) -> Result<Response<proto::ListAuditEventsResponse>, Status> {
        self.respond("ListAuditEvents", async {
            let listing: Listing = parse(request)?;
            let page = self
                .integrations
                .audit_events(&listing.organization, listing.page)
                .await?;
            Ok(proto::ListAuditEventsResponse {
                events: page.items.into_iter().map(responses::audit_event).collect(),
                next_page_token: page
                    .next
                    .map(|cursor| {
                        page_token::encode(List::AuditEvents, &listing.organization, cursor)
                    })
                    .unwrap_or_default(),
            })
        })
        .await
    }

    type WatchIntegrationsStream = tonic::codegen::BoxStream<proto::WatchIntegrationsResponse>;

    /// Its one outcome is the opening of the stream; the stream logs a
    /// line of its own when it ends (see [`watch`]).
    #[instrument(name = "WatchIntegrations", skip_all, fields(organization_id = Empty))]
    async fn watch_integrations(
        &self,
        request: Request<proto::WatchIntegrationsRequest>,
    ) -> Result<Response<Self::WatchIntegrationsStream>, Status> {
        self.respond("WatchIntegrations", async {
            let organization = watch::organization(request.into_inner())?;
            if let Some(organization) = &organization {
                Span::current().record("organization_id", organization.as_str());
            }
            let watcher = self.changes.watch(organization);
            Ok(watch::stream(watcher, Arc::clone(&self.integrations)))
        })
        .await
    }

    #[instrument(name = "DeleteIntegration", skip_all, fields(organization_id = Empty))]
    async fn delete_integration(
        &self,
        request: Request<proto::DeleteIntegrationRequest>,
    ) -> Result<Response<proto::DeleteIntegrationResponse>, Status> {
        self.respond("DeleteIntegration", async {
            let (organization, by): (OrganizationId, _) = parse_change(request)?;
            self.integrations.delete(&organization, &by).await?;
            Ok(proto::DeleteIntegrationResponse {})
        })
        .await
    }
}
