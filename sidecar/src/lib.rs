//! Loupe's sidecar agent: reviewed watch and probe points on a process that knows nothing
//! about Loupe, read by pid from its memory and trapped by kernel uprobes, without stopping it.
//!
//! **Where it lives.** Its own crate, `loupe-sidecar`, with the binary `loupe-agent` (subcommand
//! `sidecar`), rather than a feature of `loupe-agent`: it depends on the agent (its endpoint,
//! tokens, limits, redaction, conditions and `Value` model are reused through
//! [`loupe_agent::declare_point`] and `serde`, not copied), while the agent, a library linked
//! into services, stays free of DWARF, ELF and process-reading code and their dependencies
//! (`gimli`, `object`). The sidecar's points enter the agent's registry as declared points;
//! the endpoint serves them unchanged and announces itself as `AGENT_MODE_SIDECAR`.
//!
//! The pipeline, one module each:
//! - [`points`]: the reviewed TOML file: watch points and probe points;
//! - [`target`]: the process by pid (pidfd, start time), its maps, permission errors that say
//!   what to grant (`grant`: the `setcap` command, naming the program running); [`os`] holds
//!   the only `unsafe` (three system calls);
//! - [`elf`]: the executable or a shared library through `/proc/PID/map_files`, build-id,
//!   load bias, split debug info;
//! - [`dwarf`] and [`layout`]: the declared globals and functions found and their types
//!   compiled once into layout plans;
//! - [`location`] and [`probe`]: a probe's entry (after `endbr64`), the cost class of the
//!   instruction it traps, and where each parameter is at entry, or why it is not captured;
//! - [`decode`]: memory read with `process_vm_readv` and decoded as `serde::Serialize` into the
//!   agent's capture;
//! - [`uprobe`]: a probe armed: uprobes through `perf_event_open` on every thread, with a
//!   ring buffer of register and stack samples each;
//! - [`sidecar`]: resolution of every point (all or nothing), declaration, sampling while
//!   armed, the probes' circuit breaker, and the end of captures when the target exits;
//! - [`cli`]: the `loupe-agent sidecar` command line, which starts the agent's endpoint in
//!   sidecar mode.

// Module docs are written for the engineer who maintains the module and link the private items
// they explain; `cargo doc --document-private-items` renders those links.
#![allow(rustdoc::private_intra_doc_links)]

pub mod cli;
pub mod decode;
pub mod dwarf;
pub mod elf;
mod grant;
pub mod layout;
pub mod location;
mod os;
pub mod points;
pub mod probe;
pub mod sidecar;
pub mod target;
pub mod uprobe;

pub use points::{PointsError, PointsFile, ProbeSpec, WatchSpec};
pub use sidecar::{Resolved, RunEnd, Sidecar, SidecarError};
pub use target::{AttachError, Target};
