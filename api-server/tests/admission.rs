//! The admission of authenticated requests (`api_server::ratelimit::RateLimiter::admit`) on a
//! real Redis: the admissions started together go to Redis as one script call, and each gets
//! the same answer it would have got alone (exact budget, revocation, cache entry), or the
//! call's error.

use std::time::Duration;

use api_server::config::FailMode;
use api_server::observability::Metrics;
use api_server::ratelimit::{Admission, AdmissionKeys, RateLimiter};
use api_server::redis::Redis;
use futures::future::join_all;

const UID: &str = "u-admission";

struct Fixture {
    server: testenv::RedisServer,
    limiter: RateLimiter,
    direct: redis::aio::MultiplexedConnection,
}

async fn fixture(limit: u32) -> anyhow::Result<Fixture> {
    let server = testenv::RedisServer::start().await?;
    let endpoint = platform::config::RedisEndpoint::Url {
        url: server.url(),
        auth: Default::default(),
    };
    let redis = Redis::connect(&endpoint, Duration::from_secs(1), Metrics::new()).await?;
    let limiter = RateLimiter::new(redis, limit, 60, FailMode::Closed, Metrics::new());
    let direct = redis::Client::open(server.url())?
        .get_multiplexed_async_connection()
        .await?;
    Ok(Fixture {
        server,
        limiter,
        direct,
    })
}

impl Fixture {
    /// How many of the `commands` Redis has run, not counting refused ones (an EVALSHA refused
    /// with NOSCRIPT, which the client follows with the script).
    async fn executed(&mut self, commands: &[&str]) -> anyhow::Result<u64> {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.direct)
            .await?;
        let field = |line: &str, name: &str| -> Option<i64> {
            line.split([':', ','])
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        Ok(stats
            .lines()
            .filter(|l| {
                commands.iter().any(|c| {
                    l.strip_prefix("cmdstat_")
                        .and_then(|l| l.strip_prefix(c))
                        .is_some_and(|l| l.starts_with(':'))
                })
            })
            .filter_map(|l| {
                Some(field(l, "calls")? - field(l, "failed_calls")? - field(l, "rejected_calls")?)
            })
            .sum::<i64>()
            .try_into()?)
    }

    async fn script_calls(&mut self) -> anyhow::Result<u64> {
        self.executed(&["evalsha", "eval"]).await
    }

    async fn writes(&mut self) -> anyhow::Result<u64> {
        self.executed(&["set"]).await
    }

    async fn admit(&self, auth_time: i64, cache: Option<&str>) -> Admission {
        self.admit_as(UID, auth_time, cache).await
    }

    async fn admit_as(&self, uid: &str, auth_time: i64, cache: Option<&str>) -> Admission {
        self.limiter
            .admit(keys(uid, cache), auth_time)
            .await
            .expect("admission")
    }
}

fn keys(uid: &str, cache: Option<&str>) -> AdmissionKeys {
    AdmissionKeys {
        budget: api_server::ratelimit::uid_key(uid),
        revocation: api_server::auth::revocation::key(uid),
        cache: cache.map(str::to_string),
    }
}

// On one thread, as in a lane: every admission is queued before the call is sent.
#[tokio::test]
async fn admissions_started_together_share_one_call_and_the_budget_stays_exact()
-> anyhow::Result<()> {
    let mut f = fixture(10).await?;
    let (calls, writes) = (f.script_calls().await?, f.writes().await?);
    let admissions = join_all((0..25).map(|_| f.admit(1, None))).await;
    assert_eq!(
        f.script_calls().await? - calls,
        1,
        "one call for 25 admissions"
    );
    assert_eq!(f.writes().await? - writes, 1, "one write of the budget");

    let decisions: Vec<_> = admissions
        .iter()
        .map(|a| a.decision.expect("a decision"))
        .collect();
    let allowed: Vec<u64> = decisions
        .iter()
        .filter(|d| d.allowed)
        .map(|d| d.remaining)
        .collect();
    // In the order they were started, each seeing the one before it.
    assert_eq!(allowed, (0..10).rev().collect::<Vec<u64>>());
    assert!(decisions[..10].iter().all(|d| d.allowed));
    for limited in &decisions[10..] {
        assert!(!limited.allowed);
        assert_eq!(limited.remaining, 0);
        // All at one instant (the call's `TIME`): one request per 6 s comes back, the whole
        // budget in 60 s.
        assert_eq!((limited.retry_after_ms, limited.reset_ms), (6_000, 60_000));
    }

    // The plain GCRA script reads the same budget the admissions wrote, a little later.
    let check = f
        .limiter
        .check(&api_server::ratelimit::uid_key(UID))
        .await?;
    assert!(!check.allowed, "{check:?}");
    assert!((5_000..=6_000).contains(&check.retry_after_ms), "{check:?}");
    assert!((59_000..=60_000).contains(&check.reset_ms), "{check:?}");
    Ok(())
}

#[tokio::test]
async fn admissions_read_what_the_plain_gcra_script_stored() -> anyhow::Result<()> {
    let f = fixture(10).await?;
    for _ in 0..3 {
        f.limiter
            .check(&api_server::ratelimit::uid_key(UID))
            .await?;
    }
    let admissions = join_all((0..2).map(|_| f.admit(1, None))).await;
    let remaining: Vec<_> = admissions
        .iter()
        .map(|a| a.decision.map(|d| (d.allowed, d.remaining)))
        .collect();
    assert_eq!(remaining, [Some((true, 6)), Some((true, 5))]);
    Ok(())
}

