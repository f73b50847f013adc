//! Errors of the eBPF data plane.

use std::io;

/// What can go wrong between the daemon and the kernel programs and maps.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("the embedded ebpf object is empty (the daemon was built with AYA_BUILD_SKIP)")]
    ObjectMissing,
    #[error("loading the ebpf object")]
    Object(#[source] Box<aya::EbpfError>),
    #[error("program {program} is missing from the ebpf object")]
    ProgramMissing { program: &'static str },
    #[error("program {program} is not of the expected type")]
    ProgramType {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("loading program {program} into the kernel")]
    ProgramLoad {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("host routing needs the overlay attached first (its vxlan device)")]
    HostRoutingNeedsOverlay,
    #[error("cgroup directory {path}")]
    Cgroup {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("attaching program {program} to the cgroup {path}")]
    AttachCgroup {
        program: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("bpffs pin {path}")]
    Pin {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("link {name}")]
    Link {
        name: String,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("no interface with ifindex {ifindex} in this network namespace")]
    InterfaceNotFound {
        ifindex: u32,
        #[source]
        source: io::Error,
    },
    #[error("attaching program {program} to ifindex {ifindex}")]
    Attach {
        program: &'static str,
        ifindex: u32,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error(
        "attaching xdp program {program} to ifindex {ifindex} (native mode: {native}; skb mode)"
    )]
    AttachXdp {
        program: &'static str,
        ifindex: u32,
        /// Why native (driver) mode was refused before the skb-mode fallback also failed.
        native: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error(
        "invalid tunnel subnet {subnet}/{prefix}: the prefix must be at most 32 and the host bits zero"
    )]
    InvalidSubnet {
        subnet: std::net::Ipv4Addr,
        prefix: u8,
    },
    #[error("invalid tunnel endpoint {addr}: a node's underlay address must be a unicast address")]
    InvalidTunnelEndpoint { addr: std::net::Ipv4Addr },
    #[error("service vip {vip} is outside the service cidr {cidr}/{prefix}")]
    InvalidVip {
        vip: std::net::Ipv4Addr,
        cidr: std::net::Ipv4Addr,
        prefix: u8,
    },
    #[error("ip protocol {proto} cannot be load-balanced (only tcp 6 and udp 17)")]
    InvalidProtocol { proto: u8 },
    #[error("map {map} would need more than its {max} entries")]
    MapFull { map: &'static str, max: u32 },
    #[error("{count} destinations excluded from masquerading, at most {max} are supported")]
    TooManyExclusions { count: usize, max: u32 },
    #[error("service {vip}:{port} lists {count} backends, at most {max} are supported")]
    TooManyBackends {
        vip: std::net::Ipv4Addr,
        port: u16,
        count: usize,
        max: u16,
    },
    #[error(
        "service {vip}:{port}: its slots name backends it does not list, or are more than {max}"
    )]
    BadSlots {
        vip: std::net::Ipv4Addr,
        port: u16,
        max: u16,
    },
    #[error("vni {vni} is outside the overlay's allowed range")]
    InvalidVni { vni: u32 },
    #[error("no endpoint is attached on ifindex {ifindex}")]
    EndpointNotAttached { ifindex: u32 },
    #[error("identity {identity} is outside 1..=16777215")]
    InvalidIdentity { identity: u32 },
    #[error(
        "endpoint {endpoint_id}: {peer} needs {count} port ranges, a policy entry holds at most {max}"
    )]
    TooManyPortRanges {
        endpoint_id: u32,
        peer: String,
        count: usize,
        max: usize,
    },
    #[error("map {map} is missing from the ebpf object")]
    MapMissing { map: &'static str },
    #[error("map {map}: {operation}")]
    Map {
        map: &'static str,
        operation: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

impl DataplaneError {
    pub(super) fn map(
        map: &'static str,
        operation: &'static str,
    ) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| Self::Map {
            map,
            operation,
            source: Box::new(source),
        }
    }
}
