//! Benchmark (ignored by default; run with
//! `cargo test --release -p operator --test cluster_bench -- --ignored --nocapture`):
//! `operator run` against the test control plane, N ScalableApps (BENCH_APPS, default 200)
//! created at once. Reports wall time from the first create until every child exists, requests
//! the operator sent per app, its peak RSS, and requests per app during a steady-state resync.
//! The Markdown table is printed and written to target/operator-benchmark.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams, PostParams};
use operator::api::ScalableApp;
use operator::render::{self, RenderContext};
use support::*;

const RESYNC_SECONDS: u64 = 30;

#[tokio::test]
#[ignore = "benchmark: minutes of load on the control plane"]
async fn many_apps_from_empty_to_all_children() {
    let apps_n: usize = std::env::var("BENCH_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (plane, client) = cluster().await;
    let op = OperatorProcess::start(
        &plane,
        &[
            "--no-leader-election",
            "--resync-seconds",
            &RESYNC_SECONDS.to_string(),
        ],
    )
    .await;
    let apps: Api<ScalableApp> = Api::namespaced(client.clone(), "default");

    // Children per app, from the renderer itself.
    let mut sample = app_yaml("sample", "default");
    sample.metadata.uid = Some("x".into());
    let per_app = render::desired(&sample, &RenderContext::default())
        .unwrap()
        .len();
    let expected = per_app * apps_n;

    let requests_before = counter_sum(&op.metrics().await, "scalable_operator_kube_requests_total");
    let started = Instant::now();
    futures::stream::iter(0..apps_n)
        .for_each_concurrent(16, |i| {
            let apps = apps.clone();
            async move {
                apps.create(
                    &PostParams::default(),
                    &app_yaml(&format!("app{i:03}"), "default"),
                )
                .await
                .unwrap();
            }
        })
        .await;
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=scalable-operator");
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let mut count = 0;
        for kind in CORE_KINDS {
            count += child_api(&client, kind, "default")
                .list_metadata(&lp)
                .await
                .unwrap()
                .items
                .len();
        }
        if count >= expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {count} of {expected} children after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let wall = started.elapsed();
    let requests_create =
        counter_sum(&op.metrics().await, "scalable_operator_kube_requests_total") - requests_before;

    // Steady state: let status updates settle, then count one full resync period.
    tokio::time::sleep(Duration::from_secs(RESYNC_SECONDS)).await;
    let before = counter_sum(&op.metrics().await, "scalable_operator_kube_requests_total");
    let reconciles_before = counter_sum(&op.metrics().await, "scalable_operator_reconciles_total");
    tokio::time::sleep(Duration::from_secs(RESYNC_SECONDS + 5)).await;
    let metrics = op.metrics().await;
    let resync_requests = counter_sum(&metrics, "scalable_operator_kube_requests_total") - before;
    let resync_reconciles =
        counter_sum(&metrics, "scalable_operator_reconciles_total") - reconciles_before;
    let rss_mib = op.peak_rss_kib() as f64 / 1024.0;

    let n = apps_n as f64;
    let table = format!(
        "| metric | value |\n|---|---|\n\
         | apps | {apps_n} |\n\
         | children per app | {per_app} |\n\
         | wall time, empty → all {expected} children | {:.1} s |\n\
         | apiserver requests per app (create) | {:.1} |\n\
         | operator peak RSS | {rss_mib:.0} MiB |\n\
         | reconciles during one {RESYNC_SECONDS} s resync window | {resync_reconciles} |\n\
         | apiserver requests per app per resync | {:.2} |\n",
        wall.as_secs_f64(),
        requests_create as f64 / n,
        resync_requests as f64 / n,
    );
    println!("{table}");
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/operator-benchmark.md");
    std::fs::write(out, &table).unwrap();
    assert!(resync_reconciles as usize >= apps_n, "every app resynced");
    drop(op);
}
