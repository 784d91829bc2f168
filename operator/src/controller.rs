//! The reconciler: watches ScalableApps and every child kind, and drives each app through
//! desired state (render) → apply (skip what matches, prune what is no longer wanted) →
//! status (conditions from the children) → Events.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::api::{ScalableApp, ScalableAppStatus};
use crate::apply::{self, FIELD_MANAGER, Outcome, Stores};
use crate::metrics::Metrics;
use crate::render::{self, Capabilities, ChildKind, LABEL_MANAGED_BY, MANAGED_BY, RenderContext};
use crate::runner::OperatorConfig;
use crate::status::{self, Observed, Workload};

/// Why one reconcile failed. Variant names are the `error` label of the metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Render(#[from] render::RenderError),
    #[error("{} of the children failed: {}", .0.len(), join(.0))]
    Apply(Vec<apply::ApplyError>),
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
    #[error(transparent)]
    RedisAuth(#[from] crate::redis_auth::Error),
}

fn join(errors: &[apply::ApplyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Render(_) => "Render",
            Error::Apply(_) => "Apply",
            Error::Status(_) => "Status",
            Error::RedisAuth(_) => "RedisAuth",
        }
    }
}

/// Shared by every reconcile of one controller run.
pub struct Context {
    client: Client,
    render: RenderContext,
    stores: Stores,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    resync: Duration,
    /// Consecutive failures per app, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Generated Redis password Secrets known to exist.
    redis_secrets: crate::redis_auth::Seen,
}

/// Delay before retrying an app that failed `failures` times in a row: 2 s doubling to 5 min.
pub fn backoff(failures: u32) -> Duration {
    let secs = 2u64.saturating_pow(failures.clamp(1, 9));
    Duration::from_secs(secs.min(300))
}

fn app_key(app: &ScalableApp) -> String {
    format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any())
}

impl Context {
    fn observe(&self, app: &ScalableApp, changed: bool, error: Option<String>) -> Observed {
        let ns = app.namespace().unwrap_or_default();
        let names = render::Names::new(&app.name_any());
        let workload = |kind, name: &str| {
            self.stores
                .get(kind, &ns, name)
                .map(|o| Workload::from_object(&o))
        };
        Observed {
            api: workload(ChildKind::Deployment, &names.api),
            worker: workload(ChildKind::Deployment, &names.worker),
            redis: workload(ChildKind::StatefulSet, &names.redis),
            sentinel: workload(ChildKind::StatefulSet, &names.sentinel),
            changed,
            error,
        }
    }

    async fn write_status(&self, app: &ScalableApp, observed: &Observed) -> Result<(), Error> {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let status = status::desired_status(app, observed, &self.render.cluster_domain, &now);
        if app.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<ScalableApp> =
            Api::namespaced(self.client.clone(), &app.namespace().unwrap_or_default());
        let patch = status_patch(&status);
        api.patch_status(
            &app.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::Status)?;
        Ok(())
    }

    async fn event(&self, app: &ScalableApp, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(&note, 1000)),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &app.object_ref(&())).await {
            tracing::warn!(error = %e, "publishing an Event");
        }
    }
}

