//! The OCI images scripts/build-images.sh assembles (no container engine here): each runs as a
//! numeric non-root user, has no shell, and its entrypoint answers `--help` inside its own root
//! filesystem, with only the libraries the image carries.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, ensure};
use serde_json::Value;
use sha2::{Digest, Sha256};
use testenv::Tools;

const IMAGES: [&str; 3] = ["operator", "api-server", "worker"];

fn images_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("IMAGES_DIR") {
        return Ok(PathBuf::from(dir));
    }
    // <target>/debug/deps/images-* → <target>/images, where build-images.sh writes by default.
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .context("test binary outside a cargo target dir")?;
    Ok(target.join("images"))
}

/// Reads a blob and checks it against its content address.
fn blob(layout: &Path, digest: &str) -> anyhow::Result<Vec<u8>> {
    let hex = digest
        .strip_prefix("sha256:")
        .context("not a sha256 digest")?;
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex))?;
    let actual: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ensure!(
        actual == hex,
        "blob {digest} is corrupt (hashes to {actual})"
    );
    Ok(bytes)
}

fn json_blob(layout: &Path, digest: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&blob(layout, digest)?)?)
}

#[test]
fn images_run_as_non_root_without_a_shell_and_answer_help() -> anyhow::Result<()> {
    let dir = images_dir()?;
    let umoci = Tools::new().umoci()?;
    let version = env!("CARGO_PKG_VERSION");
    for name in IMAGES {
        let layout = dir.join(name);
        ensure!(
            layout.join("index.json").is_file(),
            "no image at {}: run `PROFILE=dev scripts/build-images.sh` (make test does)",
            layout.display()
        );
        let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
        let entry = index["manifests"]
            .as_array()
            .and_then(|m| {
                m.iter()
                    .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == version)
            })
            .with_context(|| format!("{name}: no manifest tagged {version}"))?;
        let manifest = json_blob(&layout, entry["digest"].as_str().context("digest")?)?;
        let config = json_blob(
            &layout,
            manifest["config"]["digest"].as_str().context("config")?,
        )?;
        for layer in manifest["layers"].as_array().context("layers")? {
            blob(&layout, layer["digest"].as_str().context("layer digest")?)?;
        }

        let user = config["config"]["User"].as_str().unwrap_or_default();
        assert_eq!(
            user, "65532:65532",
            "{name} runs as a numeric non-root user"
        );
        let entrypoint = &config["config"]["Entrypoint"];
        assert_eq!(
            entrypoint,
            &serde_json::json!([format!("/usr/local/bin/{name}")])
        );
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.title"],
            name
        );

        let work = tempfile::tempdir()?;
        let bundle = work.path().join("bundle");
        let status = Command::new(&umoci)
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:{version}", layout.display()))
            .arg(&bundle)
            .status()?;
        ensure!(status.success(), "umoci unpack {name}");
        let rootfs = bundle.join("rootfs");
        for shell in ["bin/sh", "bin/bash", "usr/bin/sh"] {
            assert!(!rootfs.join(shell).exists(), "{name} ships {shell}");
        }
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))?;
        assert!(passwd.contains(":65532:65532:"), "{name}: {passwd}");

        // Inside the image's own root: proves the image carries every library it links.
        let out = Command::new("chroot")
            .arg(&rootfs)
            .arg(format!("/usr/local/bin/{name}"))
            .arg("--help")
            .output()
            .context("chroot (the test runs as root, as CI does)")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name} --help in its image failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Usage:"), "{name} --help: {stdout}");
    }
    Ok(())
}
