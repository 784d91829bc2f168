//! What a caller asks to sign: method, resource, lifetime, and the headers and query parameters
//! the eventual request must carry. Validation lives in [`canonical`](super::canonical), where
//! the canonical form is built, so there is one pass over the input.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;

/// The V4 maximum: 7 days.
pub const MAX_EXPIRY_SECS: u64 = 7 * 24 * 60 * 60;

/// The Cloud Storage XML API endpoint, which serves signed URLs.
pub const DEFAULT_HOST: &str = "storage.googleapis.com";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    /// Starts a resumable upload: Google accepts a signed `POST` for nothing else, so the
    /// `x-goog-resumable: start` header it requires is signed automatically.
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown HTTP method {0:?}: expected one of GET, HEAD, PUT, POST (alias RESUMABLE), DELETE"
)]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;

    /// Case-insensitive; `RESUMABLE` is accepted for `POST` as gsutil and the Python client do.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "GET" => Ok(Method::Get),
            "HEAD" => Ok(Method::Head),
            "PUT" => Ok(Method::Put),
            "POST" | "RESUMABLE" => Ok(Method::Post),
            "DELETE" => Ok(Method::Delete),
            _ => Err(UnknownMethod(s.to_owned())),
        }
    }
}

/// Where the bucket goes in the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UrlStyle {
    /// `https://HOST/BUCKET/OBJECT`
    #[default]
    Path,
    /// `https://BUCKET.HOST/OBJECT`
    VirtualHosted,
    /// `https://HOST/OBJECT` where HOST is a domain mapped to the bucket (CNAME, load balancer).
    BucketBoundHostname,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Https,
    Http,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SignedUrlRequest {
    pub(super) method: Method,
    pub(super) bucket: String,
    pub(super) object: Option<String>,
    pub(super) expires_in: Duration,
    pub(super) timestamp: Timestamp,
    pub(super) headers: Vec<(String, String)>,
    pub(super) query: Vec<(String, String)>,
    pub(super) style: UrlStyle,
    pub(super) scheme: Scheme,
    pub(super) host: String,
}

impl SignedUrlRequest {
    /// A request for the bucket itself (listing, or the target of a bucket-level operation);
    /// add [`object`](Self::object) to sign an object. `timestamp` is when validity starts,
    /// normally now; whole seconds of `expires_in` count.
    pub fn new(
        method: Method,
        bucket: impl Into<String>,
        expires_in: Duration,
        timestamp: Timestamp,
    ) -> Self {
        SignedUrlRequest {
            method,
            bucket: bucket.into(),
            object: None,
            expires_in,
            timestamp,
            headers: Vec::new(),
            query: Vec::new(),
            style: UrlStyle::default(),
            scheme: Scheme::default(),
            host: DEFAULT_HOST.to_owned(),
        }
    }

    pub fn object(mut self, name: impl Into<String>) -> Self {
        self.object = Some(name.into());
        self
    }

    /// A header the request must send with exactly this value (signed, so it can't be changed).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    pub fn style(mut self, style: UrlStyle) -> Self {
        self.style = style;
        self
    }

    pub fn scheme(mut self, scheme: Scheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// The service endpoint (`host` or `host:port`); with [`UrlStyle::BucketBoundHostname`] the
    /// bucket's own domain.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// When the URL stops working.
    pub fn expires_at(&self) -> Option<Timestamp> {
        let secs = i64::try_from(self.expires_in.as_secs()).ok()?;
        self.timestamp
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .ok()
    }
}
