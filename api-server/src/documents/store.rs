//! Firestore access for documents. Each document is `{id, owner, data}`; its `update_time` is
//! the version: it becomes the ETag, and a conditional write sends it back as Firestore's
//! update precondition, so a stale `If-Match` fails inside Firestore, not in a racy
//! read-compare-write of ours.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use firestore::errors::FirestoreError;
use firestore::gcloud_sdk::google::firestore::v1::Document;
use firestore::{FirestoreDb, FirestoreQueryCursor, FirestoreWritePrecondition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::observability::{Metrics, random_hex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("document not found")]
    NotFound,
    #[error("the document changed since the given version")]
    Stale,
    #[error("Firestore: {0}")]
    Firestore(#[from] FirestoreError),
    #[error("stored document is malformed: {0}")]
    Corrupt(String),
}

/// Firestore's `update_time` of a document version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    pub seconds: i64,
    pub nanos: i32,
}

impl Version {
    /// Strong ETag: two versions share it only if Firestore gave them the same update time.
    pub fn etag(&self) -> String {
        format!("\"{}.{:09}\"", self.seconds, self.nanos)
    }

    pub fn from_etag(tag: &str) -> Option<Self> {
        let inner = tag.trim().strip_prefix('"')?.strip_suffix('"')?;
        let (s, n) = inner.split_once('.')?;
        if n.len() != 9 {
            return None;
        }
        Some(Self {
            seconds: s.parse().ok()?,
            nanos: n.parse().ok().filter(|n| (0..1_000_000_000).contains(n))?,
        })
    }

    /// Microseconds since the epoch: exact in a Lua double, so Redis scripts can compare.
    pub fn micros(&self) -> i64 {
        self.seconds * 1_000_000 + i64::from(self.nanos) / 1000
    }

    fn instant(&self) -> Result<firestore::FirestoreInstant, StoreError> {
        firestore::FirestoreInstant::new(self.seconds, self.nanos)
            .map_err(|e| StoreError::Corrupt(format!("version {self:?}: {e}")))
    }
}

/// A stored document version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDoc {
    pub id: String,
    pub owner: String,
    pub data: Map<String, Value>,
    pub version: Version,
}

/// The Firestore fields (the version lives in the document's metadata).
#[derive(Serialize, Deserialize)]
struct Fields {
    id: String,
    owner: String,
    data: Map<String, Value>,
}

pub struct Store {
    db: FirestoreDb,
    metrics: Metrics,
    /// Document reads by id: what the single-flight test counts.
    reads: AtomicU64,
}

impl Store {
    pub fn new(db: FirestoreDb, metrics: Metrics) -> Self {
        Self {
            db,
            metrics,
            reads: AtomicU64::new(0),
        }
    }

    pub fn db(&self) -> &FirestoreDb {
        &self.db
    }

    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn timed<T>(&self, op: &str, started: Instant, r: &Result<T, FirestoreError>) {
        self.metrics
            .firestore_duration(op, r.is_ok(), started.elapsed());
    }

    pub async fn get(&self, collection: &str, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let r = self.db.fluent().select().by_id_in(collection).one(id).await;
        self.timed("get", started, &r);
        r?.map(|d| decode(&d)).transpose()
    }

    pub async fn create(
        &self,
        collection: &str,
        owner: &str,
        data: Map<String, Value>,
    ) -> Result<StoredDoc, StoreError> {
        let id = new_id();
        let mut doc = self.encode(collection, &id, owner, data)?;
        // CreateDocument names the document by parent + id; a set name is an error.
        doc.name = String::new();
        let started = Instant::now();
        let r = self
            .db
            .fluent()
            .insert()
            .into(collection)
            .document_id(&id)
            .document(doc)
            .execute()
            .await;
        self.timed("create", started, &r);
        decode(&r?)
    }

