//! The CustomResourceDefinition as YAML, exactly as committed in `crds/scalableapp.yaml`.

use kube::CustomResourceExt;

use crate::api::ScalableApp;

/// Error turning the CRD into YAML.
#[derive(Debug, thiserror::Error)]
#[error("serializing the CRD to YAML: {0}")]
pub struct CrdYamlError(#[from] serde_saphyr::SerializeError);

/// The CRD YAML that `operator crd` prints.
pub fn crd_yaml() -> Result<String, CrdYamlError> {
    Ok(serde_saphyr::to_string(&ScalableApp::crd())?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The committed CRD is what cluster admins install; it must be what this code generates.
    #[test]
    fn committed_crd_matches_generated() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/scalableapp.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let generated = crd_yaml().expect("CRD serializes");
        assert!(
            committed == generated,
            "crds/scalableapp.yaml is out of date with the Rust types; regenerate it with \
             `cargo run -p operator -- crd > crds/scalableapp.yaml`"
        );
    }

    #[test]
    fn crd_has_names_status_and_printer_columns() {
        let crd = ScalableApp::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("scalableapps.scalable.dev")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["sapp".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Ready", "API", "Workers", "Redis", "Age"]);
    }

    #[test]
    fn crd_carries_cel_rules_with_messages() {
        let yaml = crd_yaml().unwrap();
        for rule in [
            "self.minReplicas <= self.maxReplicas",
            "self.sentinels % 2 == 1",
            "self.replicas >= 2",
            "has(self.credentialsSecret) || has(self.emulators)",
        ] {
            assert!(yaml.contains(rule), "missing CEL rule {rule}");
        }
        assert!(yaml.contains("api.minReplicas must be less than or equal to api.maxReplicas"));
    }
}
