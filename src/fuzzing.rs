//! Property checks over untrusted input, shared by the cargo-fuzz targets in
//! `fuzz/` and by `tests/fuzz_corpus.rs`, which replays their committed corpus
//! on every `cargo test`. Not part of the service's API.
//!
//! Each check takes arbitrary bytes, panics if a property fails, and returns
//! whether the parser under test accepted the input, so that the corpus test
//! can tell the accepting paths are still covered. No assertion message
//! prints a value that could be a secret.

use argon2::{ARGON2ID_IDENT, Params, PasswordHash};
use prost::Message;
use tonic::{Code, Status};

use crate::domain::{
    ClientId, ClientSecret, DomainName, HashParams, MalformedSecret, OrganizationId, SecretHash,
};
use crate::error::Error;
use crate::grpc::requests::{ClientCheck, MAX_CREDENTIAL_BYTES, SecretActivation};
use crate::proto;
use crate::validation::Credentials;

/// A check: panics if a property fails; returns whether the input was
/// accepted.
pub type Check = fn(&[u8]) -> bool;

/// Every fuzz target: its name (that of its file in `fuzz/fuzz_targets/` and
/// of its corpus in `fuzz/corpus/`) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("client_secret", client_secret),
    ("ids", ids),
    ("secret_hash", secret_hash),
    ("requests", requests),
];

/// Base62 digits in the order of their values, written out again here so
/// that the checksum below is an oracle independent of the service's.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Where the checksum of a secret starts.
const BODY_LEN: usize = 58;

/// `ClientSecret::parse` on the input, as text, and on the input with its
/// checksum repaired (random bytes almost never carry a valid CRC32). Parse
/// refuses exactly what the documented format refuses, for the documented
/// reason; whatever it accepts has the documented shape, is kept unchanged
/// and parses back to itself; and one changed character after the prefix of
/// an accepted secret fails its checksum.
pub fn client_secret(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let mut accepted = check_secret(&text);
    if let Some(body) = text.get(..BODY_LEN) {
        let repaired = format!("{body}{}", checksum(body));
        if check_secret(&repaired) {
            accepted = true;
            // The input's next two bytes choose a position and a character.
            let position = ClientSecret::PREFIX.len()
                + usize::from(data.get(BODY_LEN).copied().unwrap_or(0))
                    % (ClientSecret::LEN - ClientSecret::PREFIX.len());
            let replacement =
                BASE62[usize::from(data.get(BODY_LEN + 1).copied().unwrap_or(0)) % 62];
            let mut typo = repaired.into_bytes();
            if typo[position] != replacement {
                typo[position] = replacement;
                let typo = String::from_utf8_lossy(&typo);
                assert_eq!(
                    ClientSecret::parse(&typo).err(),
                    Some(MalformedSecret::Checksum),
                    "a changed character at position {position} went unnoticed"
                );
            }
        }
    }
    accepted
}

/// What the documented format says of `value`, checked in the order the
/// faults are reported.
fn secret_model(value: &str) -> Result<(), MalformedSecret> {
    if value.len() != ClientSecret::LEN {
        return Err(MalformedSecret::Length);
    }
    let Some(rest) = value.strip_prefix(ClientSecret::PREFIX) else {
        return Err(MalformedSecret::Prefix);
    };
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(MalformedSecret::Character);
    }
    let (body, sum) = value.split_at(BODY_LEN);
    if checksum(body) != sum {
        return Err(MalformedSecret::Checksum);
    }
    Ok(())
}

/// CRC32 of `body` in six base62 digits, most significant first.
fn checksum(body: &str) -> String {
    let crc = u64::from(crc32fast::hash(body.as_bytes()));
    (0..6u32)
        .rev()
        .map(|power| char::from(BASE62[(crc / 62u64.pow(power) % 62) as usize]))
        .collect()
}

fn check_secret(value: &str) -> bool {
    let parsed = ClientSecret::parse(value);
    assert_eq!(
        parsed.as_ref().err().copied(),
        secret_model(value).err(),
        "ClientSecret::parse disagrees with the documented format"
    );
    let Ok(secret) = parsed else {
        return false;
    };
    let exposed = secret.expose();
    assert!(exposed == value, "an accepted secret was changed");
    assert_eq!(exposed.len(), 64, "length");
    assert!(exposed.starts_with("cas_"), "prefix");
    assert!(
        exposed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "a character outside [A-Za-z0-9_]"
    );
    assert!(
        exposed.find('_') == Some(3) && exposed.rfind('_') == Some(3),
        "an '_' after the prefix"
    );
    assert!(
        checksum(&exposed[..BODY_LEN]) == exposed[BODY_LEN..],
        "a wrong checksum"
    );
    assert!(secret.hint() == &value[60..], "the hint is not the last 4");
    assert!(
        ClientSecret::parse(exposed).as_ref() == Ok(&secret),
        "an accepted secret does not parse back to itself"
    );
    // Exactly the redacted text: a check for a piece of the value would
    // fire on a value that happens to spell part of that text.
    assert!(
        format!("{secret:?}") == "ClientSecret(<redacted>)",
        "Debug shows something of the value"
    );
    true
}

