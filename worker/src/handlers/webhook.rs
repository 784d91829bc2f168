//! `webhook.deliver`: POSTs a JSON body to a URL, signed so the receiver can check it came from
//! us and is fresh.
//!
//! Payload: `{"url": "https://…", "body": <any JSON>}`.
//! Headers sent: `Content-Type: application/json`, `Webhook-Id: <job id>` (stable across
//! retries, for the receiver to drop duplicates: delivery is at least once), and
//! `Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`; the
//! timestamp inside the MAC lets receivers refuse replays.
//! Outcomes: 2xx completes; 5xx, 408, 429, timeouts and connection errors are retried with
//! backoff; any other status dead-letters at once (retrying a 4xx gives the same 4xx).

use std::time::Duration;

use aws_lc_rs::hmac;
use platform::queue::{ClaimedJob, JobContext};
use serde_json::{Value, json};

use super::{HandlerError, HandlerFuture, JobHandler};

pub const SIGNATURE_HEADER: &str = "Webhook-Signature";
pub const ID_HEADER: &str = "Webhook-Id";

pub struct Webhook {
    client: reqwest::Client,
    key: hmac::Key,
}

impl Webhook {
    pub fn new(secret: &[u8], timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent("scalableapp-worker")
            .build()?;
        Ok(Self {
            client,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }
}

/// `t=<t>,v1=<hex>` for `body` sent at unix time `t`.
pub fn signature(key: &hmac::Key, t: i64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// What a status code means for the job.
pub fn classify(status: reqwest::StatusCode) -> Result<(), HandlerError> {
    if status.is_success() {
        Ok(())
    } else if status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
    {
        Err(HandlerError::Retryable(format!(
            "receiver answered {status}"
        )))
    } else {
        Err(HandlerError::Permanent(format!(
            "receiver answered {status}"
        )))
    }
}

impl JobHandler for Webhook {
    fn handle<'a>(&'a self, job: &'a ClaimedJob, _ctx: &'a JobContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let url = job
                .payload
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| HandlerError::permanent("payload has no \"url\""))?;
            let url = reqwest::Url::parse(url).map_err(HandlerError::permanent)?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(HandlerError::permanent("url must be http(s)"));
            }
            let body = serde_json::to_vec(job.payload.get("body").unwrap_or(&Value::Null))
                .map_err(HandlerError::permanent)?;
            let t = jiff::Timestamp::now().as_second();
            let response = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(ID_HEADER, &job.id)
                .header(SIGNATURE_HEADER, signature(&self.key, t, &body))
                .body(body)
                .send()
                .await
                // Timeouts and connection failures: the receiver may be briefly down.
                .map_err(|e| HandlerError::retryable(format!("delivery failed: {e}")))?;
            let status = response.status();
            classify(status)?;
            Ok(json!({"status": status.as_u16()}))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_5xx_408_429_are_retried() {
        use reqwest::StatusCode as S;
        assert!(classify(S::NO_CONTENT).is_ok());
        for s in [
            S::INTERNAL_SERVER_ERROR,
            S::BAD_GATEWAY,
            S::REQUEST_TIMEOUT,
            S::TOO_MANY_REQUESTS,
        ] {
            assert!(
                matches!(classify(s), Err(HandlerError::Retryable(_))),
                "{s}"
            );
        }
        for s in [S::BAD_REQUEST, S::UNAUTHORIZED, S::NOT_FOUND, S::GONE] {
            assert!(
                matches!(classify(s), Err(HandlerError::Permanent(_))),
                "{s}"
            );
        }
    }

    #[test]
    fn signature_matches_an_independent_hmac() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"secret",
        //   b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest())'
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"secret");
        assert_eq!(
            signature(&key, 1700000000, b"{\"a\":1}"),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
