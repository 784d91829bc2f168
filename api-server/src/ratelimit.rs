//! Distributed rate limiting: GCRA in one Lua script per request, on Redis's clock (`TIME`),
//! so every replica shares one exact budget per key and their clocks do not matter. For an
//! authenticated request the script also returns the caller's revocation time (`ADMIT`,
//! run by the auth layer), so admission costs one Redis round trip; unauthenticated requests
//! are limited by client IP with the plain `GCRA` script.
//!
//! GCRA stores one number per key (the theoretical arrival time), so the state is one small
//! string whatever the limit, and a burst of `limit` requests is allowed at once, then one per
//! `window / limit`. Headers follow the IETF RateLimit fields draft (`RateLimit-Policy`,
//! `RateLimit`); a refusal is 429 with `Retry-After` and a problem body.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::FailMode;
use crate::observability::Metrics;
use crate::problem::Problem;
use crate::redis::Redis;
use crate::state::AppState;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
-- Whole microseconds keep the arithmetic exact in Lua's doubles; flooring never lets more
-- than `limit` through in one burst for windows of a second or more.
-- At least 1 µs: a limit above one per µs would make it 0 (and the remaining count inf).
local emission = math.max(1, math.floor(period / limit))
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, math.ceil((allow_at - now) / 1000), math.ceil((tat - now) / 1000)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / emission), 0, math.ceil((new_tat - now) / 1000)}
"#;

/// The admission of an authenticated request in one Redis call: the caller's revocation time
/// (KEYS[2]) and, unless the token is revoked (ARGV[3] = its auth_time), the GCRA decision on
/// KEYS[1]; and, when the request is allowed and KEYS[3] is given (a document GET), that
/// document's cache entry. One round trip instead of three on a cache-hit GET, and one `MGET`
/// for the three reads.
///
/// The reply is one string: `"<allowed> <remaining> <retry_after_ms> <reset_ms> <revoked_at>"`,
/// then, if the entry was read, `"\n="` and the entry, or `"\n!"` when it does not exist. One
/// string because redis-rs parses each reply element with a parser combinator (callgrind: about
/// 10,300 instructions for a six-element reply, 3,900 for two elements, 1,000 for one).
const ADMIT: &str = r#"
local v = redis.call('MGET', unpack(KEYS))
local revoked = tonumber(v[2] or '-1')
if revoked >= 0 and revoked >= tonumber(ARGV[3]) then
  return string.format('-1 0 0 0 %d', revoked)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
-- At least 1 µs: a limit above one per µs would make it 0 (and the remaining count inf).
local emission = math.max(1, math.floor(period / limit))
local tat = tonumber(v[1] or '0')
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - period
if now < allow_at then
  return string.format('0 0 %d %d %d', math.ceil((allow_at - now) / 1000), math.ceil((tat - now) / 1000), revoked)
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
local numbers = string.format('1 %d 0 %d %d', math.floor((now - allow_at) / emission), math.ceil((new_tat - now) / 1000), revoked)
if not KEYS[3] then return numbers end
if v[3] then return numbers .. '\n=' .. v[3] end
return numbers .. '\n!'
"#;

/// Result of [`RateLimiter::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// `None` when the token is revoked (no budget was spent).
    pub decision: Option<Decision>,
    pub revoked_at: Option<i64>,
    /// The cache entry asked for, read in the same script when the request was allowed:
    /// `None` when not read, `Some(None)` when the key does not exist.
    pub cached: Option<Option<Bytes>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub remaining: u64,
    pub retry_after_ms: u64,
    pub reset_ms: u64,
}

pub struct RateLimiter {
    redis: Redis,
    script: redis::Script,
    admit: redis::Script,
    limit: u32,
    window_seconds: u32,
    fail: FailMode,
    metrics: Metrics,
    policy: HeaderValue,
}

