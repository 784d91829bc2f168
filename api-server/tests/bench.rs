//! Benchmark (ignored by default): authenticated cache-hit GET on one api-server against
//! Debian's nginx returning a static 200, with wrk, in one run on this machine; plus the cost of
//! verifying one RS256 token against `openssl speed rsa2048`. Writes docs/benchmarks/api.json.
//!
//!     cargo test --release -p api-server --test bench -- --ignored --nocapture
//!
//! The token is RS256-signed by a test key served from a local stand-in for Google's key
//! endpoint (not emulator mode), so the measured path is the production one: the verified-token
//! cache answers after the first request, then revocation check, rate limit and cache read in
//! one Redis script call on the shared multiplexed connection.
//!
//! In the same rounds it loads the `floor` example (bare axum: a static 200, and one Redis
//! script call per request), so the report says how much of the gap to nginx any axum server
//! with one Redis call per request would have.
//!
//! `BENCH_ROUNDS=N` (default 5) alternating rounds; `BENCH_PERF=FILE` profiles the server with
//! `perf record` during its first run. The last round also counts each server's system calls
//! and context switches with `perf stat`.
//!
//! A second benchmark counts the instructions of one request under callgrind, for the
//! api-server and the floor (see `instructions_per_request_under_callgrind`; needs valgrind):
//!
//!     cargo test --release -p api-server --test bench instructions -- --ignored --nocapture

mod common;

use std::process::Command;
use std::time::Instant;

use common::*;
use serde_json::{Value, json};

const PROJECT: &str = "demo-bench";
const DURATION: &str = "10s";
const CONNECTIONS: &str = "64";

#[derive(Debug, Default, Clone)]
struct WrkResult {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
    errors: String,
    /// wrk's own user + system CPU per request.
    client_cpu_us: f64,
}

/// User + system CPU seconds of this process's waited-for children (wrk, once it exited).
fn children_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // cutime and cstime are the 16th and 17th fields, the 14th and 15th after the name.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(13) + ticks(14)) / 100.0
}

fn wrk(url: &str, header: Option<&str>) -> anyhow::Result<WrkResult> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c", CONNECTIONS, "-d", DURATION, "--latency"]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let children0 = children_cpu_seconds();
    let out = cmd.arg(url).output()?;
    let client_cpu = children_cpu_seconds() - children0;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = WrkResult::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => r.requests_per_sec = v.parse()?,
            ["50%", v] => r.p50_ms = ms(v)?,
            ["99%", v] => r.p99_ms = ms(v)?,
            [n, "requests", "in", ..] => r.requests = n.parse()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse()?,
            ["Socket", "errors:", rest @ ..] => r.errors = rest.join(" "),
            _ => {}
        }
    }
    r.client_cpu_us = client_cpu * 1e6 / r.requests.max(1) as f64;
    Ok(r)
}

/// wrk prints latencies as `812.00us`, `1.20ms` or `1.02s`.
fn ms(v: &str) -> anyhow::Result<f64> {
    Ok(if let Some(x) = v.strip_suffix("us") {
        x.parse::<f64>()? / 1000.0
    } else if let Some(x) = v.strip_suffix("ms") {
        x.parse()?
    } else if let Some(x) = v.strip_suffix('s') {
        x.parse::<f64>()? * 1000.0
    } else {
        anyhow::bail!("latency {v}")
    })
}

