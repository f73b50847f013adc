//! HTTP through a node from outside the cluster: Hivemind's ingress (the daemon's own
//! `hivemind::ingress` code, run in node A's namespace) against kube-proxy's iptables NodePort
//! DNAT to the same server. The server (container A) answers `GET /small` with 1 byte and
//! `GET /big` with 1 MiB, over kept-alive HTTP/1.1; the client (node B's namespace) sends one
//! request at a time on one connection.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use hivemind::ingress::{Ingress, Route, Routes};
use hivemind_tests::netns::{NetNs, run_in};

/// Bytes of `GET /big`.
pub(super) const BIG: usize = 1 << 20;
/// The domain the ingress routes.
pub(super) const DOMAIN: &str = "bench.example.com";

/// Where the end of the head is in `buf`.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The HTTP server in a container's namespace; stopped when dropped.
pub(super) struct HttpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub(super) fn start(ns: &NetNs, port: u16) -> Result<Self> {
        let listener = ns
            .run(move || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))?
            .context("http server: bind")?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let flag = flag.clone();
                        std::thread::spawn(move || serve(conn, &flag));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut conn: TcpStream, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let big = vec![b'x'; BIG];
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return,
        }
        while let Some(end) = head_end(&buf) {
            let body: &[u8] = if buf.starts_with(b"GET /big") {
                &big
            } else {
                b"x"
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
                body.len()
            );
            if conn.write_all(head.as_bytes()).is_err() || conn.write_all(body).is_err() {
                return;
            }
            buf.drain(..end + 4);
        }
    }
}

/// One request on a kept-alive connection; the body's length.
fn fetch(conn: &mut TcpStream, path: &str, buf: &mut Vec<u8>) -> Result<usize> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n");
    conn.write_all(request.as_bytes())?;
    buf.clear();
    let mut chunk = [0u8; 65536];
    let end = loop {
        let n = conn.read(&mut chunk)?;
        ensure!(n > 0, "the connection closed before the answer");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(buf) {
            break end;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    ensure!(head.starts_with("http/1.1 200"), "answer {head:?}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .context("no content-length")?
        .trim()
        .parse()?;
    let mut left = length.saturating_sub(buf.len() - (end + 4));
    while left > 0 {
        let n = conn.read(&mut chunk[..left.min(65536)])?;
        ensure!(n > 0, "the connection closed in the body");
        left -= n;
    }
    Ok(length)
}

/// Requests per second, and bits per second of `GET /big`, from `ns` to `to`, each for
/// `seconds`: (requests/s, Gbit/s).
pub(super) fn measure(ns: &NetNs, to: SocketAddr, seconds: u32) -> Result<(f64, f64)> {
    ns.run(move || -> Result<(f64, f64)> {
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(3))
            .with_context(|| format!("connect {to}"))?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = Vec::with_capacity(BIG + 4096);
        let window = Duration::from_secs(u64::from(seconds));
        let start = Instant::now();
        let mut requests = 0u64;
        while start.elapsed() < window {
            fetch(&mut conn, "/small", &mut buf)?;
            requests += 1;
        }
        let rate = requests as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut bytes = 0usize;
        while start.elapsed() < window {
            bytes += fetch(&mut conn, "/big", &mut buf)?;
        }
        let gbits = bytes as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9;
        Ok((rate, gbits))
    })?
}

/// Hivemind's ingress serving `listen` in `ns`, routing [`DOMAIN`] to `backend:port`;
/// stopped when dropped.
pub(super) struct IngressProxy {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl IngressProxy {
    pub(super) fn start(
        ns: &NetNs,
        listen: SocketAddr,
        backend: Ipv4Addr,
        port: u16,
    ) -> Result<Self> {
        let path = ns.path();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, is_ready) = std::sync::mpsc::channel::<Result<(), String>>();
        // One thread in the namespace runs the proxy on a current-thread runtime, so every
        // socket it opens (the listener, the connections to the backend) lives there.
        let thread = std::thread::spawn(move || {
            let served = run_in(path, move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let ingress = Ingress::new();
                    let mut routes = Routes::new();
                    routes.insert(
                        DOMAIN.to_string(),
                        Route {
                            app: "bench".to_string(),
                            port,
                            backends: vec![backend.into()],
                            variants: Vec::new(),
                        },
                    );
                    ingress.set_routes(routes);
                    match tokio::net::TcpListener::bind(listen).await {
                        Ok(listener) => {
                            ingress.serve_http(listener);
                            let _ = ready.send(Ok(()));
                            let _ = stopped.await;
                        }
                        Err(e) => {
                            let _ = ready.send(Err(format!("bind {listen}: {e}")));
                        }
                    }
                });
            });
            if let Err(e) = served {
                eprintln!("bench: ingress: {e:#}");
            }
        });
        match is_ready.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Self {
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(e)) => bail!("ingress: {e}"),
            Err(_) => bail!("ingress: not listening after 10 s"),
        }
    }
}

impl Drop for IngressProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
