//! One request through the ingress: route by host, forward to a backend
//! (pooled HTTP/1.1 connections, the next backend when one refuses), and
//! the answer back; websockets spliced after the backend's 101.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use super::{Ingress, Route, RouteBackend, RouteVariant};

/// The request header and the cookie that name an A/B test's variant; the answer's header
/// says which variant answered.
pub(super) const VARIANT_HEADER: &str = "x-hivemind-variant";
pub(super) const VARIANT_COOKIE: &str = "hivemind-variant";

/// The variant of `route` a request goes to (none without an A/B test), and whether the client
/// named it: by the header, else the cookie (a name the test does not have is ignored), else
/// by the client's address, in the runs of `AFFINITY_SLOTS` the kernel's balancer uses.
fn pick_variant<'r>(
    route: &'r Route,
    headers: &HeaderMap,
    client: std::net::IpAddr,
) -> Option<(&'r RouteVariant, bool)> {
    if route.variants.is_empty() {
        return None;
    }
    let named = |name: &str| route.variants.iter().find(|v| v.name == name.trim());
    if let Some(variant) = headers
        .get(VARIANT_HEADER)
        .and_then(|h| h.to_str().ok())
        .and_then(named)
    {
        return Some((variant, true));
    }
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'));
    for pair in cookies {
        if let Some((key, value)) = pair.trim().split_once('=')
            && key == VARIANT_COOKIE
            && let Some(variant) = named(value)
        {
            return Some((variant, true));
        }
    }
    let v4 = match client {
        std::net::IpAddr::V4(a) => Some(a),
        std::net::IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    let octets = v4.map_or([0; 4], |a| a.octets());
    let slot = u64::from(
        hivemind_common::client_hash(u32::from_ne_bytes(octets))
            % u32::from(hivemind_common::AFFINITY_SLOTS),
    );
    let total: u64 = route.variants.iter().map(|v| u64::from(v.share)).sum();
    let mut taken = 0;
    for variant in &route.variants {
        taken += u64::from(variant.share);
        if slot < hivemind_common::affinity_run_end(taken, total) {
            return Some((variant, false));
        }
    }
    route.variants.last().map(|v| (v, false))
}

/// Time to open a connection to a backend before trying the next one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Backends tried for one request.
const MAX_ATTEMPTS: usize = 3;
/// Idle connections kept per backend.
const MAX_IDLE: usize = 64;

/// Idle kept-alive connections to backends.
#[derive(Debug, Default)]
pub(super) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<SendRequest<Body>>>>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<SendRequest<Body>>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `backend` that is still open.
    fn take(&self, backend: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        let list = idle.get_mut(&backend)?;
        while let Some(sender) = list.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, backend: SocketAddr, sender: SendRequest<Body>) {
        let mut idle = self.lock();
        let list = idle.entry(backend).or_default();
        list.retain(|s| !s.is_closed());
        if list.len() < MAX_IDLE {
            list.push(sender);
        }
    }

    /// Forgets connections to backends no route has any more.
    pub(super) fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.lock().retain(|backend, _| keep(backend));
    }
}

