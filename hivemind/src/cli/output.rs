//! Tables and JSON for the CLI.

use serde_json::Value;

use super::OutputFormat;

/// Prints `value` as JSON, or as a table of `columns` (header, JSON field).
pub fn print_list(format: OutputFormat, value: &Value, columns: &[(&str, &str)]) {
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
        return;
    }
    let rows: Vec<Vec<String>> = value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    columns
                        .iter()
                        .map(|(_, field)| cell(&item[*field]))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut widths: Vec<usize> = columns.iter().map(|(header, _)| header.len()).collect();
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
    println!(
        "{}",
        line(columns.iter().map(|(h, _)| h.to_string()).collect())
    );
    for row in rows {
        println!("{}", line(row));
    }
}

/// Prints one object as `key: value` lines, or as JSON.
pub fn print_object(format: OutputFormat, value: &Value) {
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
        return;
    }
    if let Some(map) = value.as_object() {
        for (key, value) in map {
            println!("{key}: {}", cell(value));
        }
    } else {
        println!("{}", cell(value));
    }
}

/// Prints the `message` of a command's answer, or the whole answer as JSON.
pub fn print_message(format: OutputFormat, value: &Value) {
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else if let Some(message) = value["message"].as_str() {
        println!("{message}");
    }
}

fn cell(value: &Value) -> String {
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