impl RateLimiter {
    pub fn new(
        redis: Redis,
        limit: u32,
        window_seconds: u32,
        fail: FailMode,
        metrics: Metrics,
    ) -> Self {
        let limit = limit.max(1);
        let window_seconds = window_seconds.max(1);
        let policy = HeaderValue::from_str(&format!(r#""default";q={limit};w={window_seconds}"#))
            .unwrap_or_else(|_| HeaderValue::from_static(r#""default""#));
        Self {
            redis,
            script: redis::Script::new(GCRA),
            admit: redis::Script::new(ADMIT),
            limit,
            window_seconds,
            fail,
            metrics,
            policy,
        }
    }

    /// One atomic decision for the Redis key `redis_key` (`ratelimit:...`).
    pub async fn check(&self, redis_key: &str) -> Result<Decision, redis::RedisError> {
        let period_us = u64::from(self.window_seconds) * 1_000_000;
        let limit = self.limit;
        let script = &self.script;
        let reply: Vec<i64> = self
            .redis
            .call("ratelimit", |mut c| async move {
                script
                    .key(redis_key)
                    .arg(period_us)
                    .arg(limit)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let at = |i: usize| reply.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(Decision {
            allowed: at(0) == 1,
            remaining: at(1),
            retry_after_ms: at(2),
            reset_ms: at(3),
        })
    }

    /// The revocation lookup and the rate-limit decision for `key` (the Redis keys themselves,
    /// see [`uid_key`] and [`crate::auth::revocation::key`]), and, if the request is allowed,
    /// the read of `cache_key`: one script, one round trip.
    pub async fn admit(
        &self,
        key: &str,
        revocation_key: &str,
        auth_time: i64,
        cache_key: Option<&str>,
    ) -> Result<Admission, redis::RedisError> {
        let period_us = u64::from(self.window_seconds) * 1_000_000;
        let limit = self.limit;
        let script = &self.admit;
        let reply: redis::Value = self
            .redis
            .call("admit", |mut c| async move {
                let mut invocation = script.key(key);
                invocation.key(revocation_key);
                if let Some(k) = cache_key {
                    invocation.key(k);
                }
                invocation
                    .arg(period_us)
                    .arg(limit)
                    .arg(auth_time)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let unexpected = |reply: &dyn std::fmt::Debug| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "admission script reply",
                format!("{reply:?}"),
            ))
        };
        let redis::Value::BulkString(reply) = reply else {
            return Err(unexpected(&reply));
        };
        let reply = Bytes::from(reply);
        let (numbers, entry) = split_admission(&reply, cache_key.is_some())
            .ok_or_else(|| unexpected(&String::from_utf8_lossy(&reply)))?;
        let at = |i: usize| numbers[i];
        let revoked_at = Some(at(4)).filter(|r| *r >= 0);
        let decision = (at(0) >= 0).then(|| Decision {
            allowed: at(0) == 1,
            remaining: at(1).max(0) as u64,
            retry_after_ms: at(2).max(0) as u64,
            reset_ms: at(3).max(0) as u64,
        });
        let cached = entry.map(|e| e.map(|range| reply.slice(range)));
        Ok(Admission {
            decision,
            revoked_at,
            cached,
        })
    }

    fn headers(&self, d: &Decision, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_POLICY, self.policy.clone());
        let mut value = Vec::with_capacity(40);
        value.extend_from_slice(br#""default";r="#);
        value.extend_from_slice(itoa::Buffer::new().format(d.remaining).as_bytes());
        value.extend_from_slice(b";t=");
        value.extend_from_slice(
            itoa::Buffer::new()
                .format(d.reset_ms.div_ceil(1000))
                .as_bytes(),
        );
        // Quotes, letters, digits and punctuation: always a valid value.
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
            headers.insert(RATELIMIT, v);
        }
    }
}

/// The client address: the TCP peer, or the first `X-Forwarded-For` hop when configured.
fn client_ip(req: &Request, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for
        && let Some(first) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
    {
        return first.trim().to_string();
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The Redis key of an authenticated caller's rate limit.
pub fn uid_key(uid: &str) -> String {
    let mut key = String::with_capacity(14 + uid.len());
    key.push_str("ratelimit:uid:");
    key.push_str(uid);
    key
}

/// Where the admission script's reply holds the cache entry: `None` when it was not read,
/// `Some(None)` when the key does not exist.
type EntryRange = Option<Option<std::ops::Range<usize>>>;

/// The admission script's reply: its five numbers and, when the entry was asked for (`read`)
/// and the request allowed, where the entry lies in `reply`.
fn split_admission(reply: &[u8], read: bool) -> Option<([i64; 5], EntryRange)> {
    let Some(newline) = reply.iter().position(|b| *b == b'\n') else {
        return Some((packed_numbers(reply)?, None));
    };
    let numbers = packed_numbers(&reply[..newline])?;
    if !read || numbers[0] != 1 {
        return None;
    }
    let entry = match &reply[newline + 1..] {
        [b'=', ..] => Some(newline + 2..reply.len()),
        [b'!'] => None,
        _ => return None,
    };
    Some((numbers, Some(entry)))
}

/// The five space-separated integers that begin the admission script's reply.
fn packed_numbers(bytes: &[u8]) -> Option<[i64; 5]> {
    let mut numbers = [0; 5];
    let mut fields = bytes.split(|b| *b == b' ');
    for n in &mut numbers {
        *n = integer(fields.next()?)?;
    }
    fields.next().is_none().then_some(numbers)
}

/// `-?[0-9]+` as an i64, straight from the bytes: once per request, where going through `str`
/// (UTF-8 check, `FromStr`) cost about four times as much.
fn integer(field: &[u8]) -> Option<i64> {
    let (negative, digits) = match field {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, field),
    };
    if digits.is_empty() {
        return None;
    }
    let mut magnitude: u64 = 0;
    for digit in digits {
        let digit = digit.checked_sub(b'0').filter(|d| *d <= 9)?;
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// The limit of unauthenticated routes, keyed by client IP. (Authenticated routes are limited
/// by uid in the authentication layer, which gets the decision from its admission script and
/// calls [`enforce`].)
pub async fn limit<F, Fut>(state: &AppState, req: Request, run: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let key = format!(
        "ratelimit:ip:{}",
        client_ip(&req, state.trust_forwarded_for)
    );
    let decision = state
        .rate_limiter
        .check(&key)
        .await
        .map_err(|e| e.to_string());
    enforce(state, decision, req, run).await
}

/// Runs the request through `run` if `decision` allows it (or Redis failed and the limiter
/// fails open), with the RateLimit headers on the response; else answers 429 (or 503 failing
/// closed).
pub async fn enforce<F, Fut>(
    state: &AppState,
    decision: Result<Decision, String>,
    req: Request,
    run: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let limiter = &state.rate_limiter;
    match decision {
        Ok(d) if d.allowed => {
            limiter.metrics.rate_limit("allowed");
            let mut response = run(req).await;
            limiter.headers(&d, response.headers_mut());
            response
        }
        Ok(d) => {
            limiter.metrics.rate_limit("limited");
            let retry = d.retry_after_ms.div_ceil(1000).max(1);
            let mut response = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                format!(
                    "more than {} requests in {} s; retry in {retry} s",
                    limiter.limit, limiter.window_seconds
                ),
            )
            .with_header(header::RETRY_AFTER, &retry.to_string())
            .into_response();
            limiter.headers(&d, response.headers_mut());
            response
        }
        Err(e) => match limiter.fail {
            FailMode::Open => {
                limiter.metrics.rate_limit("fail_open");
                tracing::warn!(error = %e, "rate limiter unavailable; allowing (fail open)");
                run(req).await
            }
            FailMode::Closed => {
                limiter.metrics.rate_limit("fail_closed");
                tracing::warn!(error = %e, "rate limiter unavailable; refusing (fail closed)");
                Problem::unavailable("the rate limiter is unavailable")
                    .with_header(header::RETRY_AFTER, "1")
                    .into_response()
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{packed_numbers, split_admission};

    #[test]
    fn the_admission_reply_carries_the_entry_only_when_it_was_read() {
        assert_eq!(
            split_admission(b"1 99 0 1000 -1", false),
            Some(([1, 99, 0, 1000, -1], None))
        );
        // Limited or revoked: nothing read, whatever was asked.
        assert_eq!(
            split_admission(b"0 0 5 1000 -1", true),
            Some(([0, 0, 5, 1000, -1], None))
        );
        assert_eq!(
            split_admission(b"1 99 0 1000 -1\n!", true),
            Some(([1, 99, 0, 1000, -1], Some(None)))
        );
        let reply = b"1 99 0 1000 7\n=12|=\"e\"|1:u{\"a\":\"\\n\"}\n";
        let (numbers, entry) = split_admission(reply, true).expect("valid reply");
        assert_eq!(numbers, [1, 99, 0, 1000, 7]);
        let range = entry.flatten().expect("an entry");
        assert_eq!(&reply[range], &b"12|=\"e\"|1:u{\"a\":\"\\n\"}\n"[..]);
        // The entry was not asked for, is marked wrongly, or follows a refusal.
        for (bad, read) in [
            (&b"1 99 0 1000 -1\n!"[..], false),
            (b"1 99 0 1000 -1\n", true),
            (b"1 99 0 1000 -1\n!x", true),
            (b"1 99 0 1000 -1\nx", true),
            (b"0 0 5 1000 -1\n!", true),
            (b"1 99 0 1000\n=x", true),
        ] {
            assert_eq!(split_admission(bad, read), None, "{bad:?}");
        }
    }

    #[test]
    fn the_admission_reply_has_exactly_five_integers() {
        assert_eq!(
            packed_numbers(b"1 99 0 1000 -1"),
            Some([1, 99, 0, 1000, -1])
        );
        assert_eq!(
            packed_numbers(b"-1 0 0 0 1795701389"),
            Some([-1, 0, 0, 0, 1_795_701_389])
        );
        assert_eq!(
            packed_numbers(b"-9223372036854775808 9223372036854775807 0 0 0"),
            Some([i64::MIN, i64::MAX, 0, 0, 0])
        );
        for bad in [
            &b""[..],
            b"1 2 3 4",
            b"1 2 3 4 5 6",
            b"1 2 x 4 5",
            b"1  2 3 4 5",
            b"\xff",
            b"- 2 3 4 5",
            b"+1 2 3 4 5",
            b"--1 2 3 4 5",
            b"1 2 3 4 99999999999999999999",
            b"1 2 3 4 9223372036854775808",
            b"1 2 3 4 -9223372036854775809",
        ] {
            assert_eq!(packed_numbers(bad), None, "{bad:?}");
        }
    }
}
