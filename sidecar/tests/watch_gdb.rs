//! Watch reads against gdb, the oracle: the C fixture built six ways (`-O0`/`-O2`, PIE or
//! not, debug sections compressed, link-time optimized), each run as a real process; every
//! scalar of every watch snapshot is printed by `gdb -batch -p` at the same C expression and
//! must agree. The shapes the sidecar will not
//! guess at (a union, a bitfield) must say so, an unreadable pointer must be marked
//! unreadable where gdb cannot read it either, and secrets must come out redacted.
//!
//! One test: the agent's point registry is built once per process, so every variant's points
//! are declared before the first capture is armed.

mod support;

use std::path::Path;
use std::time::Duration;

use loupe_agent::{CaptureSpec, LimitRequest};
use loupe_proto::v1 as pb;
use loupe_sidecar::{PointsFile, Resolved, Sidecar, Target};
use support::*;

const VARIANTS: [(&str, &[&str]); 6] = [
    ("o0_pie", &["-g", "-O0", "-fPIE", "-pie"]),
    ("o2_pie", &["-g", "-O2", "-fPIE", "-pie"]),
    ("o0_nopie", &["-g", "-O0", "-fno-pie", "-no-pie"]),
    ("o2_nopie", &["-g", "-O2", "-fno-pie", "-no-pie"]),
    // Debug sections compressed (SHF_COMPRESSED, zlib), as distributions ship them.
    ("o2_pie_gz", &["-g", "-gz=zlib", "-O2", "-fPIE", "-pie"]),
    // Link-time optimization, as Debian builds python3: each global's definition is a
    // nameless DIE whose `DW_AT_abstract_origin` points into another unit. Exported like
    // python's symbols (`-rdynamic`), or LTO drops the globals the program never reads.
    (
        "o2_pie_lto",
        &["-g", "-O2", "-flto", "-rdynamic", "-fPIE", "-pie"],
    ),
];

/// (point suffix, symbol, path): the gdb expression is `symbol.path`.
const WATCHES: [(&str, &str, &str); 14] = [
    ("config", "g_config", ""),
    ("max", "g_config", "limits.max"),
    ("label", "g_config", "head.next.label"),
    ("first", "g_first", ""),
    ("shade", "g_shade", ""),
    ("negative", "g_negative", ""),
    ("big", "g_big", ""),
    ("pi", "g_pi", ""),
    ("null_text", "g_null_text", ""),
    ("dangling", "g_dangling", ""),
    ("nowhere", "g_nowhere", ""),
    ("login", "g_login", ""),
    ("api_key", "g_api_key", ""),
    ("static_counter", "g_static_counter", ""),
];

fn points_file(variant: &str) -> PointsFile {
    let mut text = String::new();
    for (suffix, symbol, path) in WATCHES {
        text.push_str(&format!(
            "[[watch]]\nname = \"{variant}.{suffix}\"\nsymbol = \"{symbol}\"\n"
        ));
        if !path.is_empty() {
            text.push_str(&format!("path = \"{path}\"\n"));
        }
    }
    PointsFile::parse(Path::new("points.toml"), &text).expect("points file")
}

