//! Leases: how a worker holds a job. Claiming moves a job id from a wait list into the `active`
//! sorted set scored by lease expiry and bumps the job's `attempts`, which doubles as the lease
//! token. The worker renews all its leases in one heartbeat call; every acknowledgement
//! (complete, fail, progress, hand-back) carries the attempt number and is refused when the
//! record moved on. Any worker reclaims expired leases: the job goes back to the front of its
//! wait list (or to the dead-letter queue when that was its last attempt). This is what makes
//! delivery at-least-once: a job leaves `active` only by an acknowledgement or by reclaim.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};
use serde_json::Value as Json;

use crate::queue::Queue;
use crate::queue::delayed::PROMOTE_LUA;
use crate::queue::error::{Result, protocol};
use crate::queue::job::ClaimedJob;
use crate::queue::priority::Priority;
use crate::queue::rate_limit::RATE_LUA;
use crate::queue::retention::TRIM_LUA;
use crate::queue::retry::{Backoff, truncate};
use crate::queue::script::{PRELUDE, build, eval};

/// What a claim returned.
#[derive(Debug)]
pub enum Claim {
    Jobs(Vec<ClaimedJob>),
    /// Nothing ready; the next delayed job is due in this long (if any).
    Empty {
        next_due: Option<Duration>,
    },
    /// The queue's rate limit is used up for this long.
    RateLimited {
        retry_after: Duration,
    },
}

// `claim(max, lease ms, worker id, job prefix, now)`. KEYS[1..9] must be: wait lists (4,
// highest first), delayed, active, meta, rate, signal (both claiming scripts lay them out so).
const CLAIM_LUA: &str = r#"
local function claim(max, lease_ms, worker, prefix, now)
  local waits = {KEYS[1], KEYS[2], KEYS[3], KEYS[4]}
  promote_due(KEYS[5], waits, prefix, now)
  local n, retry_after, window = rate_allow(KEYS[7], KEYS[8], max)
  if n == 0 then return {-1, retry_after} end
  local out = {}
  local lease_until = now + lease_ms
  for p = 1, 4 do
    if #out >= n then break end
    local ids = redis.call('RPOP', waits[p], n - #out)
    if ids then
      for _, id in ipairs(ids) do
        local key = prefix .. id
        local f = redis.call('HMGET', key, 'type', 'payload', 'max_attempts', 'backoff_base_ms',
          'backoff_max_ms', 'traceparent', 'ready_at', 'priority')
        if f[1] then
          local attempt = redis.call('HINCRBY', key, 'attempts', 1)
          redis.call('HSET', key, 'state', 'active', 'started_at', now, 'worker', worker)
          redis.call('ZADD', KEYS[6], lease_until, id)
          table.insert(out, {id, attempt, f[1], f[2], f[3], f[4], f[5], f[6], f[7] or '0', f[8], now})
        end
      end
    end
  end
  rate_take(KEYS[8], #out, window)
  if #out == 0 then
    redis.call('DEL', KEYS[9])
    return {0, next_due_in(KEYS[5], now)}
  end
  return {1, out}
end
"#;

// ARGV: max jobs, lease ms, worker id, job key prefix.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    build(&[
        PRELUDE,
        PROMOTE_LUA,
        RATE_LUA,
        CLAIM_LUA,
        "return claim(tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], now_ms())",
    ])
});

// Completion of one job and the claim of the next in one round trip (what keeps a busy worker at
// one script per job). KEYS: the claim keys (9), then job, completed.
// ARGV: the claim args (4), then id, attempt, result, keep count, keep age ms.
// Returns {acknowledged 0/1, claim reply}.
static COMPLETE_AND_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    build(&[
        PRELUDE,
        PROMOTE_LUA,
        RATE_LUA,
        TRIM_LUA,
        CLAIM_LUA,
        r#"
local now = now_ms()
local acked = 0
local f = redis.call('HMGET', KEYS[10], 'state', 'attempts')
if f[2] == ARGV[6] then
  if f[1] == 'completed' then
    acked = 1
  elseif f[1] == 'active' then
    redis.call('ZREM', KEYS[6], ARGV[5])
    redis.call('HSET', KEYS[10], 'state', 'completed', 'result', ARGV[7], 'finished_at', now)
    redis.call('ZADD', KEYS[11], now, ARGV[5])
    trim(KEYS[11], ARGV[4], tonumber(ARGV[8]), tonumber(ARGV[9]), now)
    acked = 1
  end
end
return {acked, claim(tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], now)}
"#,
    ])
});

// KEYS: active. ARGV: lease ms, job prefix, then (id, attempt) pairs. Returns ids whose lease
// is gone.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    build(&[
        PRELUDE,
        r#"
local now = now_ms()
local lost = {}
for i = 3, #ARGV, 2 do
  local f = redis.call('HMGET', ARGV[2] .. ARGV[i], 'state', 'attempts')
  if f[1] == 'active' and f[2] == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"#,
    ])
});

