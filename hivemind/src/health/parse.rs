//! The `--health-*` and `--ready-*` flags (and the same strings in REST
//! bodies) into a [`CheckSpec`]. Every error names the flag it concerns.

use std::time::Duration;

use super::{
    CheckSpec, DEFAULT_INTERVAL_S, DEFAULT_RETRIES, DEFAULT_START_PERIOD_S, DEFAULT_TIMEOUT_S,
    Probe,
};
use crate::checks::{MAX_HEALTH_PERIOD_S, MAX_HEALTH_RETRIES};
use crate::validation::ValidationError;

/// Longest accepted interval, timeout or start period: the rule of
/// `AppSpec::validate`, so the CLI refuses what the server would.
const MAX_DURATION: Duration = Duration::from_secs(MAX_HEALTH_PERIOD_S);
const MAX_RETRIES: u32 = MAX_HEALTH_RETRIES;

/// Parses a duration: a sequence of `<integer><unit>` with units `ms`, `s`,
/// `m`, `h` (`10s`, `500ms`, `1m30s`), or a bare integer of seconds.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, ValidationError> {
    let bad = || {
        ValidationError::new(
            field,
            format!("{text:?} is not a duration; use e.g. 10s, 500ms, 1m or 1m30s"),
        )
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = trimmed.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(value.checked_mul(3600).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// One check's flags as given, before validation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HealthInput<'a> {
    pub cmd: Option<&'a str>,
    pub http: Option<&'a str>,
    pub tcp: Option<u16>,
    pub interval: Option<&'a str>,
    pub timeout: Option<&'a str>,
    pub retries: Option<u32>,
    pub start_period: Option<&'a str>,
}

/// Builds the check of `--{prefix}-*` (`prefix` is `health` or `ready`).
/// `default_port` is the port of an HTTP probe: the app's first `--port`,
/// else [`super::DEFAULT_HTTP_PORT`]. `None` when no probe flag was given.
///
/// Durations must be whole seconds (`CheckSpec` counts in seconds), at
/// least 1 s for the interval and the timeout.
pub fn check_spec(
    prefix: &str,
    input: &HealthInput,
    default_port: u16,
) -> Result<Option<CheckSpec>, ValidationError> {
    let flag = |name: &str| format!("--{prefix}-{name}");
    let given: Vec<&str> = [
        input.cmd.map(|_| "cmd"),
        input.http.map(|_| "http"),
        input.tcp.map(|_| "tcp"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let [first, second, ..] = given[..] {
        return Err(ValidationError::new(
            flag(second),
            format!(
                "cannot be combined with {}: give one of {}, {} or {}",
                flag(first),
                flag("cmd"),
                flag("http"),
                flag("tcp")
            ),
        ));
    }
    let probe = if let Some(cmd) = input.cmd {
        if cmd.trim().is_empty() {
            return Err(ValidationError::new(flag("cmd"), "must not be empty"));
        }
        Probe::Exec {
            command: vec!["/bin/sh".into(), "-c".into(), cmd.to_string()],
        }
    } else if let Some(path) = input.http {
        if !path.starts_with('/') {
            return Err(ValidationError::new(
                flag("http"),
                format!("{path:?} must be a path starting with '/', e.g. /healthz"),
            ));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ValidationError::new(
                flag("http"),
                format!("{path:?} must not contain spaces or control characters"),
            ));
        }
        if default_port == 0 {
            return Err(ValidationError::new(flag("http"), "the app's port is 0"));
        }
        Probe::Http {
            path: path.to_string(),
            port: default_port,
        }
    } else if let Some(port) = input.tcp {
        if port == 0 {
            return Err(ValidationError::new(flag("tcp"), "port must be 1-65535"));
        }
        Probe::Tcp { port }
    } else {
        let orphan = [
            input.interval.map(|_| "interval"),
            input.timeout.map(|_| "timeout"),
            input.retries.map(|_| "retries"),
            input.start_period.map(|_| "start-period"),
        ]
        .into_iter()
        .flatten()
        .next();
        if let Some(name) = orphan {
            return Err(ValidationError::new(
                flag(name),
                format!(
                    "needs a probe: give one of {}, {} or {}",
                    flag("cmd"),
                    flag("http"),
                    flag("tcp")
                ),
            ));
        }
        return Ok(None);
    };

    let interval_s = seconds(&flag("interval"), input.interval, DEFAULT_INTERVAL_S, 1)?;
    let timeout_s = seconds(&flag("timeout"), input.timeout, DEFAULT_TIMEOUT_S, 1)?;
    let start_period_s = seconds(
        &flag("start-period"),
        input.start_period,
        DEFAULT_START_PERIOD_S,
        0,
    )?;
    let retries = input.retries.unwrap_or(DEFAULT_RETRIES);
    if !(1..=MAX_RETRIES).contains(&retries) {
        return Err(ValidationError::new(
            flag("retries"),
            format!("must be between 1 and {MAX_RETRIES}, got {retries}"),
        ));
    }
    Ok(Some(CheckSpec {
        probe,
        interval_s,
        timeout_s,
        retries,
        start_period_s,
    }))
}

/// A duration flag as whole seconds, at least `min_s`.
fn seconds(
    field: &str,
    text: Option<&str>,
    default_s: u64,
    min_s: u64,
) -> Result<u64, ValidationError> {
    let Some(text) = text else {
        return Ok(default_s);
    };
    let duration = parse_duration(field, text)?;
    if duration.subsec_nanos() != 0 {
        return Err(ValidationError::new(
            field,
            format!("{text:?} must be a whole number of seconds"),
        ));
    }
    if duration > MAX_DURATION {
        return Err(ValidationError::new(
            field,
            format!("{text:?} is longer than {}s", MAX_DURATION.as_secs()),
        ));
    }
    let secs = duration.as_secs();
    if secs < min_s {
        return Err(ValidationError::new(
            field,
            format!("{text:?} must be at least {min_s}s"),
        ));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations() {
        for (text, want) in [
            ("10s", ms(10_000)),
            ("500ms", ms(500)),
            ("1m", ms(60_000)),
            ("1m30s", ms(90_000)),
            ("2h", ms(7_200_000)),
            ("0s", ms(0)),
            ("15", ms(15_000)),
            (" 3s ", ms(3_000)),
            ("1s500ms", ms(1_500)),
        ] {
            assert_eq!(
                parse_duration("--health-interval", text),
                Ok(want),
                "{text}"
            );
        }
        for text in [
            "",
            "s",
            "-1s",
            "1.5s",
            "10x",
            "10 s",
            "ms10",
            "1d",
            "10S",
            "99999999999999999999s",
        ] {
            let err = parse_duration("--health-interval", text).unwrap_err();
            assert_eq!(err.field, "--health-interval", "{text}");
        }
        let overflow = format!("{}h", u64::MAX / 100);
        assert!(parse_duration("f", &overflow).is_err());
    }

    #[test]
    fn defaults_for_each_probe() {
        let cmd = check_spec(
            "health",
            &HealthInput {
                cmd: Some("curl -f localhost || exit 1"),
                ..Default::default()
            },
            80,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            cmd,
            CheckSpec {
                probe: Probe::Exec {
                    command: vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        "curl -f localhost || exit 1".into()
                    ]
                },
                interval_s: 10,
                timeout_s: 1,
                retries: 3,
                start_period_s: 0,
            }
        );
        let http = check_spec(
            "ready",
            &HealthInput {
                http: Some("/ready?full=1"),
                ..Default::default()
            },
            8080,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            http.probe,
            Probe::Http {
                path: "/ready?full=1".into(),
                port: 8080
            }
        );
        let tcp = check_spec(
            "health",
            &HealthInput {
                tcp: Some(5432),
                interval: Some("30s"),
                timeout: Some("5s"),
                retries: Some(5),
                start_period: Some("1m"),
                ..Default::default()
            },
            80,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            tcp,
            CheckSpec {
                probe: Probe::Tcp { port: 5432 },
                interval_s: 30,
                timeout_s: 5,
                retries: 5,
                start_period_s: 60,
            }
        );
        assert_eq!(
            check_spec("health", &HealthInput::default(), 80).unwrap(),
            None
        );
    }

    /// Every rejected input names the flag at fault.
    #[test]
    fn errors_name_the_flag() {
        let cases: Vec<(&str, HealthInput, &str)> = vec![
            (
                "health",
                HealthInput {
                    cmd: Some("true"),
                    http: Some("/"),
                    ..Default::default()
                },
                "--health-http",
            ),
            (
                "ready",
                HealthInput {
                    http: Some("/"),
                    tcp: Some(80),
                    ..Default::default()
                },
                "--ready-tcp",
            ),
            (
                "health",
                HealthInput {
                    cmd: Some("  "),
                    ..Default::default()
                },
                "--health-cmd",
            ),
            (
                "health",
                HealthInput {
                    http: Some("healthz"),
                    ..Default::default()
                },
                "--health-http",
            ),
            (
                "health",
                HealthInput {
                    http: Some("/a b"),
                    ..Default::default()
                },
                "--health-http",
            ),
            (
                "ready",
                HealthInput {
                    tcp: Some(0),
                    ..Default::default()
                },
                "--ready-tcp",
            ),
            (
                "health",
                HealthInput {
                    tcp: Some(80),
                    interval: Some("ten"),
                    ..Default::default()
                },
                "--health-interval",
            ),
            (
                "health",
                HealthInput {
                    tcp: Some(80),
                    interval: Some("0s"),
                    ..Default::default()
                },
                "--health-interval",
            ),
            (
                "health",
                HealthInput {
                    tcp: Some(80),
                    timeout: Some("500ms"),
                    ..Default::default()
                },
                "--health-timeout",
            ),
            (
                "ready",
                HealthInput {
                    tcp: Some(80),
                    timeout: Some("25h"),
                    ..Default::default()
                },
                "--ready-timeout",
            ),
            (
                "health",
                HealthInput {
                    tcp: Some(80),
                    retries: Some(0),
                    ..Default::default()
                },
                "--health-retries",
            ),
            (
                "health",
                HealthInput {
                    tcp: Some(80),
                    start_period: Some("-1s"),
                    ..Default::default()
                },
                "--health-start-period",
            ),
            (
                "ready",
                HealthInput {
                    interval: Some("5s"),
                    ..Default::default()
                },
                "--ready-interval",
            ),
            (
                "health",
                HealthInput {
                    retries: Some(2),
                    ..Default::default()
                },
                "--health-retries",
            ),
        ];
        for (prefix, input, field) in cases {
            let err = check_spec(prefix, &input, 80).unwrap_err();
            assert_eq!(err.field, field, "{input:?}: {err}");
            assert!(err.to_string().starts_with(field), "{err}");
        }
    }
}
