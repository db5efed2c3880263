//! The quickstart's native demo: `inventory`, a small C program that knows nothing about Loupe,
//! and the sidecar that inspects it by pid, with the reviewed points file shipped beside its
//! source (`devstack/native/`).
//!
//! **Why C, built at start-up.** The demo must be a binary with no Loupe code in it and with
//! debug info, built by a fresh clone's `cargo run --release -p loupe -- quickstart`. A Rust
//! binary in the workspace would not be: `cargo run` builds only the binary it runs, and the
//! release profile strips debug info from what it ships. A C compiler is there already (on
//! Linux, Rust links through `cc`; CI installs gcc), one plain C file shows at a glance that
//! nothing was added for Loupe, and `cc -g -O2` builds it in well under a second, which keeps
//! the quickstart quick. It is built the way the sidecar's own tests build their fixtures, and
//! from the source compiled into this library, so an installed `loupe` needs no checkout.
//!
//! The sidecar is launched as `<exe> sidecar …` (the `loupe` binary runs `loupe-agent
//! sidecar` as a subcommand), registered with the control plane as instance
//! [`SIDECAR_INSTANCE`] of service [`INVENTORY`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use loupe_trust::identity::control_plane_identity;

use crate::pki::PkiLayout;
use crate::supervise::{Launch, Stderr};

/// The native demo's source.
pub const INVENTORY_SOURCE: &str = include_str!("../native/inventory.c");
/// The reviewed points file of the sidecar beside it.
pub const INVENTORY_POINTS: &str = include_str!("../native/inventory.points.toml");
/// The service the sidecar registers as (and so the agent certificate it needs), and the
/// process name on the demo's ready line.
pub const INVENTORY: &str = "inventory";
/// The sidecar's instance name.
pub const SIDECAR_INSTANCE: &str = "inventory-sidecar-1";
/// How the demo is compiled: with DWARF, optimized as a release build would be.
pub const CC_FLAGS: [&str; 2] = ["-g", "-O2"];

/// Why the native demo could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NativeError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no C compiler: `cc` could not be run ({source}); install one (Debian/Ubuntu: `apt-get install gcc libc6-dev`)"
    )]
    NoCompiler { source: std::io::Error },
    #[error("`cc` could not build {source_path} ({status}):\n{output}")]
    Compile {
        source_path: PathBuf,
        status: std::process::ExitStatus,
        output: String,
    },
}

/// The built demo and the points file written beside it.
#[derive(Debug, Clone)]
pub struct NativeDemo {
    pub binary: PathBuf,
    pub points: PathBuf,
    /// The compiler command, as a person would type it.
    pub compile_command: String,
}

/// Writes the demo's source and points file into `dir` (which must exist) and compiles the
/// source with `cc` and [`CC_FLAGS`].
pub fn build_inventory(dir: &Path) -> Result<NativeDemo, NativeError> {
    let source = dir.join("inventory.c");
    let points = dir.join("inventory.points.toml");
    let binary = dir.join(INVENTORY);
    write(&source, INVENTORY_SOURCE)?;
    write(&points, INVENTORY_POINTS)?;
    let output = Command::new("cc")
        .args(CC_FLAGS)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .map_err(|source| NativeError::NoCompiler { source })?;
    if !output.status.success() {
        return Err(NativeError::Compile {
            source_path: source,
            status: output.status,
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(NativeDemo {
        compile_command: format!(
            "cc {} -o {} {}",
            CC_FLAGS.join(" "),
            binary.display(),
            source.display()
        ),
        binary,
        points,
    })
}

/// Launches the built demo, ready when it prints its pid.
pub fn inventory(binary: &Path, ready_within: Duration, stderr: Stderr) -> Launch {
    Launch {
        name: "native demo (inventory)".into(),
        command: Command::new(binary),
        ready_process: INVENTORY.into(),
        ready_within,
        stderr,
    }
}

/// What the sidecar beside the native demo is started with.
#[derive(Debug, Clone)]
pub struct SidecarLaunch {
    /// The dev PKI folder (the agent certificate for [`INVENTORY`], the CA).
    pub pki_dir: PathBuf,
    /// The control plane's address, to register with and fetch token keys from.
    pub control_plane: String,
    pub trust_domain: String,
    /// The process to inspect.
    pub pid: u32,
    /// The reviewed points file.
    pub points: PathBuf,
    /// Serve its watch points only (`--watches-only`): this machine denies uprobes.
    pub watches_only: bool,
}

/// Launches `exe sidecar --pid PID --points FILE …` for service [`INVENTORY`], ready when it
/// prints its agent address.
pub fn sidecar(
    exe: &Path,
    launch: &SidecarLaunch,
    ready_within: Duration,
    stderr: Stderr,
) -> Launch {
    let layout = PkiLayout::at(&launch.pki_dir);
    let leaf = layout.agent(INVENTORY);
    let mut command = Command::new(exe);
    command
        .env_remove("LOUPE_PROFILE")
        .env_remove("LOUPE_CONFIG")
        .args(["sidecar", "--pid", &launch.pid.to_string(), "--points"])
        .arg(&launch.points)
        .args(["--service", INVENTORY, "--instance", SIDECAR_INSTANCE])
        .arg("--cert")
        .arg(&leaf.cert)
        .arg("--key")
        .arg(&leaf.key)
        .arg("--ca")
        .arg(layout.ca_cert())
        .arg("--control-plane")
        .arg(control_plane_identity(&launch.trust_domain))
        .arg("--control-plane-address")
        .arg(&launch.control_plane);
    if launch.watches_only {
        command.arg("--watches-only");
    }
    Launch {
        name: "sidecar".into(),
        command,
        ready_process: loupe_proto::ready::SIDECAR.into(),
        ready_within,
        stderr,
    }
}

fn write(path: &Path, text: &str) -> Result<(), NativeError> {
    std::fs::write(path, text).map_err(|source| NativeError::Write {
        path: path.to_owned(),
        source,
    })
}
