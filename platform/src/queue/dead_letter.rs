//! The dead-letter queue: jobs that used up their attempts (or failed permanently) stay in a
//! sorted set by time with their full record (last error included) until an operator re-drives
//! them or retention trims them. Re-driving puts a job back at the end of its wait list with a
//! fresh attempt budget.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Script;

use crate::queue::Queue;
use crate::queue::error::Result;
use crate::queue::job::JobRecord;
use crate::queue::script::{PRELUDE, build, eval};

// KEYS: dead, wait lists (4), signal. ARGV: job prefix, limit, then ids (none = oldest `limit`).
static REDRIVE: LazyLock<Script> = LazyLock::new(|| {
    build(&[
        PRELUDE,
        r#"
local now = now_ms()
local ids = {}
if #ARGV > 2 then
  for i = 3, #ARGV do table.insert(ids, ARGV[i]) end
else
  ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
end
local n = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local key = ARGV[1] .. id
    local p = tonumber(redis.call('HGET', key, 'priority'))
    if p then
      redis.call('HSET', key, 'state', 'waiting', 'attempts', 0, 'ready_at', now)
      redis.call('HDEL', key, 'finished_at')
      redis.call('LPUSH', KEYS[2 + p], id)
      redis.call('LPUSH', KEYS[6], 1)
      n = n + 1
    end
  end
end
return n
"#,
    ])
});

/// Which dead letters to re-drive.
#[derive(Debug, Clone)]
pub enum Redrive {
    Ids(Vec<String>),
    /// The oldest `n`.
    Oldest(usize),
}

impl Queue {
    /// Dead letters, newest first.
    pub async fn dead_letters(&self, offset: usize, limit: usize) -> Result<Vec<JobRecord>> {
        let dead = self.keys().dead();
        let ids: Vec<String> = self
            .handle()
            .run(|mut conn| {
                let cmd = redis::cmd("ZREVRANGE")
                    .arg(&dead)
                    .arg(offset)
                    .arg((offset + limit).saturating_sub(1))
                    .clone();
                async move {
                    if limit == 0 {
                        return Ok(Vec::new());
                    }
                    cmd.query_async(&mut conn).await
                }
            })
            .await?;
        self.records(&ids).await
    }

    /// Moves dead letters back to their wait lists. Returns how many moved.
    pub async fn redrive(&self, which: Redrive) -> Result<u64> {
        let k = self.keys();
        let [w0, w1, w2, w3] = k.wait_all();
        let keys = [k.dead(), w0, w1, w2, w3, k.signal()];
        let mut args = vec![k.job_prefix()];
        match which {
            Redrive::Ids(ids) if ids.is_empty() => return Ok(0),
            Redrive::Ids(ids) => {
                args.push("0".into());
                args.extend(ids);
            }
            Redrive::Oldest(0) => return Ok(0),
            Redrive::Oldest(n) => args.push(n.to_string()),
        }
        Ok(eval(self.handle(), &REDRIVE, &keys, &args).await?)
    }

    /// The records of `ids` that still exist, in order.
    pub async fn records(&self, ids: &[String]) -> Result<Vec<JobRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys().job(id)).collect();
        let hashes: Vec<HashMap<String, String>> = self
            .handle()
            .run(|mut conn| {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.hgetall(k);
                }
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        let mut out = Vec::with_capacity(hashes.len());
        for h in hashes {
            if let Some(r) = JobRecord::from_hash(h)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// One job's record, if it exists (retention may have removed it).
    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        Ok(self.records(&[id.to_string()]).await?.pop())
    }
}
