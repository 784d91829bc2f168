//! The `api-server serve` HTTP API: Firebase-authenticated documents in Firestore, cached in
//! Redis, rate limited across replicas, and background jobs published to the Redis job queue.
//! The binary in `main.rs` only parses the command line; everything here takes its dependencies
//! as values so tests build it against real services.

pub mod auth;
pub mod config;
pub mod documents;
pub mod edge;
pub mod files;
pub mod jobs;
pub mod lanes;
pub mod observability;
pub mod openapi;
pub mod problem;
pub mod ratelimit;
pub mod redis;
pub mod routes;
pub mod serve;
pub mod shutdown;
pub mod state;
