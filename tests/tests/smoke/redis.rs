use std::time::{Duration, Instant};

use testenv::{RedisServer, SentinelGroup};

#[tokio::test]
async fn standalone_redis_answers() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let client = redis::Client::open(redis.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut conn)
        .await?;
    let v: String = redis::cmd("GET").arg("k").query_async(&mut conn).await?;
    assert_eq!(v, "v");
    Ok(())
}

#[tokio::test]
async fn sentinels_fail_over_when_the_master_is_killed() -> anyhow::Result<()> {
    let mut group = SentinelGroup::start().await?;
    let old = group
        .current_master()
        .await
        .ok_or_else(|| anyhow::anyhow!("no master"))?;
    assert_eq!(old, group.server_ports()[0], "ordinal 0 starts as master");

    // A write both replicas acknowledged must survive the failover.
    let client = redis::Client::open(format!("redis://127.0.0.1:{old}/"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let () = redis::cmd("SET")
        .arg("durable")
        .arg("yes")
        .query_async(&mut conn)
        .await?;
    let acked: i64 = redis::cmd("WAIT")
        .arg(2)
        .arg(5000)
        .query_async(&mut conn)
        .await?;
    assert_eq!(acked, 2);

    let killed_at = Instant::now();
    assert_eq!(group.kill_master().await?, old);
    let new = group
        .wait_for_failover(old, Duration::from_secs(60))
        .await?;
    println!("failover took {:?}", killed_at.elapsed());
    assert_ne!(new, old);
    let reported = group.masters_reported().await;
    assert_eq!(
        reported,
        vec![Some(new); 3],
        "every sentinel reports the new master"
    );

    let client = redis::Client::open(format!("redis://127.0.0.1:{new}/"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let v: String = redis::cmd("GET")
        .arg("durable")
        .query_async(&mut conn)
        .await?;
    assert_eq!(v, "yes");
    let () = redis::cmd("SET")
        .arg("after")
        .arg("failover")
        .query_async(&mut conn)
        .await?;
    Ok(())
}
