//! Domain values as the contract's messages. What a response shows of a
//! secret is its metadata: never its value (but for GenerateSecret's one
//! answer) nor its hash, which these types do not even hold.

use prost_types::Timestamp;

use crate::domain::SecretState;
use crate::proto;
use crate::store::SecretMetadata;
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
        domain: login_domain,
        custom_domain: integration.custom_domain.is_some(),
        active_secret: integration.active_secret.map(secret),
        pending_secret: integration.pending_secret.map(secret),
        create_time: Some(timestamp(integration.created_at)),
        update_time: Some(timestamp(integration.updated_at)),
        // Custom domains come with the lifecycle RPCs (UpdateDomain).
        custom_domain_status: None,
    }
}

pub fn secret(secret: SecretMetadata) -> proto::Secret {
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
