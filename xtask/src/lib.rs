//! Library part of the developer commands, so tests can check that generated docs are current.

pub mod docs;
