//! The Redis and Sentinel init scripts decide roles correctly. They run here exactly as
//! rendered (ConfigMap script + StatefulSet env), with `redis-cli` and `getent` replaced by
//! stubs that answer as the sentinels and Redis pods of a scenario would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container};
use operator::api::ScalableApp;
use operator::render::{self, ChildKind, RenderContext};

const APP: &str = r#"
apiVersion: scalable.dev/v1alpha1
kind: ScalableApp
metadata: {name: shop, namespace: prod, uid: u}
spec:
  redis: {replicas: 3, sentinels: 3}
  firebase: {projectId: p, emulators: {}}
"#;

const DOMAIN: &str = "prod.svc.cluster.local";

fn redis_host(i: u32) -> String {
    format!("shop-redis-{i}.shop-redis-headless.{DOMAIN}")
}

fn sentinel_host(i: u32) -> String {
    format!("shop-sentinel-{i}.shop-sentinel-headless.{DOMAIN}")
}

/// `redis-cli -h HOST -p PORT --raw CMD ...` answers from `answers/HOST.CMD` (one line per
/// call; the last line repeats), or fails like an unreachable server.
const REDIS_CLI: &str = r#"#!/bin/sh
host=""; cmd=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h) host="$2"; shift 2 ;;
    -p) shift 2 ;;
    --raw) shift ;;
    *) cmd="$1"; break ;;
  esac
