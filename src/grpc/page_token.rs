//! The page tokens of ListSecrets and ListAuditEvents: opaque to callers,
//! bound to the list and the organization they were issued for.
//!
//! A token holds the cursor where its page ended (`crate::store::Cursor`),
//! which list it belongs to, and a digest of the organization id, in
//! URL-safe base64. A token sent with another list or another organization
//! is refused `INVALID_ARGUMENT`, as is anything that is not a token. A
//! caller who edits a token can only move its cursor within its own
//! organization's rows: every query is filtered by the organization of the
//! request, never by anything in the token.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::DateTime;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::OrganizationId;
use crate::error::Error;
use crate::store::{Cursor, Page};

/// The lists that hand out page tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Secrets,
    AuditEvents,
}

impl List {
    fn tag(self) -> u8 {
        match self {
            Self::Secrets => b'S',
            Self::AuditEvents => b'A',
        }
    }

    fn rpc(self) -> &'static str {
        match self {
            Self::Secrets => "ListSecrets",
            Self::AuditEvents => "ListAuditEvents",
        }
    }
}

/// Rows a page holds when the caller does not say.
pub const DEFAULT_PAGE_SIZE: u64 = 50;

/// Rows a page holds at most; a larger `page_size` is read as this.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// The version of the token's layout.
const VERSION: u8 = 1;

/// Bytes of the organization id's digest a token carries.
const ORGANIZATION_DIGEST: usize = 8;

/// Version, list, organization digest, time (micros), id.
const TOKEN_BYTES: usize = 1 + 1 + ORGANIZATION_DIGEST + 8 + 16;

/// The page a list request asks for.
pub fn page(
    list: List,
    organization: &OrganizationId,
    page_size: i32,
    page_token: &str,
) -> Result<Page, Error> {
    let size = match u64::try_from(page_size) {
        Err(_) => {
            return Err(Error::InvalidArgument(format!(
                "page_size must be 0 (the default, {DEFAULT_PAGE_SIZE}) or more, not {page_size}"
            )));
        }
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(size) => size.min(MAX_PAGE_SIZE),
    };
    let after = if page_token.is_empty() {
        None
    } else {
        Some(decode(list, organization, page_token)?)
    };
    Ok(Page { size, after })
}

/// The token of the page after `cursor`.
pub fn encode(list: List, organization: &OrganizationId, cursor: Cursor) -> String {
    let mut bytes = Vec::with_capacity(TOKEN_BYTES);
    bytes.push(VERSION);
    bytes.push(list.tag());
    bytes.extend_from_slice(&organization_digest(organization));
    bytes.extend_from_slice(&cursor.created_at.timestamp_micros().to_be_bytes());
    bytes.extend_from_slice(cursor.id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode(list: List, organization: &OrganizationId, token: &str) -> Result<Cursor, Error> {
    let refuse = || {
        Error::InvalidArgument(format!(
            "page_token is not a next_page_token that {} returned for organization \
             \"{organization}\"; send it unchanged, with the same organization_id, or send none \
             for the first page",
            list.rpc()
        ))
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| refuse())?;
    if bytes.len() != TOKEN_BYTES || bytes[0] != VERSION || bytes[1] != list.tag() {
        return Err(refuse());
    }
    let (digest, rest) = bytes[2..].split_at(ORGANIZATION_DIGEST);
    if digest != organization_digest(organization) {
        return Err(refuse());
    }
    let (micros, id) = rest.split_at(8);
    let micros = i64::from_be_bytes(micros.try_into().map_err(|_| refuse())?);
    Ok(Cursor {
        created_at: DateTime::from_timestamp_micros(micros).ok_or_else(refuse)?,
        id: Uuid::from_slice(id).map_err(|_| refuse())?,
    })
}

fn organization_digest(organization: &OrganizationId) -> [u8; ORGANIZATION_DIGEST] {
    let digest = Sha256::digest(organization.as_str().as_bytes());
    let mut bytes = [0; ORGANIZATION_DIGEST];
    bytes.copy_from_slice(&digest[..ORGANIZATION_DIGEST]);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn org(id: &str) -> OrganizationId {
        OrganizationId::parse(id.into()).expect("valid")
    }

    #[test]
    fn a_token_reads_back_its_cursor_for_its_list_and_organization_only() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_780_000_000_654_321).expect("a time"),
            id: Uuid::now_v7(),
        };
        let token = encode(List::Secrets, &org("acme"), cursor);
        let read = page(List::Secrets, &org("acme"), 10, &token).expect("accepted");
        assert_eq!(
            read,
            Page {
                size: 10,
                after: Some(cursor)
            }
        );
        for (list, organization) in [
            (List::AuditEvents, org("acme")),
            (List::Secrets, org("globex")),
        ] {
            let error = page(list, &organization, 10, &token).expect_err("refused");
            assert_eq!(error.code(), Code::InvalidArgument);
        }
    }

    #[test]
    fn sizes_default_cap_and_refuse_negatives() {
        let size = |n| page(List::Secrets, &org("a"), n, "").map(|p| p.size);
        assert_eq!(size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(size(7).ok(), Some(7));
        assert_eq!(size(5000).ok(), Some(MAX_PAGE_SIZE));
        assert_eq!(size(-1).expect_err("refused").code(), Code::InvalidArgument);
    }

    #[test]
    fn what_is_not_a_token_is_refused() {
        let valid = encode(
            List::Secrets,
            &org("a"),
            Cursor {
                created_at: DateTime::from_timestamp_micros(0).expect("a time"),
                id: Uuid::nil(),
            },
        );
        for bad in [
            "x",
            "!!!!",
            &valid[..valid.len() - 2],
            &format!("{valid}AA"),
        ] {
            let error = page(List::Secrets, &org("a"), 0, bad).expect_err("refused");
            assert_eq!(error.code(), Code::InvalidArgument, "{bad:?}");
        }
    }
}
