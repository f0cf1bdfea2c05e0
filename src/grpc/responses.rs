//! Domain values as the contract's messages. What a response shows of a
//! secret is its metadata: never its value (but for GenerateSecret's one
//! answer) nor its hash, which these types do not even hold.

use prost_types::Timestamp;

use crate::audit::AuditAction;
use crate::domain::{DomainState, SecretState};
use crate::proto;
use crate::store::{AuditEvent, CustomDomain, SecretMetadata};
use crate::validation::Validation;

/// An integration as the Integration tab shows it, with the domain its
/// users log in at.
pub fn integration(
    integration: crate::store::Integration,
    login_domain: String,
) -> proto::Integration {
    proto::Integration {
        organization_id: integration.organization_id.as_str().to_owned(),
        client_id: integration.client_id.as_str().to_owned(),
        custom_domain: integration.verified_domain().is_some(),
        domain: login_domain,
        active_secret: integration.active_secret.map(secret),
        pending_secret: integration.pending_secret.map(secret),
        create_time: Some(timestamp(integration.created_at)),
        update_time: Some(timestamp(integration.updated_at)),
        custom_domain_status: integration.custom_domain.map(custom_domain),
    }
}

fn custom_domain(domain: CustomDomain) -> proto::CustomDomain {
    proto::CustomDomain {
        name: domain.name,
        state: match domain.state {
            DomainState::Unverified => proto::DomainState::Unverified,
            DomainState::Verified => proto::DomainState::Verified,
        }
        .into(),
        verification_code: domain.verification_code,
        verify_time: domain.verified_at.map(timestamp),
    }
}

pub fn audit_event(event: AuditEvent) -> proto::AuditEvent {
    proto::AuditEvent {
        id: event.id.to_string(),
        organization_id: event.organization_id.as_str().to_owned(),
        action: proto::AuditAction::from(event.action).into(),
        caller: event.caller,
        actor: event.actor,
        secret_id: event.secret_id.map(|id| id.to_string()).unwrap_or_default(),
        domain: event.domain.unwrap_or_default(),
        create_time: Some(timestamp(event.created_at)),
    }
}

impl From<AuditAction> for proto::AuditAction {
    fn from(action: AuditAction) -> Self {
        match action {
            AuditAction::IntegrationCreated => Self::IntegrationCreated,
            AuditAction::SecretGenerated => Self::SecretGenerated,
            AuditAction::SecretActivated => Self::SecretActivated,
            AuditAction::SecretRevoked => Self::SecretRevoked,
            AuditAction::SecretDiscarded => Self::SecretDiscarded,
            AuditAction::SecretExpired => Self::SecretExpired,
            AuditAction::DomainUpdated => Self::DomainUpdated,
            AuditAction::DomainVerified => Self::DomainVerified,
            AuditAction::IntegrationDeleted => Self::IntegrationDeleted,
        }
    }
}

/// A secret's metadata, each time shown only in the states the contract
/// gives it: the expiry while PENDING, the retired use once REVOKED or
/// DISCARDED.
pub fn secret(secret: SecretMetadata) -> proto::Secret {
    let retired = matches!(secret.state, SecretState::Revoked | SecretState::Discarded);
    proto::Secret {
        id: secret.id.to_string(),
        state: proto::SecretState::from(secret.state).into(),
        hint: secret.hint,
        create_time: Some(timestamp(secret.created_at)),
        activate_time: secret.activated_at.map(timestamp),
        revoke_time: secret.revoked_at.map(timestamp),
        last_use_time: secret.last_used_at.map(timestamp),
        expire_time: secret
            .expires_at
            .filter(|_| secret.state == SecretState::Pending)
            .map(timestamp),
        last_retired_use_time: secret
            .last_retired_use_at
            .filter(|_| retired)
            .map(timestamp),
    }
}

/// `valid: true` with the organization and domain, or `valid: false` and
/// nothing else, whatever the reason.
impl From<Validation> for proto::ValidateClientResponse {
    fn from(validation: Validation) -> Self {
        match validation {
            Validation::Valid(client) => Self {
                valid: true,
                organization_id: client.organization_id.as_str().to_owned(),
                domain: client.domain,
            },
            Validation::Invalid(_) => Self::default(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrganizationId;
    use crate::validation::{Rejection, ValidClient};

    #[test]
    fn an_invalid_check_says_nothing_but_no() {
        for rejection in [
            Rejection::Malformed,
            Rejection::NoActiveSecret,
            Rejection::WrongSecret,
        ] {
            assert_eq!(
                proto::ValidateClientResponse::from(Validation::Invalid(rejection)),
                proto::ValidateClientResponse::default(),
                "{rejection:?}"
            );
        }
        let valid = proto::ValidateClientResponse::from(Validation::Valid(ValidClient {
            organization_id: OrganizationId::parse("org".into()).expect("valid"),
            domain: "login.example".into(),
        }));
        assert!(valid.valid, "valid");
        assert_eq!(
            (valid.organization_id.as_str(), valid.domain.as_str()),
            ("org", "login.example")
        );
    }
}
