//! The HTTP(S) ingress: every node answers on :80 and :443 and routes each
//! request by its Host header (and, over TLS, the client's SNI) to the app
//! whose `--service` domain it names.
//!
//! ```text
//! client ──► node:80 / node:443 (TLS, SNI picks the certificate; ALPN h2 or http/1.1)
//!              │ Host: web.example.com → route (app web, port 80, ready backends)
//!              ├─ no route: 404 page; no ready backend: 503 page
//!              └─► backend container (any node, over the overlay), HTTP/1.1,
//!                  kept-alive connections pooled per backend; a backend that
//!                  refuses the connection is skipped for the next one
//! ```
//!
//! The proxy picks among the service's ready endpoints itself, round-robin,
//! rather than connecting to the VIP: the eBPF balancer would hand a retry to
//! the same dead backend as often as not, while a retry here goes to another
//! one for certain. The route table is rebuilt by the node from replicated
//! state every second; certificates come from `security tls add`.
//!
//! Requests arrive as HTTP/1.1 or HTTP/2 (h2c on :80, ALPN on :443) and go to
//! backends as HTTP/1.1 with `X-Forwarded-For`, `-Proto` and `-Host`;
//! websockets (an HTTP/1.1 upgrade) are spliced once the backend agrees.
//!
//! An app under an A/B test: each request goes to one variant, named by the
//! `X-Hivemind-Variant` header or the `hivemind-variant` cookie, else the one
//! the client's address falls on (the same as through the VIP); the answer
//! says which (`X-Hivemind-Variant`) and sets the cookie, so that a browser
//! stays on its variant when its address changes.

mod certs;
mod proxy;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub use certs::{CertInfo, CertStore, MAX_CHAIN_BYTES, check as check_certificate, name_covers};

use crate::metrics::Labels;
use crate::model::HttpFigures;

/// Where a domain's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub app: String,
    /// The app's (first) service port on its containers.
    pub port: u16,
    /// The ready containers, on any node, with their weights (a canary's share of the
    /// traffic is split by weight here as in the kernel's balancer).
    pub backends: Vec<RouteBackend>,
    /// An A/B test's variants (none otherwise): a request goes to one variant's backends,
    /// the one its `X-Hivemind-Variant` header or `hivemind-variant` cookie names, else the
    /// one the client's address falls on, as the kernel's balancer picks it for the VIP (see
    /// `hivemind_common::client_hash`).
    pub variants: Vec<RouteVariant>,
}

/// One variant of an A/B test behind a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteVariant {
    pub name: String,
    /// Its share of the clients, in permille.
    pub share: u32,
    /// Its ready containers.
    pub backends: Vec<RouteBackend>,
}

/// One ready container behind a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteBackend {
    pub ip: Ipv4Addr,
    /// Its share of the route's requests against the others' (more than 0).
    pub weight: u32,
    /// The app generation it runs: the ingress counts requests and failures per generation,
    /// for a canary's analysis.
    pub generation: u64,
}

impl From<Ipv4Addr> for RouteBackend {
    /// A backend weighing as much as every other one.
    fn from(ip: Ipv4Addr) -> Self {
        Self {
            ip,
            weight: 1,
            generation: 0,
        }
    }
}

/// Routes by domain (lowercase).
pub type Routes = HashMap<String, Route>;

/// What the ingress listens on, for `/api/health`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressStatus {
    /// `address:port` of the HTTP listener, when it listens.
    pub http: Option<String>,
    /// `address:port` of the HTTPS listener, when it listens.
    pub https: Option<String>,
    /// Why a listener is not there (the port is taken, say).
    pub errors: Vec<String>,
    /// Domains routed.
    pub routes: usize,
    /// Certificates loaded.
    pub certificates: usize,
}

fn request_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Requests by route and status with their latency, backend connect
/// failures by app, and what each app generation's containers were sent (the
/// figures of a canary's analysis).
#[derive(Debug, Clone)]
pub struct IngressStats {
    requests: Family<Labels, Histogram, fn() -> Histogram>,
    connect_failures: Family<Labels, Counter>,
    generations: Arc<Mutex<HashMap<(String, u64), HttpFigures>>>,
}

impl Default for IngressStats {
    fn default() -> Self {
        Self {
            requests: Family::new_with_constructor(request_histogram),
            connect_failures: Family::default(),
            generations: Arc::default(),
        }
    }
}

