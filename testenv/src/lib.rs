//! The local test environment: real services started on loopback, on free ports, in a temp dir.
//!
//! Every service is a guard: `start()` returns once it answers, and dropping the guard stops it
//! (the whole process group, so wrappers such as the Firestore emulator's launcher script do not
//! leave their JVM behind). A binary that is missing gives an error naming what to install.
//!
//! The pieces are independent so a test starts only what it needs; `Environment` starts them all
//! for the demo and for `cargo xtask env up`.

mod environment;
mod error;
mod fake_gcs;
mod firebase_auth;
mod firestore;
mod helm;
mod kube;
mod pki;
mod ports;
mod process;
mod promtool;
mod redis;
mod tools;

pub use environment::{DEMO_BUCKET, DEMO_PROJECT, Environment};
pub use error::{Error, Result};
pub use fake_gcs::FakeGcsServer;
pub use firebase_auth::{AuthEmulator, AuthEmulatorClient, SignedUpUser};
pub use firestore::FirestoreEmulator;
pub use helm::Helm;
pub use kube::ControlPlane;
pub use ports::{PortForward, free_port};
pub use process::Service;
pub use promtool::Promtool;
pub use redis::{RedisServer, SentinelGroup};
pub use tools::{Tools, repo_root};