/// `OrganizationId::parse`, `ClientId::parse` and `DomainName::parse` on the
/// input, as text: each accepts exactly what its rules allow, keeps an
/// accepted organization or client id unchanged, and gives a domain name in
/// its canonical form, which parses back to itself.
pub fn ids(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let organization = check_organization_id(&text);
    let client = check_client_id(&text);
    let domain = check_domain_name(&text);
    organization || client || domain
}

fn organization_id_model(value: &str) -> bool {
    (1..=OrganizationId::MAX_LEN).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_graphic())
}

fn check_organization_id(value: &str) -> bool {
    match OrganizationId::parse(value.to_owned()) {
        Ok(id) => {
            assert!(organization_id_model(value), "{value:?} was accepted");
            assert_eq!(id.as_str(), value);
            assert_eq!(id.to_string(), value);
            true
        }
        Err(invalid) => {
            assert!(!organization_id_model(value), "{value:?} was refused");
            assert_loggable(&invalid.0);
            false
        }
    }
}

fn check_client_id(value: &str) -> bool {
    let expected = value.len() == ClientId::LEN && value.bytes().all(|b| b.is_ascii_alphanumeric());
    match ClientId::parse(value) {
        Some(id) => {
            assert!(expected, "{value:?} was accepted");
            assert_eq!(id.as_str(), value);
            true
        }
        None => {
            assert!(!expected, "{value:?} was refused");
            false
        }
    }
}

fn check_domain_name(value: &str) -> bool {
    let canonical = value.trim_end_matches('.').to_ascii_lowercase();
    let expected = (1..=DomainName::MAX_LEN).contains(&canonical.len())
        && canonical.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    match DomainName::parse(value) {
        Ok(name) => {
            assert!(expected, "{value:?} was accepted");
            assert_eq!(name.as_str(), canonical);
            assert_eq!(DomainName::parse(name.as_str()), Ok(name.clone()));
            true
        }
        Err(_) => {
            assert!(!expected, "{value:?} was refused");
            false
        }
    }
}

/// `SecretHash::parse` on the input, as text, and on a PHC string built from
/// it (algorithm, version, and m, t, p from its first bytes, with a valid
/// salt and hash). Whatever parse accepts is argon2id v19 with a salt and a
/// hash between [`HashParams::MINIMUM`] and [`HashParams::MAXIMUM`], is kept unchanged and parses back
/// to itself; a built string is accepted exactly when its algorithm, version
/// and parameters allow it, and [`HashParams::new`] agrees on the parameters.
pub fn secret_hash(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let raw = check_secret_hash(&text);

    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let word = |i: usize| u32::from_le_bytes([byte(i), byte(i + 1), byte(i + 2), byte(i + 3)]);
    let (algorithm, version) = (byte(0) % 3, byte(1) % 3);
    let (m, t, p) = (word(2), word(6), word(10));
    let phc = format!(
        "${}{}$m={m},t={t},p={p}$c29tZXNhbHRzb21lc2FsdA$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU",
        ["argon2id", "argon2i", "argon2d"][usize::from(algorithm)],
        ["$v=19", "$v=16", ""][usize::from(version)],
    );
    let (floor, ceiling) = (HashParams::MINIMUM, HashParams::MAXIMUM);
    let allowed = (floor.memory_kib..=ceiling.memory_kib).contains(&m)
        && (floor.iterations..=ceiling.iterations).contains(&t)
        && (floor.parallelism..=ceiling.parallelism).contains(&p)
        && Params::new(m, t, p, None).is_ok();
    assert_eq!(
        HashParams::new(m, t, p).is_ok(),
        allowed,
        "HashParams::new(m={m}, t={t}, p={p})"
    );
    let built = check_secret_hash(&phc);
    assert_eq!(built, algorithm == 0 && version == 0 && allowed, "{phc}");
    raw || built
}

fn check_secret_hash(phc: &str) -> bool {
    let Ok(hash) = SecretHash::parse(phc.to_owned()) else {
        return false;
    };
    assert_eq!(hash.as_str(), phc);
    let parsed = match PasswordHash::new(phc) {
        Ok(parsed) => parsed,
        Err(e) => panic!("{phc:?} was accepted but is not a PHC string: {e}"),
    };
    assert_eq!(parsed.algorithm, ARGON2ID_IDENT, "{phc:?}");
    assert_eq!(parsed.version, Some(19), "{phc:?}");
    assert!(parsed.salt.is_some() && parsed.hash.is_some(), "{phc:?}");
    let params = match Params::try_from(&parsed) {
        Ok(params) => params,
        Err(e) => panic!("{phc:?} was accepted with unreadable parameters: {e}"),
    };
    let (floor, ceiling) = (HashParams::MINIMUM, HashParams::MAXIMUM);
    assert!(
        (floor.memory_kib..=ceiling.memory_kib).contains(&params.m_cost())
            && (floor.iterations..=ceiling.iterations).contains(&params.t_cost())
            && (floor.parallelism..=ceiling.parallelism).contains(&params.p_cost()),
        "{phc:?} is outside the floor and the ceiling"
    );
    assert_eq!(SecretHash::parse(hash.as_str().to_owned()), Ok(hash));
    true
}

