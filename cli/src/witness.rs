//! The reviewer's memory of the audit log: the last checkpoint this reviewer verified, per
//! control plane, so that each verification also proves the log only grew since the last.
//!
//! The file is `<state>/witness/<control-plane identity>.checkpoint` (the identity with every
//! character outside `[A-Za-z0-9._-]` replaced by `_`), where `<state>` is `$LOUPE_STATE_DIR`,
//! else `$XDG_STATE_HOME/loupe`, else `~/.local/state/loupe`. It holds one signed checkpoint
//! note exactly as the log signed it.
//!
//! A new checkpoint is accepted only if it verifies with the pinned key and either there is no
//! kept one yet (trust on first use), or it is the same tree, or a consistency proof shows the
//! kept tree is a prefix of it. A smaller tree is a rollback, a different tree of the same or a
//! larger size is a split view (a fork): both are refused and the kept file is left as it was.
//! The file is replaced atomically (write, sync, rename) and only after success.

use std::path::{Path, PathBuf};

use loupe_audit::checkpoint::{Checkpoint, NoteVerifier};
use loupe_audit::merkle::Hash;
use loupe_audit::verify::{VerifyError, verify_checkpoint_consistency};

use crate::error::CliError;

/// Where the CLI keeps state (`$LOUPE_STATE_DIR`, `$XDG_STATE_HOME/loupe`, `~/.local/state/loupe`).
pub fn state_dir(var: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    set("LOUPE_STATE_DIR")
        .or_else(|| set("XDG_STATE_HOME").map(|d| d.join("loupe")))
        .or_else(|| set("HOME").map(|h| h.join(".local/state/loupe")))
}

/// The witness file of the control plane named `identity`.
pub fn witness_path(state_dir: &Path, identity: &str) -> PathBuf {
    let name: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir.join("witness").join(format!("{name}.checkpoint"))
}

/// The kept checkpoint note at `path`, if there is one.
pub fn load(path: &Path) -> Result<Option<String>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(note) => Ok(Some(note)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::io(
            format!("reading the kept checkpoint {}", path.display()),
            e,
        )),
    }
}

/// Replaces the kept checkpoint atomically.
pub fn store(path: &Path, note: &str) -> Result<(), CliError> {
    let context = |what: &str| format!("{what} the kept checkpoint {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::io(context("creating the folder of"), e))?;
    }
    let temp = path.with_extension("checkpoint.tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(note.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    };
    write().map_err(|e| CliError::io(context("writing"), e))
}

/// What comparing a new checkpoint with the kept one requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing kept: the new checkpoint is trusted on first use.
    FirstUse(Checkpoint),
    /// The same tree as kept.
    Unchanged(Checkpoint),
    /// The tree grew: a consistency proof from `kept.size` to `new.size` must be checked.
    NeedsProof { kept: Checkpoint, new: Checkpoint },
}

/// Opens the new checkpoint (and the kept one) with the pinned key and says what is needed to
/// accept it. Refuses a shrunk tree or a same-size fork at once.
pub fn compare(
    key: &NoteVerifier,
    kept_note: Option<&str>,
    new_note: &str,
) -> Result<Step, CliError> {
    let new = key.open_checkpoint(new_note).map_err(|e| {
        CliError::Verification(format!(
            "the control plane's checkpoint does not verify with the pinned key: {e}"
        ))
    })?;
    let Some(kept_note) = kept_note else {
        return Ok(Step::FirstUse(new));
    };
    let kept = key.open_checkpoint(kept_note).map_err(|e| {
        CliError::Verification(format!(
            "the checkpoint kept from an earlier verification does not verify with the pinned \
             key: {e} (if the log's key was rotated on purpose, confirm with its operators and \
             move the kept checkpoint away)"
        ))
    })?;
    if kept.size > new.size {
        return Err(verification(VerifyError::Rollback {
            kept: kept.size,
            current: new.size,
        }));
    }
    if kept.size == new.size {
        return if kept.root == new.root {
            Ok(Step::Unchanged(new))
        } else {
            Err(verification(VerifyError::SplitView { size: kept.size }))
        };
    }
    Ok(Step::NeedsProof { kept, new })
}

/// Checks the consistency proof for a [`Step::NeedsProof`].
pub fn check_proof(
    key: &NoteVerifier,
    kept_note: &str,
    new_note: &str,
    proof: &[Hash],
) -> Result<Checkpoint, CliError> {
    verify_checkpoint_consistency(key, kept_note, new_note, proof)
        .map(|(_, new)| new)
        .map_err(verification)
}

