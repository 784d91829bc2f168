//! Retries: a failed attempt goes back through the delayed set after an exponential backoff with
//! jitter, until the job's `max_attempts` is used up; then it is dead-lettered. The delay is
//! drawn here (the script only decides retry-or-dead from the attempt count it owns).

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::queue::Queue;
use crate::queue::error::{Result, protocol};
use crate::queue::job::ClaimedJob;
use crate::queue::retention::TRIM_LUA;
use crate::queue::script::{PRELUDE, build, eval};

/// Exponential backoff: attempt n waits about `base * 2^(n-1)`, capped at `max`, with "equal
/// jitter" (half fixed, half random) so a burst of failures spreads out yet never retries at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
        }
    }
}

impl Backoff {
    /// The un-jittered delay after failed attempt `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay to use: in `[ceiling/2, ceiling]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let jitter_ms = fastrand::u64(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    Retrying {
        delay: Duration,
    },
    DeadLettered,
    /// The lease had expired and the job moved on; this report was ignored.
    LeaseLost,
}

static FAIL: LazyLock<Script> = LazyLock::new(|| build(&[PRELUDE, TRIM_LUA, FAIL_BODY]));

const FAIL_BODY: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'max_attempts')
if f[1] ~= 'active' or f[2] ~= ARGV[2] then return 0 end
local now = now_ms()
redis.call('ZREM', KEYS[2], ARGV[1])
local delay = tonumber(ARGV[4])
if delay >= 0 and tonumber(f[2]) < tonumber(f[3]) then
  redis.call('HSET', KEYS[1], 'state', 'delayed', 'last_error', ARGV[3], 'run_at', now + delay)
  redis.call('ZADD', KEYS[3], now + delay, ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], 'state', 'dead', 'last_error', ARGV[3], 'finished_at', now)
redis.call('ZADD', KEYS[4], now, ARGV[1])
trim(KEYS[4], ARGV[7], tonumber(ARGV[5]), tonumber(ARGV[6]), now)
return 2
"#;

impl Queue {
    /// Reports a failed attempt. `retryable = false` dead-letters at once (a permanent error
    /// such as a 4xx from a webhook).
    pub async fn fail(&self, job: &ClaimedJob, error: &str, retryable: bool) -> Result<Failed> {
        let delay = job.backoff.delay(job.attempt);
        let delay_ms = if retryable {
            delay.as_millis().to_string()
        } else {
            "-1".to_string()
        };
        let keys = self.keys();
        let [keep, age] = self.config().retention.dead_args();
        let code: i64 = eval(
            self.handle(),
            &FAIL,
            &[
                keys.job(&job.id),
                keys.active(),
                keys.delayed(),
                keys.dead(),
            ],
            &[
                job.id.clone(),
                job.attempt.to_string(),
                truncate(error, 4096),
                delay_ms,
                keep,
                age,
                keys.job_prefix(),
            ],
        )
        .await?;
        match code {
            0 => Ok(Failed::LeaseLost),
            1 => Ok(Failed::Retrying { delay }),
            2 => Ok(Failed::DeadLettered),
            other => Err(protocol("fail", other)),
        }
    }
}

/// Error messages are stored in the record; a handler returning a whole HTML page must not
/// bloat Redis.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let ceilings: Vec<u128> = (1..=6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        for n in 1..=6 {
            for _ in 0..200 {
                let d = b.delay(n);
                assert!(d >= b.ceiling(n) / 2 && d <= b.ceiling(n), "{n}: {d:?}");
            }
        }
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
