//! The Redis password Secret the operator generates for a Sentinel-mode app without
//! `spec.redis.passwordSecret`.
//!
//! Created once, if absent, and never written again: a new value would lock every running
//! pod out of Redis (the data nodes read it once, at start). So it is not a rendered child
//! (server-side apply would replace the value on each reconcile); the reconciler CREATEs it,
//! with an owner reference so it goes with the app, and "already exists" means it is there.
//! The operator needs only `create` on Secrets: it cannot read any Secret, this one included,
//! nor `list` or `watch` them. Once seen to exist, it is not tried again for a while
//! ([`Seen`]): a create that would end in "already exists" still passes admission first (a
//! quota, a webhook) and can be refused there.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

use crate::api::{GENERATED_PASSWORD_KEY, RedisMode, RedisSpec, ScalableApp};
use crate::render::{LABEL_MANAGED_BY, MANAGED_BY};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the Redis password Secret {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("generating a Redis password: {0}")]
    Random(#[source] std::io::Error),
    #[error("the ScalableApp has no {0}")]
    MissingMetadata(&'static str),
}

/// 32 random bytes from the kernel, base64url without padding (43 characters that are safe
/// verbatim in redis.conf and sentinel.conf).
pub fn generate_password() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(Error::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// When each app's generated Secret was last seen to exist (created, or "already exists"), by
/// app UID. Not tried again before `recheck` has passed: so a Secret deleted by hand (or still
/// being collected with a deleted app of the same name) is created again within `recheck`,
/// and an app is not sent a create on every reconcile.
pub struct Seen {
    at: Mutex<HashMap<String, Instant>>,
    recheck: Duration,
}

impl Seen {
    pub fn new(recheck: Duration) -> Self {
        Self {
            at: Mutex::new(HashMap::new()),
            recheck,
        }
    }

    fn recent(&self, uid: &str, now: Instant) -> bool {
        let at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        at.get(uid)
            .is_some_and(|seen| now.duration_since(*seen) < self.recheck)
    }

    fn mark(&self, uid: &str, now: Instant) {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        // Deleted apps' entries go once they are stale.
        at.retain(|_, seen| now.duration_since(*seen) < self.recheck);
        at.insert(uid.to_string(), now);
    }
}

/// Makes sure the generated password Secret exists when the app needs one. Returns the
/// Secret's name when it was created by this call.
pub async fn ensure(
    client: &Client,
    app: &ScalableApp,
    seen: &Seen,
) -> Result<Option<String>, Error> {
    let redis = &app.spec.redis;
    if redis.mode != RedisMode::Sentinel || redis.password_secret.is_some() {
        return Ok(None);
    }
    let uid = app.uid().ok_or(Error::MissingMetadata("uid"))?;
    if seen.recent(&uid, Instant::now()) {
        return Ok(None);
    }
    let app_name = app.name_any();
    let namespace = app.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = RedisSpec::generated_password_secret(&app_name);
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut owner = app
        .controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("uid"))?;
    owner.block_owner_deletion = Some(true);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/instance".to_string(), app_name),
                (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            GENERATED_PASSWORD_KEY.to_string(),
            ByteString(generate_password()?.into_bytes()),
        )])),
        ..Default::default()
    };
    let created = match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Some(name),
        // Created by an earlier reconcile (or a human): it stays as it is.
        Err(kube::Error::Api(e)) if e.code == 409 => None,
        Err(source) => return Err(Error::Create { name, source }),
    };
    seen.mark(&uid, Instant::now());
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seen_secret_is_tried_again_only_after_the_recheck_interval() {
        let seen = Seen::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(!seen.recent("a", t0));
        seen.mark("a", t0);
        assert!(seen.recent("a", t0 + Duration::from_secs(59)));
        assert!(!seen.recent("a", t0 + Duration::from_secs(60)));
        assert!(!seen.recent("b", t0));
        // Marking another app later drops the stale entry.
        seen.mark("b", t0 + Duration::from_secs(61));
        assert_eq!(
            seen.at.lock().map(|m| m.len()).unwrap_or_default(),
            1,
            "stale entries are dropped"
        );
    }

    #[test]
    fn generated_passwords_are_long_random_and_config_safe() -> Result<(), Error> {
        let a = generate_password()?;
        let b = generate_password()?;
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        Ok(())
    }
}
