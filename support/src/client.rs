//! Typed calls to the service over one connection: each RPC a test or a
//! benchmark makes, returning what it needs or the status, optionally with
//! a bearer token and a bound on how long a call may take.

use std::{fmt, future::Future, time::Duration};

use integration_service::proto::{self, integration_service_client::IntegrationServiceClient};
use tonic::{
    Request, Response, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// The generated client, as [`Client::raw`] hands it out: every call it
/// makes carries the [`Client`]'s authorization.
pub type RawClient = IntegrationServiceClient<InterceptedService<Channel, Authorization>>;

/// The `authorization` metadata a client puts on every call, if any. Its
/// `Debug` never shows the value: it is a token.
#[derive(Clone, Default)]
pub struct Authorization(Option<AsciiMetadataValue>);

impl Interceptor for Authorization {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Authorization(<redacted>)"),
            None => f.write_str("Authorization(none)"),
        }
    }
}

/// A client of the IntegrationService over one connection. Cheap to clone;
/// clones share the connection. Every method takes `&self`, so one client
/// serves concurrent calls.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    authorization: Authorization,
    call_timeout: Option<Duration>,
}

impl Client {
    /// A client whose calls carry no token and may take as long as they take.
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            authorization: Authorization::default(),
            call_timeout: None,
        }
    }

    /// The same client, its calls carrying `authorization: Bearer <token>`.
    pub fn with_token(self, token: &str) -> Self {
        self.with_authorization(&format!("Bearer {token}"))
    }

    /// The same client, its calls carrying `authorization: <value>` exactly
    /// as given (a test of refused credentials sends malformed ones).
    pub fn with_authorization(mut self, value: &str) -> Self {
        let value: AsciiMetadataValue = MetadataValue::try_from(value).expect("ASCII metadata");
        self.authorization = Authorization(Some(value));
        self
    }

    /// The same client, a call unanswered after `timeout` failing
    /// `DEADLINE_EXCEEDED` (the client gives up; the server is not told),
    /// so that a hung call fails a test instead of hanging it.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// The connection the client calls through.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The generated client on the same connection, with the same
    /// authorization, for requests made by hand (metadata, raw messages).
    /// It does not apply the call timeout.
    pub fn raw(&self) -> RawClient {
        IntegrationServiceClient::with_interceptor(self.channel.clone(), self.authorization.clone())
    }

    pub async fn create(&self, organization_id: &str) -> Result<proto::Integration, Status> {
        let request = proto::CreateIntegrationRequest {
            organization_id: organization_id.to_owned(),
        };
        let response = self.call(self.raw().create_integration(request)).await?;
        Ok(response.integration.expect("an integration"))
    }

    pub async fn get(&self, organization_id: &str) -> Result<proto::Integration, Status> {
        let request = proto::GetIntegrationRequest {
            organization_id: organization_id.to_owned(),
        };
        let response = self.call(self.raw().get_integration(request)).await?;
        Ok(response.integration.expect("an integration"))
    }

    /// Generates a secret; returns its value and its metadata.
    pub async fn generate(&self, organization_id: &str) -> Result<(String, proto::Secret), Status> {
        let request = proto::GenerateSecretRequest {
            organization_id: organization_id.to_owned(),
        };
        let response = self.call(self.raw().generate_secret(request)).await?;
        Ok((response.client_secret, response.secret.expect("a secret")))
    }

    pub async fn activate(
        &self,
        organization_id: &str,
        value: &str,
    ) -> Result<proto::Integration, Status> {
        let request = proto::ActivateSecretRequest {
            organization_id: organization_id.to_owned(),
            client_secret: value.to_owned(),
        };
        let response = self.call(self.raw().activate_secret(request)).await?;
        Ok(response.integration.expect("an integration"))
    }

    pub async fn validate(
        &self,
        client_id: &str,
        value: &str,
    ) -> Result<proto::ValidateClientResponse, Status> {
        self.validate_from(client_id, value, "").await
    }

    /// ValidateClient as a gateway sends it for a party at `remote_address`
    /// (IP text; empty for unknown).
    pub async fn validate_from(
        &self,
        client_id: &str,
        value: &str,
        remote_address: &str,
    ) -> Result<proto::ValidateClientResponse, Status> {
        let request = proto::ValidateClientRequest {
            client_id: client_id.to_owned(),
            client_secret: value.to_owned(),
            remote_address: remote_address.to_owned(),
        };
        self.call(self.raw().validate_client(request)).await
    }

    /// Whether the pair validates; panics on an error status.
    pub async fn is_valid(&self, client_id: &str, value: &str) -> bool {
        self.validate(client_id, value)
            .await
            .expect("ValidateClient answers")
            .valid
    }

    /// Polls until the pair no longer validates; panics if it still does
    /// after `within`. Returns how long it took.
    pub async fn becomes_invalid(
        &self,
        client_id: &str,
        value: &str,
        within: Duration,
    ) -> Duration {
        let started = std::time::Instant::now();
        while self.is_valid(client_id, value).await {
            assert!(
                started.elapsed() < within,
                "still valid {:?} after it was revoked",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started.elapsed()
    }

    pub async fn update_domain(
        &self,
        organization_id: &str,
        custom_domain: &str,
    ) -> Result<proto::Integration, Status> {
        let request = proto::UpdateDomainRequest {
            organization_id: organization_id.to_owned(),
            custom_domain: custom_domain.to_owned(),
        };
        let response = self.call(self.raw().update_domain(request)).await?;
        Ok(response.integration.expect("an integration"))
    }

    pub async fn verify_domain(&self, organization_id: &str) -> Result<proto::Integration, Status> {
        let request = proto::VerifyDomainRequest {
            organization_id: organization_id.to_owned(),
        };
        let response = self.call(self.raw().verify_domain(request)).await?;
        Ok(response.integration.expect("an integration"))
    }

    /// One page of ListSecrets.
    pub async fn list_secrets(
        &self,
        organization_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<proto::ListSecretsResponse, Status> {
        let request = proto::ListSecretsRequest {
            organization_id: organization_id.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        };
        self.call(self.raw().list_secrets(request)).await
    }

    /// Every secret, following the page tokens with pages of `page_size`.
    pub async fn all_secrets(
        &self,
        organization_id: &str,
        page_size: i32,
    ) -> Result<Vec<proto::Secret>, Status> {
        let mut secrets = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .list_secrets(organization_id, page_size, &token)
                .await?;
            secrets.extend(page.secrets);
            if page.next_page_token.is_empty() {
                return Ok(secrets);
            }
            token = page.next_page_token;
        }
    }

    pub async fn revoke(
        &self,
        organization_id: &str,
        secret_id: &str,
    ) -> Result<proto::Integration, Status> {
        let request = proto::RevokeSecretRequest {
            organization_id: organization_id.to_owned(),
            secret_id: secret_id.to_owned(),
        };
        let response = self.call(self.raw().revoke_secret(request)).await?;
        Ok(response.integration.expect("an integration"))
    }

    /// One page of ListAuditEvents.
    pub async fn list_audit(
        &self,
        organization_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<proto::ListAuditEventsResponse, Status> {
        let request = proto::ListAuditEventsRequest {
            organization_id: organization_id.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        };
        self.call(self.raw().list_audit_events(request)).await
    }

    /// The whole audit trail, newest first.
    pub async fn all_audit(&self, organization_id: &str) -> Result<Vec<proto::AuditEvent>, Status> {
        let mut events = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list_audit(organization_id, 0, &token).await?;
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                return Ok(events);
            }
            token = page.next_page_token;
        }
    }

    pub async fn delete(&self, organization_id: &str) -> Result<(), Status> {
        let request = proto::DeleteIntegrationRequest {
            organization_id: organization_id.to_owned(),
        };
        self.call(self.raw().delete_integration(request)).await?;
        Ok(())
    }

    /// Opens a change stream: one organization's, or every one's with "".
    pub async fn watch(
        &self,
        organization_id: &str,
    ) -> Result<tonic::Streaming<proto::WatchIntegrationsResponse>, Status> {
        let request = proto::WatchIntegrationsRequest {
            organization_id: organization_id.to_owned(),
        };
        self.call(self.raw().watch_integrations(request)).await
    }

    /// Creates an integration with an active secret; returns its client ID
    /// and the secret's value.
    pub async fn ready(&self, organization_id: &str) -> (String, String) {
        let integration = self.create(organization_id).await.expect("created");
        let (value, _) = self.generate(organization_id).await.expect("generated");
        self.activate(organization_id, &value)
            .await
            .expect("activated");
        (integration.client_id, value)
    }

    /// Awaits a call, for at most the call timeout if there is one.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Status> {
        let answer = match self.call_timeout {
            None => call.await,
            Some(timeout) => tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(
                        "no answer within the test's call timeout",
                    ))
                }),
        };
        answer.map(Response::into_inner)
    }
}
