//! Stronger hashes over time: a secret stored below the configured argon2id
//! cost is hashed again at that cost the first time a verify proves its
//! value, and the new hash replaces the old one.
//!
//! Raising `--argon2-*` changes only the hashes made after it; the value
//! behind an older one is known to this service only for the moment a
//! caller presents it and it verifies. [`upgrade`] takes that moment, off
//! the request's path: the caller has its answer already, and the rehash
//! runs in the gateway's argon2 lane behind good-standing verifies, at idle
//! priority (`crate::hashing`), at most
//! [`REHASHES_AT_ONCE`](crate::hashing::REHASHES_AT_ONCE) at a time. A
//! rehash that finds no place, or a lane too busy, is dropped rather than
//! queued: the client's next cache miss tries again.
//!
//! The new hash is stored only if the secret is still the same row with the
//! same hash and still ACTIVE ([`Store::replace_active_hash`]): a rotation,
//! a revocation or another replica's rehash in between wins. Either hash
//! verifies the same value, so nothing a cache remembers changes.

use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::domain::{ClientSecret, SecretHash};
use crate::error::Error;
use crate::hashing::Hasher;
use crate::store::Store;

/// After `secret` verified against `old`, the stored hash of the active
/// secret `secret_id`: if `old` is below the configured cost, hashes
/// `secret` again at that cost and stores it in `old`'s place, in a task of
/// its own. Returns at once; when enough rehashes are under way already it
/// does nothing at all.
///
/// Logs what became of it with the secret's id and both costs, never the
/// value nor a hash: at INFO once it is stored or found outdated, at DEBUG
/// when it was dropped for lack of room.
pub fn upgrade(
    store: &Store,
    hasher: &Hasher,
    secret_id: Uuid,
    secret: ClientSecret,
    old: SecretHash,
) {
    if !hasher.needs_rehash(&old) {
        return;
    }
    let Some(rehash) = hasher.rehash(secret) else {
        debug!(%secret_id, "secret not rehashed: enough rehashes are under way");
        return;
    };
    let store = store.clone();
    tokio::spawn(async move {
        let from = old.params();
        let new = match rehash.await {
            Ok(new) => new,
            Err(error @ (Error::ResourceExhausted(_) | Error::Overloaded(_))) => {
                debug!(%secret_id, %error, "secret not rehashed: the argon2 lane is busy");
                return;
            }
            Err(error) => {
                warn!(%secret_id, %error, "secret not rehashed");
                return;
            }
        };
        let to = new.params();
        match store.replace_active_hash(secret_id, &old, &new).await {
            Ok(true) => info!(%secret_id, old = %from, new = %to, "secret rehashed"),
            Ok(false) => info!(
                %secret_id,
                old = %from,
                new = %to,
                "secret not rehashed: it was rotated, revoked or rehashed meanwhile"
            ),
            Err(error) => warn!(
                %secret_id,
                old = %from,
                new = %to,
                %error,
                "secret not rehashed: its new hash could not be stored"
            ),
        }
    });
}
