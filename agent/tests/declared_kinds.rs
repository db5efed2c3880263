//! Points a sidecar declares are listed for what they are: their kind (watch, probe) and, per
//! field, the type in the target instead of how it is captured.

use loupe_agent::point::FieldKind;
use loupe_agent::{DeclareError, DeclaredPoint, PointRegistry, SiteKind};

fn watch(name: &str) -> DeclaredPoint {
    DeclaredPoint {
        name: name.into(),
        file: "inventory.c".into(),
        line: 12,
        module_path: "g_config".into(),
        fields: vec![("g_config".into(), FieldKind::Serde)],
    }
}

#[test]
fn declared_kinds_and_field_types_are_listed() {
    let mismatch = loupe_agent::declare_point_of_kind(watch("inventory.bad"), SiteKind::Watch, &[])
        .expect_err("one field, no type");
    assert!(
        matches!(mismatch, DeclareError::FieldTypes { .. }),
        "{mismatch}"
    );

    loupe_agent::declare_point_of_kind(
        watch("inventory.config"),
        SiteKind::Watch,
        &["config_t".to_owned()],
    )
    .expect("declared");
    loupe_agent::declare_point(watch("inventory.planted")).expect("declared");

    let registry = PointRegistry::global();
    let config = registry.get("inventory.config").expect("listed");
    assert_eq!(config.kind(), SiteKind::Watch);
    assert_eq!(config.fields(), [("g_config", "config_t")]);
    let planted = registry.get("inventory.planted").expect("listed");
    assert_eq!(planted.kind(), SiteKind::Snapshot);
    assert_eq!(planted.fields(), [("g_config", "serde")]);
    assert!(registry.get("inventory.bad").is_none());
}
