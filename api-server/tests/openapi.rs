//! docs/openapi.json is the generated OpenAPI document, committed so clients and reviewers see
//! API changes in diffs. This fails when the code and the file drift; regenerate with
//! `UPDATE_OPENAPI=1 cargo test -p api-server --test openapi`.

use std::path::Path;

use serde_json::Value;

#[test]
fn committed_openapi_matches_the_code() -> anyhow::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let generated = api_server::openapi::document();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated)?;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run UPDATE_OPENAPI=1 cargo test -p api-server --test openapi"
    );
    Ok(())
}

#[test]
fn document_is_openapi_3_1_and_describes_every_route() -> anyhow::Result<()> {
    let doc: Value = serde_json::from_str(&api_server::openapi::document())?;
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/v1/me", "get"),
        ("/v1/auth/revoke", "post"),
        ("/v1/{collection}", "post"),
        ("/v1/{collection}", "get"),
        ("/v1/{collection}/{id}", "get"),
        ("/v1/{collection}/{id}", "patch"),
        ("/v1/{collection}/{id}", "delete"),
        ("/v1/jobs", "post"),
        ("/v1/jobs/{id}", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(
            op["responses"]["401"].is_object(),
            "{method} {path} lacks 401"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["firebase_id_token"]["scheme"],
        "bearer"
    );
    Ok(())
}
