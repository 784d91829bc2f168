//! Opening a Firestore client, production or emulator.
//!
//! The firestore crate finds the emulator only through the `FIRESTORE_EMULATOR_HOST` variable
//! of the process; a host given on the command line (or by a test that must not mutate its own
//! environment) is honoured here by pointing the client at it with the emulator's admin bearer
//! (`owner`), which is what the emulator expects from a server SDK.

use firestore::gcloud_sdk::google_cloud_auth::credentials::{
    CacheableResource, Credentials, CredentialsProvider, EntityTag,
};
use firestore::gcloud_sdk::google_cloud_auth::errors::CredentialsError;
use std::time::Duration;

use firestore::{FirestoreDb, FirestoreDbOptions};

/// Per-call deadline: a hung Firestore must fail a request, not hold it (and its connection)
/// forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FirestoreConnectError {
    #[error("Firestore client for project {project}: {source}")]
    Client {
        project: String,
        #[source]
        source: firestore::errors::FirestoreError,
    },
}

/// A client for `project`'s `database`; against the emulator at `emulator_host` when given.
pub async fn connect(
    project: &str,
    database: &str,
    emulator_host: Option<&str>,
) -> Result<FirestoreDb, FirestoreConnectError> {
    let options = FirestoreDbOptions::new(project.to_string())
        .with_database_id(database.into())
        .with_request_timeout(REQUEST_TIMEOUT);
    let result = match emulator_host {
        Some(host) => {
            let options = options.with_firebase_api_url(format!("http://{host}"));
            FirestoreDb::with_options_auth(options, EmulatorOwner::new()).await
        }
        None => FirestoreDb::with_options(options).await,
    };
    result.map_err(|source| FirestoreConnectError::Client {
        project: project.to_string(),
        source,
    })
}

/// Credentials that always send `Authorization: Bearer owner`: the emulator's admin identity,
/// which bypasses security rules as the Admin SDK does in production.
#[derive(Debug)]
struct EmulatorOwner {
    tag: EntityTag,
}

impl EmulatorOwner {
    fn new() -> Self {
        Self {
            tag: EntityTag::new(),
        }
    }
}

impl CredentialsProvider for EmulatorOwner {
    async fn headers(
        &self,
        extensions: http::Extensions,
    ) -> Result<CacheableResource<http::HeaderMap>, CredentialsError> {
        if extensions.get::<EntityTag>() == Some(&self.tag) {
            return Ok(CacheableResource::NotModified);
        }
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer owner"),
        );
        Ok(CacheableResource::New {
            entity_tag: self.tag.clone(),
            data: headers,
        })
    }

    async fn universe_domain(&self) -> Option<String> {
        None
    }
}

impl From<EmulatorOwner> for firestore::gcloud_sdk::GoogleAuthHeaders {
    fn from(credentials: EmulatorOwner) -> Self {
        Self::from(Credentials::from(credentials))
    }
}
