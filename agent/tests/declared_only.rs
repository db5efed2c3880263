//! A program that serves only its declared points (the sidecar, run by a binary that also
//! carries `snapshot!` callsites): the linked callsites stay out of its registry, so they are
//! never listed nor armable, and the choice cannot be made once the registry is in use. A file
//! of its own, because the registry is built once per process.

use loupe_agent::point::FieldKind;
use loupe_agent::{DeclareError, DeclaredPoint, PointRegistry, snapshot};

fn planted(order_id: u64) {
    snapshot!("linked.planted", order_id);
}

#[test]
fn linked_callsites_stay_out_of_a_registry_of_declared_points() {
    loupe_agent::serve_declared_points_only().expect("before first use");
    loupe_agent::declare_point(DeclaredPoint {
        name: "inventory.stock".to_owned(),
        file: "inventory.c".to_owned(),
        line: 12,
        module_path: "g_stock".to_owned(),
        fields: vec![("g_stock".to_owned(), FieldKind::Serde)],
    })
    .expect("declared");
    planted(7);

    let registry = PointRegistry::global();
    let names: Vec<&str> = registry.points().map(|p| p.name()).collect();
    assert_eq!(names, ["inventory.stock"]);
    assert!(registry.get("linked.planted").is_none());

    assert_eq!(
        loupe_agent::serve_declared_points_only(),
        Err(DeclareError::RegistryInUse)
    );
}
