//! Running the queue's Lua scripts. Each state change is one script, so it is atomic and costs
//! one round trip; scripts read the time from the Redis server (`TIME`), so workers with skewed
//! clocks still agree on leases and delays. Redis 7 replicates scripts by their effects, which
//! makes `TIME` safe to use before writes.

use redis::{FromRedisValue, Script};

use crate::queue::connection::RedisHandle;

/// Shared by every script: the server's clock in milliseconds.
pub(crate) const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// Builds a script from Lua fragments (the prelude, helpers of other modules, the body).
pub(crate) fn build(parts: &[&str]) -> Script {
    Script::new(&parts.concat())
}

/// Runs `script` through the handle (so a failover is followed). `EVALSHA` falls back to loading
/// the script, which matters after a failover: the new master's script cache is empty.
pub(crate) async fn eval<T: FromRedisValue>(
    handle: &RedisHandle,
    script: &Script,
    keys: &[String],
    args: &[String],
) -> redis::RedisResult<T> {
    handle
        .run(|mut conn| {
            let mut inv = script.prepare_invoke();
            for k in keys {
                inv.key(k);
            }
            for a in args {
                inv.arg(a);
            }
            async move { inv.invoke_async(&mut conn).await }
        })
        .await
}
