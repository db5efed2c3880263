//! The policy engine against the shipped `policies/` directory and edited copies of it, all as
//! real files in a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};

use loupe_control_plane::policy::{
    ApprovalFacts, AuthzRequest, PointName, PolicyEngine, PolicyError, ServiceName,
    SessionControlFacts, SessionFacts, UserId,
};
use tempfile::TempDir;

const NOW: i64 = 1_764_000_000;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// A copy of the shipped policy directory.
fn copy_of_shipped() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in fs::read_dir(shipped()).expect("policies/") {
        let entry = entry.expect("entry");
        fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    dir
}

fn user(name: &str) -> UserId {
    UserId::parse(&format!("spiffe://loupe.dev/user/{name}")).expect("user id")
}

fn service(name: &str) -> ServiceName {
    ServiceName::parse(name).expect("service name")
}

fn point(name: &str) -> PointName {
    PointName::parse(name).expect("point name")
}

fn session(requester: &str, ttl: u32, reason: &str, approvers: &[&str]) -> SessionFacts {
    SessionFacts::new(
        user(requester),
        ttl,
        reason,
        None,
        approvers.iter().map(|a| user(a)),
        NOW,
    )
    .expect("session facts")
}

fn open(
    engine: &PolicyEngine,
    svc: &str,
    pt: &str,
    facts: SessionFacts,
) -> loupe_control_plane::policy::Decision {
    engine.authorize(&AuthzRequest::open_session(service(svc), point(pt), facts))
}

#[test]
fn shipped_defaults_validate() {
    let engine = PolicyEngine::load(shipped()).expect("shipped policies load");
    let bundle = engine.current();
    assert_eq!(bundle.version().len(), 64);
    for id in [
        "sre-open-sessions",
        "sre-ttl-cap",
        "reason-required",
        "payments-need-security-approval",
        "security-approves-payments",
        "no-self-approval",
        "auditors-read-audit",
    ] {
        assert!(bundle.policy_ids().iter().any(|p| p == id), "{id} missing");
    }
    let names: Vec<&str> = bundle.users().iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave", "erin"]);
}

#[test]
fn sre_opens_a_session_with_a_reason() {
    let engine = PolicyEngine::load(shipped()).expect("load");
    let decision = open(
        &engine,
        "checkout",
        "checkout.apply_discount",
        session("alice", 900, "INC-42 discounts wrong", &[]),
    );
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(decision.policy_ids, ["sre-open-sessions"]);
    assert!(decision.reasons.is_empty(), "{decision:?}");
    assert_eq!(decision.policy_version, engine.current().version());
}

#[test]
fn a_session_without_a_reason_is_denied() {
    let engine = PolicyEngine::load(shipped()).expect("load");
    let decision = open(
        &engine,
        "checkout",
        "checkout.apply_discount",
        session("alice", 900, "   ", &[]),
    );
    assert!(!decision.allowed);
    assert_eq!(decision.policy_ids, ["reason-required"]);
    assert_eq!(
        decision.reasons,
        ["a session needs a non-empty reason (policy reason-required)"]
    );
}

#[test]
fn a_session_beyond_thirty_minutes_is_denied_with_the_cap() {
    let engine = PolicyEngine::load(shipped()).expect("load");
    let at_cap = open(
        &engine,
        "checkout",
        "checkout.apply_discount",
        session("bob", 1800, "INC-7", &[]),
    );
    assert!(at_cap.allowed, "{at_cap:?}");
    let decision = open(
        &engine,
        "checkout",
        "checkout.apply_discount",
        session("bob", 3600, "INC-7", &[]),
    );
    assert!(!decision.allowed);
    assert_eq!(decision.policy_ids, ["sre-ttl-cap"]);
    assert_eq!(
        decision.reasons,
        ["ttl 3600 s exceeds the 1800 s (30 min) allowed to sre (policy sre-ttl-cap)"]
    );
}

