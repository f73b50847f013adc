//! The DNS server's lifecycle: bind UDP and TCP on one address, run
//! hickory's server with our handler, stop gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use super::handler::Handler;
use super::{DiscoveryError, DnsConfig, ServiceDirectory};

/// An idle TCP client is dropped after this long.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// With port 0, attempts at finding a port free for both UDP and TCP.
const EPHEMERAL_ATTEMPTS: usize = 16;

/// The node's DNS server, running until [`DnsServer::stop`] (or dropped,
/// which aborts its tasks).
pub struct DnsServer {
    server: Server<Handler>,
    local_addr: SocketAddr,
}

impl DnsServer {
    /// Binds UDP and TCP on `config.listen`, spawns the server and returns.
    pub async fn start(
        config: DnsConfig,
        directory: Arc<dyn ServiceDirectory>,
    ) -> Result<DnsServer, DiscoveryError> {
        let (udp, tcp) = bind(config.listen).await?;
        let local_addr = udp.local_addr().map_err(|source| DiscoveryError::Bind {
            protocol: "udp",
            addr: config.listen,
            source,
        })?;
        let upstreams = without_self(config.upstreams, local_addr);
        let handler = Handler::new(directory, &config.domain, config.ttl, upstreams.clone())?;
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        tracing::info!(
            addr = %local_addr,
            domain = %config.domain,
            ttl = config.ttl,
            upstreams = ?upstreams,
            "dns server started"
        );
        Ok(DnsServer { server, local_addr })
    }

    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting queries and waits for the server's tasks to end.
    pub async fn stop(mut self) {
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::warn!(addr = %self.local_addr, %error, "dns server stopped with an error");
        } else {
            tracing::info!(addr = %self.local_addr, "dns server stopped");
        }
    }
}

/// Binds UDP then TCP on the same port; with port 0 retries when the port
/// the kernel picked for UDP is taken for TCP.
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), DiscoveryError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|source| DiscoveryError::Bind {
                protocol: "udp",
                addr: listen,
                source,
            })?;
        let addr = udp.local_addr().map_err(|source| DiscoveryError::Bind {
            protocol: "udp",
            addr: listen,
            source,
        })?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source)
                if listen.port() == 0
                    && source.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < EPHEMERAL_ATTEMPTS => {}
            Err(source) => {
                return Err(DiscoveryError::Bind {
                    protocol: "tcp",
                    addr,
                    source,
                });
            }
        }
    }
}

/// Drops upstreams that are this server itself, which would loop queries.
fn without_self(upstreams: Vec<SocketAddr>, local: SocketAddr) -> Vec<SocketAddr> {
    upstreams
        .into_iter()
        .filter(|upstream| {
            let is_self = upstream.port() == local.port()
                && (upstream.ip() == local.ip()
                    || (local.ip().is_unspecified() && upstream.ip().is_loopback()));
            if is_self {
                tracing::warn!(%upstream, "dns upstream is this server, ignored");
            }
            !is_self
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_address_is_not_an_upstream() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("literal");
        let upstreams = vec![
            addr("127.0.0.1:53"),
            addr("192.0.2.1:53"),
            addr("127.0.0.1:5353"),
        ];
        assert_eq!(
            without_self(upstreams.clone(), addr("127.0.0.1:53")),
            vec![addr("192.0.2.1:53"), addr("127.0.0.1:5353")]
        );
        assert_eq!(
            without_self(upstreams, addr("0.0.0.0:53")),
            vec![addr("192.0.2.1:53"), addr("127.0.0.1:5353")]
        );
    }
}
