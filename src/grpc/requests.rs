//! Each request, parsed once into the domain types its operation takes.
//!
//! Every conversion is a `TryFrom<proto::…Request>`; a refusal is
//! `INVALID_ARGUMENT` with the rule the field breaks, and never repeats a
//! value (a secret may be in it, and anything else a caller sends reaches
//! the log).

use std::net::IpAddr;

use uuid::Uuid;

use super::page_token::{self, List};
use crate::domain::{ClientSecret, CustomDomainName, MalformedSecret, OrganizationId};
use crate::error::Error;
use crate::proto;
use crate::store::Page;
use crate::validation::Credentials;

/// Longest `client_id` or `client_secret` a request may carry, in bytes.
/// Longer values are refused before any lookup or hash.
pub const MAX_CREDENTIAL_BYTES: usize = 256;

/// An ActivateSecret request: the organization, and the value as presented
/// (a value that cannot be a secret of ours is still an answerable
/// activation: it matches nothing).
#[derive(Debug)]
pub struct SecretActivation {
    pub organization: OrganizationId,
    pub value: Result<ClientSecret, MalformedSecret>,
}

/// A ValidateClient request.
#[derive(Debug)]
pub struct ClientCheck {
    pub credentials: Credentials,
    /// Who presented the credentials, as the gateway saw them; `None` when
    /// it did not say. IPv4-mapped IPv6 addresses are read as IPv4, so that
    /// one party has one address.
    pub source: Option<IpAddr>,
}

/// A ListSecrets or ListAuditEvents request.
#[derive(Debug)]
pub struct Listing {
    pub organization: OrganizationId,
    pub page: Page,
}

/// An UpdateDomain request: the name to set, or `None` to clear it.
#[derive(Debug)]
pub struct DomainChange {
    pub organization: OrganizationId,
    pub name: Option<CustomDomainName>,
}

/// A RevokeSecret request.
#[derive(Debug)]
pub struct SecretRevocation {
    pub organization: OrganizationId,
    pub secret_id: Uuid,
}

impl TryFrom<proto::CreateIntegrationRequest> for OrganizationId {
    type Error = Error;

    fn try_from(request: proto::CreateIntegrationRequest) -> Result<Self, Error> {
        organization(request.organization_id)
    }
}

impl TryFrom<proto::GetIntegrationRequest> for OrganizationId {
    type Error = Error;

    fn try_from(request: proto::GetIntegrationRequest) -> Result<Self, Error> {
        organization(request.organization_id)
    }
}

impl TryFrom<proto::GenerateSecretRequest> for OrganizationId {
    type Error = Error;

    fn try_from(request: proto::GenerateSecretRequest) -> Result<Self, Error> {
        organization(request.organization_id)
    }
}

impl TryFrom<proto::ActivateSecretRequest> for SecretActivation {
    type Error = Error;

    fn try_from(request: proto::ActivateSecretRequest) -> Result<Self, Error> {
        let organization = organization(request.organization_id)?;
        let value = credential("client_secret", &request.client_secret)?;
        Ok(Self {
            organization,
            value: ClientSecret::parse(value),
        })
    }
}

impl TryFrom<proto::ValidateClientRequest> for ClientCheck {
    type Error = Error;

    fn try_from(request: proto::ValidateClientRequest) -> Result<Self, Error> {
        let client_id = credential("client_id", &request.client_id)?;
        let secret = credential("client_secret", &request.client_secret)?;
        let source = remote_address(&request.remote_address)?;
        Ok(Self {
            credentials: Credentials::presented(client_id, secret),
            source,
        })
    }
}

impl TryFrom<proto::DeleteIntegrationRequest> for OrganizationId {
    type Error = Error;

    fn try_from(request: proto::DeleteIntegrationRequest) -> Result<Self, Error> {
        organization(request.organization_id)
    }
}

impl TryFrom<proto::VerifyDomainRequest> for OrganizationId {
    type Error = Error;

    fn try_from(request: proto::VerifyDomainRequest) -> Result<Self, Error> {
        organization(request.organization_id)
    }
}

impl TryFrom<proto::ListSecretsRequest> for Listing {
    type Error = Error;

    fn try_from(request: proto::ListSecretsRequest) -> Result<Self, Error> {
        Self::parse(
            List::Secrets,
            request.organization_id,
            request.page_size,
            &request.page_token,
        )
    }
}

impl TryFrom<proto::ListAuditEventsRequest> for Listing {
    type Error = Error;

    fn try_from(request: proto::ListAuditEventsRequest) -> Result<Self, Error> {
        Self::parse(
            List::AuditEvents,
            request.organization_id,
            request.page_size,
            &request.page_token,
        )
    }
}

impl Listing {
    /// The organization, then the page of `list` its token continues.
    fn parse(list: List, organization_id: String, size: i32, token: &str) -> Result<Self, Error> {
        let organization = organization(organization_id)?;
        let page = page_token::page(list, &organization, size, token)?;
        Ok(Self { organization, page })
    }
}

impl TryFrom<proto::UpdateDomainRequest> for DomainChange {
    type Error = Error;

