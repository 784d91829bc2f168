//! Our V4 signed URLs must be byte-identical to those of Google's Python client
//! (google-cloud-storage, pinned in tools/python/requirements.txt) for the same key and time.
//! A matrix of cases goes to tools/python/sign_url.py in one run; each case is then signed by
//! the library and by the `api-server sign-url` binary, and all three URLs must agree.
//!
//! Needs the reference venv: run tools/python/setup.sh (or set SCALABLE_PYTHON). Without it the
//! test fails on purpose; a silently skipped differential test proves nothing.
//!
//! The CLI's refusals of bad input (over-long expiry, unknown method, malformed key file) are
//! checked here too, since they are part of the same command's contract.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use base64::Engine as _;
use platform::storage::signed_url::{
    Method, Scheme, ServiceAccountKeySigner, SignedUrlRequest, UrlStyle, sign_url,
};
use serde::{Deserialize, Serialize};

const TIMESTAMP: &str = "2026-11-26T06:30:00Z";
const EMAIL: &str = "uploader@scalable-demo.iam.gserviceaccount.com";
const BIN: &str = env!("CARGO_BIN_EXE_api-server");

#[derive(Debug, Clone, Serialize)]
struct Case {
    name: &'static str,
    method: &'static str,
    bucket: &'static str,
    object: Option<&'static str>,
    expires: u64,
    headers: Vec<(&'static str, &'static str)>,
    query: Vec<(&'static str, &'static str)>,
    style: &'static str,
    scheme: &'static str,
    host: &'static str,
}

