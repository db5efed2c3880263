//! Presenting snapshots, values and listings to a person (and to the programs a person pipes
//! them into): the terminal tree, the stable JSON form, and aligned tables.
//!
//! - [`snapshot_tree`]: a snapshot as a readable tree, every cut, redaction and drop visible.
//! - [`snapshot_json`]: the same information as JSON, for `--output json`/`jsonl` and `--save`.
//!   Its shape is documented there.
//! - [`Table`]: columns aligned by display width, for listings.
//!
//! Everything here renders what an agent sent, so all of it treats its input as untrusted: no
//! input makes it panic (nesting is capped at [`MAX_DEPTH`] levels, optional parts may be
//! missing), and control characters in names, strings and reasons are escaped, so a value can
//! neither forge tree lines nor send escape sequences to the engineer's terminal.

mod json;
mod table;
mod text;
mod tree;

#[cfg(test)]
mod tests;

pub use json::snapshot_json;
pub use table::Table;
pub use text::clean as printable;
pub use tree::snapshot_tree;

/// Values nested deeper than this are replaced by a marker in both the tree and the JSON form.
/// Real snapshots stop far earlier (the agent's depth limit defaults to 3, protobuf decoding
/// stops at 100); the cap guards the renderer's stack against hand-made or hostile input.
pub const MAX_DEPTH: usize = 64;

/// How to render for the current output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    /// ANSI colors: dim type names, red redactions, yellow truncation. Only for terminals.
    pub color: bool,
}

impl Style {
    /// No escape sequences: pipes, files, `NO_COLOR`.
    pub const PLAIN: Style = Style { color: false };
    /// ANSI colors, for a terminal.
    pub const COLOR: Style = Style { color: true };
}
