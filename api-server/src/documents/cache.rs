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
use axum::http::HeaderValue;
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

/// An entry as the api-server before the pre-rendered format wrote it: still read, so a
/// rolling upgrade serves the old servers' entries instead of missing them.
#[derive(Deserialize)]
struct LegacyEntry {
    state: String,
    doc: Option<LegacyDoc>,
}

#[derive(Deserialize)]
struct LegacyDoc {
    id: String,
    owner: String,
    data: Box<RawValue>,
    version: Version,
}

/// A document version as the cache holds it: already rendered as the GET response's ETag and
/// body, so a hit is served by slicing the bytes Redis returned.
#[derive(Debug)]
pub struct CachedDoc {
    owner: Bytes,
    etag: HeaderValue,
    body: Bytes,
}

/// A document read through the cache: straight from the entry's bytes on a hit, or the
/// version Firestore returned.
#[derive(Debug)]
pub enum Doc {
    Cached(CachedDoc),
    Stored(Arc<StoredDoc>),
}

/// The API's representation of a document (every route that returns one uses it). Fields in
/// the order a `serde_json::Map` (sorted) gives them, so both sources serialise to the same
/// bytes.
#[derive(Serialize)]
pub struct Representation<'a, D: Serialize + ?Sized> {
    collection: &'a str,
    data: &'a D,
    id: &'a str,
    owner: &'a str,
}

impl<'a> Representation<'a, serde_json::Map<String, serde_json::Value>> {
    pub fn of(collection: &'a str, doc: &'a StoredDoc) -> Self {
        Self {
            collection,
            data: &doc.data,
            id: &doc.id,
            owner: &doc.owner,
        }
    }
}

/// `{"collection", "data", "id", "owner"}` as JSON bytes.
fn render<D: Serialize + ?Sized>(collection: &str, id: &str, owner: &str, data: &D) -> Vec<u8> {
    // Serialising strings and an already valid JSON value cannot fail.
    serde_json::to_vec(&Representation {
        collection,
        data,
        id,
        owner,
    })
    .unwrap_or_default()
}

impl Doc {
    pub fn owned_by(&self, uid: &str) -> bool {
        match self {
            Self::Cached(d) => d.owner == uid.as_bytes(),
            Self::Stored(d) => d.owner == uid,
        }
    }

    /// The strong ETag of this version (digits, a dot and quotes, so always a valid header
    /// value; `None` would only mean a bug, and then no ETag is sent rather than a wrong one).
    pub fn etag(&self) -> Option<HeaderValue> {
        match self {
            Self::Cached(d) => Some(d.etag.clone()),
            Self::Stored(d) => HeaderValue::from_str(&d.version.etag()).ok(),
        }
    }

    /// `{"collection", "data", "id", "owner"}` as JSON bytes.
    pub fn representation(&self, collection: &str) -> Bytes {
        match self {
            // Rendered when it was cached: the key fixes the collection.
            Self::Cached(d) => d.body.clone(),
            Self::Stored(d) => render(collection, &d.id, &d.owner, &d.data).into(),
        }
    }
}

/// What the cache stores after the version prefix (`<µs>|`, which the fill script compares):
/// `=<etag>|<owner length>:<owner><body>` for a document, `-` for "not found".
fn encode_found(collection: &str, doc: &StoredDoc) -> Vec<u8> {
    let etag = doc.version.etag();
    let body = render(collection, &doc.id, &doc.owner, &doc.data);
    let mut len = itoa::Buffer::new();
    let len = len.format(doc.owner.len());
    let mut out = Vec::with_capacity(3 + etag.len() + len.len() + doc.owner.len() + body.len());
    out.push(b'=');
    out.extend_from_slice(etag.as_bytes());
    out.push(b'|');
    out.extend_from_slice(len.as_bytes());
    out.push(b':');
    out.extend_from_slice(doc.owner.as_bytes());
    out.extend_from_slice(&body);
    out
}

const MISSING: &[u8] = b"-";

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

    /// A document through the cache; when `prefetched` holds the entry (read by the
    /// request's admission script), Redis is not asked again.
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
            Ok(Some(raw)) => match parse(raw, collection) {
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
                            &encode_found(&collection, &doc),
                            doc.version.micros(),
                            false,
                        )
                        .await;
                    Ok(Some(Arc::new(doc)))
                }
                Ok(None) => {
                    filler.fill(&k, MISSING, 0, true).await;
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
        let entry = encode_found(collection, doc);
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
            .store_after_write(&key, MISSING, now, TOMBSTONE_TTL)
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
    async fn fill(&self, key: &str, entry: &[u8], version: i64, negative: bool) {
        let ttl = if negative {
            self.negative_ttl
        } else {
            with_jitter(self.ttl)
        };
        if let Err(e) = self.set_if_newer(key, entry, version, ttl).await {
            tracing::debug!(error = %e, "cache fill failed");
        }
    }

    async fn store_after_write(&self, key: &str, entry: &[u8], version: i64, ttl: Duration) {
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
        entry: &[u8],
        version: i64,
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        let script = self.script.clone();
        let key = key.to_string();
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.redis
            .call("cache_set", |mut c| async move {
                script
                    .key(&key)
                    .arg(version)
                    .arg(entry)
                    .arg(ttl_ms)
                    .invoke_async::<i64>(&mut c)
                    .await
                    .map(|_| ())
            })
            .await
    }
}

