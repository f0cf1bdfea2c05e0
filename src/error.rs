//! The one error type of the service, and its one mapping to a gRPC status.
//!
//! Variants a caller can act on carry a message written for them. The
//! others carry their cause for the log and reach the caller as an opaque
//! status: what failed inside is nobody's business outside.

use tonic::{Code, Status};

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request breaks a rule; the message says which.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well formed but the state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A quota or a queue is full: too many attempts, retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The service is too busy to answer in time; retrying later may work.
    #[error("{0}")]
    Overloaded(String),
    /// A service other than the database (a DNS server) did not answer; the
    /// message says which and what to do. Retrying later may work.
    #[error("{0}")]
    Unreachable(String),
    /// A dependency (the database) did not answer; retrying later may work.
    #[error("unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// A bug or a broken environment.
    #[error("internal: {0}")]
    Internal(#[source] Cause),
}

impl Error {
    pub fn internal(cause: impl Into<Cause>) -> Self {
        Self::Internal(cause.into())
    }

    pub fn unavailable(cause: impl Into<Cause>) -> Self {
        Self::Unavailable(cause.into())
    }

    /// A copy for every caller that waited on the same work: the same
    /// variant and message; internal causes are carried as text.
    pub fn shared(&self) -> Self {
        match self {
            Self::InvalidArgument(m) => Self::InvalidArgument(m.clone()),
            Self::NotFound(m) => Self::NotFound(m.clone()),
            Self::AlreadyExists(m) => Self::AlreadyExists(m.clone()),
            Self::FailedPrecondition(m) => Self::FailedPrecondition(m.clone()),
            Self::ResourceExhausted(m) => Self::ResourceExhausted(m.clone()),
            Self::Overloaded(m) => Self::Overloaded(m.clone()),
            Self::Unreachable(m) => Self::Unreachable(m.clone()),
            Self::Unavailable(cause) => Self::unavailable(cause.to_string()),
            Self::Internal(cause) => Self::internal(cause.to_string()),
        }
    }

    /// The gRPC code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Overloaded(_) | Self::Unreachable(_) | Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = match &error {
            Error::InvalidArgument(m)
            | Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::FailedPrecondition(m)
            | Error::ResourceExhausted(m)
            | Error::Overloaded(m)
            | Error::Unreachable(m) => m.clone(),
            Error::Unavailable(_) => {
                "the service's database is unavailable; retry with backoff".to_owned()
            }
            Error::Internal(_) => "internal error; the service logged the details".to_owned(),
        };
        Status::new(error.code(), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant, with the code it is answered with.
    fn every_variant() -> [(Error, Code); 9] {
        [
            (Error::InvalidArgument("m".into()), Code::InvalidArgument),
            (Error::NotFound("m".into()), Code::NotFound),
            (Error::AlreadyExists("m".into()), Code::AlreadyExists),
            (
                Error::FailedPrecondition("m".into()),
                Code::FailedPrecondition,
            ),
            (
                Error::ResourceExhausted("m".into()),
                Code::ResourceExhausted,
            ),
            (Error::Overloaded("m".into()), Code::Unavailable),
            (Error::Unreachable("m".into()), Code::Unavailable),
            (Error::unavailable("connection refused"), Code::Unavailable),
            (Error::internal("bug"), Code::Internal),
        ]
    }

    #[test]
    fn each_error_maps_to_its_status_code() {
        for (error, code) in every_variant() {
            let described = format!("{error:?}");
            assert_eq!(error.code(), code, "{described}");
            assert_eq!(Status::from(error).code(), code, "{described}");
        }
    }

    #[test]
    fn a_shared_error_keeps_its_code_and_message() {
        for (error, code) in every_variant() {
            let shared = error.shared();
            assert_eq!(shared.code(), code, "{error:?}");
            assert_eq!(
                Status::from(shared).message(),
                Status::from(error).message(),
                "what every waiting caller is told"
            );
        }
    }

    #[test]
    fn messages_for_the_caller_are_passed_through() {
        let status = Status::from(Error::NotFound("no integration for org-1".into()));
        assert_eq!(status.message(), "no integration for org-1");
    }

    #[test]
    fn internal_causes_never_reach_the_caller() {
        let cause = "password authentication failed for user \"svc\" at 10.0.0.7";
        for error in [Error::unavailable(cause), Error::internal(cause)] {
            let status = Status::from(error);
            assert!(
                !status.message().contains("10.0.0.7"),
                "{}",
                status.message()
            );
            assert!(!status.message().contains("svc"), "{}", status.message());
        }
    }
}
