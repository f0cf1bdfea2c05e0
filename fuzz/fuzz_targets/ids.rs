//! Organization ids, client IDs and domain names.
//! The properties are documented on `integration_service::fuzzing::ids`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    integration_service::fuzzing::ids(data);
});