fn status_patch(status: &ScalableAppStatus) -> serde_json::Value {
    json!({
        "apiVersion": ScalableApp::api_version(&()),
        "kind": ScalableApp::kind(&()),
        "status": status,
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Child writes in flight at once for one app.
const APPLY_CONCURRENCY: usize = 6;

/// Applies every desired child, prunes the ones no longer wanted. Keeps going past a failing
/// child so one bad object (e.g. an immutable field) does not freeze the rest of the app.
async fn converge(app: &ScalableApp, ctx: &Context) -> Result<Vec<String>, Error> {
    let ns = app.namespace().unwrap_or_default();
    let uid = app.uid().unwrap_or_default();
    let desired = render::desired(app, &ctx.render)?;
    let mut changes = Vec::new();
    // Before the Redis pods that read it: created once, never updated (see redis_auth). A
    // failure fails the reconcile, but after the children are applied: the Secret may well
    // exist (the create can be refused by a quota or a webhook before "already exists").
    let password = crate::redis_auth::ensure(&ctx.client, app, &ctx.redis_secrets).await;
    if let Ok(Some(name)) = &password {
        changes.push(format!("created Secret {name}"));
    }
    let mut errors = Vec::new();
    // A few applies in flight per app: creating an app's ~25 children one by one is latency
    // bound. `buffered` keeps results in render order, so Events list them deterministically.
    let results: Vec<_> = futures::stream::iter(desired.iter().cloned())
        .map(|child| {
            let ns = ns.clone();
            async move {
                let result =
                    apply::ensure(&ctx.client, &ctx.stores, &ctx.metrics, &ns, &child).await;
                (child, result)
            }
        })
        .buffered(APPLY_CONCURRENCY)
        .collect()
        .await;
    for (child, result) in results {
        match result {
            Ok(Outcome::Unchanged) => {}
            Ok(outcome) => changes.push(format!(
                "{} {} {}",
                outcome.as_str(),
                child.kind,
                child.name()
            )),
            Err(e) => errors.push(e),
        }
    }
    let wanted: BTreeSet<render::ChildRef> = desired
        .iter()
        .map(|c| render::ChildRef {
            kind: c.kind,
            name: c.name().to_string(),
        })
        .collect();
    for stale in render::possible(app)?
        .into_iter()
        .filter(|r| !wanted.contains(r))
    {
        match apply::prune(&ctx.client, &ctx.stores, &ctx.metrics, &ns, &uid, &stale).await {
            Ok(Some(outcome)) => changes.push(format!(
                "{} {} {}",
                outcome.as_str(),
                stale.kind,
                stale.name
            )),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    password?;
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(Error::Apply(errors))
    }
}

#[tracing::instrument(skip_all, fields(app = %app_key(&app), generation = app.metadata.generation))]
async fn reconcile(app: Arc<ScalableApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = app_key(&app);
    if app.spec.paused {
        tracing::info!(app = %key, "paused: leaving the app and its children untouched");
        ctx.metrics.reconciled("paused", started.elapsed());
        return Ok(Action::await_change());
    }
    match converge(&app, &ctx).await {
        Ok(changes) => {
            let observed = ctx.observe(&app, !changes.is_empty(), None);
            ctx.write_status(&app, &observed).await?;
            if !changes.is_empty() {
                tracing::info!(app = %key, changes = ?changes, "children changed");
                ctx.event(
                    &app,
                    EventType::Normal,
                    "ChildrenChanged",
                    changes.join(", "),
                )
                .await;
            }
            if let Ok(mut failures) = ctx.failures.lock() {
                failures.remove(&key);
            }
            ctx.metrics.reconciled("ok", started.elapsed());
            Ok(Action::requeue(ctx.resync))
        }
        Err(err) => {
            let observed = ctx.observe(&app, false, Some(err.to_string()));
            if let Err(status_err) = ctx.write_status(&app, &observed).await {
                tracing::warn!(app = %key, error = %status_err, "recording the failure in the status");
            }
            ctx.event(&app, EventType::Warning, "ReconcileFailed", err.to_string())
                .await;
            ctx.metrics.reconciled("error", started.elapsed());
            Err(err)
        }
    }
}

fn error_policy(app: Arc<ScalableApp>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = app_key(&app);
    ctx.metrics.error(err.metric_label());
    let failures = match ctx.failures.lock() {
        Ok(mut map) => {
            let n = map.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let delay = backoff(failures);
    tracing::warn!(app = %key, error = %err, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs one Controller over the currently served kinds until `stop` resolves.
pub(crate) async fn run_controller(
    client: Client,
    config: &OperatorConfig,
    caps: Capabilities,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let apps: Api<ScalableApp> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let child_watch = watcher::Config::default()
        .labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"))
        .any_semantic();
    let mut controller = Controller::new(apps, watcher::Config::default().any_semantic());
    let mut stores = HashMap::new();
    for kind in ChildKind::ALL.into_iter().filter(|k| caps.serves(*k)) {
        let ar = kind.api_resource();
        let api: Api<DynamicObject> = match &config.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let writer = Writer::new(ar.clone());
        stores.insert(kind, writer.as_reader());
        let stream = watcher(api, child_watch.clone())
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        controller = controller.owns_stream_with(stream, ar);
    }
    let stores = Stores(stores);
    // Leading: ready again once this controller's caches are filled.
    ready.store(false, Ordering::Relaxed);
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: Some(config.identity.clone()),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        render: RenderContext {
            capabilities: caps,
            cluster_domain: config.cluster_domain.clone(),
            ..RenderContext::default()
        },
        stores: stores.clone(),
        metrics,
        recorder: Recorder::new(client, reporter),
        resync: config.resync,
        failures: Mutex::new(HashMap::new()),
        redis_secrets: crate::redis_auth::Seen::new(config.resync),
    });

    // Reconciling before the caches are filled would apply every child once more than needed.
    let caches = stores.0.values().cloned().collect::<Vec<_>>();
    let ready_flag = ready.clone();
    tokio::spawn(async move {
        for store in caches {
            if store.wait_until_ready().await.is_err() {
                return;
            }
        }
        ready_flag.store(true, Ordering::Relaxed);
    });

    tracing::info!(capabilities = ?caps, "controller starting");
    controller
        .with_config(controller::Config::default().concurrency(8))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    ready.store(false, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(9), Duration::from_secs(300));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }
}
