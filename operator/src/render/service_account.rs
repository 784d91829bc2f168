//! One ServiceAccount per workload, with token automount off: none of the pods talks to the
//! Kubernetes API, and separate accounts let a cluster admin bind cloud identities
//! (e.g. workload identity for Firebase) per component.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::meta::AppMeta;

pub(super) fn service_accounts(m: &AppMeta, with_redis: bool) -> Vec<ServiceAccount> {
    let n = &m.names;
    let mut accounts = vec![(n.api.as_str(), "api"), (n.worker.as_str(), "worker")];
    if with_redis {
        accounts.push((n.redis.as_str(), "redis"));
    }
    accounts
        .into_iter()
        .map(|(name, component)| ServiceAccount {
            metadata: m.object_meta(name, component),
            automount_service_account_token: Some(false),
            ..Default::default()
        })
        .collect()
}
