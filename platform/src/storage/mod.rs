//! Cloud Storage access. Clients upload and download straight to and from the bucket through
//! signed URLs; the servers only sign them, keep the metadata in Firestore ([`files`], [`file_store`]), and read
//! or delete objects through the JSON API ([`objects`]).

pub mod file_store;
pub mod files;
pub mod objects;
pub mod signed_url;