impl Case {
    fn new(name: &'static str, method: &'static str, object: Option<&'static str>) -> Self {
        Case {
            name,
            method,
            bucket: "scalable-uploads",
            object,
            expires: 900,
            headers: Vec::new(),
            query: Vec::new(),
            style: "path",
            scheme: "https",
            host: "storage.googleapis.com",
        }
    }
    fn expires(mut self, seconds: u64) -> Self {
        self.expires = seconds;
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
    fn query(mut self, name: &'static str, value: &'static str) -> Self {
        self.query.push((name, value));
        self
    }
    fn style(mut self, style: &'static str) -> Self {
        self.style = style;
        self
    }
    fn scheme(mut self, scheme: &'static str) -> Self {
        self.scheme = scheme;
        self
    }
    fn host(mut self, host: &'static str) -> Self {
        self.host = host;
        self
    }
    fn bucket(mut self, bucket: &'static str) -> Self {
        self.bucket = bucket;
        self
    }

    fn to_request(&self) -> SignedUrlRequest {
        let method: Method = self.method.parse().expect("matrix methods are valid");
        let style = match self.style {
            "path" => UrlStyle::Path,
            "virtual-hosted" => UrlStyle::VirtualHosted,
            "bucket-bound-hostname" => UrlStyle::BucketBoundHostname,
            other => panic!("unknown style {other} in the matrix"),
        };
        let scheme = if self.scheme == "http" {
            Scheme::Http
        } else {
            Scheme::Https
        };
        let timestamp = TIMESTAMP.parse().expect("valid timestamp");
        let mut request = SignedUrlRequest::new(
            method,
            self.bucket,
            Duration::from_secs(self.expires),
            timestamp,
        )
        .style(style)
        .scheme(scheme)
        .host(self.host);
        if let Some(object) = self.object {
            request = request.object(object);
        }
        for (name, value) in &self.headers {
            request = request.header(*name, *value);
        }
        for (name, value) in &self.query {
            request = request.query(*name, *value);
        }
        request
    }

    fn cli_args(&self, key_file: &Path) -> Vec<String> {
        let mut args = vec![
            "sign-url".to_owned(),
            format!("--key-file={}", key_file.display()),
            format!("--method={}", self.method),
            format!("--bucket={}", self.bucket),
            format!("--expires={}", self.expires),
            format!("--timestamp={TIMESTAMP}"),
            format!("--style={}", self.style),
            format!("--scheme={}", self.scheme),
            format!("--host={}", self.host),
        ];
        if let Some(object) = self.object {
            args.push(format!("--object={object}"));
        }
        args.extend(
            self.headers
                .iter()
                .map(|(n, v)| format!("--header={n}: {v}")),
        );
        args.extend(self.query.iter().map(|(n, v)| format!("--query={n}={v}")));
        args
    }
}

/// Every method, the signed headers uploads use, query parameters, all three URL styles, both
/// schemes, custom hosts, awkward object names and the expiry bounds.
fn matrix() -> Vec<Case> {
    let o = Some;
    vec![
        Case::new("get-simple", "GET", o("photo.jpg")),
        Case::new("get-expiry-1s", "GET", o("photo.jpg")).expires(1),
        Case::new("get-expiry-7d", "GET", o("photo.jpg")).expires(604_800),
        Case::new("get-expiry-1h", "get", o("nested/dir/file.bin")).expires(3600),
        Case::new("head", "HEAD", o("reports/2026/q4.pdf")),
        Case::new("delete", "DELETE", o("users/u1/old.txt")),
        Case::new("put-content-type", "PUT", o("users/u1/a.png"))
            .header("Content-Type", "image/png"),
        Case::new("put-meta", "PUT", o("users/u1/b.png"))
            .header("Content-Type", "image/png")
            .header("x-goog-meta-owner", "u1")
            .header("X-Goog-Meta-Trace-Id", "abc-123"),
        Case::new("put-length-range", "PUT", o("users/u1/c.bin"))
            .header("x-goog-content-length-range", "0,10485760"),
        Case::new("put-all-upload-headers", "PUT", o("users/u1/d.json"))
            .header("content-type", "application/json; charset=utf-8")
            .header("x-goog-content-length-range", "1,1048576")
            .header("x-goog-meta-original-name", "  my   report\t(final).json  ")
            .expires(300),
        Case::new("post-resumable", "POST", o("big/video.mp4")).header("Content-Type", "video/mp4"),
        Case::new("post-resumable-meta", "POST", o("big/archive.tar"))
            .header("x-goog-meta-purpose", "backup")
            .header("x-goog-content-length-range", "0,5368709120")
            .expires(86_400),
        Case::new("get-response-overrides", "GET", o("docs/a b.txt"))
            .query(
                "response-content-disposition",
                "attachment; filename=\"a b.txt\"",
            )
            .query("response-content-type", "text/plain"),
        Case::new("get-generation", "GET", o("versioned.txt"))
            .query("generation", "1764138600123456"),
        Case::new("get-query-special-chars", "GET", o("q.txt"))
            .query("userProject", "billing-project")
            .query("x-custom", "sp ace&amp=eq+plus/slash?q#h%p~t ü 日本"),
        Case::new("list-bucket-path", "GET", None),
        Case::new("list-bucket-prefix", "GET", None)
            .query("prefix", "users/u1/")
            .query("delimiter", "/")
            .query("max-keys", "100"),
        Case::new("list-bucket-virtual", "GET", None).style("virtual-hosted"),
        Case::new("list-bucket-bound", "GET", None)
            .style("bucket-bound-hostname")
            .host("files.example.com"),
        Case::new("virtual-get", "GET", o("img/logo.svg")).style("virtual-hosted"),
        Case::new("virtual-put-headers", "PUT", o("in/x.csv"))
            .style("virtual-hosted")
            .header("Content-Type", "text/csv")
            .header("x-goog-meta-rows", "42"),
        Case::new("virtual-delete-http", "DELETE", o("tmp/x"))
            .style("virtual-hosted")
            .scheme("http"),
        Case::new("bound-get-https", "GET", o("assets/app.js"))
            .style("bucket-bound-hostname")
            .host("cdn.example.com"),
        Case::new("bound-put-http", "PUT", o("in/y.txt"))
            .style("bucket-bound-hostname")
            .scheme("http")
            .host("uploads.example.org")
            .header("Content-Type", "text/plain"),
        Case::new("bound-head-http", "HEAD", o("assets/app.css"))
            .style("bucket-bound-hostname")
            .scheme("http")
            .host("cdn.example.com"),
        Case::new("http-default-host", "GET", o("plain.txt")).scheme("http"),
        Case::new("custom-host-port-path", "PUT", o("e2e/blob.bin"))
            .scheme("http")
            .host("127.0.0.1:4443")
            .header("Content-Type", "application/octet-stream"),
        Case::new("custom-host-virtual", "GET", o("e2e/blob.bin"))
            .scheme("http")
            .host("localhost:8080")
            .style("virtual-hosted"),
        Case::new("dotted-bucket", "GET", o("index.html")).bucket("assets.scalable.example"),
        Case::new("name-space", "GET", o("my photo 1.jpg")),
        Case::new("name-unicode", "GET", o("fotos/日本語/café ☕.png")),
        Case::new("name-plus", "PUT", o("a+b=c.txt")).header("Content-Type", "text/plain"),
        Case::new("name-question-hash", "GET", o("what?#now.txt")),
        Case::new("name-percent", "GET", o("100%/done%20already.txt")),
        Case::new("name-tilde-slashes", "GET", o("~user/dir//double/.hidden/")),
        Case::new("name-sub-delims", "DELETE", o("r!*'();:@&=+$,[].txt")),
        Case::new("name-everything", "POST", o("sp ace/+/?/#/%/~/ü/\u{1F600}"))
            .style("virtual-hosted")
            .header("x-goog-meta-k", "v")
            .query("upload_note", "a b"),
    ]
}

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("SCALABLE_PYTHON") {
        return PathBuf::from(python);
    }
    let cache = std::env::var_os("SCALABLE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/scalableapp")))
        .expect("neither SCALABLE_CACHE nor HOME is set");
    let python = cache.join("venv/bin/python");
    assert!(
        python.exists(),
        "the reference Python client is not installed ({} is missing): \
         run tools/python/setup.sh, or point SCALABLE_PYTHON at a python with \
         google-cloud-storage from tools/python/requirements.txt",
        python.display()
    );
    python
}