    fn try_from(request: proto::UpdateDomainRequest) -> Result<Self, Error> {
        let organization = organization(request.organization_id)?;
        let name = if request.custom_domain.is_empty() {
            None
        } else {
            let name = CustomDomainName::parse(&request.custom_domain)
                .map_err(|invalid| Error::InvalidArgument(invalid.0))?;
            Some(name)
        };
        Ok(Self { organization, name })
    }
}

impl TryFrom<proto::RevokeSecretRequest> for SecretRevocation {
    type Error = Error;

    fn try_from(request: proto::RevokeSecretRequest) -> Result<Self, Error> {
        let organization = organization(request.organization_id)?;
        if request.secret_id.is_empty() {
            return Err(Error::InvalidArgument(
                "secret_id is required: the id of the secret to retire, as GetIntegration or \
                 ListSecrets shows it"
                    .into(),
            ));
        }
        let secret_id = Uuid::try_parse(&request.secret_id).map_err(|_| {
            Error::InvalidArgument(
                "secret_id must be a secret's id as GetIntegration or ListSecrets shows it (a \
                 UUID, such as 019ad0c2-7b1e-7c3a-9f3e-2b8f4c1d5e6a)"
                    .into(),
            )
        })?;
        Ok(Self {
            organization,
            secret_id,
        })
    }
}

fn organization(value: String) -> Result<OrganizationId, Error> {
    OrganizationId::parse(value).map_err(|invalid| Error::InvalidArgument(invalid.0))
}

/// A client ID or secret as sent: required, and at most
/// [`MAX_CREDENTIAL_BYTES`].
fn credential<'a>(field: &str, value: &'a str) -> Result<&'a str, Error> {
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

/// An IP address in text, or nothing.
fn remote_address(value: &str) -> Result<Option<IpAddr>, Error> {
    if value.is_empty() {
        return Ok(None);
    }
    let address: IpAddr = value.parse().map_err(|_| {
        Error::InvalidArgument(
            "remote_address must be the IPv4 or IPv6 address (as text, without a port) of the \
             party that presented the credentials, or empty when unknown"
                .into(),
        )
    })?;
    Ok(Some(address.to_canonical()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ClientId;
    use tonic::Code;

    fn check(client_id: &str, secret: &str, remote_address: &str) -> Result<ClientCheck, Error> {
        ClientCheck::try_from(proto::ValidateClientRequest {
            client_id: client_id.to_owned(),
            client_secret: secret.to_owned(),
            remote_address: remote_address.to_owned(),
        })
    }

    #[test]
    fn a_check_needs_both_credentials_within_their_length() {
        let long = "x".repeat(MAX_CREDENTIAL_BYTES + 1);
        for (client_id, secret, field) in [
            ("", "s", "client_id"),
            ("c", "", "client_secret"),
            (long.as_str(), "s", "client_id"),
            ("c", long.as_str(), "client_secret"),
        ] {
            let error = check(client_id, secret, "").expect_err("refused");
            assert_eq!(error.code(), Code::InvalidArgument, "{field}");
            assert!(error.to_string().starts_with(field), "{error}");
        }
        let at_limit = "x".repeat(MAX_CREDENTIAL_BYTES);
        assert!(
            check(&at_limit, &at_limit, "").is_ok(),
            "values at the limit are answered (as malformed)"
        );
    }

    #[test]
    fn the_source_is_an_ip_address_or_nothing() {
        let (client_id, secret) = (
            ClientId::generate().expect("RNG"),
            ClientSecret::generate().expect("RNG"),
        );
        let source =
            |text: &str| check(client_id.as_str(), secret.expose(), text).map(|c| c.source);
        assert_eq!(source("").ok(), Some(None), "empty is unknown");
        assert_eq!(
            source("203.0.113.7").ok().flatten(),
            Some("203.0.113.7".parse().expect("an address"))
        );
        assert_eq!(
            source("2001:db8::1").ok().flatten(),
            Some("2001:db8::1".parse().expect("an address"))
        );
        assert_eq!(
            source("::ffff:203.0.113.7").ok().flatten(),
            Some("203.0.113.7".parse().expect("an address")),
            "an IPv4-mapped address is the IPv4 address"
        );
        for bad in [
            "203.0.113.7:443",
            "localhost",
            "[2001:db8::1]",
            " 10.0.0.1",
            "10.0.0.256",
        ] {
            let error = source(bad).expect_err("refused");
            assert_eq!(error.code(), Code::InvalidArgument, "{bad:?}");
            assert!(
                !error.to_string().contains(bad.trim()),
                "the message repeats {bad:?}"
            );
        }
    }

    #[test]
    fn an_activation_keeps_a_malformed_value_for_its_answer() {
        let activation = SecretActivation::try_from(proto::ActivateSecretRequest {
            organization_id: "org".into(),
            client_secret: "cas_typo".into(),
        })
        .expect("parsed");
        assert_eq!(activation.value, Err(MalformedSecret::Length));
        let refused = SecretActivation::try_from(proto::ActivateSecretRequest {
            organization_id: "org".into(),
            client_secret: String::new(),
        })
        .expect_err("an empty value is refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
    }
}
