//! Optional per-queue rate limit shared by all workers: at most `max` job starts per `window`.
//! The limit lives in the queue's meta hash (so every worker obeys the same one, whatever its own
//! flags say) and a counter key that expires with the window. The claim script checks it before
//! popping, and when the window is full it returns how long until it reopens instead of a job.

use std::time::Duration;

use crate::queue::Queue;
use crate::queue::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u64,
    pub window: Duration,
}

/// `rate_allow(meta, counter, wanted)`: returns (allowed, retry_after_ms, window_ms);
/// allowed = 0 with retry_after when the window is full.
pub(crate) const RATE_LUA: &str = r#"
local function rate_allow(meta, counter, wanted)
  local limit = redis.call('HMGET', meta, 'rate_max', 'rate_window_ms')
  local rmax = tonumber(limit[1])
  if not rmax then return wanted, 0, 0 end
  local window = tonumber(limit[2])
  local used = tonumber(redis.call('GET', counter) or '0')
  if used >= rmax then
    local ttl = redis.call('PTTL', counter)
    if ttl < 0 then ttl = window end
    return 0, ttl, window
  end
  return math.min(wanted, rmax - used), 0, window
end

local function rate_take(counter, n, window)
  if window > 0 and n > 0 then
    if redis.call('INCRBY', counter, n) == n then redis.call('PEXPIRE', counter, window) end
  end
end
"#;

impl Queue {
    /// Sets (or with `None` removes) the queue's rate limit for every worker.
    pub async fn set_rate_limit(&self, limit: Option<RateLimit>) -> Result<()> {
        let meta = self.keys().meta();
        let rate = self.keys().rate();
        self.handle()
            .run(|mut conn| {
                let mut pipe = redis::pipe();
                match limit {
                    Some(l) => pipe.hset_multiple(
                        &meta,
                        &[
                            ("rate_max", l.max),
                            ("rate_window_ms", l.window.as_millis().max(1) as u64),
                        ],
                    ),
                    None => pipe.hdel(&meta, &["rate_max", "rate_window_ms"]),
                };
                pipe.del(&rate);
                async move { pipe.query_async::<()>(&mut conn).await }
            })
            .await?;
        Ok(())
    }

    pub async fn rate_limit(&self) -> Result<Option<RateLimit>> {
        let meta = self.keys().meta();
        let (max, window): (Option<u64>, Option<u64>) = self
            .handle()
            .run(|mut conn| {
                let cmd = redis::cmd("HMGET")
                    .arg(&meta)
                    .arg("rate_max")
                    .arg("rate_window_ms")
                    .clone();
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        Ok(max.zip(window).map(|(max, w)| RateLimit {
            max,
            window: Duration::from_millis(w),
        }))
    }
}
