//! Forwarding names outside the cluster domain to the upstreams: the
//! client's query bytes as they came, over UDP, retried over TCP when the
//! upstream truncates, each upstream in turn.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use super::DiscoveryError;
use super::ratelimit::LogLimiter;

/// How long one upstream gets (per transport) before the next is tried.
pub(super) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest DNS message over UDP or TCP.
const MAX_MESSAGE: usize = 65_535;

/// Asks each upstream in turn; the first usable answer wins. An upstream
/// answering SERVFAIL or REFUSED counts as failed, so the next one is asked.
pub(super) async fn forward(
    upstreams: &[SocketAddr],
    query: &[u8],
    id: u16,
    limiter: &LogLimiter,
) -> Result<Message, DiscoveryError> {
    for &upstream in upstreams {
        match ask(upstream, query, id).await {
            Ok(reply)
                if !matches!(
                    reply.metadata.response_code,
                    ResponseCode::ServFail | ResponseCode::Refused
                ) =>
            {
                return Ok(reply);
            }
            Ok(reply) => {
                if let Some(suppressed) = limiter.admit() {
                    tracing::warn!(
                        %upstream,
                        response_code = %reply.metadata.response_code,
                        suppressed,
                        "dns upstream refused or failed, trying the next"
                    );
                }
            }
            Err(error) => {
                if let Some(suppressed) = limiter.admit() {
                    tracing::warn!(%upstream, %error, suppressed, "dns upstream failed, trying the next");
                }
            }
        }
    }
    Err(DiscoveryError::NoUpstream)
}

async fn ask(upstream: SocketAddr, query: &[u8], id: u16) -> Result<Message, DiscoveryError> {
    let reply = timeout(UPSTREAM_TIMEOUT, ask_udp(upstream, query, id))
        .await
        .map_err(|_| upstream_error(upstream, "udp timed out"))??;
    if !reply.metadata.truncation {
        return Ok(reply);
    }
    timeout(UPSTREAM_TIMEOUT, ask_tcp(upstream, query, id))
        .await
        .map_err(|_| upstream_error(upstream, "tcp timed out"))?
}

async fn ask_udp(upstream: SocketAddr, query: &[u8], id: u16) -> Result<Message, DiscoveryError> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let io = |e: std::io::Error| upstream_error(upstream, e);
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    // Connected: the kernel drops datagrams from anyone else and reports
    // ICMP port unreachable as an error instead of a silent wait.
    socket.connect(upstream).await.map_err(io)?;
    socket.send(query).await.map_err(io)?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let len = socket.recv(&mut buf).await.map_err(io)?;
        // Anything that is not the reply to this query (a late reply to an
        // earlier attempt, garbage) is skipped until the timeout.
        if let Some(reply) = buf.get(..len).and_then(|bytes| parse_reply(bytes, id)) {
            return Ok(reply);
        }
    }
}

async fn ask_tcp(upstream: SocketAddr, query: &[u8], id: u16) -> Result<Message, DiscoveryError> {
    let io = |e: std::io::Error| upstream_error(upstream, e);
    let len = u16::try_from(query.len()).map_err(|_| upstream_error(upstream, "query too long"))?;
    let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(io)?;
    let reply_len = stream.read_u16().await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(reply_len)];
    stream.read_exact(&mut buf).await.map_err(io)?;
    parse_reply(&buf, id).ok_or_else(|| upstream_error(upstream, "malformed tcp reply"))
}

fn parse_reply(bytes: &[u8], id: u16) -> Option<Message> {
    let reply = Message::from_vec(bytes).ok()?;
    (reply.metadata.id == id && reply.metadata.message_type == MessageType::Response)
        .then_some(reply)
}

fn upstream_error(upstream: SocketAddr, message: impl ToString) -> DiscoveryError {
    DiscoveryError::Upstream {
        upstream,
        message: message.to_string(),
    }
}