/// A verification failure as the CLI reports it (exit 8).
pub fn verification(error: VerifyError) -> CliError {
    let hint = match &error {
        VerifyError::Rollback { .. } => {
            " — the log is smaller than when you last verified it: events were removed"
        }
        VerifyError::SplitView { .. } => {
            " — the log's history differs from the one you verified before: it was rewritten \
             or you are shown a fork"
        }
        _ => "",
    };
    CliError::Verification(format!("{error}{hint}"))
}

#[cfg(test)]
mod tests {
    use loupe_audit::checkpoint::NoteSigner;
    use loupe_audit::merkle::{CompactTree, leaf_hash};
    use loupe_audit::proof::consistency_proof;

    use super::*;

    /// A toy log's leaf hashes, enough to sign checkpoints and prove consistency.
    struct Leaves(Vec<Hash>);

    fn leaves(n: u64, salt: &str) -> Leaves {
        Leaves(
            (0..n)
                .map(|i| leaf_hash(format!("{salt}{i}").as_bytes()))
                .collect(),
        )
    }

    fn note(signer: &NoteSigner, leaves: &Leaves, size: usize) -> String {
        let mut tree = CompactTree::new();
        for leaf in &leaves.0[..size] {
            tree.push(*leaf);
        }
        Checkpoint {
            origin: signer.name().to_owned(),
            size: size as u64,
            root: tree.root(),
        }
        .sign(signer)
        .unwrap()
    }

    #[test]
    fn growth_is_accepted_with_a_proof() {
        let signer = NoteSigner::generate("loupe.test/audit").unwrap();
        let key = signer.verifier();
        let log = leaves(20, "e");
        let old = note(&signer, &log, 7);
        let new = note(&signer, &log, 20);
        assert!(matches!(compare(&key, None, &old), Ok(Step::FirstUse(_))));
        assert!(matches!(
            compare(&key, Some(&old), &old),
            Ok(Step::Unchanged(_))
        ));
        let Ok(Step::NeedsProof { kept, new: grown }) = compare(&key, Some(&old), &new) else {
            panic!("expected a proof step");
        };
        let proof = consistency_proof(log.0.as_slice(), kept.size, grown.size).unwrap();
        assert_eq!(check_proof(&key, &old, &new, &proof).unwrap().size, 20);
    }

    #[test]
    fn a_shrunk_tree_is_refused() {
        let signer = NoteSigner::generate("loupe.test/audit").unwrap();
        let log = leaves(20, "e");
        let error = compare(
            &signer.verifier(),
            Some(&note(&signer, &log, 20)),
            &note(&signer, &log, 7),
        )
        .unwrap_err();
        assert_eq!(error.exit_code(), crate::exit::VERIFICATION_FAILED);
        assert!(error.to_string().contains("rollback"), "{error}");
    }

    #[test]
    fn a_fork_is_refused_at_the_same_size_and_beyond() {
        let signer = NoteSigner::generate("loupe.test/audit").unwrap();
        let key = signer.verifier();
        let honest = leaves(20, "e");
        let forked = leaves(20, "f");
        let kept = note(&signer, &honest, 7);
        let same_size = compare(&key, Some(&kept), &note(&signer, &forked, 7)).unwrap_err();
        assert!(same_size.to_string().contains("split view"), "{same_size}");

        let fork = note(&signer, &forked, 20);
        assert!(matches!(
            compare(&key, Some(&kept), &fork),
            Ok(Step::NeedsProof { .. })
        ));
        // The forked log proves its own consistency, which cannot match the kept root.
        let proof = consistency_proof(forked.0.as_slice(), 7, 20).unwrap();
        let error = check_proof(&key, &kept, &fork, &proof).unwrap_err();
        assert_eq!(error.exit_code(), crate::exit::VERIFICATION_FAILED);
        assert!(error.to_string().contains("split view"), "{error}");
    }

    #[test]
    fn a_note_signed_by_another_key_is_refused() {
        let signer = NoteSigner::generate("loupe.test/audit").unwrap();
        let impostor = NoteSigner::generate("loupe.test/audit").unwrap();
        let log = leaves(3, "e");
        let error = compare(&signer.verifier(), None, &note(&impostor, &log, 3)).unwrap_err();
        assert_eq!(error.exit_code(), crate::exit::VERIFICATION_FAILED);
    }

    #[test]
    fn the_file_is_named_after_the_identity_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = witness_path(dir.path(), "spiffe://loupe.dev/control-plane");
        assert!(path.ends_with("witness/spiffe___loupe.dev_control-plane.checkpoint"));
        assert_eq!(load(&path).unwrap(), None);
        store(&path, "one\n").unwrap();
        store(&path, "two\n").unwrap();
        assert_eq!(load(&path).unwrap().as_deref(), Some("two\n"));
        let var = |name: &str| (name == "HOME").then(|| "/home/r".to_owned());
        assert_eq!(
            state_dir(&var),
            Some(PathBuf::from("/home/r/.local/state/loupe"))
        );
    }
}
