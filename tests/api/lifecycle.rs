//! The secret lifecycle beyond generate and activate: custom domains
//! (UpdateDomain, VerifyDomain), the history (ListSecrets), the emergency
//! revoke (RevokeSecret), deletion (DeleteIntegration), the audit trail
//! (ListAuditEvents) and the expiry of pending secrets. Each on SQLite and PostgreSQL, through the real server.

mod audit;
mod delete;
mod domain;
mod expiry;
mod history;
mod revoke;

use integration_service::proto::{AuditAction, AuditEvent};

/// The actions of an audit trail, in the order listed (newest first).
fn actions(events: &[AuditEvent]) -> Vec<AuditAction> {
    events
        .iter()
        .map(|event| AuditAction::try_from(event.action).expect("a known action"))
        .collect()
}