done
f="$STUB_DIR/answers/$host.$cmd"
if [ ! -f "$f" ]; then echo "Could not connect to Redis at $host" >&2; exit 1; fi
n=$(cat "$f.calls" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$f.calls"
lines=$(wc -l < "$f")
[ "$n" -gt "$lines" ] && n="$lines"
sed -n "${n}p" "$f"
"#;

/// `getent hosts NAME` succeeds for names listed in `dns`.
const GETENT: &str = r#"#!/bin/sh
grep -qx "$2" "$STUB_DIR/dns" 2>/dev/null && echo "10.0.0.1 $2"
"#;

struct Scenario {
    dir: tempfile::TempDir,
    configs: ConfigMap,
    sts: (StatefulSet, StatefulSet),
}

impl Scenario {
    fn new() -> Self {
        let mut app: ScalableApp = serde_saphyr::from_str(APP).unwrap();
        app.metadata.uid = Some("u".into());
        let children = render::desired(&app, &RenderContext::default()).unwrap();
        let typed = |kind: ChildKind, name: &str| {
            let c = children
                .iter()
                .find(|c| c.kind == kind && c.name() == name)
                .unwrap();
            serde_json::to_value(&c.object).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        for sub in ["bin", "answers", "config", "runtime"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        write_exec(&dir.path().join("bin/redis-cli"), REDIS_CLI);
        write_exec(&dir.path().join("bin/getent"), GETENT);
        let configs: ConfigMap =
            serde_json::from_value(typed(ChildKind::ConfigMap, "shop-redis")).unwrap();
        for (k, v) in configs.data.clone().unwrap() {
            std::fs::write(dir.path().join("config").join(k), v).unwrap();
        }
        let redis = serde_json::from_value(typed(ChildKind::StatefulSet, "shop-redis")).unwrap();
        let sentinel =
            serde_json::from_value(typed(ChildKind::StatefulSet, "shop-sentinel")).unwrap();
        Self {
            dir,
            configs,
            sts: (redis, sentinel),
        }
    }

    fn answer(&self, host: &str, cmd: &str, lines: &[&str]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(self.dir.path().join(format!("answers/{host}.{cmd}")), text).unwrap();
    }

    fn resolvable(&self, names: &[String]) {
        std::fs::write(self.dir.path().join("dns"), names.join("\n") + "\n").unwrap();
    }

    /// Runs the init container of `sts` as pod `pod`; None if still running after `limit`.
    fn run(
        &self,
        sentinel: bool,
        pod: &str,
        extra_env: &[(&str, &str)],
        limit: Duration,
    ) -> Option<String> {
        let sts = if sentinel { &self.sts.1 } else { &self.sts.0 };
        let init = init_container(sts);
        let script = if sentinel {
            "sentinel-init.sh"
        } else {
            "redis-init.sh"
        };
        assert!(init.command.as_ref().unwrap().join(" ").ends_with(script));
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("sh");
        cmd.arg(self.dir.path().join("config").join(script))
            .env_clear()
            .env("PATH", path)
            .env("STUB_DIR", self.dir.path())
            .env("CONFIG_DIR", self.dir.path().join("config"))
            .env("RUNTIME_DIR", self.dir.path().join("runtime"))
            .env("POD_NAME", pod)
            .env("NAMESPACE", "prod");
        for e in init.env.as_ref().unwrap() {
            if let Some(v) = &e.value {
                cmd.env(&e.name, v);
            }
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{script} failed for {pod}");
                let conf = if sentinel {
                    "sentinel.conf"
                } else {
                    "redis.conf"
                };
                return Some(
                    std::fs::read_to_string(self.dir.path().join("runtime").join(conf)).unwrap(),
                );
            }
            if start.elapsed() > limit {
                child.kill().unwrap();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn replicaof(conf: &str) -> Option<String> {
    conf.lines()
        .find_map(|l| l.strip_prefix("replicaof "))
        .map(|r| r.trim_end_matches(" 6379").to_string())
}

const SHORT: Duration = Duration::from_secs(10);

/// The first (only) init container of a rendered StatefulSet.
fn init_container(sts: &StatefulSet) -> &Container {
    &sts.spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.init_containers.as_ref())
        .expect("an init container")[0]
}

#[test]
fn a_restarted_pod_follows_the_master_the_sentinels_name() {
    let s = Scenario::new();
    // sentinel-0 is down; sentinel-1 knows the master is redis-2 (after a failover).
    s.answer(&sentinel_host(1), "SENTINEL", &[&redis_host(2), "6379"]);
    // redis-1 still claims master (stale): the sentinels' answer wins.
    s.answer(&redis_host(1), "ROLE", &["master"]);
    let conf = s.run(false, "shop-redis-0", &[], SHORT).expect("finishes");
    assert_eq!(replicaof(&conf), Some(redis_host(2)));
    assert!(conf.contains(&format!("replica-announce-ip {}", redis_host(0))));
    assert!(conf.contains("appendonly yes"));
}

#[test]
fn without_sentinel_knowledge_a_pod_follows_the_peer_that_is_master() {
    let s = Scenario::new();
    s.answer(&sentinel_host(0), "SENTINEL", &[""]);
    s.answer(&redis_host(0), "ROLE", &["slave"]);
    s.answer(&redis_host(1), "ROLE", &["master"]);
    let conf = s.run(false, "shop-redis-2", &[], SHORT).expect("finishes");
    assert_eq!(replicaof(&conf), Some(redis_host(1)));
}

#[test]
fn only_ordinal_zero_bootstraps_an_empty_group() {
    let s = Scenario::new();
    let conf = s
        .run(false, "shop-redis-0", &[], SHORT)
        .expect("ordinal 0 starts");
    assert_eq!(replicaof(&conf), None, "ordinal 0 starts as master");
    // Ordinal 1 waits instead of becoming a second master.
    assert!(
        s.run(false, "shop-redis-1", &[], Duration::from_secs(3))
            .is_none()
    );
}

#[test]
fn a_master_restarted_before_failover_waits_for_the_sentinels() {
    let s = Scenario::new();
    // The sentinels still name redis-0 (this pod) as master, then promote redis-1.
    s.answer(
        &sentinel_host(0),
        "SENTINEL",
        &[&redis_host(0), &redis_host(0), &redis_host(1)],
    );
    let conf = s.run(false, "shop-redis-0", &[], SHORT).expect("finishes");
    assert_eq!(
        replicaof(&conf),
        Some(redis_host(1)),
        "rejoins as a replica of the promoted pod"
    );

    // If no failover comes in time, it resumes as master from its persisted data.
    let s = Scenario::new();
    s.answer(&sentinel_host(0), "SENTINEL", &[&redis_host(0)]);
    let conf = s
        .run(
            false,
            "shop-redis-0",
            &[("FAILOVER_WAIT_SECONDS", "1")],
            SHORT,
        )
        .expect("finishes");
    assert_eq!(replicaof(&conf), None);
}

#[test]
fn sentinels_monitor_the_known_master_by_hostname() {
    let s = Scenario::new();
    s.answer(&sentinel_host(2), "SENTINEL", &[&redis_host(1), "6379"]);
    s.resolvable(&[redis_host(1)]);
    let conf = s
        .run(true, "shop-sentinel-0", &[], SHORT)
        .expect("finishes");
    assert!(conf.contains(&format!(
        "sentinel monitor mymaster {} 6379 2",
        redis_host(1)
    )));
    assert!(conf.contains("sentinel resolve-hostnames yes"));
    assert!(conf.contains("sentinel announce-hostnames yes"));
    assert!(conf.contains(&format!("sentinel announce-ip {}", sentinel_host(0))));
    assert!(conf.contains("sentinel down-after-milliseconds mymaster 5000"));
}

#[test]
fn sentinels_of_an_empty_group_monitor_ordinal_zero_once_it_resolves() {
    let s = Scenario::new();
    // Nothing resolves yet: the sentinel waits rather than start with a bad address.
    assert!(
        s.run(true, "shop-sentinel-1", &[], Duration::from_secs(3))
            .is_none()
    );
    s.resolvable(&[redis_host(0)]);
    let conf = s
        .run(true, "shop-sentinel-1", &[], SHORT)
        .expect("finishes");
    assert!(conf.contains(&format!(
        "sentinel monitor mymaster {} 6379 2",
        redis_host(0)
    )));
    assert!(
        s.configs
            .data
            .as_ref()
            .unwrap()
            .contains_key("sentinel-init.sh")
    );
}

#[test]
fn the_scripts_are_plain_posix_sh() {
    let s = Scenario::new();
    for script in ["redis-init.sh", "sentinel-init.sh"] {
        let path: PathBuf = s.dir.path().join("config").join(script);
        let status = Command::new("sh").arg("-n").arg(&path).status().unwrap();
        assert!(status.success(), "{script} has syntax errors");
    }
}

/// A real redis-server or sentinel, killed on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The rendered config run by a real `redis-server` on loopback: the file first, then
/// `overrides` (later arguments win), which move it off the pod's port, bind and data dir.
fn real_server(conf: &Path, overrides: &[String], sentinel: bool) -> Proc {
    let mut cmd = Command::new("redis-server");
    cmd.arg(conf);
    if sentinel {
        cmd.arg("--sentinel");
    }
    Proc(
        cmd.args(overrides)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH"),
    )
}

/// `redis-cli -p PORT --raw ARGS...`, authenticating through `REDISCLI_AUTH` like the pods do.
fn cli(port: u16, auth: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "--raw"])
        .args(args);
    if let Some(pw) = auth {
        cmd.env("REDISCLI_AUTH", pw);
    }
    let out = cmd.output().expect("redis-cli on PATH");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `commands` (one per line) through one `redis-cli` connection, so that `WAIT` counts the
/// writes sent before it.
fn cli_session(port: u16, auth: Option<&str>, commands: &str) -> String {
    use std::io::Write as _;
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "--raw"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some(pw) = auth {
        cmd.env("REDISCLI_AUTH", pw);
    }
    let mut child = cmd.spawn().expect("redis-cli on PATH");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(commands.as_bytes())
        .expect("commands written");
    let out = child.wait_with_output().expect("redis-cli output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rendered config minus what only makes sense in a pod: `dir /data` does not exist here
/// (redis-server checks it before the command line overrides it; the test passes `--dir`), and
/// the announced cluster DNS name would send the sentinel to an address that does not resolve.
fn loopback(conf: &str) -> String {
    conf.lines()
        .filter(|l| !l.starts_with("dir ") && !l.starts_with("replica-announce-"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn with_a_password_real_replicas_and_sentinels_authenticate_and_fail_over() {
    const PW: &str = "s3cret-Pw_xyz";
    let s = Scenario::new();
    // The password is referenced from the Secret by the init containers, and absent from the
    // ConfigMap the scripts read their config from.
    for sts in [&s.sts.0, &s.sts.1] {
        let init = init_container(sts);
        for name in ["REDIS_PASSWORD", "REDISCLI_AUTH"] {
            let e = init.env.as_ref().unwrap().iter().find(|e| e.name == name);
            let secret = e
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.secret_key_ref.as_ref())
                .unwrap_or_else(|| panic!("{name} from a Secret on {:?}", init.name));
            assert_eq!(
                (secret.name.as_str(), secret.key.as_str()),
                ("shop-redis-auth", "password")
            );
        }
    }

    // Ordinal 0 bootstraps as master; ordinal 1 follows it (the sentinels name it).
    let master_conf = s
        .run(false, "shop-redis-0", &[("REDIS_PASSWORD", PW)], SHORT)
        .expect("finishes");
    assert!(master_conf.contains(&format!("requirepass {PW}\n")));
    assert!(master_conf.contains(&format!("masterauth {PW}\n")));
    let master_path = s.dir.path().join("master.conf");
    std::fs::write(&master_path, loopback(&master_conf)).unwrap();
    s.answer(&sentinel_host(0), "SENTINEL", &[&redis_host(0), "6379"]);
    let replica_conf = s
        .run(false, "shop-redis-1", &[("REDIS_PASSWORD", PW)], SHORT)
        .expect("finishes");
    assert_eq!(replicaof(&replica_conf), Some(redis_host(0)));
    let replica_path = s.dir.path().join("replica.conf");
    std::fs::write(&replica_path, loopback(&replica_conf)).unwrap();
    s.resolvable(&[redis_host(0)]);
    let sentinel_conf = s
        .run(true, "shop-sentinel-0", &[("REDIS_PASSWORD", PW)], SHORT)
        .expect("finishes");
    assert!(sentinel_conf.contains(&format!("sentinel auth-pass mymaster {PW}\n")));
    let text = serde_json::to_string(&s.configs).unwrap();
    assert!(!text.contains(PW));

    let local = |port: u16, dir: &str| {
        let dir = s.dir.path().join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        vec![
            "--port".to_string(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--daemonize".into(),
            "no".into(),
        ]
    };
    let (p0, p1, ps) = (
        testenv::free_port(),
        testenv::free_port(),
        testenv::free_port(),
    );
    let mut master = Some(real_server(&master_path, &local(p0, "d0"), false));
    let mut replica_args = local(p1, "d1");
    replica_args.extend(["--replicaof".into(), "127.0.0.1".into(), p0.to_string()]);
    let _replica = real_server(&replica_path, &replica_args, false);
    wait_until("the master to answer", SHORT, || {
        cli(p0, Some(PW), &["PING"]).trim() == "PONG"
    });
    // requirepass is in force, and masterauth lets the replica sync.
    assert!(cli(p0, None, &["PING"]).contains("NOAUTH"));
    wait_until("the replica to sync with masterauth", SHORT, || {
        cli(p0, Some(PW), &["INFO", "replication"]).contains("state=online")
    });
    // Acknowledged as the queue acknowledges a job: once a replica holds it (`WAIT 1`), since
    // replication is asynchronous and a master killed right after `OK` may take the write
    // with it (this test once lost `k` that way, under a loaded CI run).
    assert_eq!(
        cli_session(p0, Some(PW), "SET k v\nWAIT 1 5000\n")
            .lines()
            .collect::<Vec<_>>(),
        ["OK", "1"]
    );

    // A sentinel with the rendered auth-pass line, monitoring the loopback master.
    let auth_line = sentinel_conf
        .lines()
        .find(|l| l.starts_with("sentinel auth-pass"))
        .unwrap();
    let sconf = s.dir.path().join("sentinel-real.conf");
    std::fs::write(
        &sconf,
        format!(
            "port {ps}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {p0} 1\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 10000\n{auth_line}\n"
        ),
    )
    .unwrap();
    let _sentinel = real_server(
        &sconf,
        &["--dir".into(), s.dir.path().display().to_string()],
        true,
    );
    // The sentinel has no password; REDISCLI_AUTH set (as in the init containers) must not
    // break asking it.
    wait_until(
        "the sentinel to discover the replica (INFO needs auth)",
        SHORT,
        || cli(ps, Some(PW), &["SENTINEL", "replicas", "mymaster"]).contains(&p1.to_string()),
    );
    assert_eq!(
        cli(
            ps,
            Some(PW),
            &["SENTINEL", "get-master-addr-by-name", "mymaster"]
        )
        .lines()
        .nth(1),
        Some(p0.to_string().as_str())
    );

    // Kill the master: the sentinel promotes the replica, authenticating to it.
    drop(master.take());
    wait_until(
        "the failover to the replica",
        Duration::from_secs(30),
        || {
            cli(
                ps,
                None,
                &["SENTINEL", "get-master-addr-by-name", "mymaster"],
            )
            .lines()
            .nth(1)
                == Some(p1.to_string().as_str())
                && cli(p1, Some(PW), &["ROLE"]).starts_with("master")
        },
    );
    // The acknowledged write survived the failover (the state at a failure goes into the
    // message).
    let started = Instant::now();
    while cli(p1, Some(PW), &["GET", "k"]).trim() != "v" {
        assert!(
            started.elapsed() < SHORT,
            "k lost after the failover: ROLE {:?}, keyspace {:?}, sentinel's master {:?}",
            cli(p1, Some(PW), &["ROLE"]),
            cli(p1, Some(PW), &["INFO", "keyspace"]),
            cli(
                ps,
                None,
                &["SENTINEL", "get-master-addr-by-name", "mymaster"]
            ),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
