//! `cargo xtask`: what cargo cannot do alone.
//!
//! - `setup`: installs, idempotently, every system package and tool the project builds and
//!   tests with (apt packages, nightly rust-src, bpf-linker).
//! - `build-ebpf`: builds the eBPF object explicitly and prints its path.
//! - `test`: setup, then formatting, lints and every test (the README's test command).
//! - `daemon`: setup, a release build, then `hivemind daemon` with the given arguments.
//! - `bench`: the benchmark harness (`benches/`), results in `docs/benchmarks.md`.

mod bench;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

/// Debian packages the build and the tests need.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "protobuf-compiler",
    "containerd",
    "runc",
    "docker-registry",
    "busybox-static",
    "iproute2",
    "curl",
    "iperf3",
    "iptables",
    "nftables",
    // prometheus and promtool, for the metrics tests.
    "prometheus",
    // A real browser for the dashboard test (driven over the DevTools protocol).
    "chromium",
    // CI/CD pipelines fetch their branch with git (and the tests serve repositories with it).
    "git",
];
/// bpf-linker must be built against the system LLVM 22, found through this directory.
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

#[derive(Parser)]
#[command(about = "Hivemind development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain and system packages (idempotent).
    Setup,
    /// Build hivemind-ebpf for bpfel-unknown-none and print the object's path.
    BuildEbpf,
    /// Install what is missing, then check formatting and lints and run every test.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A multi-node cluster on this machine, each node a network namespace.
    Testbed {
        #[command(subcommand)]
        command: TestbedCommand,
    },
    /// Install what is missing, build in release mode and run `hivemind daemon ARGS...`.
    Daemon {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks (as root) and write docs/benchmarks.md; --quick: CI smoke test.
    Bench {
        #[arg(long)]
        quick: bool,
        /// Only these sections (comma-separated: per-packet, rate, scheduler, memory, deploy,
        /// failover, membership, e2e); the report then goes to target/benchmarks-partial.md
        #[arg(long)]
        only: Option<String>,
    },
}

#[derive(Subcommand)]
enum TestbedCommand {
    /// Build the hivemind binary and start N nodes (node 1 at 192.168.100.11, ...).
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value = "/var/lib/hivemind-testbed")]
        dir: PathBuf,
    },
    /// Stop and remove a testbed started by `up`.
    Down {
        #[arg(long, default_value = "/var/lib/hivemind-testbed")]
        dir: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Setup => setup(),
        Task::BuildEbpf => {
            let object = build_ebpf()?;
            println!("{}", object.display());
            Ok(())
        }
        Task::Test { args } => test(&args),
        Task::Testbed { command } => testbed(command),
        Task::Daemon { args } => daemon(&args),
        Task::Bench { quick, only } => bench::bench(quick, only.as_deref()),
    }
}

fn workspace_root() -> Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

fn test(args: &[String]) -> Result<()> {
    setup()?;
    ensure_schemathesis()?;
    ensure_moto()?;
    let root = workspace_root()?;
    if !is_root() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!(
                "the end-to-end tests need root (containerd, network namespaces, eBPF); CI=true makes that a failure"
            );
        }
        println!("test: not root: the kernel and containerd tests will say they are skipped");
    }
    println!("test: cargo fmt --check");
    run(Command::new("cargo")
        .args(["fmt", "--all", "--check"])
        .current_dir(&root))?;
    println!("test: cargo clippy --all-targets -- -D warnings");
    run(Command::new("cargo")
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(&root))?;
    // Every test binary runs even after a failure, so one run reports them all.
    println!("test: cargo test --workspace --no-fail-fast");
    run(Command::new("cargo")
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(args)
        .current_dir(&root))?;
    println!("test: all passed");
    Ok(())
}

/// The moto server: a local AWS-compatible endpoint for the cloud tests.
fn ensure_moto() -> Result<()> {
    let present = Command::new("moto_server")
        .arg("--help")
        .output()
        .is_ok_and(|output| output.status.success());
    if present {
        return Ok(());
    }
    println!("test: pip install moto[server] (the cloud tests' AWS endpoint)");
    run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "moto[server]>=5,<6",
        "boto3",
    ]))?;
    let _ = Command::new("pyenv").arg("rehash").status();
    Ok(())
}

