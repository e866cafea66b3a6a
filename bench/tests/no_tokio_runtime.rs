//! The product never builds a second async runtime (GUIDE: "no tokio
//! `rt`"). ws2http itself depends on tokio only through redis (its `sync`
//! parts), but Cargo unifies features across the workspace members built
//! together, and across their dev-dependencies in test builds: a member (the
//! bench, say) that asked for tokio's runtime would have it compiled into the
//! ws2http that `cargo build --workspace` and `cargo test` build. Workload 1's
//! tokio floor needs that runtime, so it lives in bench/floors/, a workspace
//! of its own; this test keeps it there.

use std::path::Path;
use std::process::Command;

/// The features tokio is built with, as `cargo tree ARGS` resolves them
/// (`None`: tokio is not in that tree).
fn tokio_features(args: &[&str]) -> Option<Vec<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--locked", "-i", "tokio", "--depth", "0", "-f", "{p}: {f}"])
        .args(args)
        .current_dir(root)
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("did not match any packages") {
        return None;
    }
    assert!(out.status.success(), "cargo tree {args:?} failed: {stderr}");
    let line = stdout.lines().find(|l| l.starts_with("tokio v")).unwrap_or_else(|| panic!("no tokio in {stdout}"));
    let features = line.split_once(": ").map(|(_, f)| f).unwrap_or("");
    Some(features.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect())
}

/// tokio features that build its runtime.
fn runtime_features(features: &[String]) -> Vec<&String> {
    features.iter().filter(|f| matches!(f.as_str(), "rt" | "rt-multi-thread" | "full")).collect()
}

#[test]
fn the_workspace_builds_no_tokio_runtime() {
    // Every member and every kind of dependency (normal, build, dev): what
    // `cargo build --workspace` and `cargo test` compile ws2http with.
    if let Some(features) = tokio_features(&["--workspace"]) {
        let rt = runtime_features(&features);
        assert!(rt.is_empty(), "tokio is built with {rt:?} in the workspace (all features: {features:?})");
    }
}

#[test]
fn the_tokio_floor_has_the_runtime_and_stays_outside_the_workspace() {
    // The check above would see a runtime: the floors' own tree has one.
    let floors = tokio_features(&["--manifest-path", "bench/floors/Cargo.toml"]).expect("the floors use tokio");
    assert!(
        runtime_features(&floors).iter().any(|f| *f == "rt-multi-thread"),
        "bench/floors/ builds tokio without its multi-thread runtime: {floors:?}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains(r#"exclude = ["bench/floors"]"#), "bench/floors must be excluded from the workspace");
}
