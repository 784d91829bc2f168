//! Least privilege: the operator reconciles an app completely when it runs as a
//! ServiceAccount with only the permissions of `operator rbac` (the apiserver enforces RBAC).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use operator::api::ScalableApp;
use operator::leader::LeaseConfig;
use operator::render::{self, RenderContext};
use support::*;

#[tokio::test]
async fn operator_needs_nothing_beyond_its_cluster_role() {
    let (plane, admin) = cluster().await;
    namespace(&admin, "operators", &[]).await;
    let (sa, role, binding) = operator::rbac::objects("operators", "scalable-operator");
    let pp = PostParams::default();
    Api::<ServiceAccount>::namespaced(admin.clone(), "operators")
        .create(&pp, &sa)
        .await
        .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&pp, &role)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&pp, &binding)
        .await
        .unwrap();

    let token = Api::<ServiceAccount>::namespaced(admin.clone(), "operators")
        .create_token_request(
            "scalable-operator",
            &pp,
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();
    let kubeconfig = Kubeconfig::read_from(plane.kubeconfig_path()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let operator_client = Client::try_from(config).unwrap();

    // The token really is limited: it cannot read or list Secrets, here or cluster-wide (it
    // may only create them, for the generated Redis password).
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(operator_client.clone(), "default");
    let mut theirs = k8s_openapi::api::core::v1::Secret::default();
    theirs.metadata.name = Some("someone-elses".into());
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), "default")
        .create(&pp, &theirs)
        .await
        .unwrap();
    let denied = secrets.get("someone-elses").await.unwrap_err();
    assert!(
        matches!(denied, kube::Error::Api(ref e) if e.code == 403),
        "{denied}"
    );
    let denied = secrets.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(denied, kube::Error::Api(ref e) if e.code == 403),
        "{denied}"
    );
    let all_secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::all(operator_client.clone());
    let denied = all_secrets.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(denied, kube::Error::Api(ref e) if e.code == 403),
        "{denied}"
    );

    let mut config = test_config();
    config.lease = Some(LeaseConfig {
        namespace: "operators".into(),
        name: "scalable-operator".into(),
        identity: "rbac-test".into(),
        duration_seconds: 6,
        grace_seconds: 2,
    });
    let op = RunningOperator::start(operator_client, config);

    let apps: Api<ScalableApp> = Api::namespaced(admin.clone(), "default");
    apps.create(&pp, &app_yaml("shop", "default"))
        .await
        .unwrap();
    let app = apps.get("shop").await.unwrap();
    for child in render::desired(&app, &RenderContext::default()).unwrap() {
        let api = child_api(&admin, child.kind, "default");
        eventually(&format!("{} {}", child.kind, child.name()), || {
            let api = api.clone();
            let name = child.name().to_string();
            async move { api.get_opt(&name).await.unwrap() }
        })
        .await;
    }
    // The generated Redis password, created with nothing more than create on Secrets.
    let admin_secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(admin.clone(), "default");
    eventually("the generated Redis password Secret", || {
        let admin_secrets = admin_secrets.clone();
        async move { admin_secrets.get_opt("shop-redis-auth").await.unwrap() }
    })
    .await;
    eventually("status written", || {
        let apps = apps.clone();
        async move {
            apps.get("shop")
                .await
                .unwrap()
                .status?
                .observed_generation
                .map(|_| ())
        }
    })
    .await;
    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    eventually("an Event on the app", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("shop"))
        }
    })
    .await;
    let errors = op.metrics.encode().unwrap();
    assert!(
        !errors.contains("scalable_operator_reconcile_errors_total{"),
        "reconcile errors with the operator's role:\n{errors}"
    );
    op.stop().await;
}
