//! The functions a host thread runs for a hit sit in the hit path's own link section,
//! `loupe_hit`, and the agent thread's own work does not (see `capture::hit`): a cold hit
//! then touches a few pages of the agent's code instead of dozens. Checked on this test
//! binary's own symbols, after a real capture has linked in both sides. Closures are not
//! checked: an attribute cannot name their section, and in optimized builds the hit path's
//! closures are inlined into the functions that hold them. The agent thread's warm pass
//! (`capture::warm`) is checked to cover exactly that section.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use loupe_agent::CaptureSpec;
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

#[derive(serde::Serialize)]
struct Item {
    sku: String,
    qty: u64,
}

fn checkout(item: &Item) {
    loupe_agent::snapshot!("layout.checkout", item);
}

/// Arms the test's point, hits it and reads the snapshot, so that this binary holds the hit
/// path and the agent thread's side of a capture, both as the library builds them.
fn capture_one_snapshot() {
    let mut stream = loupe_agent::arm(CaptureSpec::new("s-layout", "layout.checkout"))
        .expect("the test's point arms");
    checkout(&Item {
        sku: "sku-1".to_owned(),
        qty: 1,
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream.try_next().is_none() {
        assert!(
            Instant::now() < deadline,
            "the hit's snapshot never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Functions named by the segments their symbol contains (each as `<length><name>`, the way
/// both of Rust's manglings spell a path segment).
fn segments(path: &[&str]) -> Vec<String> {
    path.iter()
        .map(|segment| format!("{}{segment}", segment.len()))
        .collect()
}

/// What a hit runs, each by the path segments that identify it.
const ON_THE_HIT_PATH: &[&[&str]] = &[
    &["hit", "hit_armed"],
    &["hit", "capture_one"],
    &["hit", "take_snapshot"],
    &["hit", "reserve_snapshot"],
    &["hit", "hand_off"],
    &["serialize", "capture_field_projected"],
    &["serialize", "string_value"],
    &["serialize", "begin_named_field"],
    &["serialize", "begin_field_value"],
    &["serialize", "begin_field"],
    &["serialize_struct"],
    &["serialize_u64"],
    &["serialize_str"],
    &["context", "read_from"],
    &["context", "gather"],
    &["CorrelationIds", "walk"],
    &["Tape", "push_str"],
    &["Tape", "push_field_name"],
    &["evaluate_direct"],
    &["direct", "read"],
    &["StructReader", "member"],
];

/// What only the agent's thread runs: the replay, the scanner and the encoding; and what only
/// a condition's general path runs (following the keys of what it leaves out).
const OFF_THE_HIT_PATH: &[&[&str]] = &[
    &["replay", "replay_value"],
    &["follow", "Follow", "text"],
    &["RedactionRules", "holds_secret"],
    &["patterns", "next_secret_in"],
    &["stream", "encode_value"],
];

struct Layout {
    section: std::ops::Range<u64>,
    /// The agent's function symbols: name and address.
    functions: Vec<(String, u64)>,
}

fn this_binary() -> Layout {
    let bytes = std::fs::read("/proc/self/exe").expect("this test reads its own binary");
    let file = object::File::parse(&*bytes).expect("this test binary is an ELF file");
    let section = file.section_by_name("loupe_hit").expect(
        "the binary has a loupe_hit section: the hit path's functions are placed there \
         (see the agent's capture::hit)",
    );
    let functions = file
        .symbols()
        .filter(|symbol| symbol.kind() == SymbolKind::Text)
        .filter_map(|symbol| Some((symbol.name().ok()?.to_owned(), symbol.address())))
        .filter(|(name, _)| name.contains("loupe_agent") && !name.contains("closure"))
        // The key follower's `serialize_*` share the capture's names but run only for a
        // condition's general path (`OFF_THE_HIT_PATH` checks it by an inherent function).
        .filter(|(name, _)| !name.contains("KeyFollower"))
        .collect();
    Layout {
        section: section.address()..section.address() + section.size(),
        functions,
    }
}

/// The agent's functions whose symbols contain every segment of one of `paths`, each with
/// whether it is in the hit path's section. Without optimization every path names a function
/// of its own. An optimized build inlines some into their callers, which are checked with
/// them, so there up to half the paths may match nothing; the rest must, or the check would
/// pass on nothing.
fn placements<'l>(layout: &'l Layout, paths: &[&[&str]]) -> Vec<(&'l str, bool)> {
    let mut found = Vec::new();
    let mut unmatched = Vec::new();
    for path in paths {
        let segments = segments(path);
        let before = found.len();
        found.extend(
            layout
                .functions
                .iter()
                .filter(|(name, _)| {
                    segments
                        .iter()
                        .all(|segment| name.contains(segment.as_str()))
                })
                .map(|(name, address)| (name.as_str(), layout.section.contains(address))),
        );
        if found.len() == before {
            unmatched.push(path);
        }
    }
    let allowed = if cfg!(debug_assertions) {
        0
    } else {
        paths.len() / 2
    };
    assert!(
        unmatched.len() <= allowed,
        "no function of the agent matches {unmatched:?} in this binary"
    );
    found
}

/// Checks that every function of `paths` is in the section (`inside`) or out of it, after a
/// real capture has linked both sides in; `why` names a misplaced one.
fn assert_placed(paths: &[&[&str]], inside: bool, why: &str) {
    capture_one_snapshot();
    let layout = this_binary();
    for (name, in_section) in placements(&layout, paths) {
        assert_eq!(in_section, inside, "{name} {why}");
    }
}

#[test]
fn the_hit_paths_functions_sit_in_its_own_section() {
    assert_placed(
        ON_THE_HIT_PATH,
        true,
        "runs on the hit path but is not in loupe_hit; give it the hit path's link_section \
         attribute (see the agent's capture::hit)",
    );
}

#[test]
fn the_agent_threads_own_work_stays_out_of_the_hit_path_section() {
    assert_placed(
        OFF_THE_HIT_PATH,
        false,
        "runs only on the agent's thread; in loupe_hit it would spread the hit path over \
         more pages",
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn the_warmed_range_is_the_whole_section() {
    capture_one_snapshot();
    let layout = this_binary();
    let warmed = loupe_agent::capture::warm::hit_path_section()
        .expect("the agent finds its hit path's section through the linker's symbols");
    assert_eq!(
        warmed.len() as u64,
        layout.section.end - layout.section.start,
        "the agent thread's warm pass (capture::warm) covers exactly the loupe_hit section"
    );
}
