//! The client secret's format and checksum: `ClientSecret::parse`.
//! The properties are documented on `integration_service::fuzzing::client_secret`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    integration_service::fuzzing::client_secret(data);
});
