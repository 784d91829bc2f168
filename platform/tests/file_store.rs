//! The file-record store against the Firestore emulator: creation never overwrites, and every
//! later write or delete is conditional on the version read, which is what keeps the
//! api-server and the finalize job from overwriting each other's state changes.

use platform::storage::file_store::{FileStore, FileStoreError};
use platform::storage::files::{FileRecord, FileState};

fn record(id: &str) -> FileRecord {
    FileRecord {
        id: id.into(),
        owner: "ann".into(),
        bucket: "b".into(),
        object: format!("users/ann/{id}/a.txt"),
        file_name: "a.txt".into(),
        content_type: "text/plain".into(),
        declared_size: 5,
        state: FileState::Pending,
        created_at: "2026-11-26T09:00:00Z".into(),
        updated_at: "2026-11-26T09:00:00Z".into(),
        size: None,
        md5_hash: None,
        crc32c: None,
        generation: None,
        reason: None,
    }
}

#[tokio::test]
async fn writes_after_creation_are_conditional_on_the_version_read() -> anyhow::Result<()> {
    let emulator = testenv::FirestoreEmulator::start().await?;
    let db = platform::firestore::connect("demo-file-store", "(default)", Some(&emulator.host()))
        .await?;
    let store = FileStore::new(db);

    let r = record("f1");
    store.create(&r).await?;
    assert!(matches!(
        store.create(&r).await,
        Err(FileStoreError::Exists)
    ));
    let (read, v1) = store
        .get("f1")
        .await?
        .ok_or_else(|| anyhow::anyhow!("missing"))?;
    assert_eq!(read, r);

    // One writer moves it on; a second writer holding the same version loses.
    let mut finalizing = read.clone();
    finalizing.state = FileState::Finalizing;
    store.replace(&finalizing, v1).await?;
    let mut ready = read.clone();
    ready.state = FileState::Ready;
    ready.generation = Some(7);
    assert!(matches!(
        store.replace(&ready, v1).await,
        Err(FileStoreError::Stale)
    ));
    assert!(matches!(
        store.delete("f1", v1).await,
        Err(FileStoreError::Stale)
    ));
    let (now, v2) = store
        .get("f1")
        .await?
        .ok_or_else(|| anyhow::anyhow!("missing"))?;
    assert_eq!(now.state, FileState::Finalizing);
    assert_ne!(v1, v2);

    // Deleted: a late writer does not bring it back.
    store.delete("f1", v2).await?;
    assert!(store.get("f1").await?.is_none());
    assert!(matches!(
        store.replace(&ready, v2).await,
        Err(FileStoreError::Stale)
    ));
    assert!(store.get("f1").await?.is_none());
    Ok(())
}
