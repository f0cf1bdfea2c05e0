//! The audit trail: who changed what, written by every change in the
//! transaction that makes it (see `crate::store`), and read back by
//! ListAuditEvents.
//!
//! An event names the caller as the service authenticated it (its role and
//! a short fingerprint of its token, never the token), the person the
//! caller acted for (the `x-actor` metadata the dashboard sends), and what
//! changed (a secret id or a domain). Changes the service makes by itself
//! (expiry) name the caller `system`.

use sea_orm::entity::prelude::*;
use tonic::metadata::MetadataMap;

use crate::auth::Caller;
use crate::error::Error;

/// The metadata key that names the person on whose behalf a call is made.
pub const ACTOR_METADATA: &str = "x-actor";

/// Longest `x-actor` value accepted, in characters.
pub const MAX_ACTOR_CHARS: usize = 256;

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
pub enum AuditAction {
    #[sea_orm(string_value = "integration_created")]
    IntegrationCreated,
    #[sea_orm(string_value = "secret_generated")]
    SecretGenerated,
    #[sea_orm(string_value = "secret_activated")]
    SecretActivated,
    /// By a newer activation or by RevokeSecret.
    #[sea_orm(string_value = "secret_revoked")]
    SecretRevoked,
    /// By a newer generation or by RevokeSecret.
    #[sea_orm(string_value = "secret_discarded")]
    SecretDiscarded,
    /// Pending past its expiry.
    #[sea_orm(string_value = "secret_expired")]
    SecretExpired,
    #[sea_orm(string_value = "domain_updated")]
    DomainUpdated,
    #[sea_orm(string_value = "domain_verified")]
    DomainVerified,
    #[sea_orm(string_value = "integration_deleted")]
    IntegrationDeleted,
}

/// Who made a change: the caller and the person it acted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// `admin:<fingerprint>`, `unauthenticated` or `system`.
    pub caller: String,
    /// Empty when the caller named nobody.
    pub actor: String,
}

impl Attribution {
    /// The service itself, acting on its own (expiry).
    pub fn system() -> Self {
        Self {
            caller: "system".into(),
            actor: String::new(),
        }
    }

    /// The caller of a request, as authentication left it in the request's
    /// extensions (none when the service runs without tokens), and the
    /// `x-actor` it sent, checked: at most [`MAX_ACTOR_CHARS`] characters,
    /// none of them a control character.
    pub fn of(caller: Option<&Caller>, metadata: &MetadataMap) -> Result<Self, Error> {
        let caller = caller.map_or_else(|| "unauthenticated".to_owned(), Caller::to_string);
        let mut values = metadata.get_all(ACTOR_METADATA).iter();
        let actor = match (values.next(), values.next()) {
            (None, _) => String::new(),
            (Some(_), Some(_)) => {
                return Err(Error::InvalidArgument(format!(
                    "{ACTOR_METADATA} metadata was sent more than once; send the one person the \
                     call is made for"
                )));
            }
            (Some(value), None) => actor(value.as_bytes())?,
        };
        Ok(Self { caller, actor })
    }
}

/// An `x-actor` value: UTF-8 text a person can read.
fn actor(bytes: &[u8]) -> Result<String, Error> {
    let refuse = |rule: &str| {
        Error::InvalidArgument(format!(
            "{ACTOR_METADATA} metadata must be {rule}: the name or email of the person the call \
             is made for"
        ))
    };
    let text = std::str::from_utf8(bytes).map_err(|_| refuse("UTF-8 text"))?;
    if text.chars().count() > MAX_ACTOR_CHARS {
        return Err(refuse(&format!("at most {MAX_ACTOR_CHARS} characters")));
    }
    if text.chars().any(char::is_control) {
        return Err(refuse("printable characters only"));
    }
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::{MetadataValue, errors::InvalidMetadataValueBytes};

    fn with_actor(values: &[&[u8]]) -> Result<Attribution, Error> {
        let mut metadata = MetadataMap::new();
        for value in values {
            let value: Result<MetadataValue<_>, InvalidMetadataValueBytes> =
                MetadataValue::try_from(*value);
            metadata.append(ACTOR_METADATA, value.expect("a header value"));
        }
        Attribution::of(None, &metadata)
    }

    #[test]
    fn the_actor_is_optional_and_kept_as_sent() {
        let none = with_actor(&[]).expect("accepted");
        assert_eq!(
            (none.caller.as_str(), none.actor.as_str()),
            ("unauthenticated", "")
        );
        let named = with_actor(&[b"jane@example.com"]).expect("accepted");
        assert_eq!(named.actor, "jane@example.com");
        let unicode = with_actor(&["José Müller".as_bytes()]).expect("accepted");
        assert_eq!(unicode.actor, "José Müller");
        let longest = "a".repeat(MAX_ACTOR_CHARS);
        assert!(with_actor(&[longest.as_bytes()]).is_ok());
    }

    #[test]
    fn an_actor_that_is_no_name_is_refused() {
        let long = "a".repeat(MAX_ACTOR_CHARS + 1);
        for bad in [long.as_bytes(), b"\xff\xfe", b"a\tb"] {
            let error = with_actor(&[bad]).expect_err("refused");
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
            assert!(error.to_string().starts_with(ACTOR_METADATA), "{error}");
        }
        let twice = with_actor(&[b"a", b"b"]).expect_err("refused");
        assert_eq!(twice.code(), tonic::Code::InvalidArgument);
    }
}
