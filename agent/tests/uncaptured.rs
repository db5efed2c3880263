//! `Uncaptured`: a point source's "could not capture this" reaches the snapshot as
//! `not_captured` with the source's reason and words, beside values captured normally.

mod support;

use std::time::Duration;

use loupe_agent::point::FieldKind;
use loupe_agent::{CaptureSpec, DeclaredPoint, FieldValue, Uncaptured, UncapturedReason};
use loupe_proto::v1 as pb;
use support::*;

#[derive(serde::Serialize)]
struct Remote {
    id: u64,
    union_member: Uncaptured,
    behind_pointer: Uncaptured,
}

#[test]
fn uncaptured_values_become_not_captured_with_their_reason() {
    let site = loupe_agent::declare_point(DeclaredPoint {
        name: "remote.value".into(),
        file: "remote.c".into(),
        line: 1,
        module_path: "g_remote".into(),
        fields: vec![("value".into(), FieldKind::Serde)],
    })
    .expect("declared");
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("s-uncaptured", "remote.value")
            .max_snapshots(1)
            .duration(Duration::from_secs(30)),
    )
    .expect("armed");
    let value = Remote {
        id: 7,
        union_member: Uncaptured::new(UncapturedReason::Unsupported, "a union"),
        behind_pointer: Uncaptured::new(UncapturedReason::Unreadable, "address not mapped"),
    };
    site.hit(&[FieldValue::serde(&value)]);
    let snapshots = drain(&mut stream);
    let value = field(&snapshots[0], "value");
    assert!(matches!(member(value, "id"), pb::value::Kind::Uint(7)));
    let union_member = member(value, "union_member");
    assert_eq!(
        not_captured(union_member),
        pb::NotCapturedReason::Unsupported
    );
    let pb::value::Kind::NotCaptured(detail) = union_member else {
        unreachable!()
    };
    assert_eq!(detail.detail, "a union");
    assert_eq!(
        not_captured(member(value, "behind_pointer")),
        pb::NotCapturedReason::Unreadable
    );
}
