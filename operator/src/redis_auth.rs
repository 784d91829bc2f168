//! The Redis password Secret the operator generates for a Sentinel-mode app without
//! `spec.redis.passwordSecret`.
//!
//! Created once, if absent, and never written again: a new value would lock every running
//! pod out of Redis (the data nodes read it once, at start). So it is not a rendered child
//! (server-side apply would replace the value on each reconcile); each reconcile CREATEs it,
//! with an owner reference so it goes with the app, and "already exists" means it is there.
//! The operator needs only `create` on Secrets: it cannot read any Secret, this one included,
//! nor `list` or `watch` them. The price is one refused create per reconcile of such an app.

use std::collections::BTreeMap;
use std::io::Read;

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

/// Makes sure the generated password Secret exists when the app needs one. Returns the
/// Secret's name when it was created by this call.
pub async fn ensure(client: &Client, app: &ScalableApp) -> Result<Option<String>, Error> {
    let redis = &app.spec.redis;
    if redis.mode != RedisMode::Sentinel || redis.password_secret.is_some() {
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
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(Some(name)),
        // Created by an earlier reconcile (or a human): it stays as it is.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(source) => Err(Error::Create { name, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