#[test]
fn users_outside_sre_cannot_open_sessions() {
    let engine = PolicyEngine::load(shipped()).expect("load");
    for name in ["carol", "dave", "erin"] {
        let decision = open(
            &engine,
            "checkout",
            "checkout.apply_discount",
            session(name, 600, "curious", &[]),
        );
        assert!(!decision.allowed, "{name}: {decision:?}");
        assert!(decision.policy_ids.is_empty());
        assert_eq!(
            decision.reasons,
            [format!(
                "no policy permits {name} to OpenSession on Point::\"checkout.apply_discount\" of Service::\"checkout\""
            )]
        );
    }
    let stranger = SessionFacts::new(
        UserId::parse("spiffe://elsewhere.example/user/alice").expect("id"),
        600,
        "INC-1",
        None,
        [],
        NOW,
    )
    .expect("facts");
    let decision = open(&engine, "checkout", "checkout.apply_discount", stranger);
    assert!(!decision.allowed);
    assert!(
        decision.reasons[0].contains("is not a known user"),
        "{decision:?}"
    );
}

#[test]
fn payments_points_need_an_approval_from_security() {
    let engine = PolicyEngine::load(shipped()).expect("load");
    let pt = "payments.card.tokenize";

    let none = open(
        &engine,
        "payments-api",
        pt,
        session("alice", 600, "INC-9", &[]),
    );
    assert!(!none.allowed);
    assert_eq!(none.policy_ids, ["payments-need-security-approval"]);
    assert_eq!(
        none.reasons,
        [
            "points under payments. need one approval from a member of security (policy payments-need-security-approval)"
        ]
    );

    assert_eq!(none.awaiting_approval_from, ["security"]);

    // Approval lifts only the approval gate: a request also over the ttl cap is plainly denied,
    // and so is one nothing would permit even once approved.
    let too_long = open(
        &engine,
        "payments-api",
        pt,
        session("alice", 3600, "INC-9", &[]),
    );
    assert!(!too_long.allowed);
    assert!(too_long.awaiting_approval_from.is_empty(), "{too_long:?}");
    let erin = open(
        &engine,
        "payments-api",
        pt,
        session("erin", 600, "INC-9", &[]),
    );
    assert!(!erin.allowed);
    assert_eq!(erin.policy_ids, ["payments-need-security-approval"]);
    assert!(erin.awaiting_approval_from.is_empty(), "{erin:?}");

    let by_sre = open(
        &engine,
        "payments-api",
        pt,
        session("alice", 600, "INC-9", &["bob"]),
    );
    assert!(
        !by_sre.allowed,
        "an approval from outside security is not enough"
    );

    let by_carol = open(
        &engine,
        "payments-api",
        pt,
        session("alice", 600, "INC-9", &["carol"]),
    );
    assert!(by_carol.allowed, "{by_carol:?}");
    assert_eq!(by_carol.policy_ids, ["sre-open-sessions"]);
    assert!(by_carol.awaiting_approval_from.is_empty());

    // The same facts carry over to each capture of the session.
    let capture = engine.authorize(&AuthzRequest::capture(
        service("payments-api"),
        point(pt),
        session("alice", 600, "INC-9", &["carol"]),
    ));
    assert!(capture.allowed, "{capture:?}");

    // A point merely named like the namespace is not in it.
    let lookalike = open(
        &engine,
        "checkout",
        "paymentsx.charge",
        session("alice", 600, "INC-9", &[]),
    );
    assert!(lookalike.allowed, "{lookalike:?}");
}

