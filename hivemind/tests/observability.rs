//! `observability configure-metrics`: the metrics listener a node opens besides the API, as
//! the CLI sets it, moves it and closes it; bad settings are refused and change nothing.
//! Checked against `hivemind web --mock` (no root needed); the metrics themselves are checked
//! on real daemons in `multi_node.rs` (with Prometheus).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hivemind_tests::daemon::{MockWeb, TEST_TOKEN, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_hivemind");

/// One plain HTTP request: (status, body), `None` when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    Some((status, answer.split_once("\r\n\r\n")?.1.to_string()))
}

fn cli(api: u16, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--server", &format!("http://127.0.0.1:{api}")])
        .env("HIVEMIND_TOKEN", TEST_TOKEN)
        .args(args)
        .output()
        .expect("run the CLI")
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_metrics_listener_opens_moves_and_closes_as_configured() {
    let web = MockWeb::start(std::path::Path::new(BIN), |port| {
        get(port, "/api/health").is_some_and(|(status, _)| status == 200)
    })
    .expect("hivemind web --mock");
    let api = web.port;

    // Set: the node serves its metrics there, without a token.
    let port = free_port();
    let set = cli(
        api,
        &[
            "observability",
            "configure-metrics",
            "--port",
            &port.to_string(),
            "--path",
            "/prom",
        ],
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(
        String::from_utf8_lossy(&set.stdout).contains(&format!("port {port} at /prom")),
        "{}",
        String::from_utf8_lossy(&set.stdout)
    );
    let body = eventually("metrics on the listener", || {
        get(port, "/prom").filter(|(status, _)| *status == 200)
    })
    .1;
    assert!(
        body.contains("hivemind_api_request_duration_seconds"),
        "{body}"
    );
    assert_eq!(
        get(port, "/metrics").map(|(s, _)| s),
        Some(404),
        "only at its path"
    );

    // Bad settings: refused with the field named, the listener unchanged.
    for (args, field) in [
        (vec!["--port", "0"], "port"),
        (vec!["--port", "7946"], "port"),
        (vec!["--port", "9999", "--path", "metrics"], "path"),
        (vec!["--port", "9999", "--path", "/a b"], "path"),
    ] {
        let mut full = vec!["observability", "configure-metrics"];
        full.extend(args);
        let out = cli(api, &full);
        assert!(!out.status.success(), "{full:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{full:?}: {err}");
    }
    assert_eq!(get(port, "/prom").map(|(s, _)| s), Some(200));

    // Moved to another port: the old one closes.
    let moved = free_port();
    let out = cli(
        api,
        &[
            "observability",
            "configure-metrics",
            "--port",
            &moved.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("metrics on the new port", || {
        get(moved, "/metrics").filter(|(status, _)| *status == 200)
    });
    eventually("the old port closed", || {
        get(port, "/prom").is_none().then_some(())
    });

    // Disabled: closed; the API's own /metrics stays (with a token).
    let out = cli(api, &["observability", "configure-metrics", "--disable"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the listener closed", || {
        get(moved, "/metrics").is_none().then_some(())
    });
    let again = cli(api, &["observability", "configure-metrics", "--disable"]);
    assert!(again.status.success(), "disabling twice is fine");
}
