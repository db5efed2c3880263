//! `loupe audit …`: what reviewers do with the audit log — query and follow it, export it,
//! prove single events, and verify the whole log online or an export offline.
//!
//! Verification always uses a verifier key the reviewer pinned (`--verifier-key FILE` or the
//! profile's `audit_verifier`), never the key the control plane announces, and remembers the
//! last checkpoint verified (see [`crate::witness`]) so each run also proves the log only grew.
//! An offline verification checks against that kept checkpoint as well but does not replace
//! it: only an online verification, which saw the log's own consistency proof, moves it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use loupe_audit::checkpoint::NoteVerifier;
use loupe_audit::event::{Action, AuditEvent, Outcome};
use loupe_audit::export::ExportWriter;
use loupe_audit::merkle::{Hash, leaf_hash, to_hex};
use loupe_audit::proof::verify_inclusion;
use loupe_audit::verify::{Verified, verify_export};
use loupe_control_plane::audit::ocsf;
use loupe_proto::v1::{
    AuditRecord, GetCheckpointRequest, ProveConsistencyRequest, ProveInclusionRequest,
    QueryAuditRequest,
};
use serde_json::{Value, json};
use tonic::Code;

use super::Context;
use crate::cli::{AuditCommand, ExportArgs, ExportFormat, QueryArgs, VerifierKeyArg, VerifyArgs};
use crate::client::{self, Connection, check_exists};
use crate::error::CliError;
use crate::exit;
use crate::render::printable;
use crate::when::{format_ms, now_ms, parse_instant};
use crate::witness::{self, Step};

/// Runs `loupe audit …`.
pub fn run(context: &Context, command: AuditCommand) -> Result<u8, CliError> {
    match command {
        AuditCommand::Verify(args) if args.export.is_some() => verify_offline(context, &args),
        command => client::runtime()?.block_on(run_online(context, command)),
    }
}

async fn run_online(context: &Context, command: AuditCommand) -> Result<u8, CliError> {
    match command {
        AuditCommand::Query(args) => query(context, &args, false).await,
        AuditCommand::Tail(args) => query(context, &args, true).await,
        AuditCommand::Verify(args) => verify_online(context, &args.key).await,
        AuditCommand::Prove { seq, key } => prove(context, seq, &key).await,
        AuditCommand::Export(args) => export(context, &args).await,
    }
}

/// The `QueryAuditRequest` for the filter flags; names are checked here so a typo is a usage
/// error rather than an empty result.
pub fn query_request(
    args: &QueryArgs,
    follow: bool,
    now_ms: u64,
) -> Result<QueryAuditRequest, CliError> {
    let instant = |value: &Option<String>| {
        value
            .as_deref()
            .map(|v| parse_instant(v, now_ms).map_err(CliError::Usage))
            .transpose()
    };
    if let Some(action) = &args.action
        && !Action::ALL.iter().any(|a| a.as_str() == action)
    {
        let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        return Err(CliError::Usage(format!(
            "unknown --action `{action}` (one of: {})",
            known.join(", ")
        )));
    }
    if let Some(outcome) = &args.outcome
        && ![Outcome::Allow, Outcome::Deny, Outcome::Error]
            .iter()
            .any(|o| o.as_str() == outcome)
    {
        return Err(CliError::Usage(format!(
            "unknown --outcome `{outcome}` (one of: allow, deny, error)"
        )));
    }
    Ok(QueryAuditRequest {
        since_ms: instant(&args.since)?,
        until_ms: instant(&args.until)?,
        actor: args.actor.clone().unwrap_or_default(),
        session: args.session.clone().unwrap_or_default(),
        service: args.service.clone().unwrap_or_default(),
        point: args.point.clone().unwrap_or_default(),
        action: args.action.clone().unwrap_or_default(),
        outcome: args.outcome.clone().unwrap_or_default(),
        after_seq: 0,
        limit: args.limit.unwrap_or(0),
        follow,
    })
}

fn has_filter(args: &QueryArgs) -> bool {
    let QueryArgs {
        since,
        until,
        actor,
        session,
        service,
        point,
        action,
        outcome,
        limit,
    } = args;
    since.is_some()
        || until.is_some()
        || actor.is_some()
        || session.is_some()
        || service.is_some()
        || point.is_some()
        || action.is_some()
        || outcome.is_some()
        || limit.is_some()
}