// KEYS: active, wait lists (4), dead, signal. ARGV: job prefix, limit, dead keep, dead age ms.
// Returns {requeued, dead-lettered}.
static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    build(&[
        PRELUDE,
        TRIM_LUA,
        r#"
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local requeued, dead = 0, 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[1] .. id
  local f = redis.call('HMGET', key, 'attempts', 'max_attempts', 'priority')
  if f[3] then
    local err = 'lease expired on attempt ' .. f[1] .. ' (worker lost or stalled)'
    if tonumber(f[1]) >= tonumber(f[2]) then
      redis.call('HSET', key, 'state', 'dead', 'last_error', err, 'finished_at', now)
      redis.call('ZADD', KEYS[6], now, id)
      dead = dead + 1
    else
      redis.call('HSET', key, 'state', 'waiting', 'last_error', err, 'ready_at', now)
      redis.call('RPUSH', KEYS[2 + tonumber(f[3])], id)
      redis.call('LPUSH', KEYS[7], 1)
      requeued = requeued + 1
    end
  end
end
if dead > 0 then trim(KEYS[6], ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), now) end
return {requeued, dead}
"#,
    ])
});

// KEYS: active, wait lists (4), signal. ARGV: job prefix, then (id, attempt) pairs.
// Puts still-leased jobs back at the front of their list without counting the attempt.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    build(&[
        PRELUDE,
        r#"
local n = 0
for i = 2, #ARGV, 2 do
  local key = ARGV[1] .. ARGV[i]
  local f = redis.call('HMGET', key, 'state', 'attempts', 'priority')
  if f[1] == 'active' and f[2] == ARGV[i + 1] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HINCRBY', key, 'attempts', -1)
    redis.call('HSET', key, 'state', 'waiting')
    redis.call('RPUSH', KEYS[2 + tonumber(f[3])], ARGV[i])
    redis.call('LPUSH', KEYS[6], 1)
    n = n + 1
  end
end
return n
"#,
    ])
});

// KEYS: job, active, completed. ARGV: id, attempt, result, keep count, keep age ms, job prefix.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    build(&[
        PRELUDE,
        TRIM_LUA,
        r#"
local f = redis.call('HMGET', KEYS[1], 'state', 'attempts')
if f[2] ~= ARGV[2] then return 0 end
if f[1] == 'completed' then return 1 end
if f[1] ~= 'active' then return 0 end
local now = now_ms()
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'completed', 'result', ARGV[3], 'finished_at', now)
redis.call('ZADD', KEYS[3], now, ARGV[1])
trim(KEYS[3], ARGV[6], tonumber(ARGV[4]), tonumber(ARGV[5]), now)
return 1
"#,
    ])
});