#[test]
fn the_context_builder_drops_the_requesters_own_approval() {
    // If a self-approval slipped past the session layer, the builder drops it: carol (security)
    // cannot approve her own session, so she would still need someone else's approval.
    let facts = SessionFacts::new(
        user("alice"),
        600,
        "  INC-9  ",
        Some(" JIRA-12 "),
        [user("alice"), user("carol"), user("carol")],
        NOW,
    )
    .expect("facts");
    assert!(facts.dropped_self_approval());
    assert_eq!(
        facts.approvals().iter().collect::<Vec<_>>(),
        [&user("carol")]
    );
    assert_eq!(facts.reason(), "INC-9");
    assert_eq!(facts.ticket(), Some("JIRA-12"));

    let only_self =
        SessionFacts::new(user("carol"), 600, "INC-9", None, [user("carol")], NOW).expect("facts");
    assert!(only_self.dropped_self_approval());
    assert!(only_self.approvals().is_empty());

    // A security member who is also sre (an edited copy) cannot wave her own session through.
    let dir = copy_of_shipped();
    let entities = fs::read_to_string(dir.path().join("entities.json")).expect("read");
    let entities = entities.replacen(
        "\"id\": \"security\"",
        "\"id\": \"security\"\n      },\n      {\n        \"type\": \"Group\",\n        \"id\": \"sre\"",
        1,
    );
    fs::write(dir.path().join("entities.json"), entities).expect("write");
    let engine = PolicyEngine::load(dir.path()).expect("load");
    let decision = open(&engine, "payments-api", "payments.charge", only_self);
    assert!(!decision.allowed);
    assert_eq!(decision.policy_ids, ["payments-need-security-approval"]);

    assert!(SessionFacts::new(user("alice"), 0, "INC", None, [], NOW).is_err());
    assert!(SessionFacts::new(user("alice"), 60, "line\nbreak", None, [], NOW).is_err());
    assert!(SessionFacts::new(user("alice"), 60, "INC", Some("a\"b"), [], NOW).is_err());
}

#[test]
fn approvals_self_approval_and_who_could_approve() {
    let engine = PolicyEngine::load(shipped()).expect("load");
    let pending = ApprovalFacts::new(user("alice"), 600, "INC-9", None, NOW).expect("facts");

    let approvers = engine.who_could_approve(
        &service("payments-api"),
        &point("payments.charge"),
        &pending,
    );
    let names: Vec<&str> = approvers.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["carol"]);
    assert_eq!(approvers[0].id, user("carol"));

    let by_bob = engine.authorize(&AuthzRequest::approve_session(
        user("bob"),
        service("payments-api"),
        point("payments.charge"),
        pending.clone(),
    ));
    assert!(!by_bob.allowed);

    let own = ApprovalFacts::new(user("carol"), 600, "INC-9", None, NOW).expect("facts");
    let self_approval = engine.authorize(&AuthzRequest::approve_session(
        user("carol"),
        service("payments-api"),
        point("payments.charge"),
        own.clone(),
    ));
    assert!(!self_approval.allowed);
    assert_eq!(self_approval.policy_ids, ["no-self-approval"]);
    assert_eq!(
        self_approval.reasons,
        ["carol requested this session and cannot approve it (policy no-self-approval)"]
    );
    assert!(
        engine
            .who_could_approve(&service("payments-api"), &point("payments.charge"), &own)
            .is_empty()
    );
}

#[test]
fn auditors_read_the_audit_log_and_sre_cannot() {
    let engine = PolicyEngine::load(shipped()).expect("load");
    let dave = engine.authorize(&AuthzRequest::read_audit(user("dave"), NOW));
    assert!(dave.allowed, "{dave:?}");
    assert_eq!(dave.policy_ids, ["auditors-read-audit"]);
    let alice = engine.authorize(&AuthzRequest::read_audit(user("alice"), NOW));
    assert!(!alice.allowed);
    assert_eq!(
        alice.reasons,
        ["no policy permits alice to ReadAudit on AuditLog::\"main\""]
    );
}

#[test]
fn closing_revoking_and_listing() {
    let engine = PolicyEngine::load(shipped()).expect("load");
    let owned_by_alice = SessionControlFacts {
        session_owner: user("alice"),
        time: NOW,
    };
    let close = |who: &str| {
        engine
            .authorize(&AuthzRequest::close_session(
                user(who),
                service("checkout"),
                owned_by_alice.clone(),
            ))
            .allowed
    };
    assert!(close("alice"));
    assert!(!close("bob"));
    let revoke = |who: &str| {
        engine
            .authorize(&AuthzRequest::revoke_session(
                user(who),
                service("checkout"),
                owned_by_alice.clone(),
            ))
            .allowed
    };
    assert!(revoke("carol"));
    assert!(!revoke("bob"));
    assert!(
        engine
            .authorize(&AuthzRequest::list_points(
                user("bob"),
                service("checkout"),
                NOW
            ))
            .allowed
    );
    assert!(
        !engine
            .authorize(&AuthzRequest::list_points(
                user("erin"),
                service("checkout"),
                NOW
            ))
            .allowed
    );
}

