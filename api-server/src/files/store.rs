//! The shared file-record store ([`platform::storage::file_store`]) with this server's
//! Firestore latency metrics around each call.

use std::future::Future;
use std::time::Instant;

use firestore::FirestoreDb;
use platform::storage::file_store::{self, FileStoreError, RecordVersion};
use platform::storage::files::FileRecord;

use crate::observability::Metrics;

pub struct FileStore {
    inner: file_store::FileStore,
    metrics: Metrics,
}

impl FileStore {
    pub fn new(db: FirestoreDb, metrics: Metrics) -> Self {
        Self {
            inner: file_store::FileStore::new(db),
            metrics,
        }
    }

    async fn timed<T>(
        &self,
        op: &str,
        call: impl Future<Output = Result<T, FileStoreError>>,
    ) -> Result<T, FileStoreError> {
        let started = Instant::now();
        let r = call.await;
        // Stale and Exists are answers, not Firestore failures.
        let ok = !matches!(r, Err(FileStoreError::Firestore(_)));
        self.metrics.firestore_duration(op, ok, started.elapsed());
        r
    }

    pub async fn get(
        &self,
        id: &str,
    ) -> Result<Option<(FileRecord, RecordVersion)>, FileStoreError> {
        self.timed("file_get", self.inner.get(id)).await
    }

    pub async fn create(&self, record: &FileRecord) -> Result<(), FileStoreError> {
        self.timed("file_create", self.inner.create(record)).await
    }

    pub async fn replace(
        &self,
        record: &FileRecord,
        expected: RecordVersion,
    ) -> Result<(), FileStoreError> {
        self.timed("file_update", self.inner.replace(record, expected))
            .await
    }

    pub async fn delete(&self, id: &str, expected: RecordVersion) -> Result<(), FileStoreError> {
        self.timed("file_delete", self.inner.delete(id, expected))
            .await
    }
}
