//! Builds `hivemind-ebpf` for `bpfel-unknown-none` with the nightly toolchain (through
//! aya-build) so that `dataplane` can embed its objects: the daemon's from
//! `OUT_DIR/hivemind-ebpf`, the benchmarks' floor from `OUT_DIR/hivemind-floor`.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

const SETUP_HINT: &str = "run `cargo xtask setup` to install the eBPF toolchain";

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let root = manifest_dir
        .parent()
        .context("hivemind crate has no parent directory")?;
    let ebpf_dir = root.join("hivemind-ebpf");
    let common_dir = root.join("hivemind-common");
    for path in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        common_dir.join("src"),
        common_dir.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=PATH");

    let out_dir = PathBuf::from(env::var("OUT_DIR").context("OUT_DIR not set")?);
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // An empty object: the crate compiles, `Dataplane::load` reports the missing object.
        println!("cargo:warning=AYA_BUILD_SKIP set: embedding an empty eBPF object");
        for object in ["hivemind-ebpf", "hivemind-floor"] {
            fs::write(out_dir.join(object), b"").context("writing placeholder object")?;
        }
        return Ok(());
    }

    check_toolchain()?;

    // hivemind-ebpf is excluded from the workspace, and aya-build runs `cargo build --package`
    // in the current directory: run it from the eBPF crate's own directory.
    env::set_current_dir(&ebpf_dir).with_context(|| format!("entering {}", ebpf_dir.display()))?;
    // aya-build forwards every stderr line of the nested cargo as a cargo:warning; keep only
    // the diagnostics (which arrive as JSON on stdout either way).
    // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    let root_dir = ebpf_dir
        .to_str()
        .context("hivemind-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "hivemind-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building hivemind-ebpf (see the cargo:warning lines above)")?;
    Ok(())
}

/// Fails early, with the command that fixes it, when bpf-linker or nightly's rust-src is missing.
fn check_toolchain() -> anyhow::Result<()> {
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !linker.is_ok_and(|o| o.status.success()) {
        bail!("bpf-linker is not on PATH; {SETUP_HINT}");
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .with_context(|| format!("running `rustup run nightly rustc`; {SETUP_HINT}"))?;
    if !sysroot.status.success() {
        bail!("the nightly toolchain is not installed; {SETUP_HINT}");
    }
    let sysroot = String::from_utf8_lossy(&sysroot.stdout);
    let core_src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if !core_src.is_dir() {
        bail!(
            "nightly has no rust-src component ({} missing); {SETUP_HINT}",
            core_src.display()
        );
    }
    Ok(())
}
