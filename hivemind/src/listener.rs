//! Serving the API over TCP with limits a slow or hostile client cannot get
//! around: request headers must arrive within [`HEADER_READ_TIMEOUT`] and
//! fit in [`MAX_HEADER_BYTES`], and a request body that stalls for
//! [`BODY_IDLE_TIMEOUT`] is cut (body sizes are capped per route by the
//! router). Answers that stream (logs, flows) are not limited.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Time for a client to send its request line and headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// Longest pause in a request body.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Where a TLS listener gets its acceptor, for each connection (so a
/// renewed certificate is used from the next one on).
pub type TlsSource = std::sync::Arc<dyn Fn() -> tokio_rustls::TlsAcceptor + Send + Sync>;

/// What a client that speaks plain HTTP to the TLS port is told.
const PLAIN_HTTP_ANSWER: &str = concat!(
    "HTTP/1.1 400 Bad Request\r\n",
    "Content-Type: application/json\r\n",
    "Connection: close\r\n",
    "Content-Length: 97\r\n\r\n",
    r#"{"success":false,"error":{"code":"tls_required","message":"this API speaks HTTPS: use https://"}}"#,
);

/// The TLS handshake of an accepted connection, within the header timeout;
/// a client that speaks plain HTTP gets a 400 that says to use https.
async fn handshake(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    acceptor: &tokio_rustls::TlsAcceptor,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::AsyncWriteExt as _;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    // A TLS record starts with 0x16 (handshake).
    if first[0] != 0x16 {
        let mut stream = stream;
        let _ = stream.write_all(PLAIN_HTTP_ANSWER.as_bytes()).await;
        let _ = stream.shutdown().await;
        return None;
    }
    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// The HTTP/1 and HTTP/2 connection settings: the header timeout and caps.
fn builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    builder
}

/// Serves `router` on one accepted connection (a TLS stream, say) with the
/// same limits as [`serve`], until the client closes it.
pub async fn serve_connection<S>(stream: S, peer: std::net::SocketAddr, router: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let router = router.layer(RequestBodyTimeoutLayer::new(BODY_IDLE_TIMEOUT));
    let service = TowerToHyperService::new(router);
    if let Err(e) = builder()
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open
/// connections finish for a few seconds.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsSource>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = router.layer(RequestBodyTimeoutLayer::new(BODY_IDLE_TIMEOUT));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    let builder = builder();
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(tls) => {
                    let Some(stream) = handshake(stream, peer, &tls()).await else {
                        return;
                    };
                    let builder = builder();
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::info!("connections still open after {DRAIN:?}; stopping anyway");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_has_the_length_it_says() {
        let (head, body) = PLAIN_HTTP_ANSWER.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let error: crate::contract::ErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(error.error.code, "tls_required");
    }
}
