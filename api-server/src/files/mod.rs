//! Files: clients upload and download bytes straight to and from the bucket through short-lived
//! V4 signed URLs; the server keeps the metadata in Firestore (`files/{id}`) and queues a
//! `file.finalize` job that checks the upload (docs/files.md).
//!
//! - [`name`]: what a file may be called and where its object lives.
//! - [`store`]: the metadata record in Firestore (shared with the worker), timed.
//! - [`handlers`]: the HTTP routes.
//!
//! Off (503) unless a bucket is configured.

pub mod handlers;
pub mod name;
pub mod store;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use firestore::FirestoreDb;
use platform::storage::objects::{ObjectClient, ObjectError};
use platform::storage::signed_url::{
    DEFAULT_HOST, DEFAULT_IAM_CREDENTIALS_ENDPOINT, DEFAULT_METADATA_ENDPOINT, IamSignBlobSigner,
    KeyFileError, MetadataServerToken, Scheme, ServiceAccountKeySigner, Signer,
};

use crate::config::FilesArgs;
use crate::observability::Metrics;
pub use store::FileStore;

#[derive(Debug, thiserror::Error)]
pub enum FilesSetupError {
    #[error("signing key file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: KeyFileError,
    },
    #[error(
        "STORAGE_BUCKET is set but nothing can sign URLs: set STORAGE_SIGNING_KEY_FILE, \
         STORAGE_SIGNING_SERVICE_ACCOUNT or GOOGLE_APPLICATION_CREDENTIALS"
    )]
    NoSigner,
    #[error("generating the emulator's throwaway signing key failed")]
    ThrowawayKey,
    #[error("Cloud Storage client: {0}")]
    Objects(#[from] ObjectError),
    #[error("FILES_CONTENT_TYPES has no content type")]
    NoContentTypes,
}

/// Where signed URLs point: Google's XML API endpoint, or the emulator.
#[derive(Debug, Clone)]
pub struct UrlTarget {
    pub host: String,
    pub scheme: Scheme,
}

/// Everything the file routes need.
pub struct Files {
    pub bucket: String,
    pub signer: Arc<dyn Signer>,
    pub target: UrlTarget,
    pub objects: ObjectClient,
    pub store: FileStore,
    pub upload_ttl: Duration,
    pub download_ttl: Duration,
    pub max_size: u64,
    /// Lowercase.
    pub content_types: HashSet<String>,
}

impl Files {
    /// `None` when no bucket is configured (the routes then answer 503).
    pub fn from_args(
        args: &FilesArgs,
        db: FirestoreDb,
        metrics: Metrics,
    ) -> Result<Option<Self>, FilesSetupError> {
        Ok(FilesConfig::from_args(args)?.map(|config| config.with_store(db, metrics)))
    }
}

/// [`Files`] before it has its Firestore store: read and checked (key file, content types,
/// Storage client) before the server binds or connects anywhere, so a broken setting stops it
/// at once with its error instead of after it started answering health checks.
pub struct FilesConfig {
    bucket: String,
    signer: Arc<dyn Signer>,
    target: UrlTarget,
    objects: ObjectClient,
    upload_ttl: Duration,
    download_ttl: Duration,
    max_size: u64,
    content_types: HashSet<String>,
}

impl FilesConfig {
    /// `None` when no bucket is configured.
    pub fn from_args(args: &FilesArgs) -> Result<Option<Self>, FilesSetupError> {
        let Some(bucket) = args.storage.storage_bucket.clone() else {
            return Ok(None);
        };
        let emulator = args.storage.storage_emulator_host.as_deref();
        let content_types: HashSet<String> = args
            .files_content_types
            .iter()
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        if content_types.is_empty() {
            return Err(FilesSetupError::NoContentTypes);
        }
        let target = match emulator {
            Some(host) => {
                let base = platform::storage::objects::emulator_base(host);
                let (scheme, host) = match base.split_once("://") {
                    Some(("https", h)) => (Scheme::Https, h.to_string()),
                    Some((_, h)) => (Scheme::Http, h.to_string()),
                    None => (Scheme::Http, base.clone()),
                };
                UrlTarget { host, scheme }
            }
            None => UrlTarget {
                host: DEFAULT_HOST.to_string(),
                scheme: Scheme::Https,
            },
        };
        Ok(Some(Self {
            signer: signer(args, emulator.is_some())?,
            objects: ObjectClient::from_config(emulator)?,
            bucket,
            target,
            upload_ttl: Duration::from_secs(args.files_upload_url_seconds),
            download_ttl: Duration::from_secs(args.files_download_url_seconds),
            max_size: args.storage.storage_max_upload_bytes,
            content_types,
        }))
    }

    pub fn with_store(self, db: FirestoreDb, metrics: Metrics) -> Files {
        Files {
            bucket: self.bucket,
            signer: self.signer,
            target: self.target,
            objects: self.objects,
            store: FileStore::new(db, metrics),
            upload_ttl: self.upload_ttl,
            download_ttl: self.download_ttl,
            max_size: self.max_size,
            content_types: self.content_types,
        }
    }
}

fn key_file(path: &Path) -> Result<Arc<dyn Signer>, FilesSetupError> {
    ServiceAccountKeySigner::from_file(path)
        .map(|s| Arc::new(s) as Arc<dyn Signer>)
        .map_err(|source| FilesSetupError::KeyFile {
            path: path.display().to_string(),
            source,
        })
}

/// The signer, in order of preference: an explicit key file, signBlob as a named service
/// account, the ambient credentials key, and for an emulator a throwaway key.
fn signer(args: &FilesArgs, emulator: bool) -> Result<Arc<dyn Signer>, FilesSetupError> {
    if let Some(path) = &args.storage_signing_key_file {
        return key_file(path);
    }
    if let Some(account) = &args.storage_signing_service_account {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let tokens = Arc::new(MetadataServerToken::new(
            http.clone(),
            DEFAULT_METADATA_ENDPOINT,
        ));
        return Ok(Arc::new(IamSignBlobSigner::new(
            http,
            DEFAULT_IAM_CREDENTIALS_ENDPOINT,
            account.clone(),
            tokens,
        )));
    }
    if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
        return key_file(Path::new(&path));
    }
    if emulator {
        // The emulator verifies no signature; a fresh key keeps the code path the same.
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|_| FilesSetupError::ThrowawayKey)?;
        let der = key.as_der().map_err(|_| FilesSetupError::ThrowawayKey)?;
        let signer =
            ServiceAccountKeySigner::from_pkcs8_der("emulator@scalableapp.invalid", der.as_ref())
                .map_err(|_| FilesSetupError::ThrowawayKey)?;
        return Ok(Arc::new(signer));
    }
    Err(FilesSetupError::NoSigner)
}
