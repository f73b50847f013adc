//! One probe against one container.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{CheckSpec, Probe, ProbeResult};
use crate::runtime::ContainerRuntime;

/// Runs one probe against the container `id` at `ip`: HTTP `GET
/// http://ip:port/path` (2xx or 3xx is healthy, redirects are not
/// followed), TCP connect, or exec through the runtime (exit 0 is healthy).
/// Bounded by the spec's timeout; never fails, a failure is a result.
pub async fn probe_once(
    runtime: &dyn ContainerRuntime,
    id: &str,
    ip: Ipv4Addr,
    spec: &CheckSpec,
) -> ProbeResult {
    let timeout = spec.timeout();
    let (ok, message) = match &spec.probe {
        Probe::Http { path, port } => http(ip, *port, path, timeout).await,
        Probe::Tcp { port } => tcp(ip, *port, timeout).await,
        Probe::Exec { command } => exec(runtime, id, command, timeout).await,
    };
    tracing::trace!(container = %id, ok, message = %message, "probe");
    ProbeResult {
        ok,
        message,
        at_ms: now_ms(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}ms", timeout.as_millis())
}

/// One client for all HTTP probes: no proxy (containers are local), no
/// redirects (a 3xx is an answer).
fn http_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("hivemind-health/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("http client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

async fn http(ip: Ipv4Addr, port: u16, path: &str, timeout: Duration) -> (bool, String) {
    let client = match http_client() {
        Ok(client) => client,
        Err(e) => return (false, e),
    };
    let url = format!("http://{ip}:{port}{path}");
    let request = client.get(&url).timeout(timeout).send();
    match tokio::time::timeout(timeout, request).await {
        Err(_) => (false, timed_out(timeout)),
        Ok(Err(e)) if e.is_timeout() => (false, timed_out(timeout)),
        Ok(Err(e)) => (false, format!("GET {url}: {}", error_chain(&e))),
        Ok(Ok(response)) => {
            let status = response.status();
            let ok = status.is_success() || status.is_redirection();
            (ok, format!("HTTP {}", status.as_u16()))
        }
    }
}

/// An error with its sources: reqwest's own message hides the cause
/// ("connection refused").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn tcp(ip: Ipv4Addr, port: u16, timeout: Duration) -> (bool, String) {
    let addr = SocketAddr::from((ip, port));
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => (false, timed_out(timeout)),
        Ok(Err(e)) => (false, format!("connect {addr}: {e}")),
        Ok(Ok(_)) => (true, format!("connected to {addr}")),
    }
}