/// User + system CPU seconds of `pid` (all threads), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// `pid` and its direct children (nginx's master and workers).
fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// `INFO` field of the Redis at `port`, via redis-cli.
fn redis_info(port: u16, section: &str) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", section])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn redis_cpu_seconds(port: u16) -> f64 {
    redis_info(port, "cpu")
        .lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_sys:")
                .or_else(|| l.strip_prefix("used_cpu_user:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// Total calls of every command, from `INFO commandstats`.
fn redis_calls(port: u16) -> std::collections::BTreeMap<String, u64> {
    redis_info(port, "commandstats")
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(-1.0)
}

/// `openssl speed rsa2048` verifications per second (one core).
fn openssl_verify_per_sec() -> anyhow::Result<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("rsa") && l.contains("2048"))
        .ok_or_else(|| anyhow::anyhow!("no rsa 2048 line in {text}"))?;
    Ok(line.split_whitespace().last().unwrap_or_default().parse()?)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Requests per second of `a` over those of `b`.
fn rate_ratio(a: &WrkResult, b: &WrkResult) -> f64 {
    round3(a.requests_per_sec / b.requests_per_sec)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => round3((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// What the rate ratio would be if every process got the CPU it needs: the peer's CPU per
/// request (server + its wrk) over ours (server + Redis + its wrk). Steadier than the rates
/// on a shared machine.
fn cpu_bound_ratio(peer_us: f64, ours_us: f64) -> f64 {
    round3(peer_us / ours_us)
}

/// Waits up to 5 s for `url` to answer a 2xx.
async fn wait_serving(http: &reqwest::Client, url: &str) {
    for _ in 0..50 {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// An api-server (run by `wrapper`, if not empty) with its Redis, Firestore emulator and key
/// endpoint, holding one document of the token's user: `url` is its cache-hit GET.
struct ApiUnderBench {
    server: ApiProcess,
    redis: testenv::RedisServer,
    key: TestKey,
    token: String,
    url: String,
    _firestore: testenv::FirestoreEmulator,
    _keys: KeyServer,
}

impl ApiUnderBench {
    async fn start(wrapper: &[String]) -> anyhow::Result<Self> {
        let redis = testenv::RedisServer::start().await?;
        let firestore = testenv::FirestoreEmulator::start().await?;
        let key = TestKey::generate("bench-key")?;
        let keys = KeyServer::start(&[&key], 3600).await?;
        let server = ApiProcess::start_under(
            wrapper,
            &[
                ("REDIS_URL", redis.url()),
                ("GOOGLE_CLOUD_PROJECT", PROJECT.to_string()),
                ("FIRESTORE_EMULATOR_HOST", firestore.host()),
                ("API_ID_TOKEN_KEYS_URL", keys.url()),
                ("API_RATE_LIMIT", "100000000".to_string()),
            ],
        )
        .await?;
        let token = key.sign(&id_claims(PROJECT, "bench"))?;
        let created: Value = reqwest::Client::new()
            .post(server.url("/v1/notes"))
            .bearer_auth(&token)
            .json(&json!({"title": "benchmark", "n": 1}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let url = server.url(&format!(
            "/v1/notes/{}",
            created["id"].as_str().unwrap_or_default()
        ));
        Ok(Self {
            server,
            redis,
            key,
            token,
            url,
            _firestore: firestore,
            _keys: keys,
        })
    }
}

/// `perf stat` counting the system calls and context switches of some processes for 8 s of a
/// 10 s wrk run.
struct KernelCount(std::process::Child);

/// System calls and context switches per request of each server, when `perf` could count them.
#[derive(Debug, Default)]
struct KernelPerRequest {
    api: Option<[f64; 2]>,
    nginx: Option<[f64; 2]>,
    floor_script: Option<[f64; 2]>,
}

impl KernelPerRequest {
    fn json(v: Option<[f64; 2]>) -> Value {
        v.map_or(Value::Null, |[syscalls, switches]| {
            json!({"syscalls": round3(syscalls), "context_switches": round3(switches)})
        })
    }
}

impl KernelCount {
    fn start(pids: &[u32]) -> Option<Self> {
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        Command::new("perf")
            .args([
                "stat",
                "-x",
                ",",
                "-e",
                "raw_syscalls:sys_enter,context-switches",
            ])
            .args(["-p", &pids.join(","), "--", "sleep", "8"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()
            .map(Self)
    }

    /// `[system calls, context switches]` per request, at the run's mean rate.
    fn per_request(self, run: &WrkResult) -> Option<[f64; 2]> {
        let out = self.0.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        let count = |event: &str| {
            text.lines()
                .map(|l| l.split(',').collect::<Vec<_>>())
                .find(|f| f.get(2) == Some(&event))
                .and_then(|f| f.first()?.parse::<f64>().ok())
        };
        let requests = run.requests_per_sec * 8.0;
        Some([
            count("raw_syscalls:sys_enter")? / requests,
            count("context-switches")? / requests,
        ])
    }
}

/// One round against the floor server: static 200, then one script call per request.
struct FloorRound {
    hello: WrkResult,
    hello_cpu_us: f64,
    script: WrkResult,
    script_cpu_us: f64,
    script_redis_cpu_us: f64,
}

struct Nginx {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = testenv::free_port();
        let d = dir.path().display();
        let conf = format!(
            "worker_processes auto; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
               fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf)?;
        let child = Command::new("/usr/sbin/nginx")
            .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
            .spawn()?;
        Ok(Self {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // nginx's master stops its workers on SIGTERM.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait();
    }
}

/// The `floor` example (api-server/examples/floor.rs): bare axum, with and without one Redis
/// script call per request.
struct Floor {
    child: std::process::Child,
    port: u16,
}

impl Floor {
    fn start(redis_url: &str) -> anyhow::Result<Self> {
        Self::start_under(&[], redis_url)
    }

    /// [`Self::start`], run by `wrapper` when it is not empty (see `ApiProcess::start_under`).
    fn start_under(wrapper: &[String], redis_url: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .ok_or_else(|| anyhow::anyhow!("no profile directory above {}", exe.display()))?;
        // `cargo test --test bench` does not build examples: build it with this profile.
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "api-server", "--example", "floor"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        anyhow::ensure!(
            build.status()?.success(),
            "building the floor example failed"
        );
        let port = testenv::free_port();
        let child = command_under(wrapper, profile_dir.join("examples/floor"))
            .args([port.to_string().as_str(), redis_url])
            .spawn()?;
        Ok(Self { child, port })
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release -p api-server --test bench benchmark_cache_hit -- --ignored --nocapture"]
async fn benchmark_cache_hit_get_against_nginx() -> anyhow::Result<()> {
    let bench = ApiUnderBench::start(&[]).await?;
    let (redis, key, server, token) = (&bench.redis, &bench.key, &bench.server, &bench.token);
    // Owned: the load runs on a blocking thread.
    let url = bench.url.clone();
    let http = reqwest::Client::new();
    http.get(&url)
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?;
    let nginx = Nginx::start()?;
    let nginx_url = format!("http://127.0.0.1:{}/", nginx.port);
    wait_serving(&http, &nginx_url).await;

    // Its own Redis, so the api-server's command counts stay its own.
    let floor_redis = testenv::RedisServer::start().await?;
    let floor_redis_port = floor_redis.port();
    let floor = Floor::start(&floor_redis.url())?;
    let floor_hello = format!("http://127.0.0.1:{}/hello", floor.port);
    let floor_script = format!("http://127.0.0.1:{}/script", floor.port);
    wait_serving(&http, &floor_script).await;

    let load_before = loadavg();
    let auth = format!("Authorization: Bearer {token}");
    let pid = server.child.id();
    let redis_port = redis.port();
    let nginx_pids = with_children(nginx.child.id());
    let calls_before = redis_calls(redis_port);
    // Alternating rounds; the best of each counts (the machine is shared, and a neighbour's
    // build slows whichever run it overlaps), and every run is recorded for the spread.
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // Server-side CPU per request, which the neighbours' load does not change much:
    // api-server + Redis for the API, nginx's processes for nginx.
    let floor_pid = floor.child.id();
    type Runs = (
        Vec<WrkResult>,
        Vec<WrkResult>,
        Vec<[f64; 2]>,
        Vec<f64>,
        Vec<FloorRound>,
        KernelPerRequest,
    );
    let (api_runs, ngx_runs, api_cpu_us, ngx_cpu_us, floor_runs, kernel): Runs =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let (mut api_runs, mut ngx_runs) = (Vec::new(), Vec::new());
            let (mut api_cpu, mut ngx_cpu) = (Vec::new(), Vec::new());
            let mut floor_runs = Vec::new();
            let mut kernel = KernelPerRequest::default();
            let nginx_cpu = || nginx_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
            for round in 0..rounds {
                // System calls and context switches in the last round (perf's counting adds
                // a little to every system call, so not in the others).
                let last = round + 1 == rounds;
                // BENCH_PERF=FILE: also profile the server during its first run.
                let perf = std::env::var("BENCH_PERF")
                    .ok()
                    .filter(|_| round == 0)
                    .map(|out| {
                        Command::new("perf")
                            .args(["record", "-F", "1999", "-g", "-o", &out])
                            .args(["-p", &pid.to_string(), "--", "sleep", "8"])
                            .spawn()
                    });
                let (server0, redis0) = (cpu_seconds(pid), redis_cpu_seconds(redis_port));
                let counting = last.then_some(()).and_then(|()| KernelCount::start(&[pid]));
                let run = wrk(&url, Some(&auth))?;
                kernel.api = counting.and_then(|c| c.per_request(&run));
                let n = run.requests.max(1) as f64;
                api_cpu.push([
                    (cpu_seconds(pid) - server0) * 1e6 / n,
                    (redis_cpu_seconds(redis_port) - redis0) * 1e6 / n,
                ]);
                api_runs.push(run);
                if let Some(Ok(mut p)) = perf {
                    let _ = p.wait();
                }
                let nginx0 = nginx_cpu();
                let counting = last
                    .then_some(())
                    .and_then(|()| KernelCount::start(&nginx_pids));
                let run = wrk(&nginx_url, None)?;
                kernel.nginx = counting.and_then(|c| c.per_request(&run));
                ngx_cpu.push((nginx_cpu() - nginx0) * 1e6 / run.requests.max(1) as f64);
                ngx_runs.push(run);
                let floor0 = cpu_seconds(floor_pid);
                let hello = wrk(&floor_hello, None)?;
                let hello_cpu =
                    (cpu_seconds(floor_pid) - floor0) * 1e6 / hello.requests.max(1) as f64;
                let (floor0, redis0) =
                    (cpu_seconds(floor_pid), redis_cpu_seconds(floor_redis_port));
                let counting = last
                    .then_some(())
                    .and_then(|()| KernelCount::start(&[floor_pid]));
                let script = wrk(&floor_script, None)?;
                kernel.floor_script = counting.and_then(|c| c.per_request(&script));
                let n = script.requests.max(1) as f64;
                floor_runs.push(FloorRound {
                    hello_cpu_us: hello_cpu,
                    script_cpu_us: (cpu_seconds(floor_pid) - floor0) * 1e6 / n,
                    script_redis_cpu_us: (redis_cpu_seconds(floor_redis_port) - redis0) * 1e6 / n,
                    hello,
                    script,
                });
            }
            Ok((api_runs, ngx_runs, api_cpu, ngx_cpu, floor_runs, kernel))
        })
        .await??;
    drop(floor);
    let api_requests: u64 = api_runs.iter().map(|r| r.requests).sum();
    let calls_after = redis_calls(redis_port);
    let redis_calls_per_request: serde_json::Map<String, Value> = calls_after
        .iter()
        .filter_map(|(name, after)| {
            let d = after - calls_before.get(name).copied().unwrap_or(0);
            let per = round3(d as f64 / api_requests.max(1) as f64);
            (d > 0 && name != "info").then(|| (name.clone(), json!(per)))
        })
        .collect();
    let round1 = |v: f64| (v * 10.0).round() / 10.0;
    // nginx + its wrk per request, per round: the numerator of every CPU-bound ratio.
    let nginx_us: Vec<f64> = ngx_cpu_us
        .iter()
        .zip(&ngx_runs)
        .map(|(n, r)| n + r.client_cpu_us)
        .collect();
    let best = |runs: &[WrkResult]| {
        runs.iter()
            .max_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec))
            .cloned()
            .unwrap_or_default()
    };
    let (api, ngx) = (best(&api_runs), best(&ngx_runs));
    let load_after = loadavg();
    let metrics = http
        .get(server.admin_url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let hits = metrics
        .lines()
        .find(|l| l.starts_with(r#"api_cache_requests_total{result="hit"}"#))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);

    // Token verification: RS256 signature + claims on distinct tokens, one thread; and
    // jsonwebtoken's decode for comparison.
    let n = 2000;
    let tokens: Vec<String> = (0..n)
        .map(|i| key.sign(&id_claims(PROJECT, &format!("u{i}"))))
        .collect::<Result<_, _>>()?;
    let parsed = api_server::auth::keys::rsa_key(&key.cert_pem).map_err(anyhow::Error::msg)?;
    let decoding = jsonwebtoken::DecodingKey::from_rsa_pem(key.cert_pem.as_bytes())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    let (mut us_per_token, mut us_jsonwebtoken, mut openssl) = (f64::MAX, f64::MAX, 0.0f64);
    // Alternating best-of-3 rounds, for the same reason as above.
    for _ in 0..3 {
        let started = Instant::now();
        for t in &tokens {
            let claims = api_server::auth::verify::verify_rs256(t, &parsed)?;
            api_server::auth::verify::check_claims(
                claims,
                api_server::auth::TokenKind::IdToken,
                PROJECT,
                common::now(),
                0,
            )?;
        }
        us_per_token = us_per_token.min(started.elapsed().as_secs_f64() * 1e6 / n as f64);
        let started = Instant::now();
        for t in &tokens {
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(t, &decoding, &validation)?;
        }
        us_jsonwebtoken = us_jsonwebtoken.min(started.elapsed().as_secs_f64() * 1e6 / n as f64);
        openssl = openssl.max(openssl_verify_per_sec()?);
    }
    let openssl_us = 1e6 / openssl;

    let report = json!({
        "benchmark": "authenticated cache-hit GET /v1/notes/{id} on one api-server vs nginx static 200",
        "measured_at": jiff::Timestamp::now().to_string(),
        "tool": format!("wrk -t2 -c{CONNECTIONS} -d{DURATION} --latency (same machine, same run; best of {rounds} alternating rounds)"),
        "all_runs_requests_per_sec": {
            "api_server": api_runs.iter().map(|r| r.requests_per_sec).collect::<Vec<_>>(),
            "nginx": ngx_runs.iter().map(|r| r.requests_per_sec).collect::<Vec<_>>(),
        },
        "all_runs_ratio": api_runs.iter().zip(&ngx_runs).map(|(a, n)| rate_ratio(a, n)).collect::<Vec<_>>(),
        "all_runs_p50_p99_ms": {
            "api_server": api_runs.iter().map(|r| [r.p50_ms, r.p99_ms]).collect::<Vec<_>>(),
            "nginx": ngx_runs.iter().map(|r| [r.p50_ms, r.p99_ms]).collect::<Vec<_>>(),
        },
        "server_cpu_us_per_request": {
            "api_server": api_cpu_us.iter().map(|c| round1(c[0])).collect::<Vec<_>>(),
            "redis_during_api_runs": api_cpu_us.iter().map(|c| round1(c[1])).collect::<Vec<_>>(),
            "nginx": ngx_cpu_us.iter().map(|c| round1(*c)).collect::<Vec<_>>(),
            "wrk_for_api_server": api_runs.iter().map(|r| round1(r.client_cpu_us)).collect::<Vec<_>>(),
            "wrk_for_nginx": ngx_runs.iter().map(|r| round1(r.client_cpu_us)).collect::<Vec<_>>(),
            "note": "user+system CPU of the server processes (and of wrk) divided by wrk's request count (10 ms clock ticks)",
        },
        "cpu_bound_ratio": api_cpu_us.iter().zip(&nginx_us).zip(&api_runs)
            .map(|((a, n), ar)| cpu_bound_ratio(*n, a[0] + a[1] + ar.client_cpu_us))
            .collect::<Vec<_>>(),
        // The same tool against bare axum, in the same rounds: the least an axum server can
        // spend here, without and with a Redis script call of its own per request (the
        // api-server batches its admissions, so its Redis share can be lower).
        "floor": {
            "note": "api-server/examples/floor.rs: axum + hyper + mimalloc, no auth, logs, metrics or middleware",
            "axum_static_200_requests_per_sec": floor_runs.iter().map(|f| f.hello.requests_per_sec).collect::<Vec<_>>(),
            "axum_static_200_vs_nginx": floor_runs.iter().zip(&ngx_runs).map(|(f, n)| rate_ratio(&f.hello, n)).collect::<Vec<_>>(),
            "axum_static_200_cpu_bound_ratio": floor_runs.iter().zip(&nginx_us)
                .map(|(f, n)| cpu_bound_ratio(*n, f.hello_cpu_us + f.hello.client_cpu_us))
                .collect::<Vec<_>>(),
            "axum_static_200_cpu_us": floor_runs.iter().map(|f| round1(f.hello_cpu_us)).collect::<Vec<_>>(),
            "axum_one_script_requests_per_sec": floor_runs.iter().map(|f| f.script.requests_per_sec).collect::<Vec<_>>(),
            "axum_one_script_vs_nginx": floor_runs.iter().zip(&ngx_runs).map(|(f, n)| rate_ratio(&f.script, n)).collect::<Vec<_>>(),
            "axum_one_script_cpu_bound_ratio": floor_runs.iter().zip(&nginx_us)
                .map(|(f, n)| cpu_bound_ratio(*n, f.script_cpu_us + f.script_redis_cpu_us + f.script.client_cpu_us))
                .collect::<Vec<_>>(),
            "axum_one_script_cpu_us_server_redis": floor_runs.iter().map(|f| [round1(f.script_cpu_us), round1(f.script_redis_cpu_us)]).collect::<Vec<_>>(),
            "api_server_vs_axum_one_script": api_runs.iter().zip(&floor_runs).map(|(a, f)| rate_ratio(a, &f.script)).collect::<Vec<_>>(),
        },
        "redis_commands_per_request": redis_calls_per_request,
        "kernel_per_request_last_round": {
            "note": "perf stat: system calls (raw_syscalls:sys_enter) and context switches of the server processes over 8 s, divided by wrk's mean rate",
            "api_server": KernelPerRequest::json(kernel.api),
            "nginx": KernelPerRequest::json(kernel.nginx),
            "floor_axum_one_script": KernelPerRequest::json(kernel.floor_script),
        },
        "tokio_worker_threads": std::env::var("TOKIO_WORKER_THREADS").unwrap_or_else(|_| "default (one per core)".into()),
        "logical_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": load_after,
        "api_server": {
            "requests_per_sec": api.requests_per_sec, "p50_ms": api.p50_ms, "p99_ms": api.p99_ms,
            "requests": api.requests, "non_2xx": api.non_2xx, "socket_errors": api.errors,
            "cache_hits_counted": hits,
        },
        "nginx": {
            "requests_per_sec": ngx.requests_per_sec, "p50_ms": ngx.p50_ms, "p99_ms": ngx.p99_ms,
            "requests": ngx.requests, "non_2xx": ngx.non_2xx, "socket_errors": ngx.errors,
        },
        // The median of the rounds' ratios: each round's two runs share the machine's state.
        "api_vs_nginx_throughput_ratio": median(
            api_runs.iter().zip(&ngx_runs).map(|(a, n)| rate_ratio(a, n)).collect()
        ),
        "target_ratio": 0.5,
        "token_verification": {
            "tokens": n,
            "us_per_token_rs256_plus_claims": (us_per_token * 100.0).round() / 100.0,
            "us_per_token_jsonwebtoken_decode": (us_jsonwebtoken * 100.0).round() / 100.0,
            "openssl_speed_rsa2048_verify_per_sec_best": openssl,
            "openssl_us_per_verify": (openssl_us * 100.0).round() / 100.0,
            "ratio_vs_openssl": (us_per_token / openssl_us * 100.0).round() / 100.0,
            "target_ratio": 1.2,
        },
        "notes": "2 shared cores: wrk, the server, Redis and nginx compete for them, and other builds may run; \
                  the api-server logs one JSON line per request to a file during the run.",
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks/api.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    assert_eq!(api.non_2xx, 0, "every benchmarked GET must succeed");
    for f in &floor_runs {
        assert_eq!(
            (f.hello.non_2xx, f.script.non_2xx),
            (0, 0),
            "every floor request must succeed, or its figures mean nothing"
        );
    }
    assert!(
        hits >= api.requests as f64,
        "the benchmark must measure cache hits"
    );
    Ok(())
}

/// Instructions one request costs in user space, counted by callgrind: unlike CPU time on a
/// shared machine, the count is the same from run to run, so it tells changes of a few percent
/// apart. The api-server's authenticated cache-hit GET against the floor's one-script GET,
/// `BENCH_REQUESTS` (default 4000) of each, 16 at a time, after a warm-up; kernel time (the
/// other half of the cost, see above) is not counted. Writes docs/benchmarks/instructions.json
/// with the functions that cost most; `BENCH_CALLGRIND_KEEP=DIR` keeps the dumps.
///
///     cargo test --release -p api-server --test bench instructions -- --ignored --nocapture
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release -p api-server --test bench instructions -- --ignored --nocapture"]
async fn instructions_per_request_under_callgrind() -> anyhow::Result<()> {
    let requests: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let dir = tempfile::tempdir()?;
    let out = |name: &str| dir.path().join(format!("{name}.callgrind"));
    let wrapper = |name: &str| -> Vec<String> {
        vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            "--instr-atstart=no".into(),
            format!("--callgrind-out-file={}", out(name).display()),
        ]
    };
    let bench = ApiUnderBench::start(&wrapper("api")).await?;
    let api = count_instructions(
        bench.server.child.id(),
        &out("api"),
        &bench.url,
        Some(&bench.token),
        requests,
    )
    .await?;
    let http = reqwest::Client::new();

    let floor_redis = testenv::RedisServer::start().await?;
    let floor = Floor::start_under(&wrapper("floor"), &floor_redis.url())?;
    let floor_url = format!("http://127.0.0.1:{}/script", floor.port);
    for _ in 0..300 {
        if http
            .get(&floor_url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let floor_ir =
        count_instructions(floor.child.id(), &out("floor"), &floor_url, None, requests).await?;
    println!(
        "instructions per request: api-server cache-hit GET {:.0} ({:.0} without SHA-256's \
         software rounds), floor one-script GET {:.0}",
        api.per_request,
        api.without_sha256(),
        floor_ir.per_request
    );
    assert!(
        api.per_request > 0.0 && floor_ir.per_request > 0.0,
        "callgrind counted nothing"
    );
    let report = json!({
        "benchmark": "user-space instructions per request, counted by callgrind: authenticated cache-hit GET /v1/notes/{id} on the api-server vs the floor's one-script GET",
        "measured_at": jiff::Timestamp::now().to_string(),
        "requests": requests,
        "concurrency": 16,
        "api_server": api.json(),
        "floor_axum_one_script": floor_ir.json(),
        "api_server_vs_floor_without_sha256": round3(api.without_sha256() / floor_ir.without_sha256()),
        "notes": "Kernel work (sockets, scheduling) is not counted; it is about half of the CPU per request (see api.json). \
                  SHA-256 runs in software under valgrind (no SHA extensions), hence the figure without it.",
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/benchmarks/instructions.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(())
}

/// Warms `url` up, then counts the instructions of server `pid` (run under callgrind with
/// instrumentation off) while it answers `requests` GETs; prints its costliest functions.
async fn count_instructions(
    pid: u32,
    out: &std::path::Path,
    url: &str,
    token: Option<&str>,
    requests: usize,
) -> anyhow::Result<Instructions> {
    let http = reqwest::Client::new();
    let load = |n: usize| {
        let http = http.clone();
        async move {
            let per_task = n / 16;
            let tasks = (0..16).map(|_| {
                let http = http.clone();
                async move {
                    for _ in 0..per_task {
                        let mut req = http.get(url);
                        if let Some(t) = token {
                            req = req.bearer_auth(t);
                        }
                        req.send().await?.error_for_status()?.bytes().await?;
                    }
                    anyhow::Ok(())
                }
            });
            futures::future::try_join_all(tasks)
                .await
                .map(|_| per_task * 16)
        }
    };
    load(320).await?;
    let control = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("callgrind_control")
            .args(args)
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "callgrind_control {args:?} failed");
        Ok(())
    };
    control(&["-i", "on"])?;
    let sent = load(requests).await?;
    control(&["-d"])?;
    control(&["-i", "off"])?;
    // The dump is `<out>.<n>`: the newest file beside `out` with its name as prefix.
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let dump = std::fs::read_dir(out.parent().unwrap_or(std::path::Path::new(".")))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .ok_or_else(|| anyhow::anyhow!("no callgrind dump for {name}"))?;
    // BENCH_CALLGRIND_KEEP=DIR keeps the dumps for callgrind_annotate.
    if let Ok(keep) = std::env::var("BENCH_CALLGRIND_KEEP") {
        std::fs::copy(&dump, std::path::Path::new(&keep).join(&name))?;
    }
    let text = std::fs::read_to_string(&dump)?;
    let total: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no totals in {}", dump.display()))?;
    let per_request = |count: f64| (count / sent as f64).round();
    let annotate = |inclusive: bool| -> anyhow::Result<Vec<(String, f64)>> {
        let out = Command::new("callgrind_annotate")
            .arg(format!(
                "--inclusive={}",
                if inclusive { "yes" } else { "no" }
            ))
            .arg(&dump)
            .output()?;
        Ok(annotated_functions(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .map(|(f, count)| (f, per_request(count)))
            .collect())
    };
    let own = annotate(false)?;
    // Valgrind's CPU has no SHA extensions, so SHA-256 (the verified-token cache key) runs
    // sha2's software rounds under callgrind: about 40,000 instructions, against a few
    // hundred natively. Reported apart, so the total stays comparable to a native run.
    let sha256 = annotate(true)?
        .into_iter()
        .find(|(f, _)| f == "sha2::sha256::compress256")
        .map_or(0.0, |(_, n)| n);
    println!("== {name}: {total:.0} instructions over {sent} requests; costliest (own cost):");
    for (f, n) in own.iter().take(25) {
        println!("{n:>9.0}  {}", f.chars().take(160).collect::<String>());
    }
    Ok(Instructions {
        per_request: per_request(total),
        sha256_software_per_request: sha256,
        costliest_own: own.into_iter().take(15).collect(),
    })
}

/// What [`count_instructions`] found for one server, per request.
struct Instructions {
    per_request: f64,
    sha256_software_per_request: f64,
    costliest_own: Vec<(String, f64)>,
}

impl Instructions {
    fn without_sha256(&self) -> f64 {
        self.per_request - self.sha256_software_per_request
    }

    fn json(&self) -> Value {
        json!({
            "instructions_per_request": self.per_request,
            "of_which_sha256_software_rounds": self.sha256_software_per_request,
            "instructions_per_request_without_sha256": self.without_sha256(),
            "costliest_functions_own_instructions_per_request": self.costliest_own
                .iter()
                .map(|(f, n)| json!([f, n]))
                .collect::<Vec<_>>(),
        })
    }
}

/// `(function, instructions)` rows of `callgrind_annotate` output, without file and object.
fn annotated_functions(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let (count, rest) = l.trim_start().split_once(' ')?;
            let count: f64 = count.replace(',', "").parse().ok()?;
            let function = rest.split_once(")  ")?.1.trim();
            let function = function.split_once(':').map_or(function, |(_, f)| f);
            let function = function.rsplit_once(" [").map_or(function, |(f, _)| f);
            (function != "PROGRAM TOTALS").then(|| (function.trim().to_string(), count))
        })
        .collect()
}