/// `Some(Some(doc))` for a cached version, `Some(None)` for cached "not found", `None` when
/// the entry is malformed.
///
/// `collection` is the key's, for entries in the legacy format.
fn parse(raw: Bytes, collection: &str) -> Option<Option<CachedDoc>> {
    let sep = raw.iter().position(|b| *b == b'|')?;
    match raw.get(sep + 1)? {
        b'=' => parse_found(raw.slice(sep + 2..)).map(Some),
        b'-' if raw.len() == sep + 2 => Some(None),
        b'{' => parse_legacy(&raw[sep + 1..], collection),
        _ => None,
    }
}

/// `<etag>|<owner length>:<owner><body>`.
fn parse_found(rest: Bytes) -> Option<CachedDoc> {
    let bar = rest.iter().position(|b| *b == b'|')?;
    let etag = HeaderValue::from_maybe_shared(rest.slice(..bar)).ok()?;
    let colon = bar + 1 + rest[bar + 1..].iter().position(|b| *b == b':')?;
    let len: usize = std::str::from_utf8(&rest[bar + 1..colon])
        .ok()?
        .parse()
        .ok()?;
    let owner_end = (colon + 1).checked_add(len).filter(|e| *e < rest.len())?;
    Some(CachedDoc {
        owner: rest.slice(colon + 1..owner_end),
        etag,
        body: rest.slice(owner_end..),
    })
}

fn parse_legacy(json: &[u8], collection: &str) -> Option<Option<CachedDoc>> {
    let entry: LegacyEntry = serde_json::from_slice(json).ok()?;
    match (entry.state.as_str(), entry.doc) {
        ("found", Some(d)) => Some(Some(CachedDoc {
            etag: HeaderValue::from_str(&d.version.etag()).ok()?,
            body: render(collection, &d.id, &d.owner, &*d.data).into(),
            owner: Bytes::from(d.owner.into_bytes()),
        })),
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

    fn doc(owner: &str) -> StoredDoc {
        StoredDoc {
            id: "abc".into(),
            owner: owner.into(),
            data: serde_json::from_str(r#"{"z": [1, {"b": "\u00e9\"", "a": null}], "a": 1.5}"#)
                .expect("json"),
            version: Version {
                seconds: 1_700_000_000,
                nanos: 123_456_789,
            },
        }
    }

    /// What the fill script stores: the version prefix, then the encoded entry.
    fn stored(doc: &StoredDoc, entry: &[u8]) -> Bytes {
        let mut raw = format!("{}|", doc.version.micros()).into_bytes();
        raw.extend_from_slice(entry);
        raw.into()
    }

    #[test]
    fn a_hit_serves_what_firestore_s_version_serialises_to() {
        // An owner with the format's separators in it, and a multi-byte character.
        for owner in ["ann", "a|b:7:c", "\u{e9}|"] {
            let doc = doc(owner);
            let raw = stored(&doc, &encode_found("notes", &doc));
            let Some(Some(cached)) = parse(raw.clone(), "notes") else {
                panic!("not parsed: {raw:?}");
            };
            let cached = Doc::Cached(cached);
            let stored = Doc::Stored(Arc::new(doc.clone()));
            let expected = serde_json::json!({
                "id": doc.id, "collection": "notes", "owner": doc.owner, "data": doc.data,
            });
            assert_eq!(
                cached.representation("notes"),
                expected.to_string().as_bytes()
            );
            assert_eq!(
                stored.representation("notes"),
                expected.to_string().as_bytes()
            );
            assert_eq!(cached.etag().expect("etag"), doc.version.etag().as_str());
            assert_eq!(cached.etag(), stored.etag());
            assert!(cached.owned_by(owner) && !cached.owned_by("ann|"));
        }
        let missing = stored(&doc("ann"), MISSING);
        assert!(matches!(parse(missing, "notes"), Some(None)));
    }

    #[test]
    fn entries_of_the_legacy_format_are_still_served() {
        #[derive(Serialize)]
        #[serde(tag = "state", rename_all = "snake_case")]
        enum Legacy<'a> {
            Found { doc: &'a StoredDoc },
            Missing,
        }
        let doc = doc("ann");
        let found = serde_json::to_vec(&Legacy::Found { doc: &doc }).expect("json");
        let Some(Some(cached)) = parse(stored(&doc, &found), "notes") else {
            panic!("legacy entry not parsed");
        };
        let cached = Doc::Cached(cached);
        assert_eq!(
            cached.representation("notes"),
            Doc::Stored(Arc::new(doc.clone())).representation("notes")
        );
        assert_eq!(cached.etag().expect("etag"), doc.version.etag().as_str());
        assert!(cached.owned_by("ann"));
        let missing = serde_json::to_vec(&Legacy::Missing).expect("json");
        assert!(matches!(parse(stored(&doc, &missing), "notes"), Some(None)));
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in [
            &b"garbage"[..],
            b"1|",
            b"1|x",
            br#"1|{"state":"found"}"#,
            br#"1|="1.000000001"|"#,
            br#"1|="1.000000001"|3:an"#,
            br#"1|="1.000000001"|3:ann"#,
            br#"1|="1.000000001"|x:ann{}"#,
            br#"1|="1.000000001"|99999999999999999999999:ann{}"#,
            b"1|-trailing",
            b"1|=\"1\n\"|3:ann{}",
        ] {
            assert!(
                parse(Bytes::from_static(bad), "notes").is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
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