#[tokio::test]
async fn interleaved_budgets_are_each_followed_through_the_call() -> anyhow::Result<()> {
    let mut f = fixture(3).await?;
    let writes = f.writes().await?;
    let admissions = join_all((0..10).map(|i| f.admit_as(["a", "b"][i % 2], 1, None))).await;
    assert_eq!(f.writes().await? - writes, 2, "one write per budget");
    for uid in 0..2 {
        let remaining: Vec<Option<u64>> = admissions
            .iter()
            .skip(uid)
            .step_by(2)
            .map(|a| a.decision.filter(|d| d.allowed).map(|d| d.remaining))
            .collect();
        assert_eq!(remaining, [Some(2), Some(1), Some(0), None, None]);
    }
    // The next call starts from what this one stored.
    let next = f.admit_as("a", 1, None).await;
    assert!(!next.decision.expect("a decision").allowed);
    Ok(())
}

#[tokio::test]
async fn more_admissions_than_a_call_holds_are_split_and_still_exact() -> anyhow::Result<()> {
    let mut f = fixture(70).await?;
    let before = f.script_calls().await?;
    let admissions = join_all((0..100).map(|_| f.admit(1, None))).await;
    let calls = f.script_calls().await? - before;
    let allowed = admissions
        .iter()
        .filter(|a| a.decision.is_some_and(|d| d.allowed))
        .count();
    assert_eq!(allowed, 70);
    assert_eq!(calls, 2, "64 admissions per call at most");
    Ok(())
}

#[tokio::test]
async fn a_revoked_token_spends_nothing_and_a_later_one_is_admitted() -> anyhow::Result<()> {
    let mut f = fixture(10).await?;
    let revoked_at = 1_795_000_000_i64;
    let () = redis::cmd("SET")
        .arg(api_server::auth::revocation::key(UID))
        .arg(revoked_at)
        .query_async(&mut f.direct)
        .await?;
    let [old, same, newer] = <[Admission; 3]>::try_from(
        join_all([
            f.admit(revoked_at - 1, Some("cache:x")),
            f.admit(revoked_at, None),
            f.admit(revoked_at + 1, None),
        ])
        .await,
    )
    .map_err(|_| anyhow::anyhow!("three admissions"))?;
    for revoked in [&old, &same] {
        assert_eq!(revoked.decision, None);
        assert_eq!(revoked.revoked_at, Some(revoked_at));
        assert_eq!(revoked.cached, None);
    }
    let decision = newer.decision.expect("a decision");
    assert!(decision.allowed);
    assert_eq!(decision.remaining, 9);
    assert_eq!(newer.revoked_at, Some(revoked_at));
    // What Redis holds agrees: one request spent, not three.
    let later = f.admit(revoked_at + 1, None).await;
    assert_eq!(later.decision.map(|d| d.remaining), Some(8));
    Ok(())
}

#[tokio::test]
async fn an_allowed_read_gets_its_cache_entry_byte_for_byte() -> anyhow::Result<()> {
    let mut f = fixture(2).await?;
    let entry = "12|=\"e\"|1:u{\"a\":\"\\n\"}\n=!";
    let () = redis::cmd("SET")
        .arg("cache:present")
        .arg(entry)
        .query_async(&mut f.direct)
        .await?;
    let admissions = join_all([
        f.admit(1, Some("cache:present")),
        f.admit(1, Some("cache:absent")),
        f.admit(1, Some("cache:present")),
    ])
    .await;
    let (key, found) = admissions[0].cached.clone().expect("read");
    assert_eq!(key, "cache:present");
    assert_eq!(found.as_deref(), Some(entry.as_bytes()));
    assert_eq!(
        admissions[1].cached,
        Some(("cache:absent".to_string(), None))
    );
    // Limited: nothing read.
    assert!(!admissions[2].decision.expect("a decision").allowed);
    assert_eq!(admissions[2].cached, None);
    assert_eq!(admissions[0].revoked_at, None);
    Ok(())
}

#[tokio::test]
async fn when_redis_is_gone_every_admission_of_the_call_gets_the_error() -> anyhow::Result<()> {
    let mut f = fixture(10).await?;
    // Loads the script and opens the connection while Redis is up.
    f.admit(1, None).await;
    f.server.service().stop(Duration::from_secs(5));
    let admissions = join_all((0..5).map(|_| f.limiter.admit(keys(UID, None), 1))).await;
    assert_eq!(admissions.len(), 5);
    for a in admissions {
        let error = a.expect_err("Redis is gone").to_string();
        // The call's own error, not a call that ended without answering.
        assert!(!error.contains("without an answer"), "{error}");
    }
    Ok(())
}

// A call spawned on a runtime that shuts down before running it: its admissions get an error
// rather than waiting for ever, and the queue does not stay stuck (the next admission is sent).
#[test]
fn a_call_dropped_before_it_ran_fails_its_admissions_and_the_next_is_sent() -> anyhow::Result<()> {
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let f = main.block_on(fixture(10))?;
    let doomed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut queued = Box::pin(f.limiter.admit(keys(UID, None), 1));
    doomed.block_on(async {
        assert!(
            futures::poll!(queued.as_mut()).is_pending(),
            "queued, its call spawned"
        );
    });
    drop(doomed);
    main.block_on(async {
        let dropped = tokio::time::timeout(Duration::from_secs(5), queued).await?;
        let error = dropped.expect_err("its call never ran").to_string();
        assert!(error.contains("without an answer"), "{error}");
        let next = tokio::time::timeout(Duration::from_secs(5), f.admit(1, None)).await?;
        // Sent, and the dropped admission spent nothing.
        assert_eq!(next.decision.map(|d| d.remaining), Some(9));
        anyhow::Ok(())
    })
}