#[test]
fn a_request_that_does_not_fit_its_action_is_denied() {
    let engine = PolicyEngine::load(shipped()).expect("load");
    // Session facts built for bob, presented as alice's request.
    let mut request = AuthzRequest::open_session(
        service("checkout"),
        point("checkout.apply_discount"),
        session("bob", 600, "INC-1", &[]),
    );
    request.principal = user("alice");
    let decision = engine.authorize(&request);
    assert!(!decision.allowed);
    assert!(
        decision.reasons[0].contains("session facts are"),
        "{decision:?}"
    );

    let mut request = AuthzRequest::read_audit(user("dave"), NOW);
    request.resource = loupe_control_plane::policy::Resource::Service(service("checkout"));
    assert!(!engine.authorize(&request).allowed);
}

#[test]
fn hostile_names_are_refused_before_cedar() {
    for hostile in [
        "alice\"",
        "User::\"carol\"",
        "spiffe://loupe.dev/user/alice\n",
        "alice bob",
        "a::b",
        "",
        "al\\ice",
    ] {
        assert!(UserId::parse(hostile).is_err(), "user {hostile:?}");
    }
    for hostile in [
        "payments\"",
        "payments::charge",
        "payments.charge\n",
        "Payments.charge",
        "payments..charge",
        ".payments",
        "payments.",
        "payments-charge",
        "",
    ] {
        assert!(PointName::parse(hostile).is_err(), "point {hostile:?}");
    }
    for hostile in [
        "check\"out",
        "a::b",
        "checkout\n",
        "Checkout",
        "",
        "check out",
    ] {
        assert!(ServiceName::parse(hostile).is_err(), "service {hostile:?}");
    }
    let error = PointName::parse("payments\"\n").expect_err("refused");
    assert_eq!(
        error.to_string(),
        "invalid point name \"payments\\\"\\n\": it contains a character that is not allowed; \
         expected lowercase dotted segments of [a-z0-9_], at most 128 bytes, e.g. `checkout.apply_discount`"
    );
    assert!(ServiceName::parse("payments-api").is_ok());
    assert!(PointName::parse("payments.card.tokenize").is_ok());
    assert!(UserId::parse("spiffe://loupe.dev/user/alice").is_ok());
}

#[test]
fn hostile_entities_in_the_entities_file_refuse_the_load() {
    let dir = copy_of_shipped();
    let path = dir.path().join("entities.json");
    let entities = fs::read_to_string(&path).expect("read");
    fs::write(&path, entities.replace("user/erin", "user/erin\\\"::x")).expect("write");
    let error = PolicyEngine::load(dir.path()).expect_err("refused");
    assert!(matches!(error, PolicyError::EntityName { .. }), "{error}");

    // Points come from requests, never from the file.
    let dir = copy_of_shipped();
    let path = dir.path().join("entities.json");
    fs::write(
        &path,
        r#"[{"uid":{"type":"Point","id":"payments.charge"},"attrs":{},"parents":[]}]"#,
    )
    .expect("write");
    let error = PolicyEngine::load(dir.path()).expect_err("refused");
    assert!(
        matches!(error, PolicyError::EntityNotAllowed { .. }),
        "{error}"
    );
}

