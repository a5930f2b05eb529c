//! The conformance runner: executes `sql/conformance.sql` statement by
//! statement on one side and renders what each returns, so the output can be
//! compared with the expected file of that side. Sections marked `--! both`
//! must render the same on PostgreSQL and on SQLite.
//!
//! Script format: statements end with `;` at the end of a line; `--! postgres`,
//! `--! sqlite` and `--! both` switch which side runs what follows; other
//! `--` lines are comments, copied to the output.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Postgres,
    Sqlite,
}

impl Side {
    fn marker(self) -> &'static str {
        match self {
            Side::Postgres => "postgres",
            Side::Sqlite => "sqlite",
        }
    }
}

/// Runs one statement and returns its rows with every value as text (NULL as
/// `None`), or the error message.
pub trait Executor {
    fn run(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String>;
}

#[derive(Debug, PartialEq)]
enum Item {
    Section(String),
    Comment(String),
    Statement(String),
}

fn parse(script: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut statement = String::new();
    for line in script.lines() {
        let trimmed = line.trim();
        if statement.is_empty() {
            if let Some(section) = trimmed.strip_prefix("--!") {
                items.push(Item::Section(section.trim().to_string()));
                continue;
            }
            if trimmed.starts_with("--") || trimmed.is_empty() {
                if trimmed.starts_with("--") {
                    items.push(Item::Comment(trimmed.to_string()));
                }
                continue;
            }
        }
        if !statement.is_empty() {
            statement.push('\n');
        }
        statement.push_str(line);
        if trimmed.ends_with(';') {
            items.push(Item::Statement(std::mem::take(&mut statement)));
        }
    }
    if !statement.trim().is_empty() {
        items.push(Item::Statement(statement));
    }
    items
}

/// Keys whose values change from run to run (xids, snapshots, random ids,
/// clock times); rendered as `*`.
const VOLATILE: [&str; 9] = ["version", "base", "watermark", "origin", "token", "last_seen", "needs_after", "purged_before", "at"];

fn mask(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if VOLATILE.contains(&key.as_str()) && !v.is_null() {
                    *v = Value::String("*".into());
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

/// JSON cells are re-rendered with sorted keys and volatile values masked,
/// so jsonb (PostgreSQL) and JSON text (SQLite) render alike.
fn render_cell(cell: &Option<String>) -> String {
    match cell {
        None => "NULL".into(),
        Some(text) if text.starts_with('{') || text.starts_with('[') => match serde_json::from_str::<Value>(text) {
            Ok(mut value) => {
                mask(&mut value);
                value.to_string()
            }
            Err(_) => text.clone(),
        },
        // One line per row: control characters are shown escaped.
        Some(text) => text.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r"),
    }
}

/// Runs the script on `side` and renders the output.
pub fn run(script: &str, side: Side, executor: &mut dyn Executor) -> String {
    let mut out = String::new();
    let mut active = true;
    for item in parse(script) {
        match item {
            Item::Section(section) => {
                active = section == "both" || section == side.marker();
                out.push_str(&format!("--! {section}\n"));
            }
            Item::Comment(text) if active => out.push_str(&format!("{text}\n")),
            Item::Statement(sql) if active => {
                out.push_str(&sql);
                out.push('\n');
                match executor.run(&sql) {
                    Ok(rows) => {
                        for row in rows {
                            let cells: Vec<String> = row.iter().map(render_cell).collect();
                            out.push_str(&format!("  {}\n", cells.join(" | ")));
                        }
                    }
                    Err(message) => out.push_str(&format!("  ERROR: {message}\n")),
                }
            }
            _ => {}
        }
    }
    out
}

/// The `--! both` sections of a rendered output, for comparing the sides.
pub fn shared_sections(output: &str) -> String {
    let mut out = String::new();
    let mut shared = false;
    for line in output.lines() {
        if let Some(section) = line.strip_prefix("--! ") {
            shared = section == "both";
            continue;
        }
        if shared {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Executor for Echo {
        fn run(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
            if sql.contains("fail") {
                Err("it failed".into())
            } else {
                Ok(vec![vec![Some(r#"{"b": 1, "version": "77", "a": [ {"watermark": "1:2:"} ]}"#.into()), None]])
            }
        }
    }

    #[test]
    fn renders_sections_masks_volatile_values_and_errors() {
        let script = "--! postgres\nSELECT 1;\n--! sqlite\nSELECT 2;\n--! both\n-- shared\nSELECT\n  3;\nSELECT fail;\n";
        let out = run(script, Side::Postgres, &mut Echo);
        assert_eq!(
            out,
            "--! postgres\nSELECT 1;\n  {\"a\":[{\"watermark\":\"*\"}],\"b\":1,\"version\":\"*\"} | NULL\n--! sqlite\n--! both\n-- shared\nSELECT\n  3;\n  {\"a\":[{\"watermark\":\"*\"}],\"b\":1,\"version\":\"*\"} | NULL\nSELECT fail;\n  ERROR: it failed\n"
        );
        assert!(shared_sections(&out).starts_with("-- shared\nSELECT\n"));
        assert!(!shared_sections(&out).contains("SELECT 1;"));
    }
}
