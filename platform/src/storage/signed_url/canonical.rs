//! The pure half of V4 signing: request → canonical request → string to sign, and the URL once a
//! signature exists. No keys and no I/O, so each rule is unit-tested on plain strings.
//!
//! ```text
//! canonical request = METHOD \n PATH \n CANONICAL_QUERY \n CANONICAL_HEADERS \n \n SIGNED_HEADERS \n PAYLOAD
//! string to sign    = GOOG4-RSA-SHA256 \n TIMESTAMP \n SCOPE \n hex(sha256(canonical request))
//! ```
//!
//! Where Google's prose and its Python client disagree, the prose wins; the one known case is
//! the query sort (see [`canonical_query`]).

use std::fmt::Write as _;

use aws_lc_rs::digest;

use super::error::SignedUrlError;
use super::request::{MAX_EXPIRY_SECS, Method, SignedUrlRequest, UrlStyle};

pub const ALGORITHM: &str = "GOOG4-RSA-SHA256";

/// Signed URLs carry no body hash; the server is told so literally.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Query parameters that the signer itself owns; a caller-supplied copy would be ambiguous.
const RESERVED_QUERY: [&str; 6] = [
    "x-goog-algorithm",
    "x-goog-credential",
    "x-goog-date",
    "x-goog-expires",
    "x-goog-signedheaders",
    "x-goog-signature",
];

/// Everything needed to finish the URL once the string to sign has been signed.
#[derive(Debug, Clone)]
pub struct PreparedUrl {
    base: String,
    canonical_query: String,
    canonical_request: String,
    string_to_sign: String,
}

impl PreparedUrl {
    pub fn canonical_request(&self) -> &str {
        &self.canonical_request
    }

    pub fn string_to_sign(&self) -> &str {
        &self.string_to_sign
    }

    /// The URL with `X-Goog-Signature` (lowercase hex, as Google's clients write it) appended.
    pub fn finish(&self, signature: &[u8]) -> String {
        let mut url = String::with_capacity(
            self.base.len() + self.canonical_query.len() + 20 + signature.len() * 2,
        );
        url.push_str(&self.base);
        url.push('?');
        url.push_str(&self.canonical_query);
        url.push_str("&X-Goog-Signature=");
        url.push_str(&hex(signature));
        url
    }
}

impl SignedUrlRequest {
    /// Validates the request and builds its canonical form for `client_email`'s credential.
    pub fn prepare(&self, client_email: &str) -> Result<PreparedUrl, SignedUrlError> {
        let expires = expiry_secs(self.expires_in.as_secs())?;
        validate_bucket(&self.bucket)?;
        validate_host(&self.host)?;
        let object = match &self.object {
            Some(name) => {
                validate_object(name)?;
                Some(encode_path(name))
            }
            None => None,
        };

        let (authority, path) = match self.style {
            UrlStyle::Path => (
                self.host.clone(),
                match &object {
                    Some(object) => format!("/{}/{object}", self.bucket),
                    None => format!("/{}", self.bucket),
                },
            ),
            UrlStyle::VirtualHosted => (format!("{}.{}", self.bucket, self.host), root(&object)),
            UrlStyle::BucketBoundHostname => (self.host.clone(), root(&object)),
        };

        let mut headers = self.headers.clone();
        if self.method == Method::Post {
            headers.push(("x-goog-resumable".to_owned(), "start".to_owned()));
        }
        let headers = canonical_headers(&headers, &authority)?;
        let signed_headers = headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let mut canonical_header_block = String::new();
        for (name, value) in &headers {
            // One line per header, each ending in \n; that trailing \n plus the separator gives
            // the blank line Google's format shows.
            let _ = writeln!(canonical_header_block, "{name}:{value}");
        }
        // A body hash, when the caller pins one, replaces UNSIGNED-PAYLOAD (Google's clients do
        // the same).
        let payload = headers
            .iter()
            .find(|(name, _)| name == "x-goog-content-sha256")
            .map_or(UNSIGNED_PAYLOAD, |(_, value)| value.as_str());

        let timestamp = self.timestamp.strftime("%Y%m%dT%H%M%SZ").to_string();
        let scope = credential_scope(&self.timestamp.strftime("%Y%m%d").to_string());

        for (name, _) in &self.query {
            if name.is_empty() {
                return Err(SignedUrlError::InvalidQueryParameter {
                    name: name.clone(),
                    reason: "the name is empty",
                });
            }
            if RESERVED_QUERY.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(SignedUrlError::InvalidQueryParameter {
                    name: name.clone(),
                    reason: "the signer sets this parameter itself",
                });
            }
        }
        let mut query = self.query.clone();
        query.extend([
            ("X-Goog-Algorithm".to_owned(), ALGORITHM.to_owned()),
            (
                "X-Goog-Credential".to_owned(),
                format!("{client_email}/{scope}"),
            ),
            ("X-Goog-Date".to_owned(), timestamp.clone()),
            ("X-Goog-Expires".to_owned(), expires.to_string()),
            ("X-Goog-SignedHeaders".to_owned(), signed_headers.clone()),
        ]);
        let canonical_query = canonical_query(&query);

