//! Stored argon2id PHC strings: `SecretHash::parse` and the parameter floor.
//! The properties are documented on `integration_service::fuzzing::secret_hash`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    integration_service::fuzzing::secret_hash(data);
});