/// A table row for an event.
fn event_row(event: &AuditEvent) -> Vec<String> {
    // A policy load names every policy; a table row shows the first few (JSON has them all).
    const SHOWN: usize = 2;
    let mut decision = event.decision.outcome.as_str().to_owned();
    let policies = &event.decision.policies;
    if !policies.is_empty() {
        let mut shown = policies[..policies.len().min(SHOWN)].join(", ");
        if policies.len() > SHOWN {
            shown.push_str(&format!(", +{} more", policies.len() - SHOWN));
        }
        decision.push_str(&format!(" [{shown}]"));
    }
    vec![
        event.seq.to_string(),
        format_ms(event.time_ms),
        event.actor.id.clone(),
        event.action.as_str().to_owned(),
        decision,
        format!("{}:{}", event.resource.kind.as_str(), event.resource.id),
        event.session.clone().unwrap_or_else(|| "-".into()),
        event.decision.reason.clone(),
    ]
}

/// One event on one line, for following the log (a table cannot wait for a stream's end).
fn event_line(event: &AuditEvent) -> String {
    let row = event_row(event);
    let mut line = format!(
        "{:>6}  {}  {}  {}  {}  {}",
        row[0], row[1], row[2], row[3], row[4], row[5]
    );
    if let Some(session) = &event.session {
        line.push_str(&format!("  session={session}"));
    }
    if !event.decision.reason.is_empty() {
        line.push_str(&format!("  reason={:?}", event.decision.reason));
    }
    printable(&line).into_owned()
}

const EVENT_HEADERS: [&str; 8] = [
    "SEQ", "TIME", "ACTOR", "ACTION", "DECISION", "RESOURCE", "SESSION", "REASON",
];

fn parse_record(record: &AuditRecord) -> Result<AuditEvent, CliError> {
    AuditEvent::from_canonical(&record.canonical_json).map_err(|e| {
        CliError::Protocol(format!(
            "audit record {} is not a canonical event: {e}",
            record.seq
        ))
    })
}

fn record_json(record: &AuditRecord) -> Result<Value, CliError> {
    serde_json::from_slice(&record.canonical_json)
        .map_err(|e| CliError::Protocol(format!("audit record {} is not JSON: {e}", record.seq)))
}

async fn query(context: &Context, args: &QueryArgs, follow: bool) -> Result<u8, CliError> {
    let mut request = query_request(args, follow, now_ms())?;
    let mut connection = context.connect().await?;
    if follow && request.since_ms.is_none() {
        // Like `tail -f`: what is appended from now on, not the whole history first.
        let size = connection
            .client
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .map_err(|s| connection.error(&s))?
            .into_inner()
            .tree_size;
        request.after_seq = size.saturating_sub(1);
    }
    let mut stream = connection
        .client
        .query_audit(request)
        .await
        .map_err(|s| connection.error(&s))?
        .into_inner();
    let output = context.output;
    let mut rows = Vec::new();
    let mut values = Vec::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut count = 0u64;
    loop {
        let message = tokio::select! {
            _ = &mut ctrl_c => {
                eprintln!("stopped after {count} event(s)");
                return Ok(exit::INTERRUPTED);
            }
            message = stream.message() => message,
        };
        let Some(record) = message.map_err(|s| connection.error(&s))? else {
            if follow {
                // A follow has no end of its own: the control plane went away.
                return Err(CliError::Unreachable {
                    address: connection.address.clone(),
                    reason: format!("it closed the stream after {count} event(s) (shutting down?)"),
                });
            }
            break;
        };
        count += 1;
        if follow {
            // Each event as it arrives; a table cannot wait for the end of a stream that has none.
            let event = parse_record(&record)?;
            output.stream_item(
                || event_line(&event),
                || record_json(&record).unwrap_or(Value::Null),
            )?;
        } else if output.is_human() {
            rows.push(event_row(&parse_record(&record)?));
        } else {
            values.push(record_json(&record)?);
        }
    }
    if !follow {
        output.list(&EVENT_HEADERS, rows, values)?;
    }
    Ok(exit::OK)
}