impl IngressStats {
    /// Counts one attempt on a backend of `app` running `generation`: answered with
    /// `status`, or not answered (`None`), after `took`.
    fn attempt(&self, app: &str, generation: u64, status: Option<u16>, took: Duration) {
        let mut figures = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        let counted = figures.entry((app.to_string(), generation)).or_default();
        counted.requests += 1;
        counted.server_errors += u64::from(status.is_none_or(|s| s >= 500));
        counted.latency_us = counted
            .latency_us
            .saturating_add(took.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    /// What the containers of each generation of `app` were sent since the ingress started:
    /// running totals.
    pub fn generation_figures(&self, app: &str) -> Vec<(u64, HttpFigures)> {
        let figures = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        figures
            .iter()
            .filter(|((a, _), _)| a == app)
            .map(|((_, generation), f)| (*generation, *f))
            .collect()
    }

    /// Counts one answered request. `domain` is a routed domain, or
    /// `"unknown"`: a client's Host header never makes a series of its own.
    fn observe(&self, domain: &str, app: &str, status: u16, took: Duration) {
        let labels = vec![
            ("domain".to_string(), domain.to_string()),
            ("app".to_string(), app.to_string()),
            ("status".to_string(), status.to_string()),
        ];
        self.requests
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    fn connect_failed(&self, app: &str) {
        self.connect_failures
            .get_or_create(&vec![("app".to_string(), app.to_string())])
            .inc();
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "hivemind_ingress_request_duration_seconds",
            "HTTP(S) ingress requests by domain, app and status, and the time to the backend's answer",
            self.requests.clone(),
        );
        registry.register(
            "hivemind_ingress_backend_connect_failures",
            "Connections to a backend the ingress could not open (the request went to another)",
            self.connect_failures.clone(),
        );
    }
}

/// The ingress of one node: its routes, certificates, backend connections
/// and counters.
#[derive(Debug, Default)]
pub struct Ingress {
    routes: RwLock<Arc<Routes>>,
    certs: Arc<CertStore>,
    pool: Arc<proxy::Pool>,
    stats: IngressStats,
    /// Round-robin position over each route's backends.
    next: AtomicU64,
    status: Mutex<IngressStatus>,
}

impl Ingress {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set_routes(&self, routes: Routes) {
        self.lock_status().routes = routes.len();
        let backends: std::collections::HashSet<SocketAddr> = routes
            .values()
            .flat_map(|r| {
                r.backends
                    .iter()
                    .map(|b| SocketAddr::new(b.ip.into(), r.port))
            })
            .collect();
        self.pool.retain(|backend| backends.contains(backend));
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
    }

    pub fn routes(&self) -> Arc<Routes> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn certs(&self) -> &CertStore {
        &self.certs
    }

    pub fn stats(&self) -> &IngressStats {
        &self.stats
    }

    pub fn status(&self) -> IngressStatus {
        let mut status = self.lock_status().clone();
        status.certificates = self.certs.len();
        status
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, IngressStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds the listeners (a port of 0 is off) and serves them until the
    /// process ends. A port that cannot be bound is reported in the status
    /// and the log; the daemon goes on without it.
    pub async fn start(self: &Arc<Self>, bind: std::net::IpAddr, http: u16, https: u16) {
        let tls = match tls_acceptor(self.certs.clone()) {
            Ok(acceptor) => Some(Arc::new(acceptor)),
            Err(e) => {
                self.lock_status().errors.push(format!("https: {e}"));
                None
            }
        };
        for (port, secure) in [(http, false), (https, true)] {
            let tls = match (secure, &tls) {
                (false, _) => None,
                (true, Some(acceptor)) => Some(acceptor.clone()),
                (true, None) => continue,
            };
            if port == 0 {
                continue;
            }
            let address = SocketAddr::new(bind, port);
            let scheme = if tls.is_some() { "https" } else { "http" };
            match TcpListener::bind(address).await {
                Ok(listener) => self.serve(listener, tls),
                Err(e) => {
                    tracing::error!(%address, scheme, error = %e, "the ingress cannot listen");
                    self.lock_status()
                        .errors
                        .push(format!("{scheme} on {address}: {e}"));
                }
            }
        }
    }

    /// Serves HTTP on `listener`.
    pub fn serve_http(self: &Arc<Self>, listener: TcpListener) {
        self.serve(listener, None);
    }

    /// Serves HTTPS on `listener`, with the certificates loaded.
    pub fn serve_https(self: &Arc<Self>, listener: TcpListener) -> Result<(), rustls::Error> {
        let acceptor = tls_acceptor(self.certs.clone())?;
        self.serve(listener, Some(Arc::new(acceptor)));
        Ok(())
    }

    fn serve(self: &Arc<Self>, listener: TcpListener, tls: Option<Arc<tokio_rustls::TlsAcceptor>>) {
        let address = listener
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string());
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%address, scheme, "ingress listening");
        {
            let mut status = self.lock_status();
            match tls {
                None => status.http = Some(address),
                Some(_) => status.https = Some(address),
            }
        }
        tokio::spawn(self.clone().accept(listener, tls));
    }

    async fn accept(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<Arc<tokio_rustls::TlsAcceptor>>,
    ) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "ingress accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let ingress = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => ingress.serve_connection(stream, peer, false).await,
                    Some(acceptor) => {
                        let accepted = tokio::time::timeout(
                            crate::listener::HEADER_READ_TIMEOUT,
                            acceptor.accept(stream),
                        )
                        .await;
                        match accepted {
                            Ok(Ok(stream)) => ingress.serve_connection(stream, peer, true).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "ingress TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "ingress TLS handshake timed out"),
                        }
                    }
                }
            });
        }
    }

    async fn serve_connection<S>(self: Arc<Self>, stream: S, peer: SocketAddr, tls: bool)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |request| {
            let ingress = self.clone();
            async move { Ok::<_, std::convert::Infallible>(ingress.handle(request, peer, tls).await) }
        });
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(crate::listener::HEADER_READ_TIMEOUT)
            .max_buf_size(crate::listener::MAX_HEADER_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(crate::listener::MAX_HEADER_BYTES as u32);
        if let Err(e) = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .await
        {
            tracing::debug!(%peer, error = %e, "ingress connection ended with an error");
        }
    }

    fn pool_handle(&self) -> Arc<proxy::Pool> {
        self.pool.clone()
    }

    /// The running count of requests sent on (round-robin and weighted picks start from it).
    fn next_turn(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// TLS with the certificate of the client's SNI, HTTP/2 or HTTP/1.1 by ALPN.
fn tls_acceptor(certs: Arc<CertStore>) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