async fn exec(
    runtime: &dyn ContainerRuntime,
    id: &str,
    command: &[String],
    timeout: Duration,
) -> (bool, String) {
    match runtime.exec(id, command, timeout).await {
        Err(e) => (false, format!("exec: {e}")),
        Ok(out) => {
            let output = out.output.trim();
            match out.exit_code {
                None => (false, timed_out(timeout)),
                Some(code) if output.is_empty() => (code == 0, format!("exit code {code}")),
                Some(code) => (code == 0, format!("exit code {code}: {output}")),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::runtime::memory::MemoryRuntime;
    use crate::runtime::{ContainerSpec, ExecOutput};

    /// An HTTP server on 127.0.0.1 answering each request with the next
    /// status of `statuses` (the last one repeats).
    async fn http_server(statuses: &'static [u16]) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = std::sync::Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let n = served.fetch_add(1, Ordering::SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut read = 0;
                    while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        port
    }

    fn spec(probe: Probe) -> CheckSpec {
        CheckSpec::new(probe)
    }

    #[tokio::test]
    async fn http_2xx_3xx_healthy_5xx_not() {
        let runtime = MemoryRuntime::new();
        let port = http_server(&[200, 302, 500]).await;
        let check = spec(Probe::Http {
            path: "/healthz".into(),
            port,
        });
        let first = probe_once(&runtime, "c", Ipv4Addr::LOCALHOST, &check).await;
        assert!(first.ok, "{first:?}");
        assert_eq!(first.message, "HTTP 200");
        assert!(first.at_ms > 0);
        let second = probe_once(&runtime, "c", Ipv4Addr::LOCALHOST, &check).await;
        assert!(second.ok, "{second:?}");
        assert_eq!(second.message, "HTTP 302");
        let third = probe_once(&runtime, "c", Ipv4Addr::LOCALHOST, &check).await;
        assert!(!third.ok);
        assert_eq!(third.message, "HTTP 500");
    }

    #[tokio::test]
    async fn http_refused_and_timeout() {
        let runtime = MemoryRuntime::new();
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let check = spec(Probe::Http {
            path: "/".into(),
            port: closed,
        });
        let refused = probe_once(&runtime, "c", Ipv4Addr::LOCALHOST, &check).await;
        assert!(!refused.ok);
        assert!(refused.message.contains("refused"), "{}", refused.message);

        // Accepts but never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                held.push(listener.accept().await.unwrap());
            }
        });
        let check = spec(Probe::Http {
            path: "/".into(),
            port,
        });
        let started = std::time::Instant::now();
        let silent = probe_once(&runtime, "c", Ipv4Addr::LOCALHOST, &check).await;
        assert!(!silent.ok);
        assert_eq!(silent.message, "timed out after 1000ms");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn tcp_listening_and_closed() {
        let runtime = MemoryRuntime::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let up = probe_once(
            &runtime,
            "c",
            Ipv4Addr::LOCALHOST,
            &spec(Probe::Tcp { port: open }),
        )
        .await;
        assert!(up.ok, "{up:?}");
        drop(listener);
        let down = probe_once(
            &runtime,
            "c",
            Ipv4Addr::LOCALHOST,
            &spec(Probe::Tcp { port: open }),
        )
        .await;
        assert!(!down.ok);
        assert!(down.message.starts_with("connect 127.0.0.1:"), "{down:?}");
    }

    pub(crate) async fn running(runtime: &MemoryRuntime, id: &str) {
        let progress = |_| {};
        let image = runtime
            .ensure_image("hm/test-app:1", &progress)
            .await
            .unwrap();
        runtime
            .run(&ContainerSpec {
                id: id.into(),
                app: "app".into(),
                image,
                env: BTreeMap::new(),
                mounts: vec![],
                resources: Default::default(),
                netns: None,
                hostname: id.into(),
                log_path: "/dev/null".into(),
                command: None,
                working_dir: None,
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn exec_exit_code_decides() {
        let runtime = MemoryRuntime::new();
        let check = spec(Probe::Exec {
            command: vec!["/bin/sh".into(), "-c".into(), "check".into()],
        });
        // Not running: the runtime refuses, the probe fails.
        let missing = probe_once(&runtime, "c1", Ipv4Addr::LOCALHOST, &check).await;
        assert!(!missing.ok);
        assert!(missing.message.contains("not running"), "{missing:?}");

        running(&runtime, "c1").await;
        runtime.queue_exec_results([
            ExecOutput {
                exit_code: Some(0),
                output: "fine\n".into(),
            },
            ExecOutput {
                exit_code: Some(1),
                output: "broken\n".into(),
            },
            ExecOutput {
                exit_code: None,
                output: String::new(),
            },
        ]);
        let results = [
            probe_once(&runtime, "c1", Ipv4Addr::LOCALHOST, &check).await,
            probe_once(&runtime, "c1", Ipv4Addr::LOCALHOST, &check).await,
            probe_once(&runtime, "c1", Ipv4Addr::LOCALHOST, &check).await,
            probe_once(&runtime, "c1", Ipv4Addr::LOCALHOST, &check).await,
        ];
        let got: Vec<(bool, &str)> = results.iter().map(|r| (r.ok, r.message.as_str())).collect();
        assert_eq!(
            got,
            [
                (true, "exit code 0: fine"),
                (false, "exit code 1: broken"),
                (false, "timed out after 1000ms"),
                (true, "exit code 0"),
            ]
        );
        let calls = runtime.exec_calls();
        assert_eq!(calls.len(), 4);
        assert_eq!(calls[0].0, "c1");
        assert_eq!(calls[0].1, ["/bin/sh", "-c", "check"]);
    }
}
