//! Facts about the workspace's shape.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on failure.

use std::process::Command;

/// sandbox-core is the contract tools program against: it must not pull in a
/// backend or an OS-specific crate.
#[test]
fn sandbox_core_depends_on_no_backend_and_no_os_specific_crate() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "sandbox-core",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    // The probe works: the tree lists sandbox-core and its direct dependencies.
    assert!(
        crates.contains(&"sandbox-core") && crates.contains(&"serde"),
        "{tree}"
    );
    for forbidden in [
        "bollard",
        "tokio",
        "nix",
        "libc",
        "rustix",
        "landlock",
        "seccompiler",
        "sandbox-docker",
        "sandbox-restricted",
    ] {
        assert!(
            !crates.contains(&forbidden),
            "sandbox-core depends on {forbidden}:\n{tree}"
        );
    }
}
