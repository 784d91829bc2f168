//! Shared by api-server and worker.

pub mod config;
pub mod firestore;
pub mod queue;
pub mod startup;
pub mod storage;
pub mod telemetry;