#[test]
fn an_invalid_policy_file_refuses_the_load_naming_file_and_policy() {
    let dir = copy_of_shipped();
    fs::write(
        dir.path().join("extra.cedar"),
        "@id(\"typo-policy\")\npermit (principal, action == Action::\"OpenSession\", resource)\nwhen { context.ttl_secnds < 60 };\n",
    )
    .expect("write");
    let error = PolicyEngine::load(dir.path()).expect_err("refused");
    let PolicyError::Invalid { problems } = &error else {
        panic!("expected a validation error, got {error}");
    };
    assert_eq!(problems.len(), 1, "{error}");
    assert_eq!(problems[0].policy_id, "typo-policy");
    assert!(problems[0].file.ends_with("extra.cedar"));
    let text = error.to_string();
    assert!(
        text.contains("typo-policy") && text.contains("extra.cedar"),
        "{text}"
    );
    assert!(text.contains("ttl_secnds"), "{text}");

    // Unparsable, unnamed, duplicated and unexplained policies are refused too.
    let cases = [
        ("permit (principal, action, resource", "does not parse"),
        (
            "permit (principal, action == Action::\"ReadAudit\", resource);",
            "has no @id",
        ),
        (
            "@id(\"sre-open-sessions\") permit (principal, action == Action::\"ReadAudit\", resource);",
            "is used in",
        ),
        (
            "@id(\"gate\") @reason(\"x\") @approval_from(\"nobody\") forbid (principal, action, resource);",
            "names no group",
        ),
        (
            "@id(\"no-erin\") forbid (principal == User::\"spiffe://loupe.dev/user/erin\", action, resource);",
            "no @reason",
        ),
    ];
    for (policy, expected) in cases {
        let dir = copy_of_shipped();
        fs::write(dir.path().join("extra.cedar"), policy).expect("write");
        let error = PolicyEngine::load(dir.path()).expect_err("refused");
        let text = error.to_string();
        assert!(
            text.contains(expected) && text.contains("extra.cedar"),
            "{text}"
        );
    }
}

#[test]
fn a_reload_with_an_invalid_set_keeps_the_old_one() {
    let dir = copy_of_shipped();
    let engine = PolicyEngine::load(dir.path()).expect("load");
    let version = engine.current().version().to_owned();

    fs::write(
        dir.path().join("default.cedar"),
        "@id(\"everyone\") permit (principal, action, resource) when { context.nope };",
    )
    .expect("write");
    let error = engine.reload().expect_err("refused");
    assert!(error.to_string().contains("everyone"), "{error}");

    assert_eq!(engine.current().version(), version);
    let decision = engine.authorize(&AuthzRequest::read_audit(user("erin"), NOW));
    assert!(!decision.allowed, "the old set is still in force");
    let decision = open(
        &engine,
        "checkout",
        "checkout.apply_discount",
        session("alice", 600, "INC-1", &[]),
    );
    assert!(decision.allowed);
}

#[test]
fn a_valid_reload_takes_effect() {
    let dir = copy_of_shipped();
    let engine = PolicyEngine::load(dir.path()).expect("load");
    let before = engine.current();

    let unchanged = engine.reload().expect("reload");
    assert!(!unchanged.changed);
    assert_eq!(unchanged.version, before.version());

    assert!(
        !engine
            .authorize(&AuthzRequest::read_audit(user("carol"), NOW))
            .allowed
    );
    fs::write(
        dir.path().join("security.cedar"),
        "@id(\"security-reads-audit\")\npermit (principal in Group::\"security\", action == Action::\"ReadAudit\", resource);\n",
    )
    .expect("write");
    let outcome = engine.reload().expect("reload");
    assert!(outcome.changed);
    assert_eq!(outcome.previous_version, before.version());
    assert_ne!(outcome.version, before.version());
    assert!(
        outcome
            .policy_ids
            .iter()
            .any(|p| p == "security-reads-audit")
    );

    let decision = engine.authorize(&AuthzRequest::read_audit(user("carol"), NOW));
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(decision.policy_ids, ["security-reads-audit"]);
    assert_eq!(decision.policy_version, outcome.version);
    // A bundle taken before the reload still answers with the old set.
    assert!(
        !before
            .authorize(&AuthzRequest::read_audit(user("carol"), NOW))
            .allowed
    );
    assert_eq!(
        engine.current().policy_file("security-reads-audit"),
        Some(dir.path().join("security.cedar").as_path())
    );
}

