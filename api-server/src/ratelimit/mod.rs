//! Distributed rate limiting: GCRA in Lua scripts on Redis's clock (`TIME`), so every replica
//! shares one exact budget per key and their clocks do not matter. An authenticated request is
//! admitted by the `admission` module (revocation time, decision and cache read, batched per
//! lane); unauthenticated requests are limited by client IP with the plain `GCRA` script.
//!
//! GCRA stores one number per key (the theoretical arrival time), so the state is one small
//! string whatever the limit, and a burst of `limit` requests is allowed at once, then one per
//! `window / limit`. Headers follow the IETF RateLimit fields draft (`RateLimit-Policy`,
//! `RateLimit`); a refusal is 429 with `Retry-After` and a problem body.

mod admission;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::FailMode;
use crate::observability::Metrics;
use crate::problem::Problem;
use crate::redis::Redis;
use crate::state::AppState;

pub use admission::{Admission, AdmissionKeys};
use admission::{Admissions, Rate};

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- Whole microseconds keep the arithmetic exact in Lua's doubles. The emission interval comes
-- from the client (`admission::Rate`), as for the admission script.
local period = tonumber(ARGV[1])
local emission = tonumber(ARGV[2])
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
    admissions: Arc<Admissions>,
    rate: Rate,
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
        let rate = Rate::new(limit, window_seconds);
        Self {
            admissions: Arc::new(Admissions::new(redis.clone(), rate)),
            rate,
            redis,
            script: redis::Script::new(GCRA),
            limit,
            window_seconds,
            fail,
            metrics,
            policy,
        }
    }

    /// One atomic decision for the Redis key `redis_key` (`ratelimit:...`).
    pub async fn check(&self, redis_key: &str) -> Result<Decision, redis::RedisError> {
        let Rate {
            period_us,
            emission_us,
        } = self.rate;
        let script = &self.script;
        let reply: Vec<i64> = self
            .redis
            .call("ratelimit", |mut c| async move {
                script
                    .key(redis_key)
                    .arg(period_us)
                    .arg(emission_us)
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

    /// The revocation lookup and the rate-limit decision of an authenticated request, and,
    /// if it is allowed, the read of its cache entry: one script call, shared with the other
    /// admissions of the same turn of the lane (see the `admission` module).
    pub async fn admit(
        &self,
        keys: AdmissionKeys,
        auth_time: i64,
    ) -> Result<Admission, redis::RedisError> {
        self.admissions.admit(keys, auth_time).await
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
