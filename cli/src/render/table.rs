//! Aligned columns for listings (services, points, sessions, audit events).

use unicode_width::UnicodeWidthStr as _;

use super::Style;
use super::text::{Paint, clean, paint};

/// Columns between cells.
const GAP: &str = "  ";

/// A table of text cells, aligned by display width (a CJK character takes two columns, a
/// combining accent none), so listings line up in a terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(headers: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row. Rows may be shorter than the headers (missing cells are empty) or longer
    /// (extra columns get no heading).
    pub fn push_row<I, S>(&mut self, cells: I) -> &mut Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header line (bold with color) and one line per row, each ending in a newline, with
    /// no trailing spaces. Control characters in cells are escaped, so a cell cannot break a
    /// line or the alignment.
    pub fn render(&self, style: Style) -> String {
        let header: Vec<String> = self.headers.iter().map(|h| clean(h).into_owned()).collect();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(|c| clean(c).into_owned()).collect())
            .collect();
        let columns = rows
            .iter()
            .map(Vec::len)
            .chain([header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for line in rows.iter().chain([&header]) {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.width());
            }
        }
        let mut out = String::new();
        if !header.is_empty() {
            let line = align(&header, &widths);
            out.push_str(&paint(style, Paint::Bold, &line));
            out.push('\n');
        }
        for row in &rows {
            out.push_str(&align(row, &widths));
            out.push('\n');
        }
        out
    }
}

fn align(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, width) in widths.iter().enumerate() {
        let cell = cells.get(i).map_or("", String::as_str);
        if i > 0 {
            line.push_str(GAP);
        }
        line.push_str(cell);
        line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.width())));
    }
    // Padding after the last cell only adds trailing spaces.
    line.truncate(line.trim_end_matches(' ').len());
    line
}