// KEYS: job. ARGV: attempt, progress.
static PROGRESS: LazyLock<Script> = LazyLock::new(|| {
    build(&[r#"
local f = redis.call('HMGET', KEYS[1], 'state', 'attempts')
if f[1] ~= 'active' or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
return 1
"#])
});

impl Queue {
    /// Claims up to `max` ready jobs for `worker`, each leased for `lease`.
    pub async fn claim(&self, worker: &str, max: usize, lease: Duration) -> Result<Claim> {
        let k = self.keys();
        let [w0, w1, w2, w3] = k.wait_all();
        let keys = [
            w0,
            w1,
            w2,
            w3,
            k.delayed(),
            k.active(),
            k.meta(),
            k.rate(),
            k.signal(),
        ];
        let args = [
            max.max(1).to_string(),
            lease.as_millis().max(1).to_string(),
            worker.to_string(),
            k.job_prefix(),
        ];
        let reply: Value = eval(self.handle(), &CLAIM, &keys, &args).await?;
        parse_claim(reply)
    }

    /// Acknowledges success and claims up to `max` next jobs in the same call. Returns whether
    /// the acknowledgement was taken (false: lease lost) and the claim.
    pub async fn complete_and_claim(
        &self,
        job: &ClaimedJob,
        result: &Json,
        worker: &str,
        max: usize,
        lease: Duration,
    ) -> Result<(bool, Claim)> {
        let k = self.keys();
        let [w0, w1, w2, w3] = k.wait_all();
        let [keep, age] = self.config().retention.completed_args();
        let keys = [
            w0,
            w1,
            w2,
            w3,
            k.delayed(),
            k.active(),
            k.meta(),
            k.rate(),
            k.signal(),
            k.job(&job.id),
            k.completed(),
        ];
        let args = [
            max.max(1).to_string(),
            lease.as_millis().max(1).to_string(),
            worker.to_string(),
            k.job_prefix(),
            job.id.clone(),
            job.attempt.to_string(),
            truncate(&serde_json::to_string(result)?, 1 << 20),
            keep,
            age,
        ];
        let reply: Value = eval(self.handle(), &COMPLETE_AND_CLAIM, &keys, &args).await?;
        match reply {
            Value::Array(mut parts) if parts.len() == 2 => {
                let claim = parse_claim(parts.pop().unwrap_or(Value::Nil))?;
                let acked = parts.first().and_then(as_i64) == Some(1);
                Ok((acked, claim))
            }
            other => Err(protocol("complete and claim", other)),
        }
    }

    /// Renews the leases of `jobs` (id, attempt). Returns the ids whose lease was lost.
    pub async fn heartbeat(&self, jobs: &[(String, u32)], lease: Duration) -> Result<Vec<String>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![
            lease.as_millis().max(1).to_string(),
            self.keys().job_prefix(),
        ];
        for (id, attempt) in jobs {
            args.push(id.clone());
            args.push(attempt.to_string());
        }
        Ok(eval(self.handle(), &HEARTBEAT, &[self.keys().active()], &args).await?)
    }

    /// Returns expired leases to their wait list (or dead-letters them after the last attempt).
    /// Returns (requeued, dead-lettered).
    pub async fn reclaim_expired(&self, limit: usize) -> Result<(u64, u64)> {
        let k = self.keys();
        let [w0, w1, w2, w3] = k.wait_all();
        let [keep, age] = self.config().retention.dead_args();
        let keys = [k.active(), w0, w1, w2, w3, k.dead(), k.signal()];
        let args = [k.job_prefix(), limit.max(1).to_string(), keep, age];
        Ok(eval(self.handle(), &RECLAIM, &keys, &args).await?)
    }

    /// Hands jobs back at once (shutdown): they go to the front of their list, and the attempt
    /// does not count. Returns how many were still ours to hand back.
    pub async fn release(&self, jobs: &[(String, u32)]) -> Result<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let k = self.keys();
        let [w0, w1, w2, w3] = k.wait_all();
        let keys = [k.active(), w0, w1, w2, w3, k.signal()];
        let mut args = vec![k.job_prefix()];
        for (id, attempt) in jobs {
            args.push(id.clone());
            args.push(attempt.to_string());
        }
        Ok(eval(self.handle(), &RELEASE, &keys, &args).await?)
    }

    /// Acknowledges success. Returns false when the lease was lost (someone else owns the job
    /// now, and this result was not recorded).
    pub async fn complete(&self, job: &ClaimedJob, result: &Json) -> Result<bool> {
        let k = self.keys();
        let [keep, age] = self.config().retention.completed_args();
        let keys = [k.job(&job.id), k.active(), k.completed()];
        let args = [
            job.id.clone(),
            job.attempt.to_string(),
            truncate(&serde_json::to_string(result)?, 1 << 20),
            keep,
            age,
            k.job_prefix(),
        ];
        let done: i64 = eval(self.handle(), &COMPLETE, &keys, &args).await?;
        Ok(done == 1)
    }

    /// Records progress of a running attempt. Returns false when the lease was lost.
    pub async fn progress(&self, job: &ClaimedJob, progress: &Json) -> Result<bool> {
        let args = [job.attempt.to_string(), serde_json::to_string(progress)?];
        let done: i64 = eval(self.handle(), &PROGRESS, &[self.keys().job(&job.id)], &args).await?;
        Ok(done == 1)
    }
}

fn parse_claim(reply: Value) -> Result<Claim> {
    let Value::Array(parts) = reply else {
        return Err(protocol("claim", reply));
    };
    let code = parts.first().and_then(as_i64);
    let ms = |v: Option<&Value>| v.and_then(as_i64);
    match code {
        Some(-1) => Ok(Claim::RateLimited {
            retry_after: Duration::from_millis(ms(parts.get(1)).unwrap_or(100).max(1) as u64),
        }),
        Some(0) => Ok(Claim::Empty {
            next_due: ms(parts.get(1))
                .filter(|m| *m >= 0)
                .map(|m| Duration::from_millis(m as u64)),
        }),
        Some(1) => {
            let Some(Value::Array(rows)) = parts.get(1) else {
                return Err(protocol("claim", parts));
            };
            rows.iter()
                .map(parse_job)
                .collect::<Result<_>>()
                .map(Claim::Jobs)
        }
        _ => Err(protocol("claim", parts)),
    }
}

fn parse_job(row: &Value) -> Result<ClaimedJob> {
    let Value::Array(f) = row else {
        return Err(protocol("claimed job", row));
    };
    let s = |i: usize| f.get(i).and_then(as_string).unwrap_or_default();
    let n = |i: usize| f.get(i).and_then(as_i64).unwrap_or(0);
    let payload = s(3);
    let traceparent = s(7);
    Ok(ClaimedJob {
        id: s(0),
        attempt: n(1).max(0) as u32,
        job_type: s(2),
        payload: if payload.is_empty() {
            Json::Null
        } else {
            serde_json::from_str(&payload)?
        },
        max_attempts: n(4).max(1) as u32,
        backoff: Backoff {
            base: Duration::from_millis(n(5).max(0) as u64),
            max: Duration::from_millis(n(6).max(0) as u64),
        },
        traceparent: (!traceparent.is_empty()).then_some(traceparent),
        ready_at_ms: n(8),
        priority: u8::try_from(n(9))
            .ok()
            .and_then(Priority::from_rank)
            .unwrap_or_default(),
        started_at_ms: n(10),
    })
}

pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}
