//! The ingress proxy on its own, against backends in this process: routing
//! by Host and SNI, the forwarded headers, HTTP/2 on both listeners, a
//! retry past a backend that refuses, websockets, and the 404/503 pages.
//! (The testbed scenario in `services.rs` runs it in real daemons, in front
//! of real containers.)
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt as _;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use hivemind::ingress::{Ingress, Route, Routes};

/// A backend that answers with what it was sent, and turns an upgrade
/// request into an echo tunnel.
async fn backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |mut request: Request<hyper::body::Incoming>| async move {
                        if request.headers().contains_key(hyper::header::UPGRADE) {
                            let upgrade = hyper::upgrade::on(&mut request);
                            tokio::spawn(async move {
                                let mut io = TokioIo::new(upgrade.await.unwrap());
                                let mut buf = [0u8; 64];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            });
                            let response = Response::builder()
                                .status(StatusCode::SWITCHING_PROTOCOLS)
                                .header("connection", "upgrade")
                                .header("upgrade", "echo")
                                .body(Body::empty())
                                .unwrap();
                            return Ok::<_, std::convert::Infallible>(response);
                        }
                        let header = |name: &str| {
                            request
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_string()
                        };
                        let text = format!(
                            "host={}\nxff={}\nproto={}\nxfh={}\nversion={:?}\npath={}\nconnection={}\n",
                            header("host"),
                            header("x-forwarded-for"),
                            header("x-forwarded-proto"),
                            header("x-forwarded-host"),
                            request.version(),
                            request.uri(),
                            header("x-hop"),
                        );
                        Ok(Response::new(Body::from(text)))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

fn routes(port: u16) -> Routes {
    let mut routes = Routes::new();
    routes.insert(
        "web.example.com".to_string(),
        Route {
            app: "web".to_string(),
            port,
            // Nothing listens on 127.0.0.2: every other request starts there
            // and must go on to the next backend.
            backends: vec![
                Ipv4Addr::new(127, 0, 0, 1).into(),
                Ipv4Addr::new(127, 0, 0, 2).into(),
            ],
            variants: Vec::new(),
        },
    );
    routes.insert(
        "idle.example.com".to_string(),
        Route {
            app: "idle".to_string(),
            port,
            backends: Vec::new(),
            variants: Vec::new(),
        },
    );
    routes
}

async fn send_h1<S>(stream: S, request: Request<Body>) -> (StatusCode, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn send_h2<S>(stream: S, request: Request<Body>) -> (StatusCode, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get(host: &str, path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header("host", host)
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .body(Body::empty())
        .unwrap()
}

async fn start() -> (Arc<Ingress>, SocketAddr, u16) {
    let ingress = Ingress::new();
    let port = backend().await;
    ingress.set_routes(routes(port));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    ingress.serve_http(listener);
    (ingress, address, port)
}

fn metrics(ingress: &Ingress) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    ingress.stats().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

#[tokio::test]
async fn routes_by_host_with_forwarded_headers_and_skips_a_refusing_backend() {
    let (ingress, address, _) = start().await;
    for _ in 0..6 {
        let stream = TcpStream::connect(address).await.unwrap();
        let (status, body) = send_h1(stream, get("Web.Example.com:80", "/a?b=1")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("host=Web.Example.com:80\n"), "{body}");
        assert!(body.contains("xff=203.0.113.7, 127.0.0.1\n"), "{body}");
        assert!(body.contains("proto=http\n"), "{body}");
        assert!(body.contains("xfh=Web.Example.com:80\n"), "{body}");
        assert!(body.contains("version=HTTP/1.1\n"), "{body}");
        assert!(body.contains("path=/a?b=1\n"), "{body}");
        assert!(
            body.contains("connection=-\n"),
            "hop-by-hop header passed: {body}"
        );
    }
    let text = metrics(&ingress);
    assert!(
        text.contains("hivemind_ingress_backend_connect_failures_total{app=\"web\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("hivemind_ingress_request_duration_seconds_count{domain=\"web.example.com\",app=\"web\",status=\"200\"} 6"),
        "{text}"
    );

    // No route: 404; a route without a ready backend: 503. Both say why.
    let stream = TcpStream::connect(address).await.unwrap();
    let (status, body) = send_h1(stream, get("nothing.example.com", "/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("No app serves the domain &quot;nothing.example.com&quot;"),
        "{body}"
    );
    let stream = TcpStream::connect(address).await.unwrap();
    let (status, body) = send_h1(stream, get("idle.example.com", "/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("The app idle serves idle.example.com but has no ready container"),
        "{body}"
    );
    let text = metrics(&ingress);
    assert!(
        text.contains("domain=\"unknown\",app=\"\",status=\"404\""),
        "{text}"
    );
    assert!(
        !text.contains("nothing.example.com"),
        "a client's Host made a series: {text}"
    );

    // HTTP/2 without TLS (prior knowledge): the authority routes it, the
    // backend gets HTTP/1.1.
    let stream = TcpStream::connect(address).await.unwrap();
    let request = Request::builder()
        .uri("http://web.example.com/h2")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send_h2(stream, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("host=web.example.com\n") && body.contains("version=HTTP/1.1\n"),
        "{body}"
    );
}

#[tokio::test]
async fn a_backend_that_refuses_everywhere_is_a_502() {
    let ingress = Ingress::new();
    let mut routes = Routes::new();
    routes.insert(
        "web.example.com".to_string(),
        Route {
            app: "web".to_string(),
            port: 9,
            backends: vec![
                Ipv4Addr::new(127, 0, 0, 2).into(),
                Ipv4Addr::new(127, 0, 0, 3).into(),
            ],
            variants: Vec::new(),
        },
    );
    ingress.set_routes(routes);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    ingress.serve_http(listener);
    let stream = TcpStream::connect(address).await.unwrap();
    let (status, body) = send_h1(stream, get("web.example.com", "/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body.contains("No container of the app web answered"),
        "{body}"
    );
    assert!(
        body.contains("127.0.0.2:9") && body.contains("127.0.0.3:9"),
        "both tried: {body}"
    );
}

#[tokio::test]
async fn websockets_are_spliced_after_the_backends_101() {
    let (_ingress, address, _) = start().await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: web.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for message in [&b"ping"[..], b"and again"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test]
async fn https_picks_the_certificate_by_sni_and_speaks_h2() {
    let (ingress, _, _) = start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["web.example.com".to_string()]).unwrap();
    ingress
        .certs()
        .load(
            "web.example.com",
            "v1".to_string(),
            &cert.cert.pem(),
            cert.key_pair.serialize_pem().as_bytes(),
        )
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    ingress.serve_https(listener).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let stream = TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("web.example.com").unwrap();
    let tls = connector.connect(name, stream).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let request = Request::builder()
        .uri("https://web.example.com/secure")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send_h2(tls, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("proto=https\n") && body.contains("path=/secure\n"),
        "{body}"
    );

    // A name without a certificate gets no handshake, not another domain's.
    let stream = TcpStream::connect(address).await.unwrap();
    let other = rustls::pki_types::ServerName::try_from("other.example.com").unwrap();
    assert!(connector.connect(other, stream).await.is_err());
}
