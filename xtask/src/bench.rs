//! `cargo xtask bench`: builds the daemon and the harness (`benches/`, `hivemind-bench`) in
//! release mode and runs the harness, which prints the report and writes it to
//! `docs/benchmarks.md`. `--quick` is the CI smoke test: few repetitions, the debug build that
//! `cargo xtask test` already made (no release build in CI), and the report goes to
//! `target/benchmarks-quick.md` so the committed results are not overwritten. Missed targets
//! are reported in the table, never turned into a failure: timing is no test.

use std::process::Command;

use anyhow::{Result, bail};

use super::{is_root, run, setup, workspace_root};

pub fn bench(quick: bool, only: Option<&str>) -> Result<()> {
    if !is_root() {
        bail!(
            "bench must run as root: it loads eBPF programs, runs BPF_PROG_TEST_RUN and creates \
             network namespaces"
        );
    }
    setup()?;
    let root = workspace_root()?;
    let profile = if quick { "debug" } else { "release" };
    println!("bench: building hivemind and hivemind-bench ({profile})");
    let mut build = Command::new("cargo");
    build
        .args([
            "build",
            "--package",
            "hivemind",
            "--package",
            "hivemind-bench",
        ])
        .current_dir(&root);
    if !quick {
        build.arg("--release");
    }
    run(&mut build)?;
    let bin = root.join("target").join(profile);
    let (out, command) = match (quick, only) {
        (_, Some(only)) => (
            "target/benchmarks-partial.md",
            format!(
                "cargo xtask bench{} --only {only}",
                if quick { " --quick" } else { "" }
            ),
        ),
        (true, None) => (
            "target/benchmarks-quick.md",
            "cargo xtask bench --quick".to_string(),
        ),
        (false, None) => ("docs/benchmarks.md", "cargo xtask bench".to_string()),
    };
    let mut harness = Command::new(bin.join("hivemind-bench"));
    harness
        .args(["--out", out, "--command", &command, "--hivemind"])
        .arg(bin.join("hivemind"))
        .current_dir(&root);
    if quick {
        harness.arg("--quick");
    }
    if let Some(only) = only {
        harness.args(["--only", only]);
    }
    run(&mut harness)
}