/// The input decoded as each request message, as the codec does, then
/// parsed as its handler parses it, before any lookup. Every message that
/// decodes encodes back to one that decodes to it; an organization id or a
/// credential is accepted exactly when its rules allow it, and kept
/// unchanged; a refusal is `INVALID_ARGUMENT` with a message fit for a log.
pub fn requests(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Some(request) = decode::<proto::CreateIntegrationRequest>(data) {
        let sent = request.organization_id.clone();
        accepted |= check_organization(&sent, OrganizationId::try_from(request));
    }
    if let Some(request) = decode::<proto::GetIntegrationRequest>(data) {
        let sent = request.organization_id.clone();
        accepted |= check_organization(&sent, OrganizationId::try_from(request));
    }
    if let Some(request) = decode::<proto::GenerateSecretRequest>(data) {
        let sent = request.organization_id.clone();
        accepted |= check_organization(&sent, OrganizationId::try_from(request));
    }
    if let Some(request) = decode::<proto::ActivateSecretRequest>(data) {
        accepted |= check_activation(request);
    }
    if let Some(request) = decode::<proto::ValidateClientRequest>(data) {
        accepted |= check_client_check(request);
    }
    accepted
}

/// Decodes `data` as `M`, and checks that the message survives a round trip
/// through its encoding.
fn decode<M: Message + Default + PartialEq>(data: &[u8]) -> Option<M> {
    let message = M::decode(data).ok()?;
    let again = M::decode(message.encode_to_vec().as_slice());
    assert!(
        again.as_ref() == Ok(&message),
        "a decoded message does not survive its own encoding"
    );
    Some(message)
}

fn check_organization(sent: &str, parsed: Result<OrganizationId, Error>) -> bool {
    let expected = organization_id_model(sent);
    match parsed {
        Ok(id) => {
            assert!(expected, "{sent:?} was accepted");
            assert_eq!(id.as_str(), sent);
            true
        }
        Err(error) => {
            assert!(!expected, "{sent:?} was refused");
            assert_invalid_argument(error);
            false
        }
    }
}

/// Whether a credential of `value.len()` bytes is within the bound.
fn credential_model(value: &str) -> bool {
    (1..=MAX_CREDENTIAL_BYTES).contains(&value.len())
}

/// As ActivateSecret: the organization, then the value as sent (which must
/// be present and bounded); a value within the bound is kept as a secret
/// exactly when it parses as one.
fn check_activation(request: proto::ActivateSecretRequest) -> bool {
    let (organization, value) = (
        request.organization_id.clone(),
        request.client_secret.clone(),
    );
    let expected = organization_id_model(&organization) && credential_model(&value);
    match SecretActivation::try_from(request) {
        Ok(activation) => {
            assert!(expected, "an activation was accepted against its rules");
            assert_eq!(activation.organization.as_str(), organization);
            assert!(
                activation.value.as_ref().ok().map(ClientSecret::expose)
                    == ClientSecret::parse(&value)
                        .ok()
                        .as_ref()
                        .map(ClientSecret::expose),
                "the value was changed"
            );
            activation.value.is_ok()
        }
        Err(error) => {
            assert!(!expected, "an activation was refused within its rules");
            assert_invalid_argument(error);
            false
        }
    }
}

/// As ValidateClient: both values as sent (present and bounded) and the
/// source (empty or an IP address); a pair within the bounds is well formed
/// exactly when both parse, and is answered `valid: false` without a lookup
/// otherwise.
fn check_client_check(request: proto::ValidateClientRequest) -> bool {
    let (client_id, secret, source) = (
        request.client_id.clone(),
        request.client_secret.clone(),
        request.remote_address.clone(),
    );
    let expected = credential_model(&client_id)
        && credential_model(&secret)
        && (source.is_empty() || source.parse::<std::net::IpAddr>().is_ok());
    match ClientCheck::try_from(request) {
        Ok(check) => {
            assert!(expected, "a check was accepted against its rules");
            let well_formed =
                ClientId::parse(&client_id).is_some() && ClientSecret::parse(&secret).is_ok();
            assert_eq!(
                matches!(check.credentials, Credentials::WellFormed { .. }),
                well_formed,
                "a check's credentials were misread"
            );
            assert_eq!(
                check.credentials.client_id().map(ClientId::as_str),
                ClientId::parse(&client_id).as_ref().map(ClientId::as_str),
                "the client ID was changed"
            );
            well_formed
        }
        Err(error) => {
            assert!(!expected, "a check was refused within its rules");
            assert_invalid_argument(error);
            false
        }
    }
}

fn assert_invalid_argument(error: Error) {
    let status = Status::from(error);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_loggable(status.message());
}

/// A refusal's message goes to the caller and to the log: it must be one
/// line of printable ASCII, so that no input can forge a log line.
fn assert_loggable(message: &str) {
    assert!(
        !message.is_empty() && message.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
        "unfit message {message:?}"
    );
}
