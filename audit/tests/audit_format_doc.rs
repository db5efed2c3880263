//! docs/audit-format.md is a specification someone may implement a verifier from: its worked
//! example must be what this code computes. The test rebuilds the example log (three events, a
//! checkpoint signed with a fixed seed) and checks that every line of the document's example
//! blocks is in the document verbatim.

use loupe_audit::checkpoint::{Checkpoint, NoteSigner};
use loupe_audit::event::{
    Action, Actor, Decision, Detail, NewEvent, Outcome, Resource, ResourceKind,
};
use loupe_audit::export::ExportWriter;
use loupe_audit::merkle::{Hash, leaf_hash, root_of, to_hex};
use loupe_audit::proof::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion,
};

const DOC: &str = include_str!("../../docs/audit-format.md");

fn events() -> Vec<NewEvent> {
    let alice = Actor {
        id: "spiffe://loupe.dev/user/alice".into(),
        cert_sha256: "ab".repeat(32),
    };
    let session = |action, outcome, policies: &[&str], reason: &str| {
        NewEvent::new(
            alice.clone(),
            action,
            Resource {
                kind: ResourceKind::Session,
                id: "ses-1".into(),
            },
            Decision {
                outcome,
                policies: policies.iter().map(|p| (*p).to_owned()).collect(),
                reason: reason.into(),
            },
            "req-1",
        )
        .session("ses-1")
        .service("checkout")
    };
    vec![
        session(
            Action::SessionRequested,
            Outcome::Allow,
            &["sre-open-sessions"],
            "",
        )
        .detail(
            "points",
            Detail::List(vec!["checkout.apply_discount".into()]),
        )
        .detail(
            "reason",
            Detail::Text("INC-7: \"cart\" totals\nwrong".into()),
        )
        .detail("ttl_seconds", Detail::UInt(600)),
        session(
            Action::SessionOpened,
            Outcome::Allow,
            &["sre-open-sessions"],
            "",
        ),
        session(
            Action::SessionClosed,
            Outcome::Allow,
            &["owner-closes-session"],
            "found it",
        ),
    ]
}

/// The example, as the document shows it: export lines, then the computed values.
fn example() -> (String, String) {
    let mut prev: Hash = [0; 32];
    let mut lines = Vec::new();
    let mut leaves = Vec::new();
    for (seq, event) in events().into_iter().enumerate() {
        let event = event.seal(seq as u64, 1_767_225_600_000 + seq as u64 * 1000, &prev);
        let bytes = event.canonical_bytes().expect("canonical");
        prev = leaf_hash(&bytes);
        leaves.push(prev);
        lines.push(bytes);
    }
    let signer = NoteSigner::from_seed("loupe.dev/audit", [7; 32]).expect("signer");
    let root = root_of(&leaves);
    let note = Checkpoint {
        origin: "loupe.dev/audit".into(),
        size: 3,
        root,
    }
    .sign(&signer)
    .expect("note");
    let mut export = ExportWriter::new(Vec::new());
    for line in &lines {
        export.event(line).expect("line");
    }
    let export = String::from_utf8(export.finish(&note).expect("export")).expect("utf-8");

    let inclusion = inclusion_proof(leaves.as_slice(), 0, 3).expect("inclusion");
    verify_inclusion(&leaves[0], 0, 3, &inclusion, &root).expect("verifies");
    let root2 = root_of(&leaves[..2]);
    let consistency = consistency_proof(leaves.as_slice(), 2, 3).expect("consistency");
    verify_consistency(2, 3, &root2, &root, &consistency).expect("verifies");
    let hexes = |hashes: &[Hash]| hashes.iter().map(to_hex).collect::<Vec<_>>().join(", ");
    let mut values = String::new();
    for (i, leaf) in leaves.iter().enumerate() {
        values.push_str(&format!("leaf_hash({i}) = {}\n", to_hex(leaf)));
    }
    values.push_str(&format!("root(2) = {}\n", to_hex(&root2)));
    values.push_str(&format!("root(3) = {}\n", to_hex(&root)));
    values.push_str(&format!("inclusion(0, 3) = [{}]\n", hexes(&inclusion)));
    values.push_str(&format!("consistency(2, 3) = [{}]\n", hexes(&consistency)));
    values.push_str(&format!(
        "verifier key = {}\n",
        signer.verifier().key_text()
    ));
    (export, values)
}

#[test]
fn the_documents_worked_example_is_what_the_code_computes() {
    let (export, values) = example();
    let mut missing = Vec::new();
    for line in export.lines().chain(values.lines()) {
        if !DOC.lines().any(|doc_line| doc_line == line) {
            missing.push(line.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/audit-format.md lacks these lines of the worked example:\n{}\n\nThe whole \
         example is:\n{export}\n{values}",
        missing.join("\n")
    );
}