/// A fresh RSA-2048 service-account key file, shaped like the ones the console hands out.
fn write_key_file(dir: &Path) -> PathBuf {
    let pair = KeyPair::generate(KeySize::Rsa2048).expect("keygen");
    let der = pair.as_der().expect("pkcs8");
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "scalable-demo",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "123456789",
        // Required by the Python loader; never contacted.
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let path = dir.join("key.json");
    std::fs::write(&path, key.to_string()).expect("write key file");
    path
}

#[derive(Deserialize)]
struct PythonResults {
    results: Vec<PythonResult>,
}

#[derive(Deserialize)]
struct PythonResult {
    name: String,
    url: Option<String>,
    error: Option<String>,
}

fn python_urls(key_file: &Path, cases: &[Case]) -> Vec<PythonResult> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/python/sign_url.py");
    let input = serde_json::json!({ "key_file": key_file, "timestamp": TIMESTAMP, "cases": cases });
    let mut child = Command::new(python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the reference python");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write cases to python");
    let output = child.wait_with_output().expect("python finishes");
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: PythonResults = serde_json::from_slice(&output.stdout).expect("python prints JSON");
    parsed.results
}

fn run_cli(args: &[String]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run api-server")
}

/// Base URL and query parameters side by side, marking the ones that differ.
fn url_diff(expected: &str, actual: &str) -> String {
    let split = |url: &str| -> Vec<String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        std::iter::once(base.to_owned())
            .chain(query.split('&').map(str::to_owned))
            .collect()
    };
    let (expected, actual) = (split(expected), split(actual));
    let mut out = String::new();
    for i in 0..expected.len().max(actual.len()) {
        let e = expected.get(i).map_or("<none>", String::as_str);
        let a = actual.get(i).map_or("<none>", String::as_str);
        if e == a {
            out.push_str(&format!("      {e}\n"));
        } else {
            out.push_str(&format!("    - {e}   (python)\n    + {a}   (ours)\n"));
        }
    }
    out
}

