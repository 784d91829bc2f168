//! The shipped firestore.rules, loaded into the emulator: a client holding a user's token can
//! read that user's documents directly, never another user's, and cannot write at all; file
//! records are closed to clients entirely.

mod common;

use std::path::Path;

use api_server::documents::Store;
use api_server::observability::Metrics;
use common::*;
use serde_json::{Map, Value, json};

const PROJECT: &str = "demo-rules";

fn bob_file() -> platform::storage::files::FileRecord {
    use platform::storage::files::{FileRecord, FileState};
    FileRecord {
        id: "f1".into(),
        owner: "bob".into(),
        bucket: "uploads".into(),
        object: "users/bob/f1/a.txt".into(),
        file_name: "a.txt".into(),
        content_type: "text/plain".into(),
        declared_size: 1,
        state: FileState::Ready,
        created_at: "2026-11-26T09:00:00Z".into(),
        updated_at: "2026-11-26T09:00:00Z".into(),
        size: Some(1),
        md5_hash: None,
        crc32c: None,
        generation: Some(1),
        reason: None,
    }
}

#[tokio::test]
async fn client_tokens_cannot_read_other_users_documents() -> anyhow::Result<()> {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("firestore.rules");
    let emulator = testenv::FirestoreEmulator::start_with_rules(Some(&rules)).await?;
    // The server writes with admin credentials, as api-server does.
    let admin = platform::firestore::connect(PROJECT, "(default)", Some(&emulator.host())).await?;
    let store = Store::new(admin, Metrics::new());
    let data = |v: i64| Map::from_iter([("v".to_string(), json!(v))]);
    let ann_doc = store.create("notes", "ann", data(1)).await?;
    let bob_doc = store.create("notes", "bob", data(2)).await?;
    // A file record of Bob's, written as the Files API writes it.
    let files = platform::storage::file_store::FileStore::new(
        platform::firestore::connect(PROJECT, "(default)", Some(&emulator.host())).await?,
    );
    files.create(&bob_file()).await?;

    let bob = emulator
        .db_with_bearer(PROJECT, &unsigned(&id_claims(PROJECT, "bob")))
        .await?;
    let own: Option<Value> = bob
        .fluent()
        .select()
        .by_id_in("notes")
        .obj()
        .one(&bob_doc.id)
        .await?;
    assert_eq!(
        own.map(|d| d["owner"].clone()),
        Some(json!("bob")),
        "owners may read directly"
    );

    let other: Result<Option<Value>, _> = bob
        .fluent()
        .select()
        .by_id_in("notes")
        .obj()
        .one(&ann_doc.id)
        .await;
    let err = other.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.contains("PermissionDenied")
            || err.contains("PERMISSION_DENIED")
            || err.contains("permission"),
        "Bob read Ann's document: {err:?}"
    );

    // File records are closed even to their owner: they are read and changed only through
    // the API (which signs the URLs and runs the state machine).
    let file: Result<Option<Value>, _> = bob
        .fluent()
        .select()
        .by_id_in(platform::storage::files::FILES_COLLECTION)
        .obj()
        .one("f1")
        .await;
    assert!(file.is_err(), "Bob read his file record directly: {file:?}");

    // No direct writes, not even to one's own document.
    let write: Result<Value, _> = bob
        .fluent()
        .update()
        .in_col("notes")
        .document_id(&bob_doc.id)
        .object(&json!({"id": bob_doc.id, "owner": "bob", "data": {"v": 3}}))
        .execute()
        .await;
    assert!(write.is_err(), "a client wrote directly");
    let after = store.get("notes", &bob_doc.id).await?;
    assert_eq!(after.map(|d| d.data), Some(data(2)));

    // Without a token nothing is readable.
    let anonymous = emulator.db_with_bearer(PROJECT, "").await;
    if let Ok(anon) = anonymous {
        let r: Result<Option<Value>, _> = anon
            .fluent()
            .select()
            .by_id_in("notes")
            .obj()
            .one(&bob_doc.id)
            .await;
        assert!(r.is_err(), "anonymous read succeeded");
    }
    Ok(())
}

#[test]
fn index_file_covers_the_list_query_of_each_rules_collection() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let indexes: Value = serde_json::from_str(&std::fs::read_to_string(
        dir.join("firestore.indexes.json"),
    )?)?;
    let rules = std::fs::read_to_string(dir.join("firestore.rules"))?;
    for collection in ["notes", "tasks"] {
        assert!(rules.contains(&format!("'{collection}'")));
        let found = indexes["indexes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| {
                i["collectionGroup"] == collection
                    && i["fields"]
                        == json!([
                            {"fieldPath": "owner", "order": "ASCENDING"},
                            {"fieldPath": "id", "order": "ASCENDING"}
                        ])
            });
        assert!(found, "no (owner, id) index for {collection}");
    }
    Ok(())
}
