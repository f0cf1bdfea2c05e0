use sea_orm::entity::prelude::*;

/// Where an organization's custom domain is in its proof:
///
/// ```text
/// (none) ──UpdateDomain──▶ UNVERIFIED ──VerifyDomain finds the TXT record──▶ VERIFIED
///             ▲                │                                            │
///             └─UpdateDomain with another name (a new code)─────────────────┘
/// ```
///
/// Only a VERIFIED domain is the one users are sent to; until then they log
/// in at the service's default domain. Clearing the domain (UpdateDomain
/// with an empty value) leaves neither state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum DomainState {
    #[sea_orm(string_value = "unverified")]
    Unverified,
    #[sea_orm(string_value = "verified")]
    Verified,
}
