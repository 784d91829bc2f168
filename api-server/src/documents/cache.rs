//! Cache-aside for documents in Redis.
//!
//! - A read tries Redis, then Firestore; concurrent misses of one key on this server share one
//!   Firestore read (single flight), whose result fills Redis with TTL + up to 10% jitter.
//! - "Not found" is cached too, briefly, so a scan of missing ids does not reach Firestore.
//! - Every fill is version-guarded by a script: it never replaces a newer version (Firestore
//!   `update_time`, in µs). After each committed write the writer stores the new version (or
//!   a tombstone for a delete), so a slow reader that fetched the old version before the write
//!   cannot put it back, and the next read does not return the old version.
//! - Redis errors are counted and skipped: reads go to Firestore when Redis is down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::store::{Store, StoreError, StoredDoc, Version};
use crate::observability::Metrics;
use crate::redis::Redis;

/// How long a delete's tombstone lasts: longer than any Firestore read that may still fill.
const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

const SET_IF_NEWER: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  if sep then
    local v = tonumber(string.sub(cur, 1, sep - 1))
    if v and v > tonumber(ARGV[1]) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1
"#;

/// What Redis holds for a key.
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Entry {
    Found { doc: StoredDoc },
    Missing,
}

/// A cache entry read without building a JSON tree of the document: `data` stays the bytes
/// Redis holds, and is written into the response as they are.
#[derive(Deserialize)]
struct RawEntry {
    state: String,
    doc: Option<CachedDoc>,
}

/// A document version as the cache holds it.
#[derive(Debug, Deserialize)]
pub struct CachedDoc {
    pub id: String,
    pub owner: String,
    pub data: Box<RawValue>,
    pub version: Version,
}

/// A document read through the cache: straight from the entry's bytes on a hit, or the
/// version Firestore returned.
#[derive(Debug)]
pub enum Doc {
    Cached(CachedDoc),
    Stored(Arc<StoredDoc>),
}

/// The API's representation of a document. Fields in the order a `serde_json::Map` (sorted)
/// gives them, so both sources serialise to the same bytes.
#[derive(Serialize)]
struct Representation<'a, D: Serialize + ?Sized> {
    collection: &'a str,
    data: &'a D,
    id: &'a str,
    owner: &'a str,
}

impl Doc {
    pub fn owner(&self) -> &str {
        match self {
            Self::Cached(d) => &d.owner,
            Self::Stored(d) => &d.owner,
        }
    }

    pub fn version(&self) -> Version {
        match self {
            Self::Cached(d) => d.version,
            Self::Stored(d) => d.version,
        }
    }

    /// `{"collection", "data", "id", "owner"}` as JSON bytes.
    pub fn representation(&self, collection: &str) -> Vec<u8> {
        let bytes = match self {
            Self::Cached(d) => serde_json::to_vec(&Representation {
                collection,
                data: &*d.data,
                id: &d.id,
                owner: &d.owner,
            }),
            Self::Stored(d) => serde_json::to_vec(&Representation {
                collection,
                data: &d.data,
                id: &d.id,
                owner: &d.owner,
            }),
        };
        // Serialising strings and an already valid JSON value cannot fail.
        bytes.unwrap_or_default()
    }
}

/// A document's cache entry that the request's admission script read (see
/// [`crate::ratelimit::RateLimiter::admit`]), for the GET handler: `entry` is `None` when Redis
/// had no such key.
#[derive(Debug, Clone)]
pub struct PrefetchedEntry {
    key: String,
    entry: Option<Bytes>,
}

impl PrefetchedEntry {
    pub fn new(key: String, entry: Option<Bytes>) -> Self {
        Self { key, entry }
    }

    /// The entry, if it is the one of `collection`/`id`.
    pub fn take_for(self, collection: &str, id: &str) -> Option<Option<Bytes>> {
        let matches = self
            .key
            .strip_prefix("doc:")
            .and_then(|k| k.strip_prefix(collection))
            .and_then(|k| k.strip_prefix(':'))
            == Some(id);
        matches.then_some(self.entry)
    }
}

pub type Lookup = Result<Option<Arc<StoredDoc>>, Arc<StoreError>>;
type Flight = Shared<BoxFuture<'static, Lookup>>;

pub struct DocCache {
    redis: Redis,
    script: Arc<redis::Script>,
    ttl: Duration,
    negative_ttl: Duration,
    metrics: Metrics,
    flights: Arc<Mutex<HashMap<String, (u64, Flight)>>>,
    next_flight: std::sync::atomic::AtomicU64,
}

/// The Redis key of a document's cache entry.
pub fn key(collection: &str, id: &str) -> String {
    let mut key = String::with_capacity(5 + collection.len() + id.len());
    key.push_str("doc:");
    key.push_str(collection);
    key.push(':');
    key.push_str(id);
    key
}

