//! The service's vocabulary, parsed once at the edge and trusted inside.
//!
//! Each type here can only be built through a constructor that enforces its
//! rules, so code that holds one never checks it again.

mod client_id;
mod client_secret;
mod custom_domain;
mod domain_name;
mod domain_state;
mod organization_id;
mod random;
mod secret_hash;
mod secret_state;

pub use client_id::ClientId;
pub use client_secret::{ClientSecret, MalformedSecret};
pub use custom_domain::{CustomDomainName, VerificationCode};
pub use domain_name::{DomainName, login_domain};
pub use domain_state::DomainState;
pub use organization_id::OrganizationId;
pub use random::{RandomUnavailable, random_bytes};
pub use secret_hash::{HashParams, Memory, SecretHash};
pub use secret_state::SecretState;

/// Why a caller's value was refused: the rule it breaks, in words a person
/// can act on. It never repeats the value itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);
