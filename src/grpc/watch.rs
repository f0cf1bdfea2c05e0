//! WatchIntegrations: one stream of the change feed's events
//! (`crate::changes`), as the contract's messages, until the caller goes
//! away or the service shuts down.

use std::{sync::Arc, time::Instant};

use prost_types::Timestamp;
use tonic::{Status, codegen::BoxStream};
use tracing::{Span, info};

use super::responses;
use crate::changes::{Event, Watcher};
use crate::domain::OrganizationId;
use crate::error::Error;
use crate::integrations::Integrations;
use crate::proto;
use crate::store::ChangeKind;

/// The organization a request watches; `None` for every organization.
pub(super) fn organization(
    request: proto::WatchIntegrationsRequest,
) -> Result<Option<OrganizationId>, Error> {
    if request.organization_id.is_empty() {
        return Ok(None);
    }
    OrganizationId::parse(request.organization_id)
        .map(Some)
        .map_err(|invalid| {
            Error::InvalidArgument(format!(
                "{invalid}; leave it empty to watch every organization"
            ))
        })
}

/// The stream of `watcher`'s events. It ends with UNAVAILABLE when the
/// service shuts down, which tells the caller to watch again (elsewhere),
/// and logs a line when it ends, for whatever reason.
pub(super) fn stream(
    watcher: Watcher,
    integrations: Arc<Integrations>,
) -> BoxStream<proto::WatchIntegrationsResponse> {
    let open = Open {
        watcher,
        integrations,
        tally: Tally {
            span: Span::current(),
            opened: Instant::now(),
            changes: 0,
            resyncs: 0,
            ended: "the caller went away",
        },
    };
    Box::pin(futures_util::stream::unfold(
        Some(open),
        |open| async move {
            let mut open = open?;
            match open.watcher.next().await {
                Some(event) => {
                    let response = open.response(&event);
                    Some((Ok(response), Some(open)))
                }
                None => {
                    open.tally.ended = "the service is shutting down";
                    let status = Status::unavailable(
                        "the service is shutting down; watch again, on another replica",
                    );
                    Some((Err(status), None))
                }
            }
        },
    ))
}

/// An open stream.
struct Open {
    watcher: Watcher,
    /// Which domain an integration's users log in at.
    integrations: Arc<Integrations>,
    tally: Tally,
}

impl Open {
    fn response(&mut self, event: &Event) -> proto::WatchIntegrationsResponse {
        match event {
            Event::Resync => {
                self.tally.resyncs += 1;
                proto::WatchIntegrationsResponse {
                    kind: proto::ChangeKind::Resync.into(),
                    ..Default::default()
                }
            }
            Event::Changed {
                change,
                integration,
            } => {
                self.tally.changes += 1;
                let kind = match change.kind {
                    ChangeKind::Created => proto::ChangeKind::Created,
                    ChangeKind::Updated => proto::ChangeKind::Updated,
                    ChangeKind::Deleted => proto::ChangeKind::Deleted,
                };
                proto::WatchIntegrationsResponse {
                    kind: kind.into(),
                    organization_id: change.organization_id.as_str().to_owned(),
                    client_id: change.client_id.as_str().to_owned(),
                    integration: integration.as_ref().map(|integration| {
                        let domain = self.integrations.login_domain(integration).to_owned();
                        responses::integration((**integration).clone(), domain)
                    }),
                    change_time: Some(Timestamp::from(std::time::SystemTime::from(change.at))),
                }
            }
        }
    }
}

/// What a stream sent, logged when it ends, in the span of the call that
/// opened it.
struct Tally {
    span: Span,
    opened: Instant,
    changes: u64,
    resyncs: u64,
    ended: &'static str,
}

impl Drop for Tally {
    fn drop(&mut self) {
        let _entered = self.span.enter();
        info!(
            changes = self.changes,
            resyncs = self.resyncs,
            open_s = self.opened.elapsed().as_secs(),
            reason = self.ended,
            "change stream ended"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_organization_watches_every_one_and_a_bad_one_is_refused() {
        let watch = |id: &str| {
            organization(proto::WatchIntegrationsRequest {
                organization_id: id.to_owned(),
            })
        };
        assert_eq!(watch("").expect("valid"), None, "every organization");
        assert_eq!(
            watch("org-1")
                .expect("valid")
                .as_ref()
                .map(OrganizationId::as_str),
            Some("org-1")
        );
        for bad in ["has space", &"x".repeat(129)] {
            let error = watch(bad).expect_err("refused");
            assert!(
                matches!(&error, Error::InvalidArgument(m) if m.contains("leave it empty")),
                "{bad:?}: {error:?}"
            );
        }
    }
}