impl DocCache {
    pub fn new(redis: Redis, ttl: Duration, negative_ttl: Duration, metrics: Metrics) -> Self {
        Self {
            redis,
            script: Arc::new(redis::Script::new(SET_IF_NEWER)),
            ttl,
            negative_ttl,
            metrics,
            flights: Arc::new(Mutex::new(HashMap::new())),
            next_flight: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub async fn get(&self, store: &Arc<Store>, collection: &str, id: &str) -> Lookup {
        let key = key(collection, id);
        let k = key.clone();
        let cached: Result<Option<String>, _> = self
            .redis
            .call("cache_get", |mut c| async move {
                redis::cmd("GET").arg(&k).query_async(&mut c).await
            })
            .await;
        match cached {
            Ok(Some(raw)) => match parse(&raw) {
                Some(Entry::Found { doc }) => {
                    self.metrics.cache("hit");
                    return Ok(Some(Arc::new(doc)));
                }
                Some(Entry::Missing) => {
                    self.metrics.cache("hit");
                    return Ok(None);
                }
                None => self.metrics.cache("error"),
            },
            Ok(None) => self.metrics.cache("miss"),
            Err(e) => {
                self.metrics.cache("error");
                tracing::debug!(error = %e, "cache read failed; reading Firestore");
            }
        }
        self.flight(store, collection, id, key).await
    }

    /// Like [`Self::get`], but a hit is not turned into a JSON tree; and when `prefetched`
    /// holds the entry (read by the request's admission script), Redis is not asked again.
    pub async fn read(
        &self,
        store: &Arc<Store>,
        collection: &str,
        id: &str,
        prefetched: Option<Option<Bytes>>,
    ) -> Result<Option<Doc>, Arc<StoreError>> {
        let key = key(collection, id);
        let cached = match prefetched {
            Some(entry) => Ok(entry),
            None => {
                let k = &key;
                self.redis
                    .call("cache_get", |mut c| async move {
                        redis::cmd("GET")
                            .arg(k)
                            .query_async::<Option<Vec<u8>>>(&mut c)
                            .await
                            .map(|v| v.map(Bytes::from))
                    })
                    .await
            }
        };
        match cached {
            Ok(Some(raw)) => match parse_raw(&raw) {
                Some(found) => {
                    self.metrics.cache("hit");
                    return Ok(found.map(Doc::Cached));
                }
                None => self.metrics.cache("error"),
            },
            Ok(None) => self.metrics.cache("miss"),
            Err(e) => {
                self.metrics.cache("error");
                tracing::debug!(error = %e, "cache read failed; reading Firestore");
            }
        }
        Ok(self
            .flight(store, collection, id, key)
            .await?
            .map(Doc::Stored))
    }

    fn flight(&self, store: &Arc<Store>, collection: &str, id: &str, key: String) -> Flight {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, f)) = flights.get(&key) {
            return f.clone();
        }
        let n = self
            .next_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (store, collection, id) = (store.clone(), collection.to_string(), id.to_string());
        let filler = self.filler();
        let registry = self.flights.clone();
        let k = key.clone();
        let f = async move {
            let result = store.get(&collection, &id).await;
            let lookup = match result {
                Ok(Some(doc)) => {
                    filler
                        .fill(
                            &k,
                            &Entry::Found { doc: doc.clone() },
                            doc.version.micros(),
                            false,
                        )
                        .await;
                    Ok(Some(Arc::new(doc)))
                }
                Ok(None) => {
                    filler.fill(&k, &Entry::Missing, 0, true).await;
                    Ok(None)
                }
                Err(e) => Err(Arc::new(e)),
            };
            // Only our own entry: a write may have replaced it with a newer flight.
            let mut flights = registry.lock().unwrap_or_else(|p| p.into_inner());
            if flights.get(&k).is_some_and(|(m, _)| *m == n) {
                flights.remove(&k);
            }
            lookup
        }
        .boxed()
        .shared();
        flights.insert(key, (n, f.clone()));
        f
    }

    fn filler(&self) -> Filler {
        Filler {
            redis: self.redis.clone(),
            script: self.script.clone(),
            ttl: self.ttl,
            negative_ttl: self.negative_ttl,
        }
    }

    /// After a committed create or update: later reads must see `doc` or newer.
    pub async fn written(&self, collection: &str, doc: &StoredDoc) {
        let key = key(collection, &doc.id);
        self.forget_flight(&key);
        let entry = Entry::Found { doc: doc.clone() };
        self.filler()
            .store_after_write(&key, &entry, doc.version.micros(), self.ttl)
            .await;
    }

    /// After a committed delete.
    pub async fn deleted(&self, collection: &str, id: &str) {
        let key = key(collection, id);
        self.forget_flight(&key);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(i64::MAX / 2);
        self.filler()
            .store_after_write(&key, &Entry::Missing, now, TOMBSTONE_TTL)
            .await;
    }

    /// A read started after a write must not join a flight that began before it.
    fn forget_flight(&self, key: &str) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.remove(key);
    }
}

