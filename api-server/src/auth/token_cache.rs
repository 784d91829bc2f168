//! Verified tokens by SHA-256 of the token, until they expire.
//!
//! A client sends the same ID token for up to an hour; re-checking its RSA signature each time
//! would be the largest CPU cost of a cache-hit GET. The hash (not the token) is the key, so a
//! heap dump does not hand out bearer tokens. Revocation is not cached here: it is checked on
//! every request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest as _, Sha256};

use super::VerifiedToken;

const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct TokenCache {
    entries: RwLock<HashMap<[u8; 32], Arc<VerifiedToken>>>,
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
        entries.get(hash).filter(|t| t.exp + skew > now).cloned()
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
        entries.insert(hash, token);
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
