//! The Cloud Storage JSON API client against fake-gcs-server: metadata as the finalize job
//! reads it, deletion, and "not found" for objects that are not there.

use platform::storage::objects::{ObjectClient, ObjectError};

#[tokio::test]
async fn reads_metadata_deletes_and_reports_missing_objects() -> anyhow::Result<()> {
    let gcs = testenv::FakeGcsServer::start().await?;
    gcs.create_bucket("bkt").await?;
    let object = "users/u1/f1/a b?.txt";
    // An upload as a client makes it, through the XML API (a signed-URL-shaped request).
    let put = reqwest::Client::new()
        .put(format!(
            "{}/bkt/users/u1/f1/a%20b%3F.txt?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=00",
            gcs.url()
        ))
        .header("content-type", "text/plain")
        .body("hello world")
        .send()
        .await?;
    assert!(put.status().is_success(), "{}", put.text().await?);

    let client = ObjectClient::emulator(&gcs.host());
    let meta = client.metadata("bkt", object).await?;
    assert_eq!(meta.name, object);
    assert_eq!(meta.size, 11);
    assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
    assert_eq!(meta.md5_hash.as_deref(), Some("XrY7u+Ae7tCTyyK7j1rNww=="));
    assert_eq!(meta.crc32c.as_deref(), Some("yZRlqg=="));
    assert!(meta.generation > 0);

    client.delete("bkt", object).await?;
    assert!(matches!(
        client.metadata("bkt", object).await,
        Err(ObjectError::NotFound)
    ));
    assert!(matches!(
        client.delete("bkt", object).await,
        Err(ObjectError::NotFound)
    ));
    assert!(matches!(
        client.metadata("no-such-bucket", "x").await,
        Err(ObjectError::NotFound)
    ));
    Ok(())
}
