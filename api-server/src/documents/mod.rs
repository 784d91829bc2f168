//! Documents: JSON objects owned by a user, stored in Firestore, cached in Redis.
//!
//! - [`validation`]: what a client may send (allow-listed collections, size, depth, names).
//! - [`store`]: Firestore reads and writes, with `update_time` as the version and ETag.
//! - [`cache`]: cache-aside in Redis with single flight and version-guarded fills.
//! - [`handlers`]: the HTTP routes.

pub mod cache;
pub mod handlers;
pub mod store;
pub mod validation;

use std::collections::HashSet;
use std::sync::Arc;

pub use cache::DocCache;
pub use store::{Store, StoredDoc, Version};

/// Everything the document routes need.
pub struct Documents {
    pub collections: HashSet<String>,
    pub store: Arc<Store>,
    pub cache: DocCache,
}
