use firestore::path;
use serde::{Deserialize, Serialize};
use testenv::FirestoreEmulator;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Note {
    owner: String,
    text: String,
    rank: i64,
}

#[tokio::test]
async fn firestore_emulator_creates_reads_queries_and_runs_transactions() -> anyhow::Result<()> {
    let emulator = FirestoreEmulator::start().await?;
    let db = emulator.admin_db("demo-smoke").await?;

    for (i, owner) in ["ann", "bob", "ann"].iter().enumerate() {
        let note = Note {
            owner: owner.to_string(),
            text: format!("note {i}"),
            rank: i as i64,
        };
        let _: Note = db
            .fluent()
            .insert()
            .into("notes")
            .document_id(format!("n{i}"))
            .object(&note)
            .execute()
            .await?;
    }

    let read: Option<Note> = db
        .fluent()
        .select()
        .by_id_in("notes")
        .obj()
        .one("n1")
        .await?;
    assert_eq!(read.map(|n| n.owner), Some("bob".to_string()));

    let anns: Vec<Note> = db
        .fluent()
        .select()
        .from("notes")
        .filter(|q| q.for_all([q.field(path!(Note::owner)).eq("ann")]))
        .order(|o| o.fields([o.field(path!(Note::rank)).desc()]))
        .obj()
        .query()
        .await?;
    assert_eq!(
        anns.iter().map(|n| n.text.as_str()).collect::<Vec<_>>(),
        ["note 2", "note 0"]
    );

    // Read-modify-write in a transaction.
    let mut tx = db.begin_transaction().await?;
    let current: Option<Note> = db
        .fluent()
        .select()
        .by_id_in("notes")
        .obj()
        .one("n0")
        .await?;
    let mut note = current.ok_or_else(|| anyhow::anyhow!("n0 missing"))?;
    note.rank += 10;
    db.fluent()
        .update()
        .in_col("notes")
        .document_id("n0")
        .object(&note)
        .add_to_transaction(&mut tx)?;
    tx.commit().await?;
    let after: Option<Note> = db
        .fluent()
        .select()
        .by_id_in("notes")
        .obj()
        .one("n0")
        .await?;
    assert_eq!(after.map(|n| n.rank), Some(10));
    Ok(())
}