/// schemathesis 4 (PyPI), the REST API fuzzer of `hivemind/tests/api_fuzz.rs`:
/// installed with pip when `schemathesis` is not on PATH.
fn ensure_schemathesis() -> Result<()> {
    let present = Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if present {
        return Ok(());
    }
    println!("test: pip install schemathesis (the API fuzzer)");
    run(Command::new("python3").args(["-m", "pip", "install", "--quiet", "schemathesis>=4,<5"]))?;
    // pyenv puts a new command on PATH only after a rehash; elsewhere this is absent.
    let _ = Command::new("pyenv").arg("rehash").status();
    Ok(())
}

fn daemon(args: &[String]) -> Result<()> {
    setup()?;
    let root = workspace_root()?;
    println!("daemon: building hivemind (release)");
    run(Command::new("cargo")
        .args(["build", "--release", "--package", "hivemind"])
        .current_dir(&root))?;
    let binary = root.join("target/release/hivemind");
    println!("daemon: {} daemon {}", binary.display(), args.join(" "));
    run(Command::new(binary).arg("daemon").args(args))
}

fn testbed(command: TestbedCommand) -> Result<()> {
    use hivemind_tests::testbed::Testbed;
    match command {
        TestbedCommand::Up { nodes, dir } => {
            if dir.join("testbed.json").exists() {
                bail!(
                    "a testbed already runs from {}; `cargo xtask testbed down` first",
                    dir.display()
                );
            }
            let root = workspace_root()?;
            run(Command::new("cargo")
                .args(["build", "--package", "hivemind"])
                .current_dir(&root))?;
            let binary = root.join("target/debug/hivemind");
            println!("testbed: starting {nodes} node(s) under {}", dir.display());
            let testbed = Testbed::up("x", nodes, &binary, &dir)?;
            for node in &testbed.nodes {
                println!(
                    "testbed: {} id {} at {} (netns {}): hivemind --server https://{}:3000 \
                     --ca-cert {} node ls",
                    node.name,
                    node.id,
                    node.ip(),
                    node.ns.name,
                    node.ip(),
                    node.daemon.ca_cert().display()
                );
            }
            let state = testbed.keep()?;
            println!(
                "testbed: up; run commands in a node with `nsenter --net=/run/netns/hmtb-x-n1 ...`; \
                 state in {}; `cargo xtask testbed down` removes it",
                state.display()
            );
            Ok(())
        }
        TestbedCommand::Down { dir } => {
            Testbed::down(&dir)?;
            println!("testbed: removed");
            Ok(())
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn setup() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !dpkg_installed(pkg))
        .collect();
    if missing.is_empty() {
        println!("setup: apt packages already installed");
    } else {
        println!("setup: installing apt packages: {}", missing.join(" "));
        run(Command::new("apt-get").arg("update"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }

    if nightly_has_rust_src()? {
        println!("setup: nightly rust-src already installed");
    } else {
        println!("setup: adding rust-src to the nightly toolchain");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }

    if succeeds(Command::new("bpf-linker").arg("--version")) {
        println!("setup: bpf-linker already installed");
    } else {
        println!("setup: installing bpf-linker (builds against LLVM 22, takes a few minutes)");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![PathBuf::from(LLVM_BIN)];
        dirs.extend(std::env::split_paths(&path));
        let path = std::env::join_paths(dirs).context("building PATH")?;
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                "^0.13",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", path))?;
    }
    println!("setup: done");
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg")
        .args(["-s", pkg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn nightly_has_rust_src() -> Result<bool> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup")?;
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("rust-src")))
}

/// Same command as `hivemind/build.rs` runs through aya-build.
fn build_ebpf() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    let ebpf_dir = root.join("hivemind-ebpf");
    let target_dir = root.join("target").join("ebpf");
    if !succeeds(Command::new("bpf-linker").arg("--version")) {
        bail!("bpf-linker is not on PATH; run `cargo xtask setup`");
    }
    run(Command::new("rustup")
        .args([
            "run",
            "nightly",
            "cargo",
            "build",
            "--package",
            "hivemind-ebpf",
            "--bins",
            "--release",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&ebpf_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                &format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER"))?;
    Ok(target_dir.join("bpfel-unknown-none/release/hivemind-ebpf"))
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
