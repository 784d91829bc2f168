//! Delayed jobs (and retries waiting out their backoff) sit in a sorted set scored by the time
//! they become ready. There is no timer process: every claim first promotes what is due (up to
//! 1000 per call) into the wait list of the job's priority, and an idle worker sleeps no longer
//! than until the next due time, which the claim script returns. A job is never started before
//! its time because the comparison uses the Redis server's clock.

/// `promote_due(delayed, wait_keys, prefix, now)`: moves due jobs to their wait lists; returns
/// how many.
pub(crate) const PROMOTE_LUA: &str = r#"
local function promote_due(delayed, waits, prefix, now)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    local p = tonumber(redis.call('HGET', prefix .. id, 'priority'))
    if p then
      redis.call('HSET', prefix .. id, 'state', 'waiting', 'ready_at', now)
      redis.call('LPUSH', waits[p + 1], id)
    end
  end
  return #due
end

-- Milliseconds until the next delayed job is due, or -1 when there is none.
local function next_due_in(delayed, now)
  local nxt = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if nxt[2] then return math.max(0, tonumber(nxt[2]) - now) end
  return -1
end
"#;
