//! Cloud Storage access. Clients upload and download straight to and from the bucket through
//! signed URLs; the servers only sign them (and keep the metadata elsewhere).

pub mod signed_url;
