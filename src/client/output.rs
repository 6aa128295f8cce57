//! What the client prints: a table for people, or the API's JSON for scripts.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, for people.
    Table,
    /// The API's answer as JSON, one document, for scripts.
    Json,
}

/// A column: its heading and the field of each row it shows.
pub type Column = (&'static str, &'static str);

/// Prints `rows` (objects) as a table of `columns`, or `whole` as JSON.
pub fn list(format: Format, whole: &Value, rows: &[Value], columns: &[Column], empty: &str) {
    match format {
        Format::Json => json(whole),
        Format::Table if rows.is_empty() => println!("{empty}"),
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|row| columns.iter().map(|(_, field)| cell(row, field)).collect())
                .collect();
            let headings: Vec<String> = columns.iter().map(|(h, _)| (*h).to_owned()).collect();
            print_table(&headings, &cells);
        }
    }
}

/// Prints one object as `field  value` lines, or as JSON.
pub fn object(format: Format, value: &Value) {
    match format {
        Format::Json => json(value),
        Format::Table => {
            let Some(map) = value.as_object() else {
                return json(value);
            };
            let rows: Vec<Vec<String>> =
                map.iter().map(|(k, v)| vec![k.clone(), text(v)]).collect();
            print_table(&["FIELD".into(), "VALUE".into()], &rows);
        }
    }
}

pub fn json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// The field at `path` (`a.b` for nested) of `row`, as text.
fn cell(row: &Value, path: &str) -> String {
    let value = path.split('.').try_fold(row, |v, part| v.get(part));
    value.map(text).unwrap_or_else(|| "-".into())
}

/// A value for a cell: strings bare, arrays of names joined, the rest as JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item.get("eventName") {
                Some(name) => match item.get("subcategory").and_then(Value::as_str) {
                    Some(sub) => format!("{}:{sub}", text(name)),
                    None => text(name),
                },
                None => text(item),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

fn print_table(headings: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headings.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headings);
    for row in rows {
        line(row);
    }
}
