//! Retention: completed and dead-lettered records are kept by age and by count, so Redis memory
//! stays bounded however many jobs pass through. Trimming happens inside the scripts that add to
//! those sets, at most 100 records per call, so no call ever does unbounded work and the sets
//! still converge to the bound (each call adds one record and may remove up to 100).

use std::time::Duration;

/// How many finished records to keep, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub completed_max_count: u64,
    pub completed_max_age: Duration,
    pub dead_max_count: u64,
    pub dead_max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            completed_max_count: 10_000,
            completed_max_age: Duration::from_secs(24 * 3600),
            dead_max_count: 100_000,
            dead_max_age: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

impl Retention {
    pub(crate) fn completed_args(&self) -> [String; 2] {
        [
            self.completed_max_count.to_string(),
            self.completed_max_age.as_millis().to_string(),
        ]
    }

    pub(crate) fn dead_args(&self) -> [String; 2] {
        [
            self.dead_max_count.to_string(),
            self.dead_max_age.as_millis().to_string(),
        ]
    }
}

/// `trim(zset, job_prefix, max_count, max_age_ms, now)`: deletes the oldest records beyond the
/// bounds, with their job hashes.
pub(crate) const TRIM_LUA: &str = r#"
local function trim(zkey, prefix, keep, age, now)
  local function drop(ids)
    if #ids == 0 then return end
    for _, id in ipairs(ids) do redis.call('DEL', prefix .. id) end
    redis.call('ZREM', zkey, unpack(ids))
  end
  if age > 0 then
    drop(redis.call('ZRANGEBYSCORE', zkey, '-inf', now - age, 'LIMIT', 0, 100))
  end
  local excess = redis.call('ZCARD', zkey) - keep
  if excess > 0 then
    drop(redis.call('ZRANGE', zkey, 0, math.min(excess, 100) - 1))
  end
end
"#;
