//! Placeholder for snapshot and table rendering (written on another branch).

use loupe_proto::v1::Snapshot;

/// How to render.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub color: bool,
}

pub fn snapshot_tree(snapshot: &Snapshot, _style: Style) -> String {
    format!("{snapshot:#?}\n")
}

pub fn snapshot_json(snapshot: &Snapshot) -> serde_json::Value {
    serde_json::json!({ "point": snapshot.point, "instance": snapshot.instance, "sequence": snapshot.sequence })
}

/// A table of text cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn render(&self, _style: Style) -> String {
        let mut out = self.headers.join("\t");
        out.push('\n');
        for row in &self.rows {
            out.push_str(&row.join("\t"));
            out.push('\n');
        }
        out
    }
}
