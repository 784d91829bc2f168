//! Firestore access for file metadata (`files/{id}`), shared by the api-server and the
//! finalize job. Every change after creation is written with the read version (`update_time`)
//! as a precondition, so neither side overwrites the other's state change unseen.

use firestore::errors::FirestoreError;
use firestore::gcloud_sdk::google::firestore::v1::Document;
use firestore::{FirestoreDb, FirestoreWritePrecondition};

use super::files::{FILES_COLLECTION, FileRecord};

#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    #[error("the file record changed since it was read")]
    Stale,
    #[error("the file record already exists")]
    Exists,
    #[error("Firestore: {0}")]
    Firestore(#[from] FirestoreError),
    #[error("stored file record is malformed: {0}")]
    Corrupt(String),
}

/// Firestore's `update_time` of the version that was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordVersion {
    pub seconds: i64,
    pub nanos: i32,
}

impl RecordVersion {
    fn precondition(self) -> Result<FirestoreWritePrecondition, FileStoreError> {
        firestore::FirestoreInstant::new(self.seconds, self.nanos)
            .map(FirestoreWritePrecondition::UpdateTime)
            .map_err(|e| FileStoreError::Corrupt(format!("version {self:?}: {e}")))
    }
}

#[derive(Clone)]
pub struct FileStore {
    db: FirestoreDb,
}

impl FileStore {
    pub fn new(db: FirestoreDb) -> Self {
        Self { db }
    }

    pub async fn get(
        &self,
        id: &str,
    ) -> Result<Option<(FileRecord, RecordVersion)>, FileStoreError> {
        let doc = self
            .db
            .fluent()
            .select()
            .by_id_in(FILES_COLLECTION)
            .one(id)
            .await?;
        doc.map(|d| decode(&d)).transpose()
    }

    /// Writes a new record; fails with `Exists` rather than overwrite one.
    pub async fn create(&self, record: &FileRecord) -> Result<(), FileStoreError> {
        let mut doc = self.encode(record)?;
        // CreateDocument names the document by parent + id; a set name is an error.
        doc.name = String::new();
        let r = self
            .db
            .fluent()
            .insert()
            .into(FILES_COLLECTION)
            .document_id(&record.id)
            .document(doc)
            .execute()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(FirestoreError::DataConflictError(_)) => Err(FileStoreError::Exists),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the record if it is still at `expected`.
    pub async fn replace(
        &self,
        record: &FileRecord,
        expected: RecordVersion,
    ) -> Result<(), FileStoreError> {
        let doc = self.encode(record)?;
        self.db
            .fluent()
            .update()
            .in_col(FILES_COLLECTION)
            .precondition(expected.precondition()?)
            .document(doc)
            .execute()
            .await
            .map(drop)
            .map_err(conflict)
    }

    /// Deletes the record if it is still at `expected`.
    pub async fn delete(&self, id: &str, expected: RecordVersion) -> Result<(), FileStoreError> {
        self.db
            .fluent()
            .delete()
            .from(FILES_COLLECTION)
            .document_id(id)
            .precondition(expected.precondition()?)
            .execute()
            .await
            .map_err(conflict)
    }

    fn encode(&self, record: &FileRecord) -> Result<Document, FileStoreError> {
        let path = format!(
            "{}/{FILES_COLLECTION}/{}",
            self.db.get_documents_path(),
            record.id
        );
        Ok(firestore::firestore_document_from_serializable(
            &path, record,
        )?)
    }
}

fn decode(doc: &Document) -> Result<(FileRecord, RecordVersion), FileStoreError> {
    let record: FileRecord = FirestoreDb::deserialize_doc_to(doc)
        .map_err(|e| FileStoreError::Corrupt(format!("{}: {e}", doc.name)))?;
    let ts = doc
        .update_time
        .as_ref()
        .ok_or_else(|| FileStoreError::Corrupt(format!("{} has no update_time", doc.name)))?;
    Ok((
        record,
        RecordVersion {
            seconds: ts.seconds,
            nanos: ts.nanos,
        },
    ))
}

/// A failed precondition, or a record that vanished, means another write won.
fn conflict(e: FirestoreError) -> FileStoreError {
    match &e {
        FirestoreError::DatabaseError(d) if d.public.code == "FailedPrecondition" => {
            FileStoreError::Stale
        }
        FirestoreError::DataNotFoundError(_) => FileStoreError::Stale,
        _ => FileStoreError::Firestore(e),
    }
}
