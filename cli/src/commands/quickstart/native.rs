//! The quickstart's sidecar part: the native demo (`inventory`, a C program with no Loupe in
//! it, see [`loupe_devstack::native`]) built and started, and `loupe sidecar` beside it with
//! the reviewed points file, registered with the quickstart's control plane as a SIDECAR
//! instance of `inventory`.
//!
//! A machine that cannot run it is not an error: without a C compiler, or where the sidecar
//! is denied reading another process (it exits 4 and says what to grant), the quickstart says
//! so and the walkthrough goes on with the in-process part alone. A machine that allows reads
//! but not uprobes (no uprobe PMU, no CAP_SYS_ADMIN: common in containers and in clusters
//! that forbid SYS_ADMIN) loses only the probe point: [`probes_here`] decides, before the
//! sidecar starts, from the same check the sidecar makes, and the sidecar then serves the
//! reviewed file's watch points alone (`--watches-only`), so the walkthrough still captures
//! the watch point and says which probe point it skipped and what to enable. Anything else
//! that stops it (a points file that does not resolve, a demo that does not start) is a
//! defect and fails the quickstart, as every other step does.

use std::path::Path;
use std::time::Duration;

use loupe_devstack::native::{self, INVENTORY, NativeError, SidecarLaunch};
use loupe_devstack::pki::{self, IssueOptions, PkiLayout};
use loupe_devstack::supervise::{Stderr, SuperviseError, Supervised};
use loupe_sidecar::uprobe::{self, ProbeError};

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
    /// Whether its probe point is served here.
    pub probes: Probes,
}

/// Whether the sidecar serves the demo's probe point on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probes {
    Served,
    /// Only the watch point is served; why not the probe point, and what to enable.
    Skipped(String),
}

/// The demo's probe point: named when it is skipped.
pub const PROBE_POINT: &str = "inventory.reserve";

/// Whether probes can be served, from the sidecar's own check of this machine (the uprobe
/// PMU, CAP_SYS_ADMIN): the sidecar runs as this same program, so it has the same
/// privileges. A refusal keeps the watch point and says what would bring the probe back.
pub fn probes_here(check: Result<(), ProbeError>) -> Probes {
    match check {
        Ok(()) => Probes::Served,
        Err(error) => Probes::Skipped(format!(
            "the probe point {PROBE_POINT} is skipped (the watch point is still served): {error}"
        )),
    }
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
    let probes = probes_here(uprobe::check_privileges());
    let launch = SidecarLaunch {
        pki_dir: places.pki_dir.to_owned(),
        control_plane: places.control_plane.to_owned(),
        trust_domain: places.trust_domain.to_owned(),
        pid: inventory.pid(),
        points: demo.points.clone(),
        watches_only: probes != Probes::Served,
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
        probes,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_served_where_uprobes_are_allowed() {
        assert_eq!(probes_here(Ok(())), Probes::Served);
    }

    #[test]
    fn without_cap_sys_admin_only_the_probe_point_is_skipped_saying_what_to_grant() {
        let Probes::Skipped(why) = probes_here(Err(ProbeError::NoCapSysAdmin)) else {
            panic!("a machine without CAP_SYS_ADMIN cannot serve the probe point");
        };
        assert!(why.contains(PROBE_POINT), "{why}");
        assert!(why.contains("watch point is still served"), "{why}");
        assert!(
            why.contains("CAP_SYS_ADMIN") && why.contains("setcap"),
            "{why}"
        );
    }

    #[test]
    fn without_the_uprobe_pmu_only_the_probe_point_is_skipped_saying_what_to_enable() {
        let Probes::Skipped(why) = probes_here(Err(ProbeError::NoUprobePmu)) else {
            panic!("a kernel without the uprobe PMU cannot serve the probe point");
        };
        assert!(why.contains(PROBE_POINT), "{why}");
        assert!(why.contains("CONFIG_UPROBE_EVENTS"), "{why}");
    }

    #[test]
    fn a_skipped_probe_point_starts_the_sidecar_with_watches_only() {
        let launch = |watches_only| SidecarLaunch {
            pki_dir: "/pki".into(),
            control_plane: "127.0.0.1:1".into(),
            trust_domain: "loupe.test".into(),
            pid: 1,
            points: "/points.toml".into(),
            watches_only,
        };
        let args = |watches_only| {
            native::sidecar(
                Path::new("/loupe"),
                &launch(watches_only),
                Duration::from_secs(1),
                Stderr::Inherit,
            )
            .command
            .get_args()
            .any(|arg| arg == "--watches-only")
        };
        assert!(args(true));
        assert!(!args(false));
    }
}
