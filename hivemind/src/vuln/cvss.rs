//! Severity from a CVSS v3 vector: the base score by the specification's formulas (CVSS v3.1,
//! section 7), and its qualitative rating.

use serde::{Deserialize, Serialize};

/// The qualitative rating of a score (CVSS v3.1, section 5), or `unknown` where a record
/// carries no vector this reads.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Unknown,
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn of_score(score: f64) -> Self {
        match score {
            s if s >= 9.0 => Self::Critical,
            s if s >= 7.0 => Self::High,
            s if s >= 4.0 => Self::Medium,
            s if s > 0.0 => Self::Low,
            _ => Self::None,
        }
    }

    /// A rating written out (`HIGH`, `moderate`, as GitHub's and distributions' records say).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "critical" => Some(Self::Critical),
            "high" | "important" => Some(Self::High),
            "medium" | "moderate" => Some(Self::Medium),
            "low" | "negligible" | "unimportant" => Some(Self::Low),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::None => "none",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// The base score of a CVSS v3.0 or v3.1 vector (`CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H`),
/// or why it cannot be read.
pub fn base_score(vector: &str) -> Result<f64, String> {
    let mut parts = vector.trim().split('/');
    match parts.next() {
        Some("CVSS:3.0" | "CVSS:3.1") => {}
        other => return Err(format!("not a CVSS v3 vector (starts with {other:?})")),
    }
    let mut metric = std::collections::HashMap::new();
    for part in parts {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?} is not a metric"))?;
        metric.insert(name, value);
    }
    let get = |name: &str| {
        metric
            .get(name)
            .copied()
            .ok_or_else(|| format!("the vector has no {name}"))
    };
    let changed = match get("S")? {
        "U" => false,
        "C" => true,
        other => return Err(format!("S:{other} is not a scope")),
    };
    let weight = |name: &str, table: &[(&str, f64)]| -> Result<f64, String> {
        let value = get(name)?;
        table
            .iter()
            .find(|(v, _)| *v == value)
            .map(|(_, w)| *w)
            .ok_or_else(|| format!("{name}:{value} is not a value of {name}"))
    };
    let av = weight("AV", &[("N", 0.85), ("A", 0.62), ("L", 0.55), ("P", 0.2)])?;
    let ac = weight("AC", &[("L", 0.77), ("H", 0.44)])?;
    let pr = if changed {
        weight("PR", &[("N", 0.85), ("L", 0.68), ("H", 0.5)])?
    } else {
        weight("PR", &[("N", 0.85), ("L", 0.62), ("H", 0.27)])?
    };
    let ui = weight("UI", &[("N", 0.85), ("R", 0.62)])?;
    let cia = [("H", 0.56), ("L", 0.22), ("N", 0.0)];
    let (c, i, a) = (weight("C", &cia)?, weight("I", &cia)?, weight("A", &cia)?);
    let iss = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    let impact = if changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15)
    } else {
        6.42 * iss
    };
    let exploitability = 8.22 * av * ac * pr * ui;
    if impact <= 0.0 {
        return Ok(0.0);
    }
    let sum = if changed {
        1.08 * (impact + exploitability)
    } else {
        impact + exploitability
    };
    Ok(round_up(sum.min(10.0)))
}

/// CVSS v3.1's Roundup: the smallest number with one decimal at or above `value`, computed
/// on integers so that 4.000000001 does not become 4.1 by floating-point error.
fn round_up(value: f64) -> f64 {
    let int = (value * 100_000.0).round() as i64;
    if int % 10_000 == 0 {
        int as f64 / 100_000.0
    } else {
        ((int / 10_000) + 1) as f64 / 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores from NVD's calculator.
    #[test]
    fn base_scores_match_the_specification() {
        for (vector, score) in [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
            ("CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
            ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.6),
        ] {
            assert_eq!(base_score(vector), Ok(score), "{vector}");
        }
        assert_eq!(Severity::of_score(9.8), Severity::Critical);
        assert_eq!(Severity::of_score(7.8), Severity::High);
        assert_eq!(Severity::of_score(6.1), Severity::Medium);
        assert_eq!(Severity::of_score(1.6), Severity::Low);
        for bad in [
            "CVSS:2.0/AV:N",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:X/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AC:L",
            "CVSS:3.1/AV:Q/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        ] {
            assert!(base_score(bad).is_err(), "{bad}");
        }
    }
}
