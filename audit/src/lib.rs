//! The audit record and everything needed to check it without a server.
//!
//! Why a crate of its own: the control plane writes these formats and a reviewer's tools (the
//! `loupe audit verify` command, or any program holding an export) check them offline; agents
//! never touch them, so they stay out of what a service pulls in. Its only dependencies are
//! hashing and signatures (`ring`), `serde` and `base64`.
//!
//! The control plane writes [`event::AuditEvent`]s into a Merkle tree ([`merkle`], RFC 6962
//! hashing), signs checkpoints of that tree as C2SP signed notes ([`checkpoint`]), and hands out
//! inclusion and consistency proofs ([`proof`], RFC 9162). A reviewer holding an export
//! ([`export`]) and a checkpoint they kept verifies it offline with [`verify::verify_export`].

pub mod checkpoint;
pub mod event;
pub mod export;
pub mod merkle;
pub mod proof;
pub mod verify;
