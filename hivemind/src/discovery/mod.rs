//! Service discovery: the node's DNS server, which containers use as their
//! resolver.
//!
//! Names served (with `<domain>` the cluster domain, `hivemind.local` by
//! default; every answer carries the configured TTL, 5 s by default):
//!
//! | query | answer |
//! | --- | --- |
//! | `<service>.<domain>` A | the service VIP |
//! | `<custom>` A (any name the directory knows, e.g. `app.example.com`) | the service VIP |
//! | `_<port>._tcp.<service>.<domain>` SRV (and `_udp`) | one record per ready endpoint, target `<container>.<service>.<domain>`, with the targets' A records in the additional section |
//! | `<container>.<service>.<domain>` A | that ready endpoint's IP |
//! | `endpoints.<service>.<domain>` A | every ready endpoint's IP (headless use) |
//!
//! Unknown names inside the domain get NXDOMAIN (with a synthesized SOA in
//! the authority section, so resolvers cache the negative answer for the
//! TTL); other types for known names get NOERROR with no answers (NODATA).
//! Names outside the domain that the directory does not know are forwarded
//! over UDP (TCP when the upstream truncates) to the upstreams in order,
//! answered with SERVFAIL when there are none or all fail.
//!
//! Malformed queries: shorter than a header, dropped (nothing to answer);
//! header parsed but body not, FORMERR; not exactly one question, FORMERR;
//! opcode other than QUERY, NOTIMP; class other than IN, or a zone transfer,
//! REFUSED. Messages with the QR bit set are dropped (no reflection loops).
//!
//! Invariant: only this module depends on hickory. The daemon feeds it
//! through [`ServiceDirectory`]; nothing here reads cluster state directly.

mod forward;
mod handler;
mod names;
mod ratelimit;
mod resolv_conf;
mod server;

use std::net::{Ipv4Addr, SocketAddr};

pub use resolv_conf::{non_loopback, upstreams_from_resolv_conf};
pub use server::DnsServer;

/// Label of the headless name: `endpoints.<service>.<domain>` answers every
/// ready endpoint's IP.
pub const HEADLESS_LABEL: &str = "endpoints";

/// What the DNS server answers from; the daemon implements it over its
/// replicated state.
pub trait ServiceDirectory: Send + Sync + 'static {
    /// `name` is the part before the cluster domain, lowercased, e.g. "web"
    /// for web.hivemind.local, or a full custom service domain like
    /// "app.example.com" (no trailing dot).
    fn lookup(&self, name: &str) -> Option<ServiceAnswer>;
}

/// A service as DNS sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceAnswer {
    pub vip: Ipv4Addr,
    pub ports: Vec<(u16, Protocol)>,
    /// Ready endpoints only.
    pub endpoints: Vec<Endpoint>,
}

/// A ready endpoint of a service.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// Container id; it is used as a DNS label, so it must be at most 63
    /// characters of letters, digits and `-` to be reachable by name.
    pub name: String,
    pub ip: Ipv4Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The SRV label, without the leading underscore.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// How the node's DNS server runs.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Address for both UDP and TCP; port 0 picks one free on both.
    pub listen: SocketAddr,
    /// Cluster domain, e.g. "hivemind.local" (case and a trailing dot are
    /// ignored).
    pub domain: String,
    /// TTL of every answer, in seconds (5 by default).
    pub ttl: u32,
    /// Where other names go; empty means they get SERVFAIL.
    pub upstreams: Vec<SocketAddr>,
}

impl DnsConfig {
    /// The defaults: `hivemind.local`, TTL 5 s, no upstreams.
    pub fn new(listen: SocketAddr) -> Self {
        DnsConfig {
            listen,
            domain: "hivemind.local".to_owned(),
            ttl: 5,
            upstreams: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("bind dns {protocol} on {addr}: {source}")]
    Bind {
        protocol: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid cluster domain {domain:?}: {message}")]
    InvalidDomain { domain: String, message: String },
    #[error("upstream {upstream}: {message}")]
    Upstream {
        upstream: SocketAddr,
        message: String,
    },
    #[error("no upstream answered")]
    NoUpstream,
}
