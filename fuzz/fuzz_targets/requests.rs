//! Request messages decoded by prost and validated as the handlers do.
//! The properties are documented on `integration_service::fuzzing::requests`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    integration_service::fuzzing::requests(data);
});
