//! The admission of authenticated requests: the caller's revocation time, the GCRA decision on
//! the caller's budget and, for a document GET that is allowed, the document's cache entry. The
//! admissions a lane starts in one turn of its runtime go to Redis together, as one call of one
//! script, which handles them one after another: as exact as a call each, since nothing runs
//! between them.
//!
//! Why batches: a script call has a fixed cost in Redis (EVALSHA, the script's set-up, `TIME`,
//! reading the command and writing the reply) of about 3 µs of the 5.6 µs an admission took
//! alone, and a fixed cost in the client (encoding, the multiplexed connection's hand-over, the
//! reply's parse). Under load a lane starts several admissions per turn and they share it; a
//! lone request waits for nothing but the rest of its own turn.
//!
//! The script formats no number per admission (`string.format` cost about 0.3 µs each in Redis),
//! only each budget's new time, which it writes once per call however many of the call's
//! admissions spent it. It
//! replies with Redis's time (`"<seconds> <micros>"`), then one string per admission:
//! `"<code> <stored tat> <stored revocation>"` as it read them (`-` when absent), then, when
//! the entry was asked for and the request is allowed, `"\n="` and the entry, or `"\n!"` when
//! it does not exist. `code` is 1 (allowed), 0 (limited) or -1 (revoked: no budget spent). The
//! client follows each budget's theoretical arrival time through the call's admissions, as the
//! script did, to state the RateLimit fields.

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use redis::RedisError;
use tokio::sync::oneshot;

use super::Decision;
use crate::lanes;
use crate::redis::Redis;

