//! The results table and the markdown document written to `docs/benchmarks.md`.

use std::{fmt::Write as _, process::Command};

/// Whether a higher or a lower Hivemind/baseline ratio is better for a figure.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// No target: the figure is reported for information.
    None,
    /// Ratio (Hivemind / baseline) at most this.
    RatioAtMost(f64),
    /// Ratio (Hivemind / baseline) at least this.
    RatioAtLeast(f64),
    /// The Hivemind value itself at least this (in the row's unit).
    ValueAtLeast(f64),
    /// The Hivemind value itself at most this (in the row's unit).
    ValueAtMost(f64),
}

/// One figure: Hivemind's value, the baseline measured in the same run, the target.
#[derive(Debug, Clone)]
pub struct Row {
    pub section: &'static str,
    pub name: String,
    pub value: f64,
    pub baseline: Option<f64>,
    pub baseline_name: String,
    pub unit: &'static str,
    pub target: Target,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.value / b)
    }

    /// `Some(met)` when the row has a target; `None` without one.
    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::None => None,
            Target::RatioAtMost(t) => Some(self.ratio().is_some_and(|r| r <= t)),
            Target::RatioAtLeast(t) => Some(self.ratio().is_some_and(|r| r >= t)),
            Target::ValueAtLeast(t) => Some(self.value >= t),
            Target::ValueAtMost(t) => Some(self.value <= t),
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::None => "—".into(),
            Target::RatioAtMost(t) => format!("ratio ≤ {t}"),
            Target::RatioAtLeast(t) => format!("ratio ≥ {t}"),
            Target::ValueAtLeast(t) => format!("≥ {} {}", number(t), self.unit),
            Target::ValueAtMost(t) => format!("≤ {} {}", number(t), self.unit),
        }
    }
}

/// A number with a precision that suits its size.
pub fn number(v: f64) -> String {
    if v >= 1000.0 {
        let s = format!("{v:.0}");
        // Thousands separators for readability.
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// What the header says about the machine and the run.
pub struct Machine {
    pub date: String,
    pub kernel: String,
    pub cores: usize,
    pub cpu: String,
    /// /proc/loadavg's 1-minute figure when the run started: other work on the machine skews
    /// every figure.
    pub load: String,
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl Machine {
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            kernel: command_output("uname", &["-r"]),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            load: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
                .unwrap_or_else(|| "unknown".into()),
        }
    }
}

/// The whole document: header, one table per section, notes.
pub fn render(
    machine: &Machine,
    command: &str,
    quick: bool,
    only: &[String],
    rows: &[Row],
    notes: &[String],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Written by the harness in `benches/` (`hivemind-bench`); do not edit by hand, rerun it.\n"
    );
    let _ = writeln!(out, "- Date: {}", machine.date);
    let _ = writeln!(out, "- Kernel (`uname -r`): {}", machine.kernel);
    let _ = writeln!(out, "- Cores (`nproc`): {}", machine.cores);
    let _ = writeln!(out, "- CPU: {}", machine.cpu);
    let _ = writeln!(out, "- Load average (1 min) at start: {}", machine.load);
    let _ = writeln!(out, "- Command: `{command}`");
    let _ = writeln!(
        out,
        "- Build: {}",
        if cfg!(debug_assertions) {
            "debug (userspace figures such as the scheduler's are slower than in release)"
        } else {
            "release"
        }
    );
    let _ = writeln!(
        out,
        "- Mode: {}",
        if quick {
            "quick (smoke test: few repetitions, numbers are indicative only)"
        } else {
            "full"
        }
    );
    if !only.is_empty() {
        let _ = writeln!(
            out,
            "- Sections: only {} (a partial report)",
            only.join(", ")
        );
    }
    let missed: Vec<&Row> = rows.iter().filter(|r| r.met() == Some(false)).collect();
    let with_target = rows.iter().filter(|r| r.met().is_some()).count();
    if quick {
        let _ = writeln!(out, "- Targets: not judged in quick mode\n");
    } else {
        let _ = writeln!(
            out,
            "- Targets: {} of {with_target} met{}\n",
            with_target - missed.len(),
            if missed.is_empty() {
                String::new()
            } else {
                format!(
                    "; missed: {}",
                    missed
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        );
    }
    let _ = writeln!(
        out,
        "Ratio is always Hivemind / baseline. Each value is the median of the repeated \
         measurements described under the tables. A missed target shows as **no**; the harness \
         reports it and never fails on it.\n"
    );

    let mut sections: Vec<&'static str> = Vec::new();
    for r in rows {
        if !sections.contains(&r.section) {
            sections.push(r.section);
        }
    }
    for section in sections {
        let _ = writeln!(out, "## {section}\n");
        let _ = writeln!(
            out,
            "| Figure | Hivemind | Baseline | Ratio | Target | Met |\n|---|---|---|---|---|---|"
        );
        for r in rows.iter().filter(|r| r.section == section) {
            let baseline = match r.baseline {
                Some(b) => format!("{} {} ({})", number(b), r.unit, r.baseline_name),
                None => format!("— ({})", r.baseline_name),
            };
            let ratio = r.ratio().map_or("—".into(), |x| format!("{x:.2}"));
            let met = match r.met() {
                _ if quick => "— (quick)",
                None => "—",
                Some(true) => "yes",
                Some(false) => "**no**",
            };
            let _ = writeln!(
                out,
                "| {} | {} {} | {baseline} | {ratio} | {} | {met} |",
                r.name,
                number(r.value),
                r.unit,
                r.target_text()
            );
        }
        let _ = writeln!(out);
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "## How each figure is measured\n");
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }
        let _ = writeln!(out);
    }
    out
}
