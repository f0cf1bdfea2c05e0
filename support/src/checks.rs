//! Small checks more than one test makes.

use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Asserts that `result` failed with `code`, and returns its message. A
/// success is reported by its type only: it may hold a secret's value.
#[track_caller]
pub fn expect_code<T>(result: Result<T, Status>, code: Code) -> String {
    match result {
        Ok(_) => panic!(
            "expected {code:?}, got a success: {}",
            std::any::type_name::<T>()
        ),
        Err(status) => {
            assert_eq!(status.code(), code, "status: {status:?}");
            status.message().to_owned()
        }
    }
}

/// What `grpc.health.v1.Health/Check` answers for `service` (`""`: the
/// server as a whole), on `channel`.
pub async fn health_status(channel: Channel, service: &str) -> Result<ServingStatus, Status> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let response = HealthClient::new(channel).check(request).await?;
    Ok(response.into_inner().status())
}