/// The parts of the cache a flight needs after its request may have gone away.
struct Filler {
    redis: Redis,
    script: Arc<redis::Script>,
    ttl: Duration,
    negative_ttl: Duration,
}

impl Filler {
    async fn fill(&self, key: &str, entry: &Entry, version: i64, negative: bool) {
        let ttl = if negative {
            self.negative_ttl
        } else {
            with_jitter(self.ttl)
        };
        if let Err(e) = self.set_if_newer(key, entry, version, ttl).await {
            tracing::debug!(error = %e, "cache fill failed");
        }
    }

    async fn store_after_write(&self, key: &str, entry: &Entry, version: i64, ttl: Duration) {
        if self.set_if_newer(key, entry, version, ttl).await.is_ok() {
            return;
        }
        // Could not store the new version: at least drop the old one.
        let k = key.to_string();
        let dropped = self
            .redis
            .call("cache_del", |mut c| async move {
                redis::cmd("DEL").arg(&k).query_async::<()>(&mut c).await
            })
            .await;
        if let Err(e) = dropped {
            tracing::error!(%key, error = %e,
                "cache invalidation failed; the old version may be served until its TTL");
        }
    }

    async fn set_if_newer(
        &self,
        key: &str,
        entry: &Entry,
        version: i64,
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        let json = serde_json::to_string(entry).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "serialising a cache entry",
                e.to_string(),
            ))
        })?;
        let script = self.script.clone();
        let key = key.to_string();
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.redis
            .call("cache_set", |mut c| async move {
                script
                    .key(&key)
                    .arg(version)
                    .arg(&json)
                    .arg(ttl_ms)
                    .invoke_async::<i64>(&mut c)
                    .await
                    .map(|_| ())
            })
            .await
    }
}

fn parse(raw: &str) -> Option<Entry> {
    let (_, json) = raw.split_once('|')?;
    serde_json::from_str(json).ok()
}

/// `Some(Some(doc))` for a cached version, `Some(None)` for cached "not found", `None` when
/// the entry is malformed.
fn parse_raw(raw: &[u8]) -> Option<Option<CachedDoc>> {
    let sep = raw.iter().position(|b| *b == b'|')?;
    let entry: RawEntry = serde_json::from_slice(&raw[sep + 1..]).ok()?;
    match (entry.state.as_str(), entry.doc) {
        ("found", Some(doc)) => Some(Some(doc)),
        ("missing", _) => Some(None),
        _ => None,
    }
}

/// `ttl` plus up to 10%, so entries filled together do not expire together.
fn with_jitter(ttl: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if aws_lc_rs::rand::fill(&mut b).is_ok() {
        u16::from_le_bytes(b)
    } else {
        0
    };
    ttl + ttl.mul_f64(0.1 * f64::from(r) / f64::from(u16::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_hit_serialises_as_the_parsed_document_does() {
        let doc = StoredDoc {
            id: "abc".into(),
            owner: "ann".into(),
            data: serde_json::from_str(r#"{"z": [1, {"b": "\u00e9\"", "a": null}], "a": 1.5}"#)
                .expect("json"),
            version: Version {
                seconds: 1_700_000_000,
                nanos: 123_456_789,
            },
        };
        let raw = format!(
            "{}|{}",
            doc.version.micros(),
            serde_json::to_string(&Entry::Found { doc: doc.clone() }).expect("json")
        );
        let Some(Some(cached)) = parse_raw(raw.as_bytes()) else {
            panic!("not parsed: {raw}");
        };
        assert_eq!(cached.version, doc.version);
        assert_eq!(cached.owner, "ann");
        let fast = Doc::Cached(cached).representation("notes");
        let slow = serde_json::json!({
            "id": doc.id, "collection": "notes", "owner": doc.owner, "data": doc.data,
        });
        assert_eq!(String::from_utf8(fast).expect("utf8"), slow.to_string());
        assert_eq!(
            Doc::Stored(Arc::new(doc)).representation("notes"),
            slow.to_string().into_bytes()
        );

        let missing = format!(
            "0|{}",
            serde_json::to_string(&Entry::Missing).expect("json")
        );
        assert!(matches!(parse_raw(missing.as_bytes()), Some(None)));
        assert!(parse_raw(b"garbage").is_none());
        assert!(parse_raw(br#"1|{"state":"found"}"#).is_none());
    }

    #[test]
    fn a_prefetched_entry_is_only_used_for_its_own_document() {
        let entry = || PrefetchedEntry::new(key("notes", "a1"), Some(Bytes::from_static(b"x")));
        assert_eq!(
            entry().take_for("notes", "a1"),
            Some(Some(Bytes::from_static(b"x")))
        );
        assert_eq!(entry().take_for("notes", "a2"), None);
        assert_eq!(entry().take_for("note", "s:a1"), None);
        assert_eq!(entry().take_for("other", "a1"), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let t = with_jitter(Duration::from_secs(100));
            assert!(t >= Duration::from_secs(100) && t <= Duration::from_secs(110));
        }
    }
}