/// KEYS, per admission: its budget, its revocation time and, if asked for, its cache entry.
/// ARGV: the emission interval (µs), the period (µs), the budgets' TTL (ms), then, per
/// admission, its token's `auth_time` and how many keys it has (2 or 3). Stored times are
/// whole microseconds, exact in Lua's doubles; a budget lives a period past its last allowed
/// request, as long as any of its state can matter.
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local emission, period, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local replies = {t[1] .. ' ' .. t[2]}
local tats, spent = {}, {}
local k = 1
for i = 4, #ARGV, 2 do
  local n = tonumber(ARGV[i + 1])
  local budget = KEYS[k]
  local v = redis.call('MGET', unpack(KEYS, k, k + n - 1))
  local read = (v[1] or '-') .. ' ' .. (v[2] or '-')
  local revoked = tonumber(v[2])
  if revoked and revoked >= tonumber(ARGV[i]) then
    replies[#replies + 1] = '-1 ' .. read
  else
    local tat = tats[budget] or math.max(tonumber(v[1]) or now, now)
    if tat + emission - period > now then
      replies[#replies + 1] = '0 ' .. read
    else
      if not tats[budget] then spent[#spent + 1] = budget end
      tats[budget] = tat + emission
      local reply = '1 ' .. read
      if n == 3 then
        if v[3] then reply = reply .. '\n=' .. v[3] else reply = reply .. '\n!' end
      end
      replies[#replies + 1] = reply
    end
  end
  k = k + n
end
for _, budget in ipairs(spent) do
  redis.call('SET', budget, string.format('%d', tats[budget]), 'PX', ttl)
end
return replies
"#;

/// At most this many admissions per script call: a call blocks Redis while it runs (about
/// 2.5 µs per admission), and a turn that starts more sends several calls at once.
const MAX_BATCH: usize = 64;

/// What one admission decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// `None` when the token is revoked (no budget was spent).
    pub decision: Option<Decision>,
    pub revoked_at: Option<i64>,
    /// The cache key asked for and its entry (`None` when the key does not exist), when the
    /// request was allowed.
    pub cached: Option<(String, Option<Bytes>)>,
}

/// The Redis keys of one admission.
#[derive(Debug)]
pub struct AdmissionKeys {
    /// The caller's budget (see [`super::uid_key`]).
    pub budget: String,
    /// The caller's revocation time (see [`crate::auth::revocation::key`]).
    pub revocation: String,
    /// The cache entry to read when the request is allowed.
    pub cache: Option<String>,
}

/// The GCRA parameters, in microseconds, that the script and the reading of its replies share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rate {
    pub emission_us: i64,
    pub period_us: i64,
}

impl Rate {
    /// `limit` requests per `window_seconds`. The emission interval is floored, which never lets
    /// more than `limit` through in one burst for windows of a second or more, and at least
    /// 1 µs (a limit above one per µs would make it 0). Both scripts take it from here.
    pub fn new(limit: u32, window_seconds: u32) -> Self {
        let period_us = i64::from(window_seconds.max(1)) * 1_000_000;
        Self {
            emission_us: (period_us / i64::from(limit.max(1))).max(1),
            period_us,
        }
    }

    /// The decision an admission's reply states, at Redis time `now` (µs) with theoretical
    /// arrival time `tat`: the new one when allowed, the stored one when limited.
    fn decision(self, allowed: bool, now: i64, tat: i64) -> Decision {
        // Saturating: a stored time is whatever the key holds.
        let ms = |us: i64| (us.max(0) as u64).div_ceil(1000);
        let ahead = tat.saturating_sub(now);
        if allowed {
            Decision {
                allowed,
                remaining: (self.period_us.saturating_sub(ahead).max(0) / self.emission_us) as u64,
                retry_after_ms: 0,
                reset_ms: ms(ahead),
            }
        } else {
            Decision {
                allowed,
                remaining: 0,
                retry_after_ms: ms(ahead
                    .saturating_add(self.emission_us)
                    .saturating_sub(self.period_us)),
                reset_ms: ms(ahead),
            }
        }
    }
}

struct Pending {
    keys: AdmissionKeys,
    auth_time: i64,
    answer: oneshot::Sender<Result<Admission, RedisError>>,
}

/// Admissions waiting for their lane's next call: a queue per lane, and one for callers outside
/// the lanes.
pub(super) struct Admissions {
    redis: Redis,
    script: redis::Script,
    rate: Rate,
    ttl_ms: u64,
    queues: Box<[Mutex<Vec<Pending>>]>,
}

impl Admissions {
    pub fn new(redis: Redis, rate: Rate) -> Self {
        let queues = (0..=redis.lanes()).map(|_| Mutex::default()).collect();
        Self {
            redis,
            script: redis::Script::new(ADMIT),
            rate,
            ttl_ms: rate.period_us.unsigned_abs().div_ceil(1000) + 1,
            queues,
        }
    }

    /// Queues one admission and waits for its call's answer. The first admission of a batch
    /// spawns the call, which runs once the tasks already woken on this runtime have had
    /// their turn (and queued their own admissions).
    pub async fn admit(
        self: &Arc<Self>,
        keys: AdmissionKeys,
        auth_time: i64,
    ) -> Result<Admission, RedisError> {
        let (answer, answered) = oneshot::channel();
        let outside = self.queues.len() - 1;
        let queue = lanes::current()
            .filter(|lane| *lane < outside)
            .unwrap_or(outside);
        let first = {
            let mut waiting = self.queues[queue]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            waiting.push(Pending {
                keys,
                auth_time,
                answer,
            });
            waiting.len() == 1
        };
        if first {
            tokio::spawn(Self::send(Unsent {
                admissions: Arc::clone(self),
                queue,
                taken: false,
            }));
        }
        answered
            .await
            .map_err(|_| unexpected("the admission call ended without an answer", String::new()))?
    }

    /// Sends what the queue holds, in calls of at most [`MAX_BATCH`] (pipelined together).
    async fn send(mut unsent: Unsent) {
        let mut waiting = unsent.take();
        let admissions = &unsent.admissions;
        let mut batches = Vec::with_capacity(waiting.len().div_ceil(MAX_BATCH));
        while waiting.len() > MAX_BATCH {
            let rest = waiting.split_off(MAX_BATCH);
            batches.push(std::mem::replace(&mut waiting, rest));
        }
        batches.push(waiting);
        futures::future::join_all(batches.into_iter().map(|b| admissions.call(b))).await;
    }

    /// One script call for `batch`, each admission answered with its own decision (or the
    /// call's error).
    async fn call(&self, batch: Vec<Pending>) {
        let script = &self.script;
        let items = &batch;
        let reply: Result<redis::Value, RedisError> = self
            .redis
            .call("admit", |mut c| async move {
                let mut invocation = script.prepare_invoke();
                invocation
                    .arg(self.rate.emission_us)
                    .arg(self.rate.period_us)
                    .arg(self.ttl_ms);
                for p in items {
                    invocation.key(&p.keys.budget).key(&p.keys.revocation);
                    if let Some(k) = &p.keys.cache {
                        invocation.key(k);
                    }
                    invocation
                        .arg(p.auth_time)
                        .arg(if p.keys.cache.is_some() { 3 } else { 2 });
                }
                invocation.invoke_async(&mut c).await
            })
            .await;
        let reads = match reply.and_then(|r| self.read_call(r, &batch)) {
            Ok(reads) => reads,
            Err(e) => {
                for pending in batch {
                    let _ = pending.answer.send(Err(e.clone()));
                }
                return;
            }
        };
        for (pending, read) in batch.into_iter().zip(reads) {
            let admission = Admission {
                decision: read.decision,
                revoked_at: read.revoked_at,
                cached: read.entry.zip(pending.keys.cache).map(|(e, key)| (key, e)),
            };
            // A waiter that gave up (its request timed out) needs no answer.
            let _ = pending.answer.send(Ok(admission));
        }
    }

    /// The call's reply, one [`Read`] per admission of `batch` (see the module's doc). Any
    /// reply that cannot be read fails the whole call: the admissions after it on the same
    /// budget would otherwise state the wrong numbers.
    fn read_call(&self, reply: redis::Value, batch: &[Pending]) -> Result<Vec<Read>, RedisError> {
        let bad =
            |what: &dyn std::fmt::Debug| unexpected("admission script reply", format!("{what:?}"));
        let redis::Value::Array(replies) = reply else {
            return Err(bad(&reply));
        };
        let mut replies = replies.into_iter();
        let (Some(redis::Value::BulkString(time)), true) =
            (replies.next(), replies.len() == batch.len())
        else {
            return Err(bad(&"not Redis's time and one reply per admission"));
        };
        let now = redis_time(&time).ok_or_else(|| bad(&String::from_utf8_lossy(&time)))?;
        let mut budgets = Budgets::new(self.rate, now);
        batch
            .iter()
            .zip(replies)
            .map(|(pending, reply)| {
                let redis::Value::BulkString(reply) = reply else {
                    return Err(bad(&reply));
                };
                let reply = Bytes::from(reply);
                budgets
                    .read(&pending.keys.budget, &reply, pending.keys.cache.is_some())
                    .ok_or_else(|| bad(&String::from_utf8_lossy(&reply)))
            })
            .collect()
    }
}

/// A queue whose call is spawned but not sent yet. The task owns it: should the task be
/// dropped before it runs (its runtime shutting down), the queue's admissions get an error
/// instead of waiting for ever, and the queue is empty again, so the next admission spawns a
/// call of its own.
struct Unsent {
    admissions: Arc<Admissions>,
    queue: usize,
    taken: bool,
}

impl Unsent {
    fn take(&mut self) -> Vec<Pending> {
        self.taken = true;
        self.drain()
    }

    fn drain(&self) -> Vec<Pending> {
        std::mem::take(
            &mut *self.admissions.queues[self.queue]
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

impl Drop for Unsent {
    fn drop(&mut self) {
        // After `take` this is what later admissions queued for their own call: leave it.
        if !self.taken {
            drop(self.drain());
        }
    }
}

fn unexpected(what: &'static str, detail: String) -> RedisError {
    RedisError::from((redis::ErrorKind::UnexpectedReturnType, what, detail))
}

/// What one admission's reply says.
#[derive(Debug, PartialEq, Eq)]
struct Read {
    decision: Option<Decision>,
    revoked_at: Option<i64>,
    /// `None` when not read, `Some(None)` when the key does not exist.
    entry: Option<Option<Bytes>>,
}

/// The theoretical arrival time of each budget a call's admissions spent, followed through
/// the call's replies in their order, as the script did.
struct Budgets<'a> {
    rate: Rate,
    now: i64,
    tats: Vec<(&'a str, i64)>,
}

impl<'a> Budgets<'a> {
    fn new(rate: Rate, now: i64) -> Self {
        Self {
            rate,
            now,
            tats: Vec::new(),
        }
    }

    /// The next admission's reply, on `budget`, with its entry when it was asked for (`read`).
    fn read(&mut self, budget: &'a str, reply: &Bytes, read: bool) -> Option<Read> {
        let (line, entry) = match reply.iter().position(|b| *b == b'\n') {
            Some(newline) => (&reply[..newline], Some(&reply[newline + 1..])),
            None => (&reply[..], None),
        };
        let mut fields = line.split(|b| *b == b' ');
        let code = fields.next()?;
        let stored_tat = stored(fields.next()?)?;
        let revoked_at = stored(fields.next()?)?.filter(|r| *r >= 0);
        if fields.next().is_some() {
            return None;
        }
        let allowed = match code {
            b"1" => true,
            b"0" => false,
            b"-1" if entry.is_none() => {
                return Some(Read {
                    decision: None,
                    revoked_at,
                    entry: None,
                });
            }
            _ => return None,
        };
        // An allowed read always carries its entry (or its absence); nothing else carries one.
        let entry = match (entry, allowed && read) {
            (None, false) => None,
            (Some([b'=', ..]), true) => Some(Some(reply.slice(line.len() + 2..))),
            (Some(b"!"), true) => Some(None),
            _ => return None,
        };
        let now = self.now;
        let i = match self.tats.iter().position(|(b, _)| *b == budget) {
            Some(i) => i,
            None => {
                self.tats.push((budget, stored_tat.unwrap_or(now).max(now)));
                self.tats.len() - 1
            }
        };
        let tat = &mut self.tats[i].1;
        if allowed {
            *tat = tat.saturating_add(self.rate.emission_us);
        }
        Some(Read {
            decision: Some(self.rate.decision(allowed, now, *tat)),
            revoked_at,
            entry,
        })
    }
}

/// A stored time as the script read it: `Some(None)` for `-` (absent), `None` (unreadable) for
/// anything but a whole number. Lua's `tonumber` reads more forms (`1e15`, `0x…`), which these
/// scripts never store; the script would compute with such a value, so it cannot be taken as
/// absent here.
fn stored(field: &[u8]) -> Option<Option<i64>> {
    match field {
        b"-" => Some(None),
        _ => integer(field).map(Some),
    }
}

/// Redis's `TIME` as the script sent it, `"<seconds> <micros>"`, in microseconds.
fn redis_time(time: &[u8]) -> Option<i64> {
    let (seconds, micros) = time.split_at(time.iter().position(|b| *b == b' ')?);
    integer(seconds)?
        .checked_mul(1_000_000)?
        .checked_add(integer(&micros[1..])?)
}

/// `-?[0-9]+` as an i64, straight from the bytes: once per request, where going through `str`
/// (UTF-8 check, `FromStr`) cost about four times as much.
fn integer(field: &[u8]) -> Option<i64> {
    let (negative, digits) = match field {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, field),
    };
    if digits.is_empty() {
        return None;
    }
    let mut magnitude: u64 = 0;
    for digit in digits {
        let digit = digit.checked_sub(b'0').filter(|d| *d <= 9)?;
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        emission_us: 6_000_000,
        period_us: 60_000_000,
    };
    const NOW: i64 = 1_795_000_000_000_000;

    fn read(budgets: &mut Budgets<'_>, reply: &'static [u8], entry: bool) -> Option<Read> {
        budgets.read("b", &Bytes::from_static(reply), entry)
    }

    #[test]
    fn redis_time_is_seconds_and_micros() {
        assert_eq!(redis_time(b"1795000000 5"), Some(1_795_000_000_000_005));
        for bad in [&b"1795000000"[..], b"1795000000 ", b" 5", b"x 5", b"1 2 3"] {
            assert_eq!(redis_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_budget_is_followed_through_the_call_from_what_was_stored() {
        // Stored 54 s ahead: one request left, then limited until 6 s pass.
        let stored = b"1 1795000054000000 -";
        let mut budgets = Budgets::new(RATE, NOW);
        let first = read(&mut budgets, stored, false).expect("valid");
        assert_eq!(
            first.decision,
            Some(Decision {
                allowed: true,
                remaining: 0,
                retry_after_ms: 0,
                reset_ms: 60_000,
            })
        );
        let limited = read(&mut budgets, b"0 1795000054000000 -", false).expect("valid");
        assert_eq!(
            limited.decision,
            Some(Decision {
                allowed: false,
                remaining: 0,
                retry_after_ms: 6_000,
                reset_ms: 60_000,
            })
        );
        // Another budget starts from now: a stored time in the past counts as now.
        let other = budgets
            .read("c", &Bytes::from_static(b"1 17 1794999999"), false)
            .expect("valid");
        assert_eq!(other.decision.map(|d| d.remaining), Some(9));
        assert_eq!(other.revoked_at, Some(1_794_999_999));
    }

    #[test]
    fn a_revoked_admission_has_no_decision() {
        let mut budgets = Budgets::new(RATE, NOW);
        assert_eq!(
            read(&mut budgets, b"-1 - 1795000000", true),
            Some(Read {
                decision: None,
                revoked_at: Some(1_795_000_000),
                entry: None,
            })
        );
        // Spent nothing: the next admission has the whole budget.
        let next = read(&mut budgets, b"1 - 1795000000", false).expect("valid");
        assert_eq!(next.decision.map(|d| d.remaining), Some(9));
    }

    #[test]
    fn an_allowed_read_carries_its_entry_and_nothing_else_does() {
        let mut budgets = Budgets::new(RATE, NOW);
        let found = read(&mut budgets, b"1 - -\n=12|=\"e\"|{\"a\":\"\\n\"}\n", true);
        assert_eq!(
            found.and_then(|r| r.entry),
            Some(Some(Bytes::from_static(b"12|=\"e\"|{\"a\":\"\\n\"}\n")))
        );
        let absent = read(&mut budgets, b"1 - -\n!", true).expect("valid");
        assert_eq!(absent.entry, Some(None));
        for (bad, entry) in [
            (&b"1 - -"[..], true),
            (b"1 - -\n!", false),
            (b"1 - -\n=x", false),
            (b"0 - -\n!", true),
            (b"-1 - 5\n!", true),
            (b"1 - -\n!x", true),
            (b"1 - -\nx", true),
            (b"1 - - 4", false),
            (b"1 -", false),
            (b"1 1e15 -", false),
            (b"1 - 0x10", false),
            (b"1 - ", false),
            (b"2 - -", false),
            (b"", false),
        ] {
            assert_eq!(read(&mut budgets, bad, entry), None, "{bad:?}");
        }
    }

    #[test]
    fn integers_are_whole_and_within_i64() {
        assert_eq!(integer(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(integer(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b"--1",
            b"1.5",
            b"1e3",
            b"\xff",
            b"9223372036854775808",
            b"-9223372036854775809",
        ] {
            assert_eq!(integer(bad), None, "{bad:?}");
        }
    }
}
