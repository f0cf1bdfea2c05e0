//! How each call ends up in the log: one event per call, at the level its
//! outcome deserves. [`Outcome::level`] is the one place that level is
//! decided.
//!
//! The gateway's hot path logs as little as it can: a valid check at DEBUG,
//! with its fields on the event itself (a span's fields are formatted when
//! they are recorded, even when nothing is logged). What a flood produces in
//! numbers (saturation refusals, malformed credentials) is logged at DEBUG
//! and counted instead, the counts reported periodically (see
//! `crate::startup`), so that a flood of calls cannot also flood the log.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use tonic::Code;
use tracing::Level;

use super::requests::ClientCheck;
use crate::auth::RefusalLog;
use crate::domain::ClientId;
use crate::error::Error;
use crate::validation::Rejection;

/// How a call ended.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// A call other than ValidateClient succeeded.
    Completed,
    /// ValidateClient: the pair is the client's active secret.
    Validated,
    /// ValidateClient: `valid: false`, for a reason the caller never learns.
    Rejected(Rejection),
    /// The call failed with this error.
    Failed(&'a Error),
}

impl Outcome<'_> {
    /// How loudly the outcome is logged.
    pub fn level(self) -> Level {
        match self {
            Self::Completed => Level::INFO,
            Self::Validated | Self::Rejected(Rejection::Malformed) => Level::DEBUG,
            Self::Rejected(_) => Level::INFO,
            Self::Failed(error) => match error {
                Error::Internal(_) => Level::ERROR,
                Error::Unavailable(_) | Error::Unreachable(_) => Level::WARN,
                Error::ResourceExhausted(_) | Error::Overloaded(_) => Level::DEBUG,
                Error::InvalidArgument(_)
                | Error::NotFound(_)
                | Error::AlreadyExists(_)
                | Error::FailedPrecondition(_) => Level::INFO,
            },
        }
    }
}

/// Counts of what is logged at DEBUG only (see the module's doc), and of
/// the calls refused before a handler ran, for want of the right token.
#[derive(Debug, Clone, Default)]
pub struct Refusals {
    saturated: Arc<AtomicU64>,
    activations: Arc<AtomicU64>,
    malformed: Arc<AtomicU64>,
    auth: RefusalLog,
}

impl Refusals {
    /// The calls `crate::auth` refused: which got a line, how many there
    /// were.
    pub fn auth(&self) -> &RefusalLog {
        &self.auth
    }

    /// The numbers of refusals since the last call.
    pub fn take(&self) -> Taken {
        Taken {
            saturated: self.saturated.swap(0, Ordering::Relaxed),
            activations: self.activations.swap(0, Ordering::Relaxed),
            malformed: self.malformed.swap(0, Ordering::Relaxed),
        }
    }

    fn count(&self, rpc: &str, outcome: Outcome<'_>) {
        let counter = match outcome {
            // ActivateSecret's only RESOURCE_EXHAUSTED: the organization's
            // budget of wrong values, which says nothing about load.
            Outcome::Failed(Error::ResourceExhausted(message))
                if rpc == "ActivateSecret"
                    && message.starts_with(crate::throttle::ACTIVATION_BUDGET_SPENT) =>
            {
                &self.activations
            }
            Outcome::Failed(Error::ResourceExhausted(_) | Error::Overloaded(_)) => &self.saturated,
            Outcome::Rejected(Rejection::Malformed) => &self.malformed,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Refusals counted over one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Taken {
    /// Calls refused by a throttle of failed validations, or because
    /// argon2's queue was full or too slow.
    pub saturated: u64,
    /// ActivateSecret calls refused because their organization had spent
    /// its budget of wrong values.
    pub activations: u64,
    /// ValidateClient calls with malformed credentials.
    pub malformed: u64,
}

/// Emits `$message` with `$fields` at a level chosen at run time.
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::error!($($rest)+),
            Level::WARN => tracing::warn!($($rest)+),
            Level::INFO => tracing::info!($($rest)+),
            Level::DEBUG => tracing::debug!($($rest)+),
            Level::TRACE => tracing::trace!($($rest)+),
        }
    };
}

/// Writes the one event of every call, and counts what it does not write
/// at a level an operator sees.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    refusals: Refusals,
}

impl CallLog {
    pub fn new(refusals: Refusals) -> Self {
        Self { refusals }
    }

    /// Logs how a call that started at `started` ended; its span carries
    /// the organization it acted for.
    pub fn record(&self, rpc: &'static str, outcome: Outcome<'_>, started: Instant) {
        self.emit(rpc, None, None, None, outcome, started);
    }