        let canonical_request = [
            self.method.as_str(),
            &path,
            &canonical_query,
            &canonical_header_block,
            &signed_headers,
            payload,
        ]
        .join("\n");
        let request_hash =
            hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref());
        let string_to_sign = [ALGORITHM, &timestamp, &scope, &request_hash].join("\n");

        Ok(PreparedUrl {
            base: format!("{}://{authority}{path}", self.scheme.as_str()),
            canonical_query,
            canonical_request,
            string_to_sign,
        })
    }
}

fn root(object: &Option<String>) -> String {
    match object {
        Some(object) => format!("/{object}"),
        None => "/".to_owned(),
    }
}

/// `<YYYYMMDD>/auto/storage/goog4_request`: Cloud Storage ignores the region, hence `auto`.
pub fn credential_scope(date: &str) -> String {
    format!("{date}/auto/storage/goog4_request")
}

fn expiry_secs(seconds: u64) -> Result<u64, SignedUrlError> {
    match seconds {
        0 => Err(SignedUrlError::ExpiryTooShort),
        s if s > MAX_EXPIRY_SECS => Err(SignedUrlError::ExpiryTooLong { seconds: s }),
        s => Ok(s),
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn percent_encode(input: &str, keep: impl Fn(u8) -> bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(input.len());
    for &b in input.as_bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// RFC 3986 percent-encoding of a query name or value: only unreserved characters stay.
pub fn encode_query_component(input: &str) -> String {
    percent_encode(input, is_unreserved)
}

/// An object name in the path, as Google's clients encode it: unreserved characters and `/`
/// stay (so `a/b` reads as a path), everything else, including `+`, `?`, `#`, `%` and
/// non-ASCII UTF-8, is percent-encoded.
pub fn encode_path(input: &str) -> String {
    percent_encode(input, |b| is_unreserved(b) || b == b'/')
}

/// A path segment that may contain `@` (the service-account email in the signBlob URL).
pub(super) fn encode_path_segment_keep_at(input: &str) -> String {
    percent_encode(input, |b| is_unreserved(b) || b == b'@')
}

/// `name=value` pairs, each side percent-encoded, sorted by encoded name and then by encoded
/// value, joined with `&`.
///
/// Google specifies a sort by parameter name. Its Python client sorts the whole `name=value`
/// strings instead, which differs only when one name is a prefix of another followed by a
/// character below `=` (`a` vs `a-b`); there this follows the spec.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(name, value)| (encode_query_component(name), encode_query_component(value)))
        .collect();
    encoded.sort();
    let mut out = String::new();
    for (i, (name, value)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Lowercased, trimmed names; values trimmed with inner whitespace runs folded to one space;
/// repeated names joined with `,` in the order given; sorted by name. `host` (the URL's
/// authority) is always included, since Google requires it and a caller-supplied one could only
/// contradict the URL.
pub fn canonical_headers(
    headers: &[(String, String)],
    authority: &str,
) -> Result<Vec<(String, String)>, SignedUrlError> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(headers.len() + 1);
    out.push(("host".to_owned(), authority.to_owned()));
    for (raw_name, raw_value) in headers {
        let name = raw_name.trim().to_ascii_lowercase();
        let invalid = |reason| SignedUrlError::InvalidHeader {
            name: raw_name.clone(),
            reason,
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(invalid("not a valid HTTP header name"));
        }
        if name == "host" {
            return Err(invalid(
                "the host header comes from the URL and is always signed",
            ));
        }
        if !raw_value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(invalid(
                "the value must be printable ASCII (no control characters or line breaks)",
            ));
        }
        let value = raw_value
            .split_ascii_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        match out.iter_mut().find(|(existing, _)| *existing == name) {
            // The automatic x-goog-resumable for POST must not double a caller's identical one.
            Some((existing, current)) if existing == "x-goog-resumable" => {
                if *current != value {
                    return Err(invalid(
                        "a resumable upload start needs the value \"start\"",
                    ));
                }
            }
            Some((_, current)) => {
                current.push(',');
                current.push_str(&value);
            }
            None => out.push((name, value)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bucket names as Cloud Storage allows them: lowercase letters, digits, `-`, `_` and `.`,
/// starting and ending with a letter or digit. Checked because the name goes into the URL and
/// the host name unencoded.
fn validate_bucket(name: &str) -> Result<(), SignedUrlError> {
    let invalid = |reason| SignedUrlError::InvalidBucketName {
        name: name.to_owned(),
        reason,
    };
    if !(3..=222).contains(&name.len()) {
        return Err(invalid("must be 3 to 222 characters long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid(
            "only lowercase letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !alnum(name.bytes().next()) || !alnum(name.bytes().last()) {
        return Err(invalid("must start and end with a letter or digit"));
    }
    Ok(())
}

/// Object names: 1 to 1024 bytes of UTF-8 without CR or LF (Cloud Storage's own limits).
fn validate_object(name: &str) -> Result<(), SignedUrlError> {
    let invalid = |reason| SignedUrlError::InvalidObjectName { reason };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name.len() > 1024 {
        return Err(invalid("longer than 1024 bytes"));
    }
    if name.contains(['\r', '\n']) {
        return Err(invalid("contains a carriage return or line feed"));
    }
    Ok(())
}

/// `host`, `host:port` or `[v6]:port`: no scheme, path or user info, since it is used verbatim
/// both in the URL and as the signed `host` header.
fn validate_host(host: &str) -> Result<(), SignedUrlError> {
    let invalid = |reason| SignedUrlError::InvalidHost {
        host: host.to_owned(),
        reason,
    };
    if host.is_empty() {
        return Err(invalid("empty"));
    }
    if host.contains("://") {
        return Err(invalid(
            "give the host name only; the scheme is a separate option",
        ));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']'))
    {
        return Err(invalid(
            "only letters, digits, '-', '.', '_', ':' and IPv6 brackets are allowed",
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::Timestamp;

    use super::*;
    use crate::storage::signed_url::{Scheme, SignedUrlRequest};

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn ts() -> Timestamp {
        "2026-11-26T06:30:00Z".parse().expect("valid timestamp")
    }

    #[test]
    fn query_encoding_keeps_only_unreserved() {
        assert_eq!(encode_query_component("aZ09-._~"), "aZ09-._~");
        assert_eq!(
            encode_query_component("a b/c+d?e#f%g&h=i"),
            "a%20b%2Fc%2Bd%3Fe%23f%25g%26h%3Di"
        );
        assert_eq!(encode_query_component("é"), "%C3%A9");
        assert_eq!(encode_query_component("sa@p.iam/2026"), "sa%40p.iam%2F2026");
    }

    #[test]
    fn path_encoding_keeps_slash_and_tilde() {
        assert_eq!(encode_path("dir/sub/~file.txt"), "dir/sub/~file.txt");
        assert_eq!(
            encode_path("my file+1?.txt#frag%"),
            "my%20file%2B1%3F.txt%23frag%25"
        );
        assert_eq!(encode_path("日本"), "%E6%97%A5%E6%9C%AC");
        assert_eq!(encode_path("a:b;c=d@e"), "a%3Ab%3Bc%3Dd%40e");
    }

    #[test]
    fn query_is_sorted_by_encoded_name_then_value() {
        let q = canonical_query(&pairs(&[
            ("b", "2"),
            ("X-Goog-Date", "x"),
            ("a", "z"),
            ("a", "y"),
            ("a-b", "1"),
        ]));
        // Uppercase sorts before lowercase (code points); `a` before `a-b` because names are
        // compared on their own, not as `a=...` strings.
        assert_eq!(q, "X-Goog-Date=x&a=y&a=z&a-b=1&b=2");
    }

    #[test]
    fn headers_are_lowercased_trimmed_folded_merged_and_sorted() {
        let h = canonical_headers(
            &pairs(&[
                ("  X-Goog-Meta-Note ", "  two   words\there  "),
                ("Content-Type", "text/plain"),
                ("x-goog-meta-note", "second"),
            ]),
            "storage.example:8080",
        )
        .expect("valid headers");
        assert_eq!(
            h,
            pairs(&[
                ("content-type", "text/plain"),
                ("host", "storage.example:8080"),
                ("x-goog-meta-note", "two words here,second"),
            ])
        );
    }

    #[test]
    fn headers_reject_host_bad_names_and_line_breaks() {
        for (name, value) in [
            ("Host", "evil.example"),
            ("bad name", "v"),
            ("", "v"),
            ("x-goog-meta-a", "line\r\nInjected: yes"),
            ("x-goog-meta-a", "caf\u{e9}"),
        ] {
            let err = canonical_headers(&pairs(&[(name, value)]), "h")
                .expect_err(&format!("{name:?}: {value:?} must be rejected"));
            assert!(matches!(err, SignedUrlError::InvalidHeader { .. }), "{err}");
        }
    }

    #[test]
    fn scope_has_auto_region() {
        assert_eq!(
            credential_scope("20261126"),
            "20261126/auto/storage/goog4_request"
        );
    }

    #[test]
    fn canonical_request_matches_the_documented_layout() {
        let request =
            SignedUrlRequest::new(Method::Put, "my-bucket", Duration::from_secs(900), ts())
                .object("dir/a b.txt")
                .header("Content-Type", "text/plain");
        let prepared = request
            .prepare("sa@p.iam.gserviceaccount.com")
            .expect("valid");
        let expected = "PUT\n\
            /my-bucket/dir/a%20b.txt\n\
            X-Goog-Algorithm=GOOG4-RSA-SHA256\
            &X-Goog-Credential=sa%40p.iam.gserviceaccount.com%2F20261126%2Fauto%2Fstorage%2Fgoog4_request\
            &X-Goog-Date=20261126T063000Z&X-Goog-Expires=900\
            &X-Goog-SignedHeaders=content-type%3Bhost\n\
            content-type:text/plain\nhost:storage.googleapis.com\n\n\
            content-type;host\n\
            UNSIGNED-PAYLOAD";
        assert_eq!(prepared.canonical_request(), expected);

        let hash = hex(digest::digest(&digest::SHA256, expected.as_bytes()).as_ref());
        assert_eq!(
            prepared.string_to_sign(),
            format!(
                "GOOG4-RSA-SHA256\n20261126T063000Z\n20261126/auto/storage/goog4_request\n{hash}"
            )
        );
        let url = prepared.finish(&[0xab, 0x01]);
        assert!(
            url.starts_with(
                "https://storage.googleapis.com/my-bucket/dir/a%20b.txt?X-Goog-Algorithm="
            ),
            "{url}"
        );
        assert!(url.ends_with("&X-Goog-Signature=ab01"), "{url}");
    }

    #[test]
    fn post_signs_resumable_start_and_styles_place_the_bucket() {
        let base = SignedUrlRequest::new(Method::Post, "b-1", Duration::from_secs(60), ts())
            .object("o")
            .scheme(Scheme::Http)
            .host("127.0.0.1:4443");
        let path = base.prepare("e").expect("valid");
        assert!(path.canonical_request().starts_with("POST\n/b-1/o\n"));
        assert!(
            path.canonical_request().contains(
                "\nhost:127.0.0.1:4443\nx-goog-resumable:start\n\nhost;x-goog-resumable\n"
            )
        );
        assert!(path.finish(&[]).starts_with("http://127.0.0.1:4443/b-1/o?"));

        let virtual_hosted = base
            .clone()
            .style(UrlStyle::VirtualHosted)
            .prepare("e")
            .expect("valid");
        assert!(
            virtual_hosted
                .canonical_request()
                .contains("\nhost:b-1.127.0.0.1:4443\n")
        );
        assert!(
            virtual_hosted
                .finish(&[])
                .starts_with("http://b-1.127.0.0.1:4443/o?")
        );

        let bound = SignedUrlRequest::new(Method::Get, "b-1", Duration::from_secs(60), ts())
            .style(UrlStyle::BucketBoundHostname)
            .host("cdn.example.com")
            .prepare("e")
            .expect("valid");
        assert!(bound.canonical_request().starts_with("GET\n/\n"));
        assert!(bound.finish(&[]).starts_with("https://cdn.example.com/?"));

        let explicit = base
            .clone()
            .header("X-Goog-Resumable", "start")
            .prepare("e")
            .expect("valid");
        assert_eq!(explicit.canonical_request(), path.canonical_request());
        assert!(base.header("x-goog-resumable", "yes").prepare("e").is_err());
    }

    #[test]
    fn expiry_bounds() {
        let at = |secs| {
            SignedUrlRequest::new(Method::Get, "bkt", Duration::from_secs(secs), ts()).prepare("e")
        };
        assert!(matches!(at(0), Err(SignedUrlError::ExpiryTooShort)));
        assert!(at(1).is_ok());
        assert!(at(MAX_EXPIRY_SECS).is_ok());
        assert!(matches!(
            at(MAX_EXPIRY_SECS + 1),
            Err(SignedUrlError::ExpiryTooLong { seconds: 604_801 })
        ));
    }

    #[test]
    fn rejects_bad_names_hosts_and_reserved_query() {
        let ok = || SignedUrlRequest::new(Method::Get, "bkt", Duration::from_secs(60), ts());
        let bad_bucket =
            SignedUrlRequest::new(Method::Get, "Bad/Bucket", Duration::from_secs(60), ts());
        assert!(matches!(
            bad_bucket.prepare("e"),
            Err(SignedUrlError::InvalidBucketName { .. })
        ));
        assert!(matches!(
            ok().object("").prepare("e"),
            Err(SignedUrlError::InvalidObjectName { .. })
        ));
        assert!(matches!(
            ok().object("a\nb").prepare("e"),
            Err(SignedUrlError::InvalidObjectName { .. })
        ));
        assert!(matches!(
            ok().host("https://h").prepare("e"),
            Err(SignedUrlError::InvalidHost { .. })
        ));
        assert!(matches!(
            ok().host("h/path").prepare("e"),
            Err(SignedUrlError::InvalidHost { .. })
        ));
        assert!(matches!(
            ok().query("x-goog-signature", "0").prepare("e"),
            Err(SignedUrlError::InvalidQueryParameter { .. })
        ));
    }

    #[test]
    fn content_sha256_header_replaces_unsigned_payload() {
        let prepared = SignedUrlRequest::new(Method::Put, "bkt", Duration::from_secs(60), ts())
            .object("o")
            .header("x-goog-content-sha256", "abc123")
            .prepare("e")
            .expect("valid");
        assert!(
            prepared
                .canonical_request()
                .ends_with("\nhost;x-goog-content-sha256\nabc123")
        );
    }
}