#[test]
fn every_watch_decode_agrees_with_gdb_print() {
    if !can_run(true) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let source = fixture_source("shapes.c");
    let mut running = Vec::new();
    for (variant, flags) in VARIANTS {
        let binary = build_c(dir.path(), &source, &format!("shapes_{variant}"), flags);
        let fixture = Fixture::spawn(&binary);
        let target = Target::attach(i64::from(fixture.pid)).expect("attach");
        let resolved = Resolved::attach(target, &points_file(variant).watches)
            .unwrap_or_else(|e| panic!("{variant}: {e}"));
        if variant.contains("nopie") {
            assert_eq!(
                resolved.objects[0].bias, 0,
                "{variant}: a non-PIE executable has no bias"
            );
        } else {
            assert_ne!(
                resolved.objects[0].bias, 0,
                "{variant}: a PIE executable is relocated"
            );
        }
        let sidecar = Sidecar::declare(resolved).expect("declare");
        running.push((variant, fixture, sidecar));
    }

    for (variant, fixture, sidecar) in &running {
        let mut streams = Vec::new();
        for (suffix, symbol, path) in WATCHES {
            let point = format!("{variant}.{suffix}");
            let stream = loupe_agent::arm(
                CaptureSpec::new(format!("s-{point}"), &point)
                    .max_snapshots(1)
                    .duration(Duration::from_secs(30))
                    .limits(LimitRequest {
                        max_depth: Some(6),
                        ..LimitRequest::default()
                    }),
            )
            .expect("armed");
            let expr = if path.is_empty() {
                symbol.to_owned()
            } else {
                format!("{symbol}.{path}")
            };
            streams.push((suffix, expr, stream));
        }
        assert_eq!(sidecar.sample_armed(), WATCHES.len());

        let mut all: Vec<(String, Leaf)> = Vec::new();
        let mut by_point: Vec<(&str, pb::Snapshot)> = Vec::new();
        for (suffix, expr, mut stream) in streams {
            let snapshot = stream.blocking_next().expect("one snapshot");
            let field = snapshot.fields.first().expect("one field");
            let kind = field
                .value
                .as_ref()
                .and_then(|v| v.kind.as_ref())
                .expect("value");
            leaves(kind, &expr, &mut all);
            by_point.push((suffix, snapshot));
        }
        check_expectations(variant, &all, &by_point);

        let compared: Vec<(String, Leaf, String)> = all
            .iter()
            .filter_map(|(expr, leaf)| {
                gdb_command(expr, leaf).map(|cmd| (expr.clone(), leaf.clone(), cmd))
            })
            .collect();
        let commands: Vec<String> = compared.iter().map(|(_, _, cmd)| cmd.clone()).collect();
        let answers = gdb_print(fixture.pid, &commands);
        let mut disagreements = Vec::new();
        for ((expr, leaf, _), answer) in compared.iter().zip(&answers) {
            if let Err(problem) = agrees(leaf, answer) {
                disagreements.push(format!("{variant}: {expr}: {problem}"));
            }
        }
        assert!(
            disagreements.is_empty(),
            "{} of {} leaves disagree with gdb:\n{}",
            disagreements.len(),
            compared.len(),
            disagreements.join("\n")
        );
        assert!(
            compared.len() >= 30,
            "{variant}: only {} leaves compared",
            compared.len()
        );
    }
}

/// What gdb cannot say: shapes refused rather than guessed, and secrets withheld.
fn check_expectations(variant: &str, all: &[(String, Leaf)], by_point: &[(&str, pb::Snapshot)]) {
    let leaf = |expr: &str| {
        all.iter()
            .find(|(e, _)| e == expr)
            .map(|(_, l)| l.clone())
            .unwrap_or_else(|| panic!("{variant}: no leaf {expr}"))
    };
    assert!(
        matches!(leaf("g_config.either"), Leaf::NotCaptured(pb::NotCapturedReason::Unsupported, d) if d.contains("union")),
        "{variant}: a union is not guessed at"
    );
    assert!(
        matches!(leaf("g_config.flags"), Leaf::NotCaptured(pb::NotCapturedReason::Unsupported, d) if d.contains("bitfield")),
        "{variant}: a bitfield is not guessed at"
    );
    assert!(
        matches!(
            leaf("g_dangling"),
            Leaf::NotCaptured(pb::NotCapturedReason::Unreadable, _)
        ),
        "{variant}: a pointer to unmapped memory is unreadable, not guessed"
    );
    assert_eq!(
        leaf("g_config.opaque"),
        Leaf::Uint(0x1234),
        "{variant}: void * is its address"
    );
    assert_eq!(
        leaf("g_config.bytes[3]"),
        Leaf::Uint(255),
        "{variant}: uint8_t[] is numbers"
    );
    assert_eq!(leaf("g_nowhere"), Leaf::Null);
    assert_eq!(leaf("g_config.head.next.next"), Leaf::Null);
    assert_eq!(leaf("g_config.limits.max"), Leaf::Int(100));
    assert_eq!(
        leaf("g_config.head.next.label"),
        Leaf::Text("second".into())
    );
    assert_eq!(leaf("g_static_counter"), Leaf::Int(7));
    // Secrets: withheld by name (a password member) or by value (a live API key), exactly as
    // the in-process agent withholds them.
    assert_eq!(leaf("g_login.password"), Leaf::Redacted, "{variant}");
    assert_eq!(leaf("g_login.user"), Leaf::Text("alice".into()));
    assert_eq!(leaf("g_api_key"), Leaf::Redacted, "{variant}");
    for (point, snapshot) in by_point {
        let text = format!("{snapshot:?}");
        assert!(
            !text.contains("hunter2"),
            "{variant}.{point} leaks the password"
        );
        assert!(
            !text.contains("sk_live_51HqLy"),
            "{variant}.{point} leaks the key"
        );
    }
}