/// The pinned verifier key: `--verifier-key`, else the profile's `audit_verifier`.
pub fn load_verifier(context: &Context, arg: &VerifierKeyArg) -> Result<NoteVerifier, CliError> {
    let path = arg
        .verifier_key
        .clone()
        .or_else(|| context.settings.audit_verifier.clone())
        .ok_or_else(|| {
            CliError::Usage(
                "no audit verifier key pinned (set --verifier-key FILE or `audit_verifier` in \
                 your profile; `loupe pki init DIR` writes DIR/audit-verifier.pub)"
                    .into(),
            )
        })?;
    read_verifier(&path)
}

fn read_verifier(path: &Path) -> Result<NoteVerifier, CliError> {
    check_exists(path, "audit verifier key", "--verifier-key")?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::io(format!("reading the verifier key {}", path.display()), e))?;
    NoteVerifier::parse(text.trim()).map_err(|e| {
        CliError::Identity(format!(
            "{} is not an audit verifier key: {e} (expected name+keyid+base64, as in \
             audit-verifier.pub)",
            path.display()
        ))
    })
}

fn witness_file(context: &Context) -> Result<PathBuf, CliError> {
    let dir = context
        .state_dir
        .as_deref()
        .ok_or_else(|| CliError::Usage("no state folder: set $LOUPE_STATE_DIR or $HOME".into()))?;
    Ok(witness::witness_path(
        dir,
        &context.settings.control_plane_identity,
    ))
}

/// A root hash as checkpoints print it (standard base64).
fn b64(hash: &Hash) -> String {
    BASE64.encode(hash)
}

async fn verify_online(context: &Context, key_arg: &VerifierKeyArg) -> Result<u8, CliError> {
    let key = load_verifier(context, key_arg)?;
    let path = witness_file(context)?;
    let kept_note = witness::load(&path)?;
    let mut connection = context.connect().await?;
    let response = connection
        .client
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .map_err(|s| connection.error(&s))?
        .into_inner();
    if response.verifier_key.trim() != key.to_string() && !response.verifier_key.is_empty() {
        eprintln!(
            "note: the control plane announces verifier key {}, you pinned {key}",
            response.verifier_key.trim()
        );
    }
    let step = witness::compare(&key, kept_note.as_deref(), &response.note)?;
    let (checkpoint, previous) = match step {
        Step::FirstUse(checkpoint) => (checkpoint, None),
        Step::Unchanged(checkpoint) => {
            let size = checkpoint.size;
            (checkpoint, Some(size))
        }
        Step::NeedsProof { kept, new } => {
            let proof = connection
                .client
                .prove_consistency(ProveConsistencyRequest {
                    first_size: kept.size,
                    second_size: new.size,
                })
                .await
                .map_err(|s| connection.error(&s))?
                .into_inner();
            let kept_note = kept_note.as_deref().unwrap_or_default();
            let hashes = to_hashes(&proof.hashes)?;
            let checked = witness::check_proof(&key, kept_note, &response.note, &hashes)?;
            (checked, Some(kept.size))
        }
    };
    witness::store(&path, &response.note)?;
    let root = b64(&checkpoint.root);
    let text = match previous {
        None => format!(
            "audit log verified: {} events, root {root}, signed by {}\nfirst verification of \
             this log: its checkpoint is now kept in {} and later runs prove the log only grew",
            checkpoint.size,
            key.name(),
            path.display()
        ),
        Some(size) => format!(
            "audit log verified: {} events, root {root}, signed by {}\nconsistent with the \
             checkpoint you kept ({size} events); kept checkpoint updated in {}",
            checkpoint.size,
            key.name(),
            path.display()
        ),
    };
    context.output.object(
        &text,
        &json!({
            "verified": true,
            "origin": checkpoint.origin,
            "tree_size": checkpoint.size,
            "root": root,
            "previous_size": previous,
            "witness": path,
        }),
    )?;
    Ok(exit::OK)
}

fn to_hashes(raw: &[Vec<u8>]) -> Result<Vec<Hash>, CliError> {
    raw.iter()
        .map(|h| {
            Hash::try_from(h.as_slice()).map_err(|_| {
                CliError::Verification(format!("a proof hash is {} bytes, not 32", h.len()))
            })
        })
        .collect()
}

