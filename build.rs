//! Compiles the gRPC contract with protox, a protobuf compiler written in
//! Rust, so that a machine with only the Rust toolchain builds the service.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTO: &str = "proto/centralauth/integration/v1/integration.proto";

/// Messages that carry a secret value: prost's derived `Debug` would print it,
/// so `src/proto.rs` implements a redacting one instead.
const MESSAGES_WITH_A_SECRET: [&str; 3] = [
    "centralauth.integration.v1.GenerateSecretResponse",
    "centralauth.integration.v1.ActivateSecretRequest",
    "centralauth.integration.v1.ValidateClientRequest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile([PROTO], ["proto"])?;

    // Server reflection serves this set, well-known imports included.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("integration_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .codec_path("crate::codec::ProstCodec")
        .skip_debug(MESSAGES_WITH_A_SECRET)
        .compile_fds(descriptors)?;
    Ok(())
}
