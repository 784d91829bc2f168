//! Signed URLs per second on one core with an RSA-2048 key, next to OpenSSL's own RSA-2048 sign
//! rate measured in the same run, so the figure can be judged against the machine rather than in
//! the abstract. Writes docs/benchmarks/signing.json.
//!
//! `cargo bench -p platform --bench sign_url` (SIGN_BENCH_N sets the number of signatures).

use std::error::Error;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use jiff::Timestamp;
use platform::storage::signed_url::{Method, ServiceAccountKeySigner, SignedUrlRequest};

const EMAIL: &str = "bench@demo-project.iam.gserviceaccount.com";

fn main() -> Result<(), Box<dyn Error>> {
    let n: u32 = match std::env::var("SIGN_BENCH_N") {
        Ok(v) => v.parse()?,
        Err(_) => 3000,
    };
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|e| format!("keygen: {e}"))?;
    let der = pair.as_der().map_err(|e| format!("pkcs8: {e}"))?;
    let signer = ServiceAccountKeySigner::from_pkcs8_der(EMAIL, der.as_ref())?;
    let request = SignedUrlRequest::new(
        Method::Put,
        "bench-bucket",
        Duration::from_secs(900),
        Timestamp::now(),
    )
    .object("users/u-123/uploads/photo 2026.jpg")
    .header("Content-Type", "image/jpeg")
    .header("x-goog-content-length-range", "0,10485760");

    // Warm-up: page in code and let the CPU settle its clock.
    for _ in 0..n / 10 {
        let prepared = request.prepare(EMAIL)?;
        std::hint::black_box(
            prepared.finish(&signer.sign_sync(prepared.string_to_sign().as_bytes())?),
        );
    }

    // Whole signed URL: validation, canonical request, SHA-256, RSA, URL assembly.
    let start = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..n {
        let prepared = request.prepare(EMAIL)?;
        let url = prepared.finish(&signer.sign_sync(prepared.string_to_sign().as_bytes())?);
        bytes += std::hint::black_box(url).len();
    }
    let url_elapsed = start.elapsed();

    // The RSA step alone, to show how much of the cost is canonicalisation.
    let message = request.prepare(EMAIL)?.string_to_sign().to_owned();
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(signer.sign_sync(message.as_bytes())?);
    }
    let rsa_elapsed = start.elapsed();

    // Canonicalisation alone (validation, canonical request, SHA-256), no RSA.
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(request.prepare(EMAIL)?);
    }
    let prepare_elapsed = start.elapsed();

    let urls_per_sec = f64::from(n) / url_elapsed.as_secs_f64();
    let rsa_per_sec = f64::from(n) / rsa_elapsed.as_secs_f64();
    let openssl = openssl_rsa2048_sign_per_sec();

    let result = serde_json::json!({
        "benchmark": "Cloud Storage V4 signed URL, RSA-2048 (PKCS#1 v1.5, SHA-256), one thread",
        "measured_at": Timestamp::now().to_string(),
        "cpu": cpu_model(),
        "logical_cpus": std::thread::available_parallelism().map(usize::from).ok(),
        // Other builds share this machine; the load at the end says how contended the run was.
        "loadavg_1m": std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split_whitespace().next().and_then(|v| v.parse::<f64>().ok())),
        "signatures": n,
        "signed_urls_per_sec_per_core": urls_per_sec.round(),
        "us_per_signed_url": (1e6 / urls_per_sec * 10.0).round() / 10.0,
        "aws_lc_rs_rsa2048_sign_per_sec": rsa_per_sec.round(),
        "us_per_canonicalisation": (prepare_elapsed.as_secs_f64() * 1e6 / f64::from(n) * 100.0).round() / 100.0,
        "openssl_speed_rsa2048_sign_per_sec": openssl.as_ref().ok().map(|v| v.round()),
        "openssl_error": openssl.as_ref().err().map(ToString::to_string),
        "signed_url_rate_vs_openssl": openssl.as_ref().ok().map(|o| (urls_per_sec / o * 100.0).round() / 100.0),
        "mean_url_bytes": bytes / n.max(1) as usize,
        "note": "the machine is shared (2 cores) with other builds; rates can vary by 10-20 % between runs",
    });
    // The workspace root is the platform crate's parent.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("platform crate has no parent directory")?;
    let dir = root.join("docs/benchmarks");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("signing.json");
    std::fs::write(&out, serde_json::to_string_pretty(&result)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    println!("written to {}", out.display());
    Ok(())
}

/// Runs `openssl speed -seconds 3 rsa2048` and reads the `sign/s` column. The column is found by
/// name in the header because OpenSSL 3.2+ added encrypt/decrypt columns to this table.
fn openssl_rsa2048_sign_per_sec() -> Result<f64, Box<dyn Error>> {
    let output = Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if !output.status.success() {
        return Err(format!("openssl speed exited with {}", output.status).into());
    }
    parse_openssl_speed(&String::from_utf8_lossy(&output.stdout))
}

fn parse_openssl_speed(text: &str) -> Result<f64, Box<dyn Error>> {
    let header = text
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == "sign/s"))
        .ok_or("no sign/s column in openssl speed output")?;
    let column = header
        .split_whitespace()
        .position(|w| w == "sign/s")
        .ok_or("no sign/s column")?;
    let row = text
        .lines()
        .find(|l| {
            l.trim_start().starts_with("rsa 2048 bits")
                || l.trim_start().starts_with("rsa  2048 bits")
        })
        .ok_or("no rsa 2048 row in openssl speed output")?;
    // The row is "rsa 2048 bits <cells…>"; its cells line up with the header's words.
    let cells: Vec<&str> = row.split_whitespace().skip(3).collect();
    let cell = cells
        .get(column)
        .ok_or("rsa 2048 row is shorter than its header")?;
    Ok(cell.trim_end_matches('s').parse()?)
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}
