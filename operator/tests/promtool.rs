//! The alert rules pass `promtool check rules`, and `promtool test rules` shows every alert
//! firing on a synthetic incident and staying quiet on healthy series (tests/promtool/*.yaml).
//! The rules are rendered from examples/scalableapp.yaml exactly as the operator applies them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use operator::api::ScalableApp;
use operator::render::{self, Capabilities, ChildKind, RenderContext};

const PROMTOOL: &str = "promtool";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `{groups: [...]}` of the PrometheusRule rendered for the example app.
fn rules_file() -> serde_json::Value {
    let text = std::fs::read_to_string(manifest_dir().join("../examples/scalableapp.yaml"))
        .expect("examples/scalableapp.yaml");
    let mut app: ScalableApp = serde_saphyr::from_str(&text).expect("example parses");
    app.metadata.uid = Some("example-uid".into());
    let ctx = RenderContext {
        capabilities: Capabilities {
            prometheus_rules: true,
            ..Capabilities::default()
        },
        ..RenderContext::default()
    };
    let children = render::desired(&app, &ctx).expect("example renders");
    let rule = children
        .iter()
        .find(|c| c.kind == ChildKind::PrometheusRule)
        .expect("a PrometheusRule is rendered when its CRD exists");
    serde_json::json!({ "groups": rule.object.data["spec"]["groups"] })
}

fn promtool(args: &[&str], dir: &Path) -> std::process::Output {
    match Command::new(PROMTOOL).args(args).current_dir(dir).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "could not run `{PROMTOOL}` ({e}); it checks the alert rules. Install it with \
             `apt-get install prometheus` (Debian/Ubuntu) or put promtool on PATH"
        ),
    }
}

fn assert_success(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest_dir().join("tests/promtool"))
        .expect("tests/promtool")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = serde_saphyr::to_string(&rules_file()).expect("rules serialize");
    std::fs::write(dir.path().join("rules.yaml"), rules).expect("write rules");

    let out = promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert_success(&out, "promtool check rules");

    let files = test_files();
    assert!(files.len() >= 3, "promtool test files missing");
    for file in &files {
        let name = file
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .to_string();
        std::fs::copy(file, dir.path().join(&name)).expect("copy test file");
        let out = promtool(&["test", "rules", &name], dir.path());
        assert_success(&out, &format!("promtool test rules {name}"));
    }
}

/// Each alert must have a test where it fires and one where it stays quiet, so a new alert
/// cannot be added without showing both.
#[test]
fn every_alert_is_tested_firing_and_quiet() {
    let rules = rules_file();
    let alerts: BTreeSet<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for file in test_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        for test in doc["tests"].as_array().unwrap() {
            for check in test["alert_rule_test"].as_array().into_iter().flatten() {
                let name = check["alertname"].as_str().unwrap().to_string();
                let expected = check["exp_alerts"].as_array().map_or(0, Vec::len);
                if expected > 0 {
                    fires.insert(name);
                } else {
                    quiet.insert(name);
                }
            }
        }
    }
    let missing_fire: Vec<_> = alerts.difference(&fires).collect();
    let missing_quiet: Vec<_> = alerts.difference(&quiet).collect();
    assert!(
        missing_fire.is_empty(),
        "alerts never shown firing: {missing_fire:?}"
    );
    assert!(
        missing_quiet.is_empty(),
        "alerts never shown quiet: {missing_quiet:?}"
    );
}

/// Every `runbook_url` anchor has its section in the runbooks document.
#[test]
fn every_alert_has_a_runbook_section() {
    let path = manifest_dir().join("../docs/runbooks.md");
    let text = std::fs::read_to_string(&path).expect("docs/runbooks.md");
    let anchors: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let rules = rules_file();
    for rule in rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        if let Some(url) = rule["annotations"]["runbook_url"].as_str() {
            let anchor = url.rsplit_once('#').unwrap().1;
            assert!(
                anchors.contains(anchor),
                "{} has no section in {}",
                rule["alert"],
                path.display()
            );
        }
    }
}
