//! Integration tests live in `tests/`; see docs/development.md.
