//! The generated gRPC contract (`proto/centralauth/integration/v1`), its
//! descriptor for server reflection, and redacting `Debug` implementations
//! for the messages that carry a secret value.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("centralauth.integration.v1");

/// Encoded `FileDescriptorSet` of the contract and its imports, served by
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/integration_descriptor.bin"));

/// The fully qualified gRPC service name, as health checks report it.
pub const SERVICE_NAME: &str = "centralauth.integration.v1.IntegrationService";

const REDACTED: &str = "<redacted>";

// build.rs tells prost not to derive `Debug` for these three messages, so that
// `{:?}` of a request or response can never print a secret value.

impl std::fmt::Debug for GenerateSecretResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateSecretResponse")
            .field("client_secret", &REDACTED)
            .field("secret", &self.secret)
            .finish()
    }
}

impl std::fmt::Debug for ActivateSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivateSecretRequest")
            .field("organization_id", &self.organization_id)
            .field("client_secret", &REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for ValidateClientRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidateClientRequest")
            .field("client_id", &self.client_id)
            .field("client_secret", &REDACTED)
            .field("remote_address", &self.remote_address)
            .finish()
    }
}
