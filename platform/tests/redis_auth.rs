//! Against real password-protected Redis (testenv, `requirepass`): the handle authenticates with
//! the configured password, a missing or wrong one fails with an error that says so, and through
//! an authenticated Sentinel group (sentinels themselves without a password) the handle finds
//! the master and follows a failover. The password never shows in addresses or errors.

mod queue_support;

use std::time::Duration;

use platform::queue::{
    ConnectionOptions, NewJob, RedisAuth, RedisHandle, RedisTarget, connection::is_failover_error,
};
use queue_support::auth_of;
use redis::ErrorKind;
use testenv::{RedisServer, SentinelGroup};

const PASSWORD: &str = "test-pw-9f2c1e";

fn fast() -> ConnectionOptions {
    ConnectionOptions {
        response_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        failover_deadline: Duration::from_secs(30),
    }
}

async fn ping(handle: &RedisHandle) -> redis::RedisResult<String> {
    let mut conn = handle.conn().conn;
    redis::cmd("PING").query_async(&mut conn).await
}

#[tokio::test]
async fn the_right_password_opens_the_server() -> anyhow::Result<()> {
    let server = RedisServer::start_with_password(PASSWORD).await?;
    let target = RedisTarget::Url {
        url: server.url(),
        auth: auth_of(server.password()),
    };
    let handle = RedisHandle::connect(target, fast()).await?;
    assert_eq!(ping(&handle).await?, "PONG");
    assert!(!handle.master_addr().contains(PASSWORD));

    // The queue's scripts and a dedicated (blocking-command) connection authenticate too.
    let q = queue_support::queue(&handle, "auth")?;
    let job = q.enqueue(NewJob::new("t", serde_json::json!(1))).await?;
    assert!(!job.id.is_empty());
    let mut dedicated = handle.dedicated(None).await?.conn;
    let len: u64 = redis::cmd("DBSIZE").query_async(&mut dedicated).await?;
    assert!(len > 0, "the enqueue wrote nothing");
    Ok(())
}

#[tokio::test]
async fn no_password_or_a_wrong_one_is_refused_clearly() -> anyhow::Result<()> {
    let server = RedisServer::start_with_password(PASSWORD).await?;

    // Without credentials the connection opens but every command is refused with NOAUTH.
    let handle = RedisHandle::connect(RedisTarget::url(server.url()), fast()).await?;
    let err = ping(&handle).await.expect_err("PING without AUTH");
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");
    assert!(!is_failover_error(&err), "NOAUTH is not a failover: {err}");

    let wrong = RedisTarget::Url {
        url: server.url(),
        auth: RedisAuth::password("not-the-password"),
    };
    let err = match RedisHandle::connect(wrong, fast()).await {
        Ok(_) => panic!("a wrong password was accepted"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_password_in_the_url_wins_over_the_configured_one() -> anyhow::Result<()> {
    let server = RedisServer::start_with_password(PASSWORD).await?;
    let target = RedisTarget::Url {
        url: format!("redis://:{PASSWORD}@127.0.0.1:{}/", server.port()),
        auth: RedisAuth::password("ignored-because-the-url-has-one"),
    };
    let handle = RedisHandle::connect(target, fast()).await?;
    assert_eq!(ping(&handle).await?, "PONG");
    // The address shown (logs, metrics) drops the URL's credentials.
    assert_eq!(
        handle.master_addr(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    Ok(())
}

#[tokio::test]
async fn through_authenticated_sentinels_the_handle_follows_a_failover() -> anyhow::Result<()> {
    let mut group = SentinelGroup::start_with_password(PASSWORD).await?;

    // Without the password no master can be confirmed (ROLE is refused), and the error says why.
    let anonymous = RedisTarget::Sentinel {
        sentinels: group.sentinel_urls(),
        master_name: group.master_name().to_string(),
        auth: RedisAuth::default(),
    };
    let err = match RedisHandle::connect(anonymous, fast()).await {
        Ok(_) => panic!("resolved a master without the password"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("NOAUTH"), "{err}");

    let handle = queue_support::sentinel_handle(&group).await?;
    assert_eq!(ping(&handle).await?, "PONG");
    let before = handle.master_addr();
    assert!(!before.contains(PASSWORD));

    let killed = group.kill_master().await?;
    assert!(before.contains(&killed.to_string()), "{before} vs {killed}");
    let q = queue_support::queue(&handle, "auth-failover")?;
    // The first write after the kill rides through the failover on the same handle.
    q.enqueue(NewJob::new("t", serde_json::json!("after")))
        .await?;
    let new = group
        .wait_for_failover(killed, Duration::from_secs(60))
        .await?;
    let after = handle.master_addr();
    assert!(after.contains(&new.to_string()), "{after} vs {new}");
    assert_eq!(ping(&handle).await?, "PONG");
    Ok(())
}