    /// Replaces the document if it is still at `expected`.
    pub async fn replace(
        &self,
        collection: &str,
        current: &StoredDoc,
        expected: Version,
        data: Map<String, Value>,
    ) -> Result<StoredDoc, StoreError> {
        let doc = self.encode(collection, &current.id, &current.owner, data)?;
        let started = Instant::now();
        let r = self
            .db
            .fluent()
            .update()
            .in_col(collection)
            .precondition(FirestoreWritePrecondition::UpdateTime(expected.instant()?))
            .document(doc)
            .execute()
            .await;
        self.timed("update", started, &r);
        decode(&r.map_err(conflict)?)
    }

    /// Deletes the document if it is still at `expected`.
    pub async fn delete(
        &self,
        collection: &str,
        id: &str,
        expected: Version,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self
            .db
            .fluent()
            .delete()
            .from(collection)
            .document_id(id)
            .precondition(FirestoreWritePrecondition::UpdateTime(expected.instant()?))
            .execute()
            .await;
        self.timed("delete", started, &r);
        r.map_err(conflict)
    }

    /// Up to `limit` documents of `owner` after id `after`, in id (= creation) order; also
    /// whether more follow.
    pub async fn list(
        &self,
        collection: &str,
        owner: &str,
        limit: u32,
        after: Option<&str>,
    ) -> Result<(Vec<StoredDoc>, bool), StoreError> {
        let owner = owner.to_string();
        let mut query = self
            .db
            .fluent()
            .select()
            .from(collection)
            .filter(|q| q.for_all([q.field("owner").eq(owner.clone())]))
            .order(|o| o.fields([o.field("id").ascending()]))
            .limit(limit + 1);
        if let Some(after) = after {
            query = query.start_at(FirestoreQueryCursor::AfterValue(vec![
                after.to_string().into(),
            ]));
        }
        let started = Instant::now();
        let r = query.query().await;
        self.timed("list", started, &r);
        let mut docs = r?.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        let more = docs.len() > limit as usize;
        docs.truncate(limit as usize);
        Ok((docs, more))
    }

    fn encode(
        &self,
        collection: &str,
        id: &str,
        owner: &str,
        data: Map<String, Value>,
    ) -> Result<Document, StoreError> {
        let path = format!("{}/{collection}/{id}", self.db.get_documents_path());
        let fields = Fields {
            id: id.to_string(),
            owner: owner.to_string(),
            data,
        };
        Ok(firestore::firestore_document_from_serializable(
            &path, &fields,
        )?)
    }
}

fn decode(doc: &Document) -> Result<StoredDoc, StoreError> {
    let fields: Fields = FirestoreDb::deserialize_doc_to(doc)?;
    let ts = doc
        .update_time
        .as_ref()
        .ok_or_else(|| StoreError::Corrupt(format!("{} has no update_time", doc.name)))?;
    Ok(StoredDoc {
        id: fields.id,
        owner: fields.owner,
        data: fields.data,
        version: Version {
            seconds: ts.seconds,
            nanos: ts.nanos,
        },
    })
}

/// A failed precondition means another write won; NOT_FOUND that the document is gone.
fn conflict(e: FirestoreError) -> StoreError {
    match &e {
        FirestoreError::DatabaseError(d) if d.public.code == "FailedPrecondition" => {
            StoreError::Stale
        }
        FirestoreError::DataNotFoundError(_) => StoreError::NotFound,
        _ => StoreError::Firestore(e),
    }
}

/// Time-ordered ids (12 hex digits of milliseconds, 16 random): listing by id is listing by
/// creation, and two servers never collide.
pub(crate) fn new_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{millis:012x}{}", random_hex(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_round_trip_and_garbage_is_rejected() {
        let v = Version {
            seconds: 1_790_000_000,
            nanos: 123_456_000,
        };
        assert_eq!(v.etag(), "\"1790000000.123456000\"");
        assert_eq!(Version::from_etag(&v.etag()), Some(v));
        assert_eq!(v.micros(), 1_790_000_000_123_456);
        for bad in [
            "1790000000.123456000",
            "\"1.2\"",
            "W/\"1.000000000\"",
            "\"x.000000000\"",
        ] {
            assert_eq!(Version::from_etag(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert_eq!(a.len(), 28);
        assert!(a < b);
    }
}
