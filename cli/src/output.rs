//! How results reach stdout: the `--output` format, and whether tables and colors are used.
//!
//! - `table` (human), `json` (one JSON document) or `jsonl` (one JSON object per line).
//! - When no format is configured, stdout decides: a terminal gets tables, a pipe or a file
//!   gets `jsonl`, so scripts never parse tables by accident. A format that is configured
//!   (flag, environment or config file) is honored as asked.
//! - ANSI colors only when stdout is a terminal and `NO_COLOR` is unset or empty
//!   (<https://no-color.org>), whatever the format.
//! - Streaming commands (`capture`, `audit tail`) print each item as it arrives: there `json`
//!   prints one pretty-printed document per item and `jsonl` one line per item.
//!
//! Diagnostics, progress and status lines go to stderr, never stdout.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use crate::error::CliError;
use crate::render;

/// The `--output` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Jsonl,
}

impl Format {
    /// Parses `table`, `json` or `jsonl`.
    pub fn parse(text: &str) -> Result<Format, CliError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "jsonl" | "json-lines" | "ndjson" => Ok(Format::Jsonl),
            other => Err(CliError::Usage(format!(
                "unknown output format `{other}` (use table, json or jsonl)"
            ))),
        }
    }
}

/// Where and how to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub format: Format,
    pub color: bool,
}

impl Output {
    /// Decides from the configured format, whether stdout is a terminal, and `NO_COLOR`.
    pub fn decide(
        configured: Option<&str>,
        stdout_is_terminal: bool,
        no_color: bool,
    ) -> Result<Output, CliError> {
        let format = match configured {
            Some(text) => Format::parse(text)?,
            None if stdout_is_terminal => Format::Table,
            None => Format::Jsonl,
        };
        Ok(Output {
            format,
            color: stdout_is_terminal && !no_color,
        })
    }

    /// [`Output::decide`] for this process's stdout and environment.
    pub fn for_stdout(configured: Option<&str>) -> Result<Output, CliError> {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Output::decide(configured, std::io::stdout().is_terminal(), no_color)
    }

    /// The rendering style for tables and snapshot trees.
    pub fn style(&self) -> render::Style {
        render::Style { color: self.color }
    }

    /// Prints rows: a table, a JSON array of `values`, or one line per value.
    pub fn list(
        &self,
        headers: &[&str],
        rows: Vec<Vec<String>>,
        values: Vec<Value>,
    ) -> Result<(), CliError> {
        match self.format {
            Format::Table => {
                if rows.is_empty() {
                    eprintln!("(none)");
                    return Ok(());
                }
                print_text(&table(headers, rows, self.style()))
            }
            Format::Json => print_json_pretty(&Value::Array(values)),
            Format::Jsonl => values.iter().try_for_each(print_json_line),
        }
    }

    /// Prints one object: `text` for a human, `value` as JSON otherwise.
    pub fn object(&self, text: &str, value: &Value) -> Result<(), CliError> {
        match self.format {
            Format::Table => print_text(text),
            Format::Json => print_json_pretty(value),
            Format::Jsonl => print_json_line(value),
        }
    }

    /// Prints one item of a stream (see the module docs).
    pub fn stream_item(
        &self,
        text: impl FnOnce() -> String,
        value: impl FnOnce() -> Value,
    ) -> Result<(), CliError> {
        match self.format {
            Format::Table => print_text(&text()),
            Format::Json => print_json_pretty(&value()),
            Format::Jsonl => print_json_line(&value()),
        }
    }

    /// Whether this output is for a human (a table).
    pub fn is_human(&self) -> bool {
        self.format == Format::Table
    }
}

/// Renders a table through the shared renderer.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>, style: render::Style) -> String {
    let mut table = render::Table::new(headers.iter().copied());
    for row in rows {
        table.push_row(row);
    }
    table.render(style)
}

fn stdout_error(e: std::io::Error) -> CliError {
    CliError::io("writing to stdout", e)
}

/// Writes text to stdout, adding a final newline if missing. A closed pipe (`| head`) is not
/// an error worth a message: the reader has what it wanted.
pub fn print_text(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let result = out.write_all(text.as_bytes()).and_then(|()| {
        if text.ends_with('\n') {
            Ok(())
        } else {
            out.write_all(b"\n")
        }
    });
    result
        .and_then(|()| out.flush())
        .or_else(ignore_broken_pipe)
        .map_err(stdout_error)
}

/// One compact JSON value and a newline.
pub fn print_json_line(value: &Value) -> Result<(), CliError> {
    let line = serde_json::to_string(value).map_err(|e| CliError::Other(e.to_string()))?;
    print_text(&line)
}

/// One pretty-printed JSON value.
pub fn print_json_pretty(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Other(e.to_string()))?;
    print_text(&text)
}

fn ignore_broken_pipe(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        use crate::render::printable;
        assert_eq!(printable("plain reason"), "plain reason");
        assert_eq!(
            printable("a\x1b[31mred\nline\u{202e}"),
            "a\\u{1b}[31mred\\nline\\u{202e}"
        );
    }

    #[test]
    fn tables_and_colors_only_on_a_terminal() {
        let tty = Output::decide(None, true, false).unwrap();
        assert_eq!(
            tty,
            Output {
                format: Format::Table,
                color: true
            }
        );
        let pipe = Output::decide(None, false, false).unwrap();
        assert_eq!(
            pipe,
            Output {
                format: Format::Jsonl,
                color: false
            }
        );
        let no_color = Output::decide(None, true, true).unwrap();
        assert!(!no_color.color);
        let asked = Output::decide(Some("table"), false, false).unwrap();
        assert_eq!(
            asked,
            Output {
                format: Format::Table,
                color: false
            }
        );
        assert_eq!(
            Output::decide(Some("JSON"), true, false).unwrap().format,
            Format::Json
        );
        assert!(Output::decide(Some("yaml"), true, false).is_err());
    }
}
