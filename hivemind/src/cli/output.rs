//! Tables and JSON for the CLI, from the contract's types.

use std::fmt::Display;

use serde::Serialize;
use serde_json::Value;

use super::OutputFormat;
use crate::contract::Answer;

/// A column of a table: its header and the cell of one item.
pub type Column<T> = (&'static str, fn(&T) -> String);

pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print the answer as JSON: {e}"),
    }
}

/// Prints `items` as JSON, or as a table of `columns`.
pub fn print_list<T: Serialize>(format: OutputFormat, items: &[T], columns: &[Column<T>]) {
    if format == OutputFormat::Json {
        print_json(items);
        return;
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|(_, cell)| cell(item)).collect())
        .collect();
    let headers: Vec<String> = columns.iter().map(|(h, _)| h.to_string()).collect();
    print_table(&headers, rows);
}

/// Prints `rows` under `headers`, each column as wide as its widest cell.
pub fn print_table(headers: &[String], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in &rows {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(headers.to_vec()));
    for row in rows {
        println!("{}", line(row));
    }
}

/// Prints one object as `key: value` lines (in its serialised field order),
/// or as JSON.
pub fn print_object<T: Serialize>(format: OutputFormat, value: &T) {
    if format == OutputFormat::Json {
        print_json(value);
        return;
    }
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => {
            for (key, value) in map {
                println!("{key}: {}", cell(&value));
            }
        }
        Ok(other) => println!("{}", cell(&other)),
        Err(e) => eprintln!("error: cannot print the answer: {e}"),
    }
}

/// Prints the `message` of a command's answer, or the whole answer as JSON.
pub fn print_message<T: Serialize + Answer>(format: OutputFormat, answer: &T) {
    if format == OutputFormat::Json {
        print_json(answer);
    } else {
        println!("{}", answer.message());
    }
}

/// A free-form value as one cell: `-` for null, lists joined by `,`,
/// objects as `k=v` pairs.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// An optional value, `-` when absent.
pub fn or_dash<T: Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Items joined by `,`.
pub fn joined<T: Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A serialisable value as one cell (for nested objects such as resources).
pub fn cell_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).map_or_else(|_| "-".to_string(), |v| cell(&v))
}

/// Human size of a byte count.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
