use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use testenv::{ControlPlane, Helm};

use crate::fixture;

#[tokio::test]
async fn helm_templates_installs_and_uninstalls_a_chart() -> anyhow::Result<()> {
    let chart = fixture("charts/tiny");
    let chart = chart
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;

    let rendered = Helm::new()?.run(&["template", "smoke", chart, "--set", "greeting=hi there"])?;
    assert!(rendered.contains("name: smoke-tiny"), "{rendered}");
    assert!(rendered.contains("greeting: \"hi there\""), "{rendered}");

    let cp = ControlPlane::start().await?;
    let helm = Helm::with_kubeconfig(cp.kubeconfig_path())?;
    helm.run(&[
        "install",
        "smoke",
        chart,
        "--namespace",
        "default",
        "--set",
        "greeting=installed",
        "--wait",
    ])?;
    let config_maps: Api<ConfigMap> = Api::namespaced(cp.client().await?, "default");
    let cm = config_maps.get("smoke-tiny").await?;
    assert_eq!(
        cm.data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("installed")
    );
    let listed = helm.run(&["list", "--namespace", "default", "--short"])?;
    assert_eq!(listed.trim(), "smoke");

    helm.run(&["uninstall", "smoke", "--namespace", "default", "--wait"])?;
    assert!(config_maps.get_opt("smoke-tiny").await?.is_none());
    Ok(())
}
