//! `file.finalize`: settles an upload the client says is done. Reads `files/{id}`, asks Cloud
//! Storage for the object's metadata, and writes `ready` (with the stored size, MD5, CRC32C and
//! generation) or `rejected` with a reason: nothing uploaded, larger than declared or than the
//! limit, or a content type other than the declared one. A rejected object is deleted.
//!
//! Payload: `{"fileId": "<id>"}`; published by the api-server only. Idempotent: a settled or
//! deleted file is left alone, and the record is written with its read version as a
//! precondition, so a concurrent delete or a second run never resurrects or flips it.
//! Storage and Firestore failures are retried with the queue's backoff.

use platform::queue::{ClaimedJob, JobContext};
use platform::storage::file_store::{FileStore, FileStoreError};
use platform::storage::files::{FINALIZE_FILE_ID, FileRecord, FileState};
use platform::storage::objects::{ObjectClient, ObjectError, ObjectMetadata};
use serde_json::{Value, json};

use super::{HandlerError, HandlerFuture, JobHandler};

/// Reads and conditional writes tried before handing the job back for a later attempt.
const WRITE_ATTEMPTS: usize = 3;

pub struct FileFinalize {
    pub store: FileStore,
    pub objects: ObjectClient,
    /// STORAGE_MAX_UPLOAD_BYTES: the limit is checked again on what was actually stored.
    pub max_size: u64,
}

/// Why the stored object does not match the record, if it does not.
pub fn verdict(record: &FileRecord, object: &ObjectMetadata, max_size: u64) -> Result<(), String> {
    let declared = u64::try_from(record.declared_size).unwrap_or(0);
    if object.size > declared {
        return Err(format!(
            "the upload is {} bytes, more than the declared {declared}",
            object.size
        ));
    }
    if object.size > max_size {
        return Err(format!(
            "the upload is {} bytes, over the limit of {max_size}",
            object.size
        ));
    }
    let stored = object
        .content_type
        .as_deref()
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if stored != record.content_type {
        return Err(format!(
            "the upload's content type {stored:?} is not the declared {:?}",
            record.content_type
        ));
    }
    Ok(())
}

fn settle(record: &mut FileRecord, object: Option<&ObjectMetadata>, reason: Option<String>) {
    record.state = if reason.is_some() {
        FileState::Rejected
    } else {
        FileState::Ready
    };
    record.reason = reason;
    if let Some(o) = object {
        record.size = i64::try_from(o.size).ok();
        record.md5_hash = o.md5_hash.clone();
        record.crc32c = o.crc32c.clone();
        record.generation = Some(o.generation);
    }
    record.updated_at = jiff::Timestamp::now().to_string();
}

fn store_error(e: FileStoreError) -> HandlerError {
    match e {
        FileStoreError::Corrupt(detail) => HandlerError::permanent(detail),
        e => HandlerError::retryable(e),
    }
}

impl FileFinalize {
    async fn finalize(&self, id: &str) -> Result<Value, HandlerError> {
        for _ in 0..WRITE_ATTEMPTS {
            let Some((mut record, version)) = self.store.get(id).await.map_err(store_error)? else {
                // Deleted since the job was queued: nothing left to settle.
                return Ok(json!({"fileId": id, "state": "deleted"}));
            };
            if record.state.is_settled() {
                return Ok(json!({"fileId": id, "state": record.state.as_str()}));
            }
            let object = match self.objects.metadata(&record.bucket, &record.object).await {
                Ok(o) => Some(o),
                Err(ObjectError::NotFound) => None,
                // Transient or not (a 403 is a permission misconfiguration an operator fixes),
                // the object's state is unknown: retry, and dead-letter after the budget.
                Err(e) => return Err(HandlerError::retryable(e)),
            };
            let reason = match &object {
                None => Some("nothing was uploaded".to_string()),
                Some(o) => verdict(&record, o, self.max_size).err(),
            };
            settle(&mut record, object.as_ref(), reason);
            match self.store.replace(&record, version).await {
                Ok(()) => {}
                // Changed under us (deleted, or another run settled it): look again.
                Err(FileStoreError::Stale) => continue,
                Err(e) => return Err(store_error(e)),
            }
            if record.state == FileState::Rejected && object.is_some() {
                // Best effort: the record already says rejected, and no URL serves it.
                if let Err(e) = self.objects.delete(&record.bucket, &record.object).await {
                    tracing::warn!(file = %id, error = %e, "deleting a rejected upload failed");
                }
            }
            tracing::info!(file = %id, state = record.state.as_str(), reason = ?record.reason, "file finalized");
            return Ok(json!({
                "fileId": id,
                "state": record.state.as_str(),
                "reason": record.reason,
            }));
        }
        Err(HandlerError::retryable(
            "the file record kept changing; trying again later",
        ))
    }
}

impl JobHandler for FileFinalize {
    fn handle<'a>(&'a self, job: &'a ClaimedJob, _ctx: &'a JobContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let id = job
                .payload
                .get(FINALIZE_FILE_ID)
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty() && id.len() <= 64 && !id.contains('/'))
                .ok_or_else(|| {
                    HandlerError::permanent(format!("payload needs a {FINALIZE_FILE_ID:?} id"))
                })?;
            self.finalize(id).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> FileRecord {
        FileRecord {
            id: "f1".into(),
            owner: "ann".into(),
            bucket: "b".into(),
            object: "users/ann/f1/a.txt".into(),
            file_name: "a.txt".into(),
            content_type: "text/plain".into(),
            declared_size: 10,
            state: FileState::Finalizing,
            created_at: String::new(),
            updated_at: String::new(),
            size: None,
            md5_hash: None,
            crc32c: None,
            generation: None,
            reason: None,
        }
    }

    fn object(size: u64, content_type: &str) -> ObjectMetadata {
        ObjectMetadata {
            name: "users/ann/f1/a.txt".into(),
            size,
            content_type: Some(content_type.into()),
            md5_hash: None,
            crc32c: None,
            generation: 1,
        }
    }

    #[test]
    fn uploads_are_checked_against_the_declaration_and_the_limit() {
        let r = record();
        assert_eq!(verdict(&r, &object(10, "text/plain"), 100), Ok(()));
        assert_eq!(verdict(&r, &object(3, "Text/Plain"), 100), Ok(()));
        let too_big = verdict(&r, &object(11, "text/plain"), 100).expect_err("over declared");
        assert!(too_big.contains("more than the declared 10"), "{too_big}");
        let over_limit = verdict(&r, &object(10, "text/plain"), 5).expect_err("over limit");
        assert!(over_limit.contains("over the limit of 5"), "{over_limit}");
        let wrong = verdict(&r, &object(10, "text/html"), 100).expect_err("wrong type");
        assert!(wrong.contains("\"text/html\""), "{wrong}");
    }
}
