//! Queue depth and backlog age, read in one script: what `worker queue stats` prints and what the
//! metrics gauges (alerts, backlog-based autoscaling) are set from.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::queue::Queue;
use crate::queue::error::{Result, protocol};
use crate::queue::priority::Priority;
use crate::queue::script::{PRELUDE, build, eval};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Ready jobs per priority, highest first.
    pub waiting_by_priority: [u64; Priority::COUNT],
    pub waiting: u64,
    pub delayed: u64,
    pub active: u64,
    pub completed: u64,
    pub dead: u64,
    /// How long the oldest ready job has waited (each list is FIFO, so its tail is its oldest).
    pub oldest_waiting_age: Option<Duration>,
}

// KEYS: wait lists (4), delayed, active, completed, dead. ARGV: job prefix.
static STATS: LazyLock<Script> = LazyLock::new(|| {
    build(&[
        PRELUDE,
        r#"
local now = now_ms()
local out = {}
local oldest = -1
for p = 1, 4 do
  table.insert(out, redis.call('LLEN', KEYS[p]))
  local id = redis.call('LINDEX', KEYS[p], -1)
  if id then
    local t = tonumber(redis.call('HGET', ARGV[1] .. id, 'ready_at'))
    if t and (oldest < 0 or t < oldest) then oldest = t end
  end
end
for i = 5, 8 do table.insert(out, redis.call('ZCARD', KEYS[i])) end
if oldest >= 0 then table.insert(out, math.max(0, now - oldest)) else table.insert(out, -1) end
return out
"#,
    ])
});

impl Queue {
    pub async fn stats(&self) -> Result<QueueStats> {
        let k = self.keys();
        let [w0, w1, w2, w3] = k.wait_all();
        let keys = [
            w0,
            w1,
            w2,
            w3,
            k.delayed(),
            k.active(),
            k.completed(),
            k.dead(),
        ];
        let v: Vec<i64> = eval(self.handle(), &STATS, &keys, &[k.job_prefix()]).await?;
        let [p0, p1, p2, p3, delayed, active, completed, dead, age] = v[..] else {
            return Err(protocol("stats", v));
        };
        let n = |x: i64| x.max(0) as u64;
        let by_priority = [n(p0), n(p1), n(p2), n(p3)];
        Ok(QueueStats {
            waiting_by_priority: by_priority,
            waiting: by_priority.iter().sum(),
            delayed: n(delayed),
            active: n(active),
            completed: n(completed),
            dead: n(dead),
            oldest_waiting_age: (age >= 0).then(|| Duration::from_millis(age as u64)),
        })
    }
}