#[test]
fn a_missing_file_refuses_the_load() {
    for missing in ["loupe.cedarschema", "entities.json", "default.cedar"] {
        let dir = copy_of_shipped();
        fs::remove_file(dir.path().join(missing)).expect("remove");
        let error = PolicyEngine::load(dir.path()).expect_err("refused");
        assert!(
            matches!(
                error,
                PolicyError::Io { .. } | PolicyError::NoPolicyFiles { .. }
            ),
            "{missing}: {error}"
        );
    }
}

#[test]
fn a_policy_that_fails_to_evaluate_denies() {
    // Everyone may read the audit log, except that a forbid reads `principal.name`, which a user
    // missing from the entities file does not have: Cedar skips the erring forbid, Loupe denies.
    let dir = copy_of_shipped();
    fs::write(
        dir.path().join("extra.cedar"),
        "@id(\"everyone-reads\") permit (principal, action == Action::\"ReadAudit\", resource);\n\
         @id(\"not-mallory\") @reason(\"no\") forbid (principal, action == Action::\"ReadAudit\", resource)\n\
         when { principal.name == \"mallory\" };\n",
    )
    .expect("write");
    let engine = PolicyEngine::load(dir.path()).expect("load");
    assert!(
        engine
            .authorize(&AuthzRequest::read_audit(user("erin"), NOW))
            .allowed
    );
    let stranger = UserId::parse("spiffe://elsewhere.example/user/mallory").expect("id");
    let decision = engine.authorize(&AuthzRequest::read_audit(stranger, NOW));
    assert!(!decision.allowed, "{decision:?}");
    assert!(
        decision.reasons[0].contains("could not be evaluated"),
        "{decision:?}"
    );
    assert!(
        decision.reasons.iter().any(|r| r.contains("not-mallory")),
        "{decision:?}"
    );
}

#[test]
fn readers_see_one_whole_set_or_the_other_during_reloads() {
    let dir = copy_of_shipped();
    let engine = PolicyEngine::load(dir.path()).expect("load");
    let old = engine.current().version().to_owned();
    let extra = dir.path().join("security.cedar");
    let grant = "@id(\"security-reads-audit\")\npermit (principal in Group::\"security\", action == Action::\"ReadAudit\", resource);\n";
    fs::write(&extra, grant).expect("write");
    let new = engine.reload().expect("reload").version;
    fs::remove_file(&extra).expect("remove");
    engine.reload().expect("reload back");

    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..200 {
                    let decision = engine.authorize(&AuthzRequest::read_audit(user("carol"), NOW));
                    // The decision matches the version that made it.
                    if decision.policy_version == old {
                        assert!(!decision.allowed);
                    } else {
                        assert_eq!(decision.policy_version, new);
                        assert!(decision.allowed);
                    }
                }
            });
        }
        for round in 0..20 {
            if round % 2 == 0 {
                fs::write(&extra, grant).expect("write");
            } else {
                fs::write(
                    &extra,
                    "@id(\"broken\") permit (principal, action, resource) when { context.nope };",
                )
                .expect("write");
            }
            let outcome = engine.reload();
            assert_eq!(outcome.is_ok(), round % 2 == 0, "round {round}");
        }
    });
    assert_eq!(engine.current().version(), new);
}

/// The README's policy examples validate against the shipped schema (the docs stay true).
#[test]
fn the_readme_policy_examples_validate() {
    let readme = fs::read_to_string(shipped().join("../README.md")).expect("README");
    let start = readme
        .find("```cedar\n")
        .expect("a cedar block in the README")
        + "```cedar\n".len();
    let end = start + readme[start..].find("```").expect("end of the block");
    let dir = copy_of_shipped();
    fs::write(
        dir.path().join("readme-examples.cedar"),
        &readme[start..end],
    )
    .expect("write");
    let engine = PolicyEngine::load(dir.path()).expect("the README's examples validate");
    let ids = engine.current().policy_ids();
    for id in ["oncall-checkout", "pii-needs-security", "release-freeze"] {
        assert!(ids.iter().any(|i| i == id), "{id} in {ids:?}");
    }
}
