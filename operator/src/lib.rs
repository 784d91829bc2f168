//! ScalableApp operator: the CRD types, the pure desired-state renderer, and the reconciler.
//!
//! Data flows one way: `api` (the custom resource) → `render` (desired children, no I/O) →
//! `apply` (server-side apply, skipping what matches) → `status` (conditions from the
//! children). `controller` wires them to watches; `runner` (with `leader`, `discovery`, `admin`,
//! `client`, `metrics`, `telemetry`) is the process around it.

pub mod admin;
pub mod api;
pub mod apply;
pub mod client;
pub mod controller;
pub mod crd;
pub mod discovery;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod redis_auth;
pub mod render;
pub mod runner;
pub mod status;
pub mod telemetry;