/// Verifies an export file against the pinned key and, if given, a kept checkpoint.
pub fn verify_export_file(
    export: &Path,
    key: &NoteVerifier,
    kept_note: Option<&str>,
) -> Result<Verified, CliError> {
    let file = File::open(export)
        .map_err(|e| CliError::io(format!("opening the export {}", export.display()), e))?;
    verify_export(BufReader::new(file), key, kept_note).map_err(witness::verification)
}

fn verify_offline(context: &Context, args: &VerifyArgs) -> Result<u8, CliError> {
    let key = load_verifier(context, &args.key)?;
    let export = args.export.as_deref().unwrap_or(Path::new("-"));
    let kept = args
        .checkpoint
        .as_deref()
        .map(|path| {
            std::fs::read_to_string(path)
                .map_err(|e| CliError::io(format!("reading the checkpoint {}", path.display()), e))
        })
        .transpose()?;
    let verified = verify_export_file(export, &key, kept.as_deref())?;
    let mut also = Vec::new();
    if let Some(path) = args.checkpoint.as_deref() {
        also.push(format!("extends the checkpoint in {}", path.display()));
    }
    let witness_path = witness_file(context).ok();
    if let Some(path) = &witness_path
        && let Some(note) = witness::load(path)?
        && Some(note.as_str()) != kept.as_deref()
    {
        verify_export_file(export, &key, Some(&note))?;
        also.push(format!(
            "extends the checkpoint you kept in {}",
            path.display()
        ));
    }
    let text = if also.is_empty() {
        format!(
            "export verified: {} events of {}, root {}, under its own checkpoint signed by the pinned key",
            verified.events,
            verified.origin,
            b64(&verified.root)
        )
    } else {
        format!(
            "export verified: {} events of {}, root {}; {}",
            verified.events,
            verified.origin,
            b64(&verified.root),
            also.join("; ")
        )
    };
    context.output.object(
        &text,
        &json!({
            "verified": true,
            "origin": verified.origin,
            "events": verified.events,
            "root": b64(&verified.root),
            "checked_against": also,
        }),
    )?;
    Ok(exit::OK)
}

async fn prove(context: &Context, seq: u64, key_arg: &VerifierKeyArg) -> Result<u8, CliError> {
    let key = load_verifier(context, key_arg)?;
    let mut connection = context.connect().await?;
    let checkpoint_note = connection
        .client
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .map_err(|s| connection.error(&s))?
        .into_inner()
        .note;
    let checkpoint = match witness::compare(&key, None, &checkpoint_note)? {
        Step::FirstUse(c) | Step::Unchanged(c) | Step::NeedsProof { new: c, .. } => c,
    };
    if seq >= checkpoint.size {
        return Err(CliError::Status {
            code: Code::NotFound,
            message: format!(
                "event {seq} is not in the log's latest checkpoint ({} events); try again once \
                 a checkpoint covers it",
                checkpoint.size
            ),
        });
    }
    let proof = connection
        .client
        .prove_inclusion(ProveInclusionRequest {
            seq,
            tree_size: checkpoint.size,
        })
        .await
        .map_err(|s| connection.error(&s))?
        .into_inner();
    let included = check_inclusion(
        &key,
        &checkpoint_note,
        seq,
        &proof.canonical_json,
        proof.tree_size,
        &proof.hashes,
    )?;
    let root = b64(&checkpoint.root);
    let text = format!(
        "event {seq} is in the log: inclusion proof verified against the checkpoint of {} events \
         (root {root}) signed by {}\n{}",
        checkpoint.size,
        key.name(),
        crate::output::table(
            &EVENT_HEADERS,
            vec![event_row(&included)],
            context.output.style()
        )
    );
    let event: Value = serde_json::from_slice(&proof.canonical_json).unwrap_or(Value::Null);
    // Everything an outside verifier needs to redo the check (docs/audit-format.md): hashes
    // in lowercase hex (as `prev` in events), the root also as the checkpoint writes it.
    let path: Vec<String> = to_hashes(&proof.hashes)?.iter().map(to_hex).collect();
    context.output.object(
        &text,
        &json!({
            "included": true,
            "seq": seq,
            "leaf_index": seq,
            "tree_size": checkpoint.size,
            "leaf_hash": to_hex(&leaf_hash(&proof.canonical_json)),
            "root": root,
            "root_hex": to_hex(&checkpoint.root),
            "hashes": path,
            "checkpoint": checkpoint_note,
            "event": event,
        }),
    )?;
    Ok(exit::OK)
}

