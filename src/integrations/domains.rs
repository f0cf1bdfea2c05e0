//! UpdateDomain and VerifyDomain: an organization's own login domain, set
//! unverified with a code to publish, and proven by a TXT record.

use tracing::info;

use super::{Integrations, not_found};
use crate::audit::Attribution;
use crate::dns::{DnsError, TxtLookup};
use crate::domain::{CustomDomainName, DomainState, OrganizationId, VerificationCode};
use crate::error::Error;
use crate::store::{DomainUpdate, DomainVerification, Integration};

impl Integrations {
    /// Sets the organization's custom domain (`None` clears it). A new name
    /// starts UNVERIFIED with a fresh code; the same name again changes
    /// nothing. Replacing or clearing a verified domain sends users back to
    /// the default domain at once on this replica (and within the bound on
    /// the others).
    pub async fn update_domain(
        &self,
        organization: &OrganizationId,
        name: Option<&CustomDomainName>,
        by: &Attribution,
    ) -> Result<Integration, Error> {
        let code = VerificationCode::generate().map_err(Error::internal)?;
        let name = name.map(CustomDomainName::as_str);
        match self
            .store
            .update_domain(organization, name, code.as_str(), by)
            .await?
        {
            DomainUpdate::Changed {
                integration,
                was_verified,
            } => {
                if was_verified {
                    self.cache.forget(&integration.client_id);
                }
                info!(custom_domain = name.unwrap_or(""), "custom domain set");
                Ok(*integration)
            }
            DomainUpdate::Unchanged(integration) => Ok(*integration),
            DomainUpdate::NoIntegration => Err(not_found(organization)),
        }
    }

    /// Looks up `_centralauth.<custom domain>` and, if one of its TXT
    /// records is the verification code, marks the domain VERIFIED: from
    /// then on it is the domain GetIntegration and ValidateClient answer. A
    /// domain proven once stays proven: verifying it again changes nothing
    /// and asks DNS nothing.
    pub async fn verify_domain(
        &self,
        organization: &OrganizationId,
        by: &Attribution,
    ) -> Result<Integration, Error> {
        let integration = self.get(organization).await?;
        let Some(domain) = &integration.custom_domain else {
            return Err(Error::FailedPrecondition(format!(
                "organization \"{organization}\" has no custom domain to verify; set one with \
                 UpdateDomain first"
            )));
        };
        if domain.state == DomainState::Verified {
            return Ok(integration);
        }
        let name = CustomDomainName::from_stored(domain.name.clone());
        let record = name.verification_record();
        let code = &domain.verification_code;
        let create = || {
            format!(
                "create a TXT record named {record} whose value is {code}, wait for it to \
                 reach your DNS servers, and call VerifyDomain again"
            )
        };
        let texts = match self.dns.txt(&record).await {
            Ok(TxtLookup::Found(texts)) => texts,
            Ok(TxtLookup::NoRecord) => {
                return Err(Error::FailedPrecondition(format!(
                    "{record} has no TXT record: {}",
                    create()
                )));
            }
            Err(DnsError::Unreachable(why)) => {
                return Err(Error::Unreachable(format!(
                    "cannot look up the TXT record {record} now ({why}); nothing changed, try \
                     again later"
                )));
            }
            Err(error @ DnsError::InvalidName(_)) => return Err(Error::internal(error)),
        };
        if !texts.iter().any(|text| text.trim() == code.as_str()) {
            return Err(Error::FailedPrecondition(format!(
                "{record} has {} TXT record(s), none of them the verification code: {}",
                texts.len(),
                create()
            )));
        }
        match self
            .store
            .verify_domain(organization, name.as_str(), code, by)
            .await?
        {
            DomainVerification::Verified(integration) => {
                self.cache.forget(&integration.client_id);
                info!(custom_domain = name.as_str(), "custom domain verified");
                Ok(*integration)
            }
            DomainVerification::Superseded => Err(Error::FailedPrecondition(format!(
                "the custom domain of organization \"{organization}\" changed while {record} \
                 was being looked up; read it with GetIntegration and verify again"
            ))),
            DomainVerification::TakenBy => Err(Error::FailedPrecondition(format!(
                "{name} is already the verified domain of another organization; a domain can \
                 be the login domain of one organization only: clear it there first"
            ))),
            DomainVerification::NoIntegration => Err(not_found(organization)),
        }
    }
}
