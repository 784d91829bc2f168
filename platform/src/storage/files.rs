//! The file metadata document (`files/{id}` in Firestore): the contract between the api-server,
//! which creates it and hands out signed URLs, and the worker's `file.finalize` job, which
//! checks the uploaded object and settles the state.
//!
//! States: `pending` (upload URL issued) → `finalizing` (the client said the upload is done; a
//! finalize job is queued) → `ready` (object checked; downloads allowed) or `rejected` (with a
//! reason: missing, too large, wrong type).

use serde::{Deserialize, Serialize};

/// Firestore collection of file metadata.
pub const FILES_COLLECTION: &str = "files";
/// The worker's job type that settles an upload; published by the api-server only.
pub const FINALIZE_JOB: &str = "file.finalize";
/// Payload member of a finalize job naming the file.
pub const FINALIZE_FILE_ID: &str = "fileId";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    Pending,
    Finalizing,
    Ready,
    Rejected,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Pending => "pending",
            FileState::Finalizing => "finalizing",
            FileState::Ready => "ready",
            FileState::Rejected => "rejected",
        }
    }

    /// Ready and rejected are final: nothing changes them but deletion.
    pub fn is_settled(self) -> bool {
        matches!(self, FileState::Ready | FileState::Rejected)
    }
}

/// One uploaded (or to-be-uploaded) file. Sizes are `i64` because Firestore integers are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRecord {
    pub id: String,
    /// uid of the creator; only they (or an admin) see the file.
    pub owner: String,
    pub bucket: String,
    /// `users/<uid>/<id>/<sanitised name>`.
    pub object: String,
    pub file_name: String,
    pub content_type: String,
    pub declared_size: i64,
    pub state: FileState,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// What the finalize job found: the stored size, hashes and generation.
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(default)]
    pub md5_hash: Option<String>,
    #[serde(default)]
    pub crc32c: Option<String>,
    #[serde(default)]
    pub generation: Option<i64>,
    /// Why the upload was rejected.
    #[serde(default)]
    pub reason: Option<String>,
}