/// Checks that `canonical` is event `seq` of the tree the signed `checkpoint_note` states,
/// using the inclusion `path`.
pub fn check_inclusion(
    key: &NoteVerifier,
    checkpoint_note: &str,
    seq: u64,
    canonical: &[u8],
    tree_size: u64,
    path: &[Vec<u8>],
) -> Result<AuditEvent, CliError> {
    let checkpoint = key
        .open_checkpoint(checkpoint_note)
        .map_err(|e| CliError::Verification(format!("the checkpoint does not verify: {e}")))?;
    if tree_size != checkpoint.size {
        return Err(CliError::Verification(format!(
            "the proof is for a tree of {tree_size} events, the checkpoint states {}",
            checkpoint.size
        )));
    }
    let event = AuditEvent::from_canonical(canonical)
        .map_err(|e| CliError::Verification(format!("the proved event is not canonical: {e}")))?;
    if event.seq != seq {
        return Err(CliError::Verification(format!(
            "asked for event {seq}, the proof is for event {}",
            event.seq
        )));
    }
    let hashes = to_hashes(path)?;
    verify_inclusion(
        &leaf_hash(canonical),
        seq,
        checkpoint.size,
        &hashes,
        &checkpoint.root,
    )
    .map_err(|e| CliError::Verification(format!("event {seq} is not in the signed log: {e}")))?;
    Ok(event)
}

/// Where an export goes: a file (`-o`) or stdout.
fn export_sink(out: Option<&Path>) -> Result<Box<dyn Write>, CliError> {
    Ok(match out {
        Some(path) => {
            Box::new(BufWriter::new(File::create(path).map_err(|e| {
                CliError::io(format!("creating {}", path.display()), e)
            })?))
        }
        None => Box::new(BufWriter::new(std::io::stdout())),
    })
}

async fn export(context: &Context, args: &ExportArgs) -> Result<u8, CliError> {
    if args.format == ExportFormat::Jsonl && has_filter(&args.filter) {
        return Err(CliError::Usage(
            "filters apply to --format ocsf only: a JSON Lines export is the whole log, so it \
             verifies offline"
                .into(),
        ));
    }
    let mut connection = context.connect().await?;
    let checkpoint = connection
        .client
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .map_err(|s| connection.error(&s))?
        .into_inner();
    let written = match args.format {
        ExportFormat::Jsonl => {
            export_jsonl(
                &mut connection,
                &checkpoint.note,
                checkpoint.tree_size,
                args.out.as_deref(),
            )
            .await?
        }
        ExportFormat::Ocsf => {
            let origin = NoteVerifier::parse(checkpoint.verifier_key.trim())
                .map(|k| k.name().to_owned())
                .map_err(|e| {
                    CliError::Protocol(format!("the log's verifier key is malformed: {e}"))
                })?;
            export_ocsf(&mut connection, &args.filter, &origin, args.out.as_deref()).await?
        }
    };
    let place = args
        .out
        .as_deref()
        .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
    eprintln!("exported {written} event(s) to {place}");
    Ok(exit::OK)
}

async fn export_jsonl(
    connection: &mut Connection,
    note: &str,
    size: u64,
    out: Option<&Path>,
) -> Result<u64, CliError> {
    let mut writer = ExportWriter::new(export_sink(out)?);
    let write_error = |e: std::io::Error| CliError::io("writing the export", e);
    if size > 0 {
        let mut stream = connection
            .client
            .query_audit(QueryAuditRequest {
                limit: size,
                ..QueryAuditRequest::default()
            })
            .await
            .map_err(|s| connection.error(&s))?
            .into_inner();
        while writer.events() < size {
            let Some(record) = stream.message().await.map_err(|s| connection.error(&s))? else {
                break;
            };
            if record.seq != writer.events() {
                return Err(CliError::Protocol(format!(
                    "expected event {} next, got {}",
                    writer.events(),
                    record.seq
                )));
            }
            writer.event(&record.canonical_json).map_err(write_error)?;
        }
    }
    let events = writer.events();
    if events != size {
        return Err(CliError::Protocol(format!(
            "the checkpoint covers {size} events but only {events} arrived"
        )));
    }
    writer.finish(note).map_err(write_error)?;
    Ok(events)
}

