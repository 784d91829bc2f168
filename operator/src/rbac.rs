//! The permissions the operator needs, derived from the child kinds it manages so the two
//! cannot drift apart. `operator rbac` prints them; an integration test runs the operator with
//! nothing more than these (the same verbs the Helm chart grants).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::GROUP;
use crate::render::ChildKind;

/// Name of the ClusterRole and its binding.
pub const ROLE_NAME: &str = "scalable-operator";

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

/// One rule per API group of the children, plus the custom resource, Events and the Lease.
pub fn cluster_role() -> ClusterRole {
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for kind in ChildKind::ALL {
        let ar = kind.api_resource();
        by_group.entry(ar.group).or_default().push(ar.plural);
    }
    let child_verbs = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    let mut rules: Vec<PolicyRule> = by_group
        .iter()
        .map(|(group, plurals)| {
            let plurals: Vec<&str> = plurals.iter().map(String::as_str).collect();
            rule(group, &plurals, &child_verbs)
        })
        .collect();
    rules.push(rule(GROUP, &["scalableapps"], &["get", "list", "watch"]));
    // Status is written with server-side apply; finalizers for blockOwnerDeletion on children.
    rules.push(rule(GROUP, &["scalableapps/status"], &["get", "patch"]));
    rules.push(rule(GROUP, &["scalableapps/finalizers"], &["update"]));
    rules.push(rule("events.k8s.io", &["events"], &["create", "patch"]));
    // The generated Redis password Secret: created if absent (redis_auth). No get, list or
    // watch: the operator cannot read any Secret.
    rules.push(rule("", &["secrets"], &["create"]));
    // kube-lease-manager reads, creates and patches its one Lease.
    rules.push(rule(
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "patch"],
    ));
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(ROLE_NAME.to_string()),
            ..Default::default()
        },
        rules: Some(rules),
        ..Default::default()
    }
}

/// ServiceAccount, ClusterRole and ClusterRoleBinding for an operator running as
/// `service_account` in `namespace`.
pub fn objects(
    namespace: &str,
    service_account: &str,
) -> (ServiceAccount, ClusterRole, ClusterRoleBinding) {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(service_account.to_string()),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(ROLE_NAME.to_string()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "ClusterRole".to_string(),
            name: ROLE_NAME.to_string(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: service_account.to_string(),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        }]),
    };
    (sa, cluster_role(), binding)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_child_kind_is_covered() {
        let rules = cluster_role().rules.unwrap();
        for kind in ChildKind::ALL {
            let ar = kind.api_resource();
            assert!(
                rules.iter().any(|r| {
                    r.api_groups.as_ref().unwrap().contains(&ar.group)
                        && r.resources.as_ref().unwrap().contains(&ar.plural)
                        && r.verbs.iter().any(|v| v == "delete")
                }),
                "{kind} not covered"
            );
        }
        // Nothing the operator does not manage: no pods; Secrets create only (none readable).
        for r in &rules {
            let resources = r.resources.as_ref().unwrap();
            assert!(!resources.iter().any(|x| x == "pods" || x == "*"));
            if resources.iter().any(|x| x == "secrets") {
                assert_eq!(resources, &["secrets"]);
                assert_eq!(r.verbs, ["create"]);
            }
        }
    }
}