#[tokio::test]
async fn signed_urls_match_google_python_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = write_key_file(dir.path());
    let signer = ServiceAccountKeySigner::from_file(&key_file).expect("our signer loads the key");
    let cases = matrix();
    assert!(cases.len() >= 30, "the matrix shrank to {}", cases.len());

    let reference = python_urls(&key_file, &cases);
    assert_eq!(
        reference.len(),
        cases.len(),
        "python answered a different number of cases"
    );

    let mut failures = Vec::new();
    for (case, reference) in cases.iter().zip(&reference) {
        assert_eq!(case.name, reference.name, "python answered out of order");
        let Some(expected) = &reference.url else {
            failures.push(format!(
                "{}: python could not sign: {}",
                case.name,
                reference.error.as_deref().unwrap_or("no url and no error")
            ));
            continue;
        };

        match sign_url(&signer, &case.to_request()).await {
            Ok(ours) if &ours == expected => {}
            Ok(ours) => failures.push(format!(
                "{} (library):\n{}",
                case.name,
                url_diff(expected, &ours)
            )),
            Err(e) => failures.push(format!("{} (library): error {e:?}", case.name)),
        }

        let output = run_cli(&case.cli_args(&key_file));
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            failures.push(format!(
                "{} (cli): exit {}: {}",
                case.name,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        } else if stdout != format!("{expected}\n") {
            failures.push(format!(
                "{} (cli):\n{}",
                case.name,
                url_diff(expected, stdout.trim_end())
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from google-cloud-storage:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A refused invocation: non-zero exit, nothing on stdout, and stderr says why.
fn assert_refused(args: &[String], expected_in_stderr: &str) {
    let output = run_cli(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "{args:?} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        output.stdout.is_empty(),
        "{args:?} printed on stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains(expected_in_stderr),
        "{args:?}: stderr lacks {expected_in_stderr:?}:\n{stderr}"
    );
}

fn with(args: &[String], replace: &str, value: &str) -> Vec<String> {
    args.iter()
        .map(|a| {
            if a.starts_with(&format!("{replace}=")) {
                format!("{replace}={value}")
            } else {
                a.clone()
            }
        })
        .collect()
}

#[test]
fn cli_refuses_bad_input_with_a_clear_message_and_no_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = write_key_file(dir.path());
    let good = Case::new("cli", "PUT", Some("a.txt"))
        .header("Content-Type", "text/plain")
        .cli_args(&key_file);

    // The baseline works, so each refusal below is down to the one changed argument.
    let output = run_cli(&good);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "only the URL: {stdout}");
    assert!(
        stdout
            .starts_with("https://storage.googleapis.com/scalable-uploads/a.txt?X-Goog-Algorithm=")
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert_refused(
        &with(&good, "--expires", "604801"),
        "longer than the V4 maximum of 604800 s (7 days)",
    );
    assert_refused(&with(&good, "--expires", "0"), "at least 1 second");
    assert_refused(&with(&good, "--expires", "-5"), "--expires");
    assert_refused(
        &with(&good, "--method", "PATCH"),
        "unknown HTTP method \"PATCH\"",
    );
    assert_refused(&with(&good, "--timestamp", "yesterday"), "--timestamp");
    assert_refused(
        &with(&good, "--header", "NoColon"),
        "expected 'Name: value'",
    );
    assert_refused(&with(&good, "--style", "sideways"), "--style");
    assert_refused(
        &with(&good, "--bucket", "Not_A/Bucket"),
        "invalid bucket name",
    );
    assert_refused(&with(&good, "--host", "https://h.example"), "invalid host");

    let missing = dir.path().join("missing.json");
    assert_refused(
        &with(&good, "--key-file", &missing.display().to_string()),
        "cannot read key file",
    );
    let malformed: [(&str, &str); 4] = [
        ("{not json", "not a JSON object"),
        (
            r#"{"type":"service_account","client_email":"a@b.iam"}"#,
            "\"private_key\" is missing",
        ),
        (
            r#"{"client_email":"a@b.iam","private_key":"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"}"#,
            "\"private_key\" is not a PEM",
        ),
        (r#"{"private_key":"x"}"#, "\"client_email\" is missing"),
    ];
    for (i, (content, expected)) in malformed.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.json"));
        std::fs::write(&path, content).expect("write bad key file");
        let args = with(&good, "--key-file", &path.display().to_string());
        assert_refused(&args, expected);
        // The message names the file too, so an operator knows which one to fix.
        assert_refused(&args, &path.display().to_string());
    }
}

#[test]
fn cli_signs_at_the_current_time_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = write_key_file(dir.path());
    let args: Vec<String> = Case::new("now", "GET", None)
        .cli_args(&key_file)
        .into_iter()
        .filter(|a| !a.starts_with("--timestamp="))
        .collect();
    let stamp = || {
        jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string()
    };
    let before = stamp();
    let output = run_cli(&args);
    let after = stamp();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let url = String::from_utf8_lossy(&output.stdout);
    let date = url
        .split('&')
        .find_map(|p| p.strip_prefix("X-Goog-Date="))
        .expect("X-Goog-Date in the URL");
    assert!(
        before.as_str() <= date && date <= after.as_str(),
        "{before} <= {date} <= {after}"
    );
}
