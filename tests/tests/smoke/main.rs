//! One smoke test per component of the local environment: each proves the real service works
//! the way later tests rely on.

mod firebase_auth;
mod firestore;
mod helm;
mod kube;
mod promtool;
mod redis;

use std::path::PathBuf;

fn fixture(path: &str) -> PathBuf {
    testenv::repo_root().join("tests/fixtures").join(path)
}
