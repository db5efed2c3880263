//! The quickstart's sidecar part: the native demo (`inventory`, a C program with no Loupe in
//! it, see [`loupe_devstack::native`]) built and started, and `loupe sidecar` beside it with
//! the reviewed points file, registered with the quickstart's control plane as a SIDECAR
//! instance of `inventory`.
//!
//! A machine that cannot run it is not an error: without a C compiler, or where the sidecar
//! is denied what it needs (reading another process, uprobes — the sidecar exits 4 and says
//! what to grant), the quickstart says so and the walkthrough goes on with the in-process part
//! alone. Anything else that stops it (a points file that does not resolve, a demo that does
//! not start) is a defect and fails the quickstart, as every other step does.

use std::path::Path;
use std::time::Duration;

use loupe_devstack::native::{self, INVENTORY, NativeError, SidecarLaunch};
use loupe_devstack::pki::{self, IssueOptions, PkiLayout};
use loupe_devstack::supervise::{Stderr, SuperviseError, Supervised};

use super::quickstart_error;
use crate::error::CliError;

/// The sidecar's exit code when a privilege it needs is denied (`loupe_sidecar::cli`).
const PRIVILEGE_MISSING: i32 = 4;

/// What became of the sidecar part.
pub enum SidecarPart {
    Running(Box<Running>),
    /// Why this machine cannot run it, said in the walkthrough.
    Skipped(String),
}

/// The native demo and the sidecar beside it.
pub struct Running {
    pub inventory: Supervised,
    pub sidecar: Supervised,
    /// How the demo was built, shown in the walkthrough.
    pub compile_command: String,
}

/// Where the native demo is built and what the sidecar is given.
pub struct Places<'a> {
    pub exe: &'a Path,
    pub dir: &'a Path,
    pub pki_dir: &'a Path,
    pub trust_domain: &'a str,
    pub control_plane: &'a str,
    pub ready_within: Duration,
}

/// Builds and starts the native demo, then the sidecar beside it.
pub fn start(places: &Places<'_>) -> Result<SidecarPart, CliError> {
    let build_dir = places.dir.join("native");
    std::fs::create_dir_all(&build_dir)
        .map_err(|e| CliError::io(format!("creating {}", build_dir.display()), e))?;
    let demo = match native::build_inventory(&build_dir) {
        Ok(demo) => demo,
        Err(error @ NativeError::NoCompiler { .. }) => {
            return Ok(SidecarPart::Skipped(error.to_string()));
        }
        Err(error) => return Err(quickstart_error("building the native demo", error)),
    };
    ensure_agent_certificate(places.pki_dir)?;
    let logs = places.dir.join("logs");
    let inventory = Supervised::start(native::inventory(
        &demo.binary,
        places.ready_within,
        Stderr::File(logs.join("inventory.log")),
    ))
    .map_err(|e| quickstart_error("starting the native demo", e))?;
    let launch = SidecarLaunch {
        pki_dir: places.pki_dir.to_owned(),
        control_plane: places.control_plane.to_owned(),
        trust_domain: places.trust_domain.to_owned(),
        pid: inventory.pid(),
        points: demo.points.clone(),
    };
    let sidecar = match Supervised::start(native::sidecar(
        places.exe,
        &launch,
        places.ready_within,
        Stderr::File(logs.join("sidecar.log")),
    )) {
        Ok(sidecar) => sidecar,
        Err(
            error @ SuperviseError::NotReady {
                exit: Some(status), ..
            },
        ) if status.code() == Some(PRIVILEGE_MISSING) => {
            return Ok(SidecarPart::Skipped(error.to_string()));
        }
        Err(error) => return Err(quickstart_error("starting the sidecar", error)),
    };
    Ok(SidecarPart::Running(Box::new(Running {
        inventory,
        sidecar,
        compile_command: demo.compile_command,
    })))
}

/// Issues the agent certificate of `inventory` when the PKI has none (a PKI made by an
/// earlier quickstart, before the native demo was part of it).
fn ensure_agent_certificate(pki_dir: &Path) -> Result<(), CliError> {
    let leaf = PkiLayout::at(pki_dir).agent(INVENTORY);
    if leaf.cert.exists() && leaf.key.exists() {
        return Ok(());
    }
    let options = IssueOptions {
        replace: true,
        ..IssueOptions::default()
    };
    pki::issue_agent(pki_dir, INVENTORY, &options)
        .map(drop)
        .map_err(|e| quickstart_error("the native demo's agent certificate", e))
}
