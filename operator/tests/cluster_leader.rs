//! Leader election: of two operators sharing a Lease exactly one reconciles, and the other
//! takes over when the leader stops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use operator::api::ScalableApp;
use operator::leader::LeaseConfig;
use operator::render::ChildKind;
use support::*;

fn leased(identity: &str) -> operator::runner::OperatorConfig {
    let mut config = test_config();
    config.identity = identity.to_string();
    config.lease = Some(LeaseConfig {
        namespace: "default".to_string(),
        name: "scalable-operator".to_string(),
        identity: identity.to_string(),
        duration_seconds: 6,
        grace_seconds: 2,
    });
    config
}

#[tokio::test]
async fn two_operators_elect_one_leader_and_fail_over() {
    let (_plane, client) = cluster().await;
    let first = RunningOperator::start(client.clone(), leased("operator-a"));
    let second = RunningOperator::start(client.clone(), leased("operator-b"));

    eventually("a leader", || {
        let any = first.is_leader() || second.is_leader();
        async move { any.then_some(()) }
    })
    .await;
    // Exactly one, and it stays that way.
    for _ in 0..20 {
        assert!(
            first.is_leader() ^ second.is_leader(),
            "leaders: a={} b={}",
            first.is_leader(),
            second.is_leader()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (leader, follower, leader_id, follower_id) = if first.is_leader() {
        (first, second, "operator-a", "operator-b")
    } else {
        (second, first, "operator-b", "operator-a")
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let holder = leases
        .get("scalable-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some(leader_id));

    let apps: Api<ScalableApp> = Api::namespaced(client.clone(), "default");
    apps.create(&PostParams::default(), &app_yaml("one", "default"))
        .await
        .unwrap();
    let configs = child_api(&client, ChildKind::ConfigMap, "default");
    eventually("the leader reconciles", || {
        let configs = configs.clone();
        async move { configs.get_opt("one-config").await.unwrap() }
    })
    .await;
    assert!(
        follower
            .metrics
            .encode()
            .unwrap()
            .lines()
            .all(|l| !l.starts_with("scalable_operator_reconciles_total")),
        "the follower reconciled"
    );

    // The leader stops (and releases the lease): the follower takes over and reconciles.
    leader.stop().await;
    eventually("the follower takes over", || {
        let now = follower.is_leader();
        async move { now.then_some(()) }
    })
    .await;
    let holder = leases
        .get("scalable-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some(follower_id));
    apps.create(&PostParams::default(), &app_yaml("two", "default"))
        .await
        .unwrap();
    eventually("the new leader reconciles", || {
        let configs = configs.clone();
        async move { configs.get_opt("two-config").await.unwrap() }
    })
    .await;
    follower.stop().await;
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_after_its_lease_expires() {
    let (plane, client) = cluster().await;
    let args = |id: &'static str| ["--identity", id, "--lease-duration-seconds", "6"];
    let a = OperatorProcess::start(&plane, &args("process-a")).await;
    let b = OperatorProcess::start(&plane, &args("process-b")).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let holder = || {
        let leases = leases.clone();
        async move {
            leases
                .get_opt("scalable-operator")
                .await
                .unwrap()?
                .spec?
                .holder_identity
                .filter(|h| !h.is_empty())
        }
    };
    let first = eventually("a lease holder", holder).await;
    let (mut leader, follower, follower_id) = if first == "process-a" {
        (a, b, "process-b")
    } else {
        (b, a, "process-a")
    };
    // SIGKILL: no chance to release the lease.
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();
    let killed_at = std::time::Instant::now();
    eventually("the follower holds the lease", || async {
        (holder().await.as_deref() == Some(follower_id)).then_some(())
    })
    .await;
    // Not at once: the dead leader's lease had at least the renewal grace (2 s) left.
    assert!(
        killed_at.elapsed() >= Duration::from_secs(1),
        "took over after {:?}, before the lease expired",
        killed_at.elapsed()
    );
    let metrics = follower.metrics().await;
    assert_eq!(
        counter_sum(&metrics, "scalable_operator_leader "),
        1,
        "{metrics}"
    );
}