    /// Logs how a ValidateClient call ended: with the client ID if it is
    /// well formed (and so safe to echo), the address it came from if the
    /// gateway said, and the organization if it was valid. `check` is
    /// `None` when the request could not be parsed.
    pub fn record_check(
        &self,
        check: Option<&ClientCheck>,
        request_id: Option<&str>,
        organization_id: Option<&str>,
        outcome: Outcome<'_>,
        started: Instant,
    ) {
        match outcome {
            Outcome::Rejected(rejection) => crate::metrics::validation(Some(rejection), None),
            Outcome::Failed(error) => crate::metrics::validation(None, Some(error)),
            Outcome::Validated | Outcome::Completed => crate::metrics::validation(None, None),
        }
        self.emit(
            "ValidateClient",
            check,
            request_id,
            organization_id,
            outcome,
            started,
        );
    }

    fn emit(
        &self,
        rpc: &'static str,
        check: Option<&ClientCheck>,
        request_id: Option<&str>,
        organization_id: Option<&str>,
        outcome: Outcome<'_>,
        started: Instant,
    ) {
        self.refusals.count(rpc, outcome);
        let level = outcome.level();
        if !tracing::level_enabled!(level) {
            return;
        }
        let latency_ms = milliseconds_since(started);
        let client_id = check
            .and_then(|check| check.credentials.client_id())
            .map(ClientId::as_str);
        let remote_address = check
            .and_then(|check| check.source)
            .map(tracing::field::display);
        match outcome {
            Outcome::Completed => {
                event_at!(
                    level,
                    request_id,
                    request_id,
                    code = ?Code::Ok,
                    latency_ms,
                    "request completed"
                );
            }
            Outcome::Validated => {
                event_at!(
                    level,
                    request_id,
                    client_id,
                    organization_id,
                    latency_ms,
                    "client validated"
                );
            }
            Outcome::Rejected(Rejection::Malformed) => event_at!(
                level,
                request_id,
                remote_address,
                latency_ms,
                "client validation failed: malformed credentials"
            ),
            Outcome::Rejected(rejection) => event_at!(
                level,
                request_id,
                client_id,
                remote_address,
                outcome = rejection.as_str(),
                latency_ms,
                "client validation failed"
            ),
            Outcome::Failed(error) if level <= Level::WARN => event_at!(
                level,
                request_id,
                rpc,
                client_id,
                remote_address,
                code = ?error.code(),
                latency_ms,
                error = %error,
                "request failed"
            ),
            Outcome::Failed(error) => event_at!(
                level,
                request_id,
                rpc,
                client_id,
                remote_address,
                code = ?error.code(),
                latency_ms,
                reason = %error,
                "request refused"
            ),
        }
    }
}

/// Milliseconds since `started`, to the microsecond: plenty, and readable.
fn milliseconds_since(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_has_its_level() {
        let errors = [
            (Error::InvalidArgument("m".into()), Level::INFO),
            (Error::NotFound("m".into()), Level::INFO),
            (Error::AlreadyExists("m".into()), Level::INFO),
            (Error::FailedPrecondition("m".into()), Level::INFO),
            (Error::ResourceExhausted("m".into()), Level::DEBUG),
            (Error::Overloaded("m".into()), Level::DEBUG),
            (Error::unavailable("down"), Level::WARN),
            (Error::Unreachable("DNS".into()), Level::WARN),
            (Error::internal("bug"), Level::ERROR),
        ];
        for (error, level) in &errors {
            assert_eq!(Outcome::Failed(error).level(), *level, "{error:?}");
        }
        assert_eq!(Outcome::Completed.level(), Level::INFO);
        assert_eq!(Outcome::Validated.level(), Level::DEBUG, "the hot path");
        assert_eq!(
            Outcome::Rejected(Rejection::Malformed).level(),
            Level::DEBUG,
            "counted instead"
        );
        for rejection in [Rejection::NoActiveSecret, Rejection::WrongSecret] {
            assert_eq!(Outcome::Rejected(rejection).level(), Level::INFO);
        }
    }

    #[test]
    fn saturation_and_malformed_checks_are_counted() {
        let log = CallLog::default();
        let started = Instant::now();
        let throttled = Error::ResourceExhausted("m".into());
        let late = Error::Overloaded("m".into());
        log.record_check(None, None, None, Outcome::Failed(&throttled), started);
        log.record_check(None, None, None, Outcome::Failed(&late), started);
        log.record_check(
            None,
            None,
            None,
            Outcome::Rejected(Rejection::Malformed),
            started,
        );
        log.record_check(
            None,
            None,
            None,
            Outcome::Rejected(Rejection::WrongSecret),
            started,
        );
        log.record("GetIntegration", Outcome::Completed, started);
        log.record("ActivateSecret", Outcome::Failed(&throttled), started);
        let spent = Error::ResourceExhausted(format!(
            "{} for this organization",
            crate::throttle::ACTIVATION_BUDGET_SPENT
        ));
        log.record("ActivateSecret", Outcome::Failed(&spent), started);
        assert_eq!(
            log.refusals.take(),
            Taken {
                saturated: 3,
                activations: 1,
                malformed: 1
            }
        );
        assert_eq!(log.refusals.take(), Taken::default(), "taken");
    }
}
