//! Verified tokens by SHA-256 of the token, until they expire.
//!
//! A client sends the same ID token for up to an hour; re-checking its RSA signature each time
//! would be the largest CPU cost of a cache-hit GET. The hash (not the token) is the key, so a
//! heap dump does not hand out bearer tokens. Revocation is not cached here: it is checked on
//! every request.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, RwLock};

use sha2::{Digest as _, Sha256};

use super::VerifiedToken;

const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct TokenCache {
    entries: RwLock<HashMap<Digest, Arc<VerifiedToken>, BuildHasherDefault<DigestHasher>>>,
}

/// A SHA-256 digest as a map key: its bytes are already uniform, so the first eight are its
/// hash, instead of running SipHash over all 32 on every request. Only verified tokens are
/// inserted, so a client choosing what to send cannot choose where entries land.
#[derive(PartialEq, Eq)]
struct Digest([u8; 32]);

impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut prefix = [0; 8];
        prefix.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_ne_bytes(prefix));
    }
}

#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is called (by `Digest`); this keeps any other use correct.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub fn token_hash(kind: &str, token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(token.as_bytes());
    h.finalize().into()
}

impl TokenCache {
    /// The cached verification, if the token has not expired by `now` (+ `skew`).
    pub fn get(&self, hash: &[u8; 32], now: i64, skew: i64) -> Option<Arc<VerifiedToken>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&Digest(*hash))
            .filter(|t| t.exp + skew > now)
            .cloned()
    }

    pub fn insert(&self, hash: [u8; 32], token: Arc<VerifiedToken>, now: i64) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, t| t.exp > now);
            if entries.len() >= MAX_ENTRIES {
                // Still full of live tokens: start over rather than track recency; the cost is
                // one RSA verification per token on its next use.
                entries.clear();
            }
        }
        entries.insert(Digest(hash), token);
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