/// Headers of one hop, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Removes hop-by-hop headers, and those the `Connection` header names.
/// `upgrade` keeps what an HTTP/1.1 upgrade needs.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The host a request names (`:authority` in HTTP/2, else `Host`), without
/// its port, lowercase.
fn request_host(request: &Request<Incoming>) -> Option<String> {
    let raw = match request.uri().authority() {
        Some(authority) => authority.host().to_string(),
        None => request
            .headers()
            .get(header::HOST)?
            .to_str()
            .ok()?
            .to_string(),
    };
    let host = match raw.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => raw.as_str(),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Whether the request asks for a protocol upgrade (a websocket).
fn is_upgrade(request: &Request<Incoming>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The ingress's own answer: a short HTML page that says what is missing.
pub(super) fn page(status: StatusCode, detail: &str) -> Response<Body> {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body><h1>{title}</h1>\n<p>{}</p>\n<hr><p>Hivemind ingress</p></body></html>\n",
        escape(detail)
    );
    let mut response = Response::new(Body::from(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The request as the backend gets it: origin-form HTTP/1.1, the client's
/// host, `X-Forwarded-*` added, hop-by-hop headers gone.
fn forwarded(
    request: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
    upgrade: bool,
) -> Result<Request<Body>, String> {
    let host = match request.uri().authority() {
        Some(authority) => Some(authority.as_str().to_string()),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = Uri::try_from(path).map_err(|e| format!("request target: {e}"))?;
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    if let Some(host) = &host {
        let value = HeaderValue::from_str(host).map_err(|e| format!("host: {e}"))?;
        headers.insert(header::HOST, value.clone());
        headers.insert(HeaderName::from_static("x-forwarded-host"), value);
    }
    let mut chain: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    chain.push(peer.ip().to_string());
    let chain =
        HeaderValue::from_str(&chain.join(", ")).map_err(|e| format!("x-forwarded-for: {e}"))?;
    headers.insert(HeaderName::from_static("x-forwarded-for"), chain);
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    Ok(Request::from_parts(parts, Body::new(body)))
}

/// A new HTTP/1.1 connection to `backend`.
async fn connect(backend: SocketAddr) -> Result<SendRequest<Body>, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(backend))
        .await
        .map_err(|_| format!("{backend}: no answer within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("{backend}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{backend}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(%backend, error = %e, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

/// What became of sending on one connection.
enum Sent {
    Answered(Response<Incoming>),
    /// The connection was closed before the request went out: it comes back.
    Returned(Request<Body>),
    Failed(String),
}

async fn send(sender: &mut SendRequest<Body>, request: Request<Body>) -> Sent {
    match sender.try_send_request(request).await {
        Ok(response) => Sent::Answered(response),
        Err(mut e) => match e.take_message() {
            Some(request) => Sent::Returned(request),
            None => Sent::Failed(e.into_error().to_string()),
        },
    }
}

impl Ingress {
    /// Answers one request.
    pub(super) async fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
    ) -> Response<Body> {
        let started = Instant::now();
        let routes = self.routes();
        let found = request_host(&request)
            .and_then(|host| routes.get_key_value(&host).map(|(d, r)| (d.clone(), r)));
        let Some((domain, route)) = found else {
            let host = request_host(&request).unwrap_or_default();
            self.stats.observe("unknown", "", 404, started.elapsed());
            return page(
                StatusCode::NOT_FOUND,
                &format!("No app serves the domain {host:?} on this cluster."),
            );
        };
        if route.backends.is_empty() {
            self.stats
                .observe(&domain, &route.app, 503, started.elapsed());
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "The app {} serves {domain} but has no ready container right now.",
                    route.app
                ),
            );
        }
        let variant = pick_variant(route, request.headers(), peer.ip());
        let backends = match variant {
            Some((v, _)) if !v.backends.is_empty() => &v.backends,
            _ => &route.backends,
        };
        let upgrade = is_upgrade(&request);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let response = match forwarded(request, peer, tls, upgrade) {
            Ok(outgoing) => self.forward(route, backends, outgoing, upgrade).await,
            Err(e) => Err((
                StatusCode::BAD_REQUEST,
                format!("The request cannot be forwarded: {e}."),
            )),
        };
        let response = match response {
            Ok(mut response) => {
                if let Some(client_upgrade) = client_upgrade
                    && response.status() == StatusCode::SWITCHING_PROTOCOLS
                {
                    splice(client_upgrade, hyper::upgrade::on(&mut response));
                }
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(
                    &mut parts.headers,
                    parts.status == StatusCode::SWITCHING_PROTOCOLS,
                );
                if let Some((v, named)) = variant {
                    if let Ok(value) = HeaderValue::from_str(&v.name) {
                        parts.headers.insert(VARIANT_HEADER, value);
                    }
                    let cookie = format!("{VARIANT_COOKIE}={}; Path=/; SameSite=Lax", v.name);
                    if let (false, Ok(value)) = (named, HeaderValue::from_str(&cookie)) {
                        parts.headers.append(header::SET_COOKIE, value);
                    }
                }
                Response::from_parts(parts, Body::new(body))
            }
            Err((status, detail)) => page(status, &detail),
        };
        self.stats.observe(
            &domain,
            &route.app,
            response.status().as_u16(),
            started.elapsed(),
        );
        response
    }

    /// Sends `request` to one of `backends` (the route's, or its variant's), round-robin or
    /// by weight; a backend that cannot be reached is skipped for the next. Each attempt is
    /// counted for its backend's generation.
    async fn forward(
        &self,
        route: &Route,
        backends: &[RouteBackend],
        request: Request<Body>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, (StatusCode, String)> {
        let start = first_backend(backends, self.next_turn());
        let attempts = backends.len().min(MAX_ATTEMPTS);
        let mut request = request;
        let mut failures = Vec::new();
        for i in 0..attempts {
            let chosen = backends[(start + i) % backends.len()];
            let backend = SocketAddr::new(chosen.ip.into(), route.port);
            let began = Instant::now();
            let count = |status: Option<u16>| {
                self.stats
                    .attempt(&route.app, chosen.generation, status, began.elapsed())
            };
            // Kept-alive connections first (never for an upgrade: that
            // connection is the backend's end of the tunnel).
            while let Some(mut sender) = (!upgrade).then(|| self.pool.take(backend)).flatten() {
                match send(&mut sender, request).await {
                    Sent::Answered(response) => {
                        count(Some(response.status().as_u16()));
                        self.recycle(backend, sender);
                        return Ok(response);
                    }
                    Sent::Returned(back) => request = back,
                    Sent::Failed(e) => {
                        count(None);
                        return Err(bad_gateway(&route.app, &e));
                    }
                }
            }
            let mut sender = match connect(backend).await {
                Ok(sender) => sender,
                Err(e) => {
                    count(None);
                    self.stats.connect_failed(&route.app);
                    tracing::debug!(app = %route.app, error = %e, "ingress backend unreachable");
                    failures.push(e);
                    continue;
                }
            };
            match send(&mut sender, request).await {
                Sent::Answered(response) => {
                    count(Some(response.status().as_u16()));
                    if !upgrade {
                        self.recycle(backend, sender);
                    }
                    return Ok(response);
                }
                Sent::Returned(back) => {
                    count(None);
                    failures.push(format!("{backend}: closed before the request was sent"));
                    request = back;
                }
                Sent::Failed(e) => {
                    count(None);
                    return Err(bad_gateway(&route.app, &e));
                }
            }
        }
        Err(bad_gateway(&route.app, &failures.join("; ")))
    }

    /// Pools the connection once its answer has been read to the end.
    fn recycle(&self, backend: SocketAddr, mut sender: SendRequest<Body>) {
        let pool = self.pool_handle();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                pool.put(backend, sender);
            }
        });
    }
}

/// Where a request's attempts start among `backends`: round-robin while they weigh alike,
/// else by weight, `turn` (the ingress's running count of requests) scattered over the total
/// weight so that consecutive requests do not land in runs.
fn first_backend(backends: &[RouteBackend], turn: u64) -> usize {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 || backends.iter().all(|b| b.weight == backends[0].weight) {
        return (turn % backends.len().max(1) as u64) as usize;
    }
    // Fibonacci hashing: the top bits of the product spread over the whole range.
    let point = (turn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16) % total;
    let mut taken = 0;
    for (i, backend) in backends.iter().enumerate() {
        taken += u64::from(backend.weight);
        if point < taken {
            return i;
        }
    }
    backends.len() - 1
}

fn bad_gateway(app: &str, error: &str) -> (StatusCode, String) {
    (
        StatusCode::BAD_GATEWAY,
        format!("No container of the app {app} answered: {error}"),
    )
}

/// Copies bytes both ways between the client's and the backend's upgraded
/// connections until either closes.
fn splice(client: hyper::upgrade::OnUpgrade, backend: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        match tokio::try_join!(client, backend) {
            Ok((client, backend)) => {
                let mut client = TokioIo::new(client);
                let mut backend = TokioIo::new(backend);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_upgrades_keep_theirs() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        let mut plain = headers.clone();
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert!(plain.contains_key("x-kept"));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::CONNECTION], "upgrade");
        assert!(!headers.contains_key("x-secret"));
    }

    /// A/B: the header wins, then the cookie, then the client's address, which falls on the
    /// variant the kernel's balancer gives it (`affinity_slots`' runs).
    #[test]
    fn a_variant_is_picked_by_header_cookie_or_client_address() {
        let variant = |name: &str, share, last| RouteVariant {
            name: name.into(),
            share,
            backends: vec![std::net::Ipv4Addr::new(10, 244, 0, last).into()],
        };
        let route = Route {
            app: "web".into(),
            port: 80,
            backends: Vec::new(),
            variants: vec![variant("a", 500, 1), variant("b", 500, 2)],
        };
        let client = |last: u8| std::net::IpAddr::from([10, 77, 0, last]);
        let pick = |headers: &HeaderMap, ip| {
            pick_variant(&route, headers, ip).map(|(v, named)| (v.name.clone(), named))
        };
        let mut headers = HeaderMap::new();
        headers.insert(VARIANT_HEADER, HeaderValue::from_static("b"));
        assert_eq!(pick(&headers, client(1)), Some(("b".into(), true)));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; hivemind-variant=a"),
        );
        assert_eq!(pick(&headers, client(1)), Some(("a".into(), true)));
        // An unknown name is ignored: the address decides, the same way each time, and
        // as the kernel lays the slots out.
        headers.insert(VARIANT_HEADER, HeaderValue::from_static("zzz"));
        headers.remove(header::COOKIE);
        let slots = crate::dataplane::affinity_slots(&[(500, vec![1]), (500, vec![2])], &[]);
        let mut seen = std::collections::BTreeSet::new();
        for last in 1..=100u8 {
            let (name, named) = pick(&headers, client(last)).expect("a variant");
            assert!(!named);
            let hash = hivemind_common::client_hash(u32::from_ne_bytes([10, 77, 0, last]));
            let kernel = slots[(hash % 1000) as usize];
            assert_eq!(name, if kernel == 1 { "a" } else { "b" });
            seen.insert(name);
        }
        assert_eq!(seen.len(), 2);
        let mapped = std::net::IpAddr::from(std::net::Ipv4Addr::new(10, 77, 0, 9).to_ipv6_mapped());
        assert_eq!(pick(&headers, mapped), pick(&headers, client(9)));
        let plain = Route {
            variants: Vec::new(),
            ..route.clone()
        };
        assert!(pick_variant(&plain, &headers, client(1)).is_none());
    }

    /// A canary's weight holds through the ingress: one backend of weight 900 against one of
    /// 100 takes 90% of the turns, spread rather than in runs; alike weights take turns.
    #[test]
    fn backends_are_picked_by_weight() {
        let backend = |last, weight| RouteBackend {
            ip: std::net::Ipv4Addr::new(10, 244, 0, last),
            weight,
            generation: u64::from(last),
        };
        let weighted = [backend(1, 900), backend(2, 100)];
        let picks: Vec<usize> = (0..10_000).map(|t| first_backend(&weighted, t)).collect();
        let second = picks.iter().filter(|i| **i == 1).count();
        assert!(
            (900..=1100).contains(&second),
            "{second} of 10,000 on the 10% one"
        );
        let longest_run = picks
            .chunk_by(|a, b| a == b)
            .filter(|run| run[0] == 1)
            .map(<[usize]>::len)
            .max();
        assert!(longest_run < Some(5), "{longest_run:?}");
        let alike = [backend(1, 3), backend(2, 3), backend(3, 3)];
        let turns: Vec<usize> = (0..6).map(|t| first_backend(&alike, t)).collect();
        assert_eq!(turns, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn pages_escape_what_the_client_sent() {
        assert_eq!(escape("\"<a>&'"), "&quot;&lt;a&gt;&amp;&#39;");
        let page = page(StatusCode::NOT_FOUND, "no app");
        assert_eq!(page.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }
}
