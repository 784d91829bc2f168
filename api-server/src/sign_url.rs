//! `api-server sign-url`: signs one URL with a service-account key file. The URL is the only
//! thing on stdout so scripts can capture it; every problem goes to stderr with a non-zero exit.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use jiff::Timestamp;
use platform::storage::signed_url::{
    DEFAULT_HOST, Method, Scheme, ServiceAccountKeySigner, SignedUrlRequest, UrlStyle, sign_url,
};

#[derive(Debug, Args)]
pub struct SignUrlArgs {
    /// Service-account JSON key file (needs `client_email` and a PKCS#8 `private_key`).
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,

    /// GET, HEAD, PUT, POST (starts a resumable upload; RESUMABLE is accepted too) or DELETE.
    #[arg(long, value_name = "METHOD", value_parser = parse_method)]
    method: Method,

    #[arg(long, value_name = "BUCKET")]
    bucket: String,

    /// Object name; without it the bucket itself is signed (for listing).
    #[arg(long, value_name = "OBJECT")]
    object: Option<String>,

    /// Lifetime in seconds, 1 to 604800 (7 days).
    #[arg(long, value_name = "SECONDS")]
    expires: u64,

    /// Start of validity, RFC 3339 with an offset (e.g. 2026-11-26T06:30:00Z); default now.
    #[arg(long, value_name = "RFC3339")]
    timestamp: Option<Timestamp>,

    /// A header the request must carry, signed: 'Name: value'. Repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,

    /// An extra query parameter, signed: name=value. Repeatable.
    #[arg(long = "query", value_name = "NAME=VALUE", value_parser = parse_query)]
    query: Vec<(String, String)>,

    #[arg(long, value_enum, default_value_t = StyleArg::Path)]
    style: StyleArg,

    /// Service endpoint (host or host:port). Virtual-hosted style prefixes the bucket to it; for
    /// bucket-bound-hostname it is the bucket's own domain.
    #[arg(long, value_name = "HOST", default_value = DEFAULT_HOST)]
    host: String,

    #[arg(long, value_enum, default_value_t = SchemeArg::Https)]
    scheme: SchemeArg,
}

/// Mirrors [`UrlStyle`] so the library stays free of clap.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StyleArg {
    Path,
    VirtualHosted,
    BucketBoundHostname,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchemeArg {
    Https,
    Http,
}

fn parse_method(s: &str) -> Result<Method, String> {
    s.parse()
        .map_err(|e: platform::storage::signed_url::UnknownMethod| e.to_string())
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("expected 'Name: value', got {s:?}"))?;
    if name.trim().is_empty() {
        return Err(format!("header name is empty in {s:?}"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn parse_query(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected name=value, got {s:?}"))?;
    if name.is_empty() {
        return Err(format!("query parameter name is empty in {s:?}"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

pub fn run(args: SignUrlArgs) -> anyhow::Result<()> {
    let signer = ServiceAccountKeySigner::from_file(&args.key_file)
        .with_context(|| format!("key file {}", args.key_file.display()))?;

    let mut request = SignedUrlRequest::new(
        args.method,
        args.bucket,
        Duration::from_secs(args.expires),
        args.timestamp.unwrap_or_else(Timestamp::now),
    )
    .style(match args.style {
        StyleArg::Path => UrlStyle::Path,
        StyleArg::VirtualHosted => UrlStyle::VirtualHosted,
        StyleArg::BucketBoundHostname => UrlStyle::BucketBoundHostname,
    })
    .scheme(match args.scheme {
        SchemeArg::Https => Scheme::Https,
        SchemeArg::Http => Scheme::Http,
    })
    .host(args.host);
    if let Some(object) = args.object {
        request = request.object(object);
    }
    for (name, value) in args.headers {
        request = request.header(name, value);
    }
    for (name, value) in args.query {
        request = request.query(name, value);
    }

    // The key signer never awaits anything real, so a single-threaded runtime is plenty.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the async runtime")?;
    let url = runtime.block_on(sign_url(&signer, &request))?;
    println!("{url}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_query_arguments_split_at_the_first_separator() {
        assert_eq!(
            parse_header("X-Goog-Meta-Url: https://a.example/b"),
            Ok((
                "X-Goog-Meta-Url".to_owned(),
                " https://a.example/b".to_owned()
            ))
        );
        assert_eq!(parse_query("q=a=b"), Ok(("q".to_owned(), "a=b".to_owned())));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": v").is_err());
        assert!(parse_query("novalue").is_err());
        assert!(parse_query("=v").is_err());
    }

    #[test]
    fn methods_parse_case_insensitively_and_unknown_ones_are_named() {
        assert_eq!(parse_method("put"), Ok(Method::Put));
        assert_eq!(parse_method("RESUMABLE"), Ok(Method::Post));
        let err = parse_method("PATCH").expect_err("PATCH is not signable");
        assert!(err.contains("unknown HTTP method \"PATCH\""), "{err}");
    }
}