async fn export_ocsf(
    connection: &mut Connection,
    filter: &QueryArgs,
    origin: &str,
    out: Option<&Path>,
) -> Result<u64, CliError> {
    let request = query_request(filter, false, now_ms())?;
    let mut sink = export_sink(out)?;
    let mut stream = connection
        .client
        .query_audit(request)
        .await
        .map_err(|s| connection.error(&s))?
        .into_inner();
    let mut count = 0;
    let write_error = |e: std::io::Error| CliError::io("writing the export", e);
    while let Some(record) = stream.message().await.map_err(|s| connection.error(&s))? {
        let event = parse_record(&record)?;
        let object = ocsf::to_ocsf(&event, origin);
        serde_json::to_writer(&mut sink, &object).map_err(|e| write_error(e.into()))?;
        sink.write_all(b"\n").map_err(write_error)?;
        count += 1;
    }
    sink.flush().map_err(write_error)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_before_asking() {
        let args = QueryArgs {
            action: Some("session.opened".into()),
            outcome: Some("deny".into()),
            since: Some("1h".into()),
            limit: Some(5),
            ..QueryArgs::default()
        };
        let request = query_request(&args, false, 10_000_000).unwrap();
        assert_eq!(request.since_ms, Some(10_000_000 - 3_600_000));
        assert_eq!(request.action, "session.opened");
        assert_eq!(request.limit, 5);
        let bad = QueryArgs {
            action: Some("session.open".into()),
            ..QueryArgs::default()
        };
        let error = query_request(&bad, false, 0).unwrap_err();
        assert_eq!(error.exit_code(), exit::USAGE);
        assert!(error.to_string().contains("session.opened"), "{error}");
        let bad = QueryArgs {
            outcome: Some("allowed".into()),
            ..QueryArgs::default()
        };
        assert!(query_request(&bad, false, 0).is_err());
    }

    #[test]
    fn roots_print_as_standard_base64() {
        assert_eq!(
            b64(&[0u8; 32]),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        );
        let mut hash = [0u8; 32];
        hash[0] = 0xfb;
        hash[31] = 0xff;
        assert!(b64(&hash).starts_with("+w"));
        assert!(b64(&hash).ends_with("AP8="));
    }

    /// Offline verification against exports written by the real audit log.
    mod offline {
        use loupe_audit::checkpoint::NoteSigner;
        use loupe_audit::event::{Actor, Decision, NewEvent, Resource, ResourceKind};
        use loupe_control_plane::audit::{AuditLog, AuditLogConfig};

        use super::*;

        const ORIGIN: &str = "loupe.test/audit";

        fn append(log: &AuditLog, n: usize, who: &str) {
            for i in 0..n {
                let event = NewEvent::new(
                    Actor {
                        id: format!("spiffe://loupe.dev/user/{who}"),
                        cert_sha256: "ab".repeat(32),
                    },
                    Action::SessionRequested,
                    Resource {
                        kind: ResourceKind::Session,
                        id: format!("s-{i}"),
                    },
                    Decision {
                        outcome: Outcome::Allow,
                        policies: vec!["sre-open".into()],
                        reason: String::new(),
                    },
                    format!("r-{i}"),
                )
                .session(format!("s-{i}"));
                log.append_blocking(event).expect("append");
            }
        }

        /// Exports `log` to `path` and returns the checkpoint note it ends with.
        fn export(log: &AuditLog, path: &Path) -> String {
            log.checkpoint_blocking().expect("checkpoint");
            let file = File::create(path).expect("create");
            log.export_jsonl(BufWriter::new(file)).expect("export").note
        }

        fn open_log(dir: &Path, seed: u8) -> AuditLog {
            let signer = NoteSigner::from_seed(ORIGIN, [seed; 32]).expect("signer");
            AuditLog::open(dir, signer, AuditLogConfig::default()).expect("open log")
        }

        #[test]
        fn an_export_verifies_and_extends_what_was_kept() {
            let dir = tempfile::tempdir().unwrap();
            let log = open_log(&dir.path().join("log"), 7);
            let key = log.verifier().clone();
            append(&log, 5, "alice");
            let first = dir.path().join("first.jsonl");
            let kept = export(&log, &first);
            let verified = verify_export_file(&first, &key, None).expect("verifies");
            assert_eq!(verified.events, 5);
            assert_eq!(verified.origin, ORIGIN);

            append(&log, 4, "bob");
            let second = dir.path().join("second.jsonl");
            let newer = export(&log, &second);
            let verified = verify_export_file(&second, &key, Some(&kept)).expect("extends");
            assert_eq!(verified.events, 9);

            // The older export cannot satisfy the newer kept checkpoint: a rollback.
            let error = verify_export_file(&first, &key, Some(&newer)).unwrap_err();
            assert_eq!(error.exit_code(), exit::VERIFICATION_FAILED);
            assert!(error.to_string().contains("rollback"), "{error}");
        }

        #[test]
        fn tampering_is_named_and_exits_8() {
            let dir = tempfile::tempdir().unwrap();
            let log = open_log(&dir.path().join("log"), 8);
            let key = log.verifier().clone();
            append(&log, 6, "alice");
            let path = dir.path().join("export.jsonl");
            export(&log, &path);
            let text = std::fs::read_to_string(&path).unwrap();

            let edited = text.replacen("\"s-2\"", "\"s-X\"", 1);
            assert_ne!(edited, text);
            std::fs::write(&path, &edited).unwrap();
            let error = verify_export_file(&path, &key, None).unwrap_err();
            assert_eq!(error.exit_code(), exit::VERIFICATION_FAILED);
            assert!(error.to_string().contains("altered"), "{error}");

            let mut lines: Vec<&str> = text.lines().collect();
            lines.remove(3);
            std::fs::write(&path, lines.join("\n") + "\n").unwrap();
            let error = verify_export_file(&path, &key, None).unwrap_err();
            assert!(error.to_string().contains("missing"), "{error}");

            let other = NoteSigner::from_seed(ORIGIN, [9; 32]).unwrap().verifier();
            std::fs::write(&path, &text).unwrap();
            let error = verify_export_file(&path, &other, None).unwrap_err();
            assert_eq!(error.exit_code(), exit::VERIFICATION_FAILED);
        }

        #[test]
        fn a_fork_of_the_log_is_a_split_view() {
            let dir = tempfile::tempdir().unwrap();
            // Two logs under the same key that disagree from the first event on.
            let honest = open_log(&dir.path().join("honest"), 10);
            let forked = open_log(&dir.path().join("forked"), 10);
            append(&honest, 3, "alice");
            append(&forked, 3, "mallory");
            let kept = export(&honest, &dir.path().join("honest.jsonl"));
            append(&forked, 2, "mallory");
            let path = dir.path().join("forked.jsonl");
            export(&forked, &path);
            let error = verify_export_file(&path, honest.verifier(), Some(&kept)).unwrap_err();
            assert!(error.to_string().contains("split view"), "{error}");
        }

        #[test]
        fn inclusion_is_checked_against_the_signed_root() {
            let dir = tempfile::tempdir().unwrap();
            let log = open_log(&dir.path().join("log"), 11);
            append(&log, 7, "alice");
            let note = log.checkpoint_blocking().unwrap().note;
            let proof = log.inclusion_proof(4, 7).unwrap();
            let canonical = log.event(4).unwrap().canonical_bytes().unwrap();
            let path: Vec<Vec<u8>> = proof.path.iter().map(|h| h.to_vec()).collect();
            let event = check_inclusion(log.verifier(), &note, 4, &canonical, 7, &path).unwrap();
            assert_eq!(event.seq, 4);

            let other = log.event(5).unwrap().canonical_bytes().unwrap();
            let error = check_inclusion(log.verifier(), &note, 4, &other, 7, &path).unwrap_err();
            assert_eq!(error.exit_code(), exit::VERIFICATION_FAILED);
            let mut bad = path.clone();
            bad[0][0] ^= 1;
            assert!(check_inclusion(log.verifier(), &note, 4, &canonical, 7, &bad).is_err());
        }
    }
}
