//! Map keys, map values and stable codes shared by the daemon and the eBPF programs.
//!
//! Invariant: this crate never depends on std; every type here is `#[repr(C)]` plain data
//! with explicit padding and a compile-time size assertion, so both sides agree on the
//! byte layout the kernel sees.
#![no_std]

use core::mem::size_of;

/// Name of the map from host-side veth ifindex (`u32`) to [`EndpointInfo`].
pub const MAP_ENDPOINTS: &str = "HM_ENDPOINTS";
/// Name of the per-CPU map from [`MetricsKey`] to [`MetricsValue`].
pub const MAP_METRICS: &str = "HM_METRICS";
/// Name of the per-CPU array of each endpoint's forwarded packets, at its
/// [`EndpointInfo::metrics_slot`] (see [`endpoint_metrics_index`]).
pub const MAP_ENDPOINT_METRICS: &str = "HM_EP_METRICS";
/// Name of the per-CPU array of the node's own counters (see [`node_metrics_index`]).
pub const MAP_NODE_METRICS: &str = "HM_NODE_METRICS";
/// Name of the LPM trie from a remote node's container subnet to [`TunnelInfo`].
///
/// Key: the LPM trie key `{ prefix_len: u32, data: u32 }` (8 bytes, `#[repr(C, packed)]` on
/// both sides: `aya::maps::lpm_trie::Key<u32>` / `aya_ebpf::maps::lpm_trie::Key<u32>`), where
/// `data` is the IPv4 network address in network byte order (its bytes in memory are the
/// address octets, i.e. `u32::from_ne_bytes(addr.octets())`). The eBPF side looks up the
/// packet's destination with `prefix_len = 32`.
pub const MAP_TUNNELS: &str = "HM_TUNNELS";

/// Name of the service frontend map: [`ServiceKey`] -> [`ServiceValue`]. Slot 0 of a frontend
/// holds the number of backend slots (`ServiceValue::count`), slots `1..=count` one backend id
/// each; a backend of weight `w` fills proportionally many slots (see `weighted_slots` in the
/// daemon). Writers fill backends first, then slots `1..=count`, then slot 0, so the data path
/// never sees a count that covers a missing slot.
pub const MAP_SERVICES: &str = "HM_SERVICES";
/// Name of the map from backend id (`u32`) to [`Backend`].
pub const MAP_BACKENDS: &str = "HM_BACKENDS";
/// Name of the connection tracking map (LRU hash): [`CtKey`] -> [`CtValue`]. A translated
/// connection has two entries: the original direction (client -> VIP:port, remembering the
/// backend) and the reply direction (backend -> client, remembering the VIP:port to restore).
pub const MAP_CT: &str = "HM_CT";
/// Entries of `HM_CT` per owner (`CtValue::owner`), for the budget.
pub const MAP_CT_BUDGET: &str = "HM_CT_BUDGET";
/// Name of the one-entry array (index 0) holding this node's [`NodeConfig`].
pub const MAP_NODE_CONFIG: &str = "HM_NODE_CONFIG";
/// Host routing: a local container's IPv4 address (network byte order) -> the ifindex of its
/// host-side veth (the key of `HM_ENDPOINTS`).
pub const MAP_LXC: &str = "HM_LXC";
/// Socket load balancing: network namespace cookie -> 1 for every namespace whose sockets the
/// cgroup programs translate (this node's containers and the node itself).
pub const MAP_SOCK_NETNS: &str = "HM_SOCK_NETNS";
/// Socket load balancing: [`SockRevKey`] -> [`SockRevValue`], the VIP a translated socket
/// asked for (LRU).
pub const MAP_SOCK_REVNAT: &str = "HM_SOCK_REVNAT";
/// Name of the ipcache (hash): IPv4 address (`u32`, network order) -> [`IpcacheValue`] (the
/// peer's identity and, for an address on another node, that node's underlay address), for
/// every container of the cluster and every node's gateway (identity [`identity::HOST`]). An
/// exact-match hash, so that one lookup costs the same with 10 entries as with 100,000. An
/// address without an entry is [`identity::WORLD`].
pub const MAP_IPCACHE: &str = "HM_IPCACHE";
/// Name of the identity policy map (hash): [`PolicyKey`] -> [`PolicyEntry`].
pub const MAP_POLICY: &str = "HM_POLICY";
/// Name of the CIDR policy map (LPM trie): key `{ prefix_len: 64 + prefix, data:
/// PolicyCidrKey }` -> [`PolicyEntry`]. The data path looks up the peer address with
/// `prefix_len = 96`, once with the packet's protocol and once with protocol 0 (any). Since an
/// LPM lookup returns only the longest match, the writer stores in each prefix's entry the port
/// ranges of every shorter prefix of the same endpoint, direction and protocol that covers it.
pub const MAP_POLICY_CIDR: &str = "HM_POLICY_CIDR";
/// Name of the flow event ring buffer: one [`FlowRecord`] per new flow the policy code allowed
/// and per denied packet (rate-limited, see [`MAP_FLOW_DROPS`]).
pub const MAP_FLOWS: &str = "HM_FLOWS";
/// Name of the per-CPU one-entry array (index 0, `u64`): flow events lost because the ring
/// buffer was full.
pub const MAP_FLOWS_LOST: &str = "HM_FLOWS_LOST";
/// Name of the LRU hash [`CtKey`] -> last drop event time (`u64`, ns): at most one denied-flow
/// event per 5-tuple and direction per [`FLOW_DROP_INTERVAL_NS`].
pub const MAP_FLOW_DROPS: &str = "HM_FLOW_DROPS";
/// Name of the per-CPU array of [`CtKey`]s (scope = direction), indexed by a hash of the key: a
/// direct-mapped cache of the UDP and ICMP flows seen at endpoints no policy selects, so each
/// new flow is reported once per CPU (a flow whose slot another took is reported again; see
/// `reason::UNPOLICED`).
pub const MAP_FLOW_SEEN: &str = "HM_FLOW_SEEN";
/// Name of the one-entry array [`MonitorConfig`]: whether a trace monitor is attached (never
/// pinned: a new daemon starts with it off).
pub const MAP_MONITOR: &str = "HM_MONITOR";
/// Name of the trace ring buffer: [`TraceRecord`]s while a monitor is attached.
pub const MAP_TRACE: &str = "HM_TRACE";
/// One slot: `hm_tc_explain`, which the container programs tail-call for a drop the monitor
/// wants explained in words (`aya-log`).
pub const MAP_EXPLAIN: &str = "HM_EXPLAIN";
/// Name of the per-CPU one-entry array (`u64`): trace records lost (ring buffer full).
pub const MAP_TRACE_LOST: &str = "HM_TRACE_LOST";
/// Name of the hash map of egress NAT (masquerade) mappings, [`NatKey`] -> [`NatValue`].
pub const MAP_NAT: &str = "HM_NAT";
/// Name of the hash map from a local backend's [`PublishedKey`] to the port it is published on
/// (`u16`, host byte order).
pub const MAP_PUBLISHED: &str = "HM_PUBLISHED";
/// Name of the LPM trie of destinations never masqueraded (key as `MAP_TUNNELS`, value `u8`).
pub const MAP_NO_MASQ: &str = "HM_NO_MASQ";
/// IPv4 datagrams in fragments: what their first fragment was translated to or allowed as.
pub const MAP_FRAGS: &str = "HM_FRAGS";

/// The default service CIDR (10.96.0.0/16; `hivemind daemon --service-cidr` sets another):
/// its network address's octets. The programs read the node's own from [`NodeConfig`].
pub const SERVICE_CIDR: [u8; 4] = [10, 96, 0, 0];
/// Prefix length of [`SERVICE_CIDR`].
pub const SERVICE_CIDR_PREFIX: u8 = 16;

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;

/// Maximum number of local endpoints (container veths) per node.
pub const MAX_ENDPOINTS: u32 = 4096;
/// Maximum number of metrics entries per node ({endpoint, direction, reason}).
pub const MAX_METRICS_ENTRIES: u32 = 65536;
/// Entries of `HM_EP_METRICS`: two per endpoint slot (forwarded from and to the container);
/// endpoints take slots 1 to `MAX_ENDPOINTS`, slot 0 counts the interfaces the daemon did not
/// attach (`ENDPOINT_ID_UNKNOWN`).
pub const ENDPOINT_METRICS_ENTRIES: u32 = (MAX_ENDPOINTS + 1) * 2;
/// The successes (reasons below this one) of the node-wide directions (`DIR_UNDERLAY`,
/// `DIR_SERVICE`, `DIR_NAT`) count in `HM_NODE_METRICS`; their drops, rarer, stay in
/// `HM_METRICS` under endpoint 0.
pub const NODE_METRICS_REASONS: u8 = 16;
/// Entries of `HM_NODE_METRICS`: every direction times `NODE_METRICS_REASONS`.
pub const NODE_METRICS_ENTRIES: u32 = 8 * NODE_METRICS_REASONS as u32;

/// The `HM_EP_METRICS` index of the packets an endpoint at `slot` forwarded in `direction`
/// (`DIR_FROM_CONTAINER` or `DIR_TO_CONTAINER`).
pub const fn endpoint_metrics_index(slot: u16, direction: u8) -> u32 {
    slot as u32 * 2 + (direction == DIR_TO_CONTAINER) as u32
}

/// The `HM_NODE_METRICS` index of `direction` and `reason` (below `NODE_METRICS_REASONS`).
pub const fn node_metrics_index(direction: u8, reason: u8) -> u32 {
    (direction as u32 & 7) * NODE_METRICS_REASONS as u32 + reason as u32
}

/// Whether `direction` counts the node as a whole (`endpoint_id` always 0): its successes go to
/// `HM_NODE_METRICS`.
pub const fn is_node_direction(direction: u8) -> bool {
    matches!(direction, DIR_UNDERLAY | DIR_SERVICE | DIR_NAT)
}
/// Maximum number of remote node subnets in `HM_TUNNELS` (an LPM trie: no preallocation, a
/// node costs memory only once its subnet is added).
pub const MAX_TUNNELS: u32 = 1 << 17;
/// Maximum number of `HM_SERVICES` entries (every slot of every frontend, slot 0 included).
pub const MAX_SERVICE_ENTRIES: u32 = 65536;
/// Maximum number of backend slots of one frontend (slots `1..=MAX_SLOTS_PER_SERVICE`).
pub const MAX_SLOTS_PER_SERVICE: u16 = 1024;
/// Maximum number of `HM_BACKENDS` entries.
pub const MAX_BACKENDS: u32 = 65536;
/// Maximum number of `HM_CT` entries (two per tracked connection). Nothing is evicted: the
/// daemon's collector removes idle and closed connections, and each owner holds at most
/// `CT_OWNER_BUDGET`.
pub const MAX_CT_ENTRIES: u32 = 131072;
/// Maximum number of `HM_IPCACHE` entries (containers of the whole cluster, plus a gateway per
/// node).
pub const MAX_IPCACHE_ENTRIES: u32 = 1 << 17;
/// Maximum number of `HM_POLICY` entries (all endpoints of the node together).
pub const MAX_POLICY_ENTRIES: u32 = 262144;
/// Maximum number of `HM_POLICY_CIDR` entries (all endpoints of the node together).
pub const MAX_POLICY_CIDR_ENTRIES: u32 = 16384;
/// Port ranges one policy entry holds. The daemon merges overlapping and adjacent ranges first;
/// a key that still needs more is refused (`TooManyPortRanges`): the daemon must then reject the
/// policy (or the user must use fewer, wider ranges), never silently widen it.
pub const MAX_PORT_RANGES: usize = 8;
/// Size of `HM_FLOWS` in bytes (a power of two, a multiple of the page size).
pub const FLOWS_RING_BYTES: u32 = 256 * 1024;
/// Maximum number of `HM_FLOW_DROPS` entries.
pub const MAX_FLOW_DROPS: u32 = 8192;
/// log2 of the slots of `HM_FLOW_SEEN` (per CPU).
pub const FLOW_SEEN_BITS: u32 = 15;
/// Slots of `HM_FLOW_SEEN` (per CPU).
pub const MAX_FLOW_SEEN: u32 = 1 << FLOW_SEEN_BITS;
/// Maximum number of `HM_FRAGS` entries (datagrams in flight in fragments; the least recently
/// used go first, and their later fragments are dropped).
pub const MAX_FRAGS: u32 = 8192;

/// Key of `HM_FRAGS`: one datagram (its addresses, IP id and protocol as in the packet) at one
/// point (`frag_scope::*`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub saddr: u32,
    pub daddr: u32,
    /// The IP id, network byte order.
    pub id: u16,
    pub proto: u8,
    pub scope: u8,
}
const _: () = assert!(size_of::<FragKey>() == 12);

/// Value of `HM_FRAGS`: the address the later fragments get (the backend for the service
/// scope, the VIP for its replies; 0 for the policy scopes, where the entry is the verdict).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    pub addr: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<FragValue>() == 8);

/// Scopes of [`FragKey::scope`]: the policy check points share `ct_scope`'s numbers.
pub mod frag_scope {
    /// A datagram to a VIP: later fragments get the backend's address as destination.
    pub const SERVICE: u8 = 0;
    /// Allowed by a local endpoint's egress check.
    pub const EGRESS: u8 = 1;
    /// Allowed by a local endpoint's ingress check.
    pub const INGRESS: u8 = 2;
    /// A backend's reply datagram: later fragments get the VIP as source.
    pub const SERVICE_REPLY: u8 = 3;
}
/// Capacity of `HM_NAT`: two entries per mapping (out and in), so half as many mappings.
pub const MAX_NAT_ENTRIES: u32 = 262_144;
/// Capacity of `HM_PUBLISHED`.
pub const MAX_PUBLISHED: u32 = 65536;
/// Capacity of `HM_NO_MASQ`.
pub const MAX_NO_MASQ: u32 = 256;
/// Candidate ports the egress NAT tries for a new mapping (the original one first).
pub const NAT_PROBES: u32 = 32;
/// Lowest port the egress NAT hands out when the original one is taken.
pub const NAT_PORT_MIN: u16 = 1024;
/// The source address a container's connection to its own service VIP carries when the load
/// balancer picked that container itself (hairpin): a container drops packets that come from
/// its own address, so the source is this link-local address instead, and the reply to it is
/// translated back (as Cilium's `IPV4_LOOPBACK`).
pub const HAIRPIN_IP: [u8; 4] = [169, 254, 42, 1];
/// At most one denied-flow event per 5-tuple and direction per this many nanoseconds.
pub const FLOW_DROP_INTERVAL_NS: u64 = 1_000_000_000;

/// Reserved and allocated security identities (24 bits, carried in the VXLAN VNI).
pub mod identity {
    /// No identity / "any peer" in a [`super::PolicyKey`].
    pub const ANY: u32 = 0;
    /// The node itself (its gateway address on the bridge, node-originated traffic).
    pub const HOST: u32 = 1;
    /// Anything the ipcache does not know.
    pub const WORLD: u32 = 2;
    /// First identity the daemon allocates to label sets.
    pub const FIRST_ALLOCATED: u32 = 256;
    /// Largest identity (it must fit the VNI).
    pub const MAX: u32 = 0x00ff_ffff;
}

/// `skb->mark` conventions. `hm_overlay_ingress` writes `MARK_IDENTITY | identity` (the VNI of
/// the decapsulated packet); `hm_lxc_to_container` takes the source identity from it (and
/// falls back to the ipcache of the source address when the top byte is not the magic). The
/// mark is scrubbed when the packet crosses into the container's namespace.
pub mod mark {
    /// Top byte of a mark that carries a source identity in its low 24 bits.
    pub const IDENTITY_MAGIC: u32 = 0xa5 << 24;
    /// Mask of the magic byte.
    pub const MAGIC_MASK: u32 = 0xff << 24;
    /// Mask of the identity bits.
    pub const IDENTITY_MASK: u32 = 0x00ff_ffff;
    /// The whole mark of a frame that host routing has encapsulated already (tunnel key set)
    /// and redirected to `hm-vxlan`: `hm_overlay_egress` clears it and passes the frame.
    pub const ENCAPSULATED: u32 = 0xa6 << 24;
}

/// Packets leaving the container (TC ingress of its host-side veth).
pub const DIR_FROM_CONTAINER: u8 = 1;
/// Packets going into the container (TC egress of its host-side veth).
pub const DIR_TO_CONTAINER: u8 = 2;
/// Packets handed to the VXLAN device for encapsulation (TC egress of `hm-vxlan`).
///
/// `MetricsKey::endpoint_id` is the destination node's underlay IPv4 address as a host-order
/// `u32` (`u32::from(Ipv4Addr)`); packets dropped before a tunnel was found count under 0.
pub const DIR_TO_OVERLAY: u8 = 3;
/// Decapsulated packets coming out of the VXLAN device (TC ingress of `hm-vxlan`).
///
/// `MetricsKey::endpoint_id` is the source node's underlay IPv4 address as a host-order `u32`;
/// packets dropped before the tunnel metadata was read count under 0.
pub const DIR_FROM_OVERLAY: u8 = 4;
/// VXLAN packets arriving on the node's underlay interface (XDP). `endpoint_id` is always 0.
pub const DIR_UNDERLAY: u8 = 5;

/// Service translations (all programs), node-wide: `MetricsKey::endpoint_id` is always 0; the
/// reason is one of `reason::SERVICE_*` or a drop. These entries count translations, not traffic: the same
/// packet is also counted (FORWARDED or dropped) under the direction of the program that saw it.
pub const DIR_SERVICE: u8 = 6;
/// Egress NAT on the node's underlay interface: `endpoint_id` is always 0; the reason is one
/// of `reason::NAT_*` or a drop.
pub const DIR_NAT: u8 = 7;

/// Endpoint id used for traffic seen on an interface that has no `HM_ENDPOINTS` entry.
pub const ENDPOINT_ID_UNKNOWN: u32 = 0;

/// Name of the VXLAN device every node creates (external / collect_md mode).
pub const OVERLAY_DEVICE: &str = "hm-vxlan";
/// UDP destination port of the overlay (IANA VXLAN).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes the VXLAN encapsulation adds over IPv4: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner
/// Ethernet (14). Container MTU = underlay MTU - `VXLAN_OVERHEAD`.
pub const VXLAN_OVERHEAD: u32 = 50;
/// MAC address of `hm-vxlan` on every node. The device is NOARP, so the kernel addresses every
/// frame it routes there to the device's own MAC; with the same MAC everywhere the decapsulated
/// frame is PACKET_HOST on the receiving node.
pub const OVERLAY_MAC: [u8; 6] = [0x02, 0x68, 0x6d, 0x00, 0x00, 0x01];
/// Inner source MAC that `hm_overlay_egress` writes into every frame it encapsulates. The VXLAN
/// driver drops a received frame whose source MAC equals its own device MAC (as a loop,
/// `SKB_DROP_REASON_LOCAL_MAC`), and [`OVERLAY_MAC`] is the same on every node, so the inner
/// source must differ from it.
pub const OVERLAY_SRC_MAC: [u8; 6] = [0x02, 0x68, 0x6d, 0x00, 0x00, 0x02];

/// VXLAN network identifiers. Every VNI decision (which ones are accepted, what one means) is
/// made here, so that carrying a source identity in the VNI later changes only this module.
pub mod vni {
    /// The cluster's default VNI: traffic without a more specific identity.
    pub const DEFAULT: u32 = 1;
    /// First VNI the overlay accepts.
    pub const FIRST_ALLOWED: u32 = DEFAULT;
    /// Last VNI the overlay accepts: the VNI carries the source identity (`identity::HOST` for
    /// node-originated traffic, an allocated identity for a container), so every 24-bit value
    /// but 0 is allowed.
    pub const LAST_ALLOWED: u32 = MAX;
    /// Largest VNI VXLAN can carry.
    pub const MAX: u32 = 0x00ff_ffff;

    /// Whether the overlay accepts (and may send) `vni`.
    pub const fn allowed(vni: u32) -> bool {
        vni >= FIRST_ALLOWED && vni <= LAST_ALLOWED
    }
}

/// Value of `HM_ENDPOINTS`, keyed by the host-side veth ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    pub endpoint_id: u32,
    /// `endpoint_flags::*` bits (which directions enforce policy).
    pub flags: u32,
    /// The endpoint's own security identity (0 until the daemon sets it).
    pub identity: u32,
    /// The container's IPv4 address, network byte order: packets it sends must come from this
    /// address and from `container_mac` of it. 0: not known, not checked.
    pub ip: u32,
    /// Where the endpoint's forwarded packets count in `HM_EP_METRICS` (1..=`MAX_ENDPOINTS`,
    /// handed out by the daemon; 0 is the unattached interfaces' slot). Its other counters
    /// are in `HM_METRICS`.
    pub metrics_slot: u16,
    /// `endpoint_roles::*` bits.
    pub roles: u16,
}
const _: () = assert!(size_of::<EndpointInfo>() == 20);

/// Bits of [`EndpointInfo::roles`].
pub mod endpoint_roles {
    /// The endpoint backs a service or a published port: replies it sends may need their
    /// source restored (a reverse NAT lookup). Without it a container's packets skip that
    /// lookup. Set before the endpoint's first service entry is written and kept for the
    /// endpoint's life, so connections still open after it left a service are restored.
    pub const BACKEND: u16 = 1;
}

/// Bits of [`EndpointInfo::flags`].
pub mod endpoint_flags {
    /// Packets going into the container must be allowed by an ingress rule.
    pub const INGRESS_ENFORCED: u32 = 1;
    /// Packets leaving the container must be allowed by an egress rule.
    pub const EGRESS_ENFORCED: u32 = 2;
}

/// Value of `HM_IPCACHE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcacheValue {
    pub identity: u32,
    /// The underlay IPv4 address (network byte order) of the node that holds the address, so
    /// that the encapsulation decision is this one lookup, whatever the number of nodes. 0 for
    /// an address of this node, or one the tunnels (`HM_TUNNELS`) must resolve.
    pub tunnel_endpoint: u32,
}
const _: () = assert!(size_of::<IpcacheValue>() == 8);

/// Key of `HM_POLICY`. `direction` is `DIR_FROM_CONTAINER` (egress rules) or
/// `DIR_TO_CONTAINER` (ingress rules); `identity` 0 matches any peer, `proto` 0 any protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub endpoint_id: u32,
    pub identity: u32,
    pub direction: u8,
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<PolicyKey>() == 12);

impl PolicyKey {
    pub const fn new(endpoint_id: u32, identity: u32, direction: u8, proto: u8) -> Self {
        Self {
            endpoint_id,
            identity,
            direction,
            proto,
            _pad: [0; 2],
        }
    }
}

/// Data of the `HM_POLICY_CIDR` LPM key (the first 64 bits always match exactly).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyCidrKey {
    pub endpoint_id: u32,
    pub direction: u8,
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 2],
    /// The peer prefix, network byte order.
    pub addr: u32,
}
const _: () = assert!(size_of::<PolicyCidrKey>() == 12);

/// Bits of the LPM key before [`PolicyCidrKey::addr`].
pub const POLICY_CIDR_FIXED_BITS: u32 = 64;

/// One allowed port range, host byte order, both ends included.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}
const _: () = assert!(size_of::<PortRange>() == 4);

/// Value of `HM_POLICY` and `HM_POLICY_CIDR`: the allowed destination port ranges (the first
/// `count`). Protocols without ports (ICMP, ...) match as port 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyEntry {
    pub count: u32,
    pub ranges: [PortRange; MAX_PORT_RANGES],
}
const _: () = assert!(size_of::<PolicyEntry>() == 36);

/// One record of `HM_FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRecord {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub time_ns: u64,
    /// Addresses and ports in network byte order, as in the packet (after service DNAT).
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// `DIR_FROM_CONTAINER` (egress) or `DIR_TO_CONTAINER` (ingress).
    pub direction: u8,
    /// One of `verdict::*`.
    pub verdict: u8,
    /// A code of [`reason`].
    pub reason: u8,
    pub endpoint_id: u32,
    pub peer_identity: u32,
}
const _: () = assert!(size_of::<FlowRecord>() == 32);

/// Value of `HM_MONITOR` (index 0): whether a packet trace monitor is attached and which
/// packets it wants.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorConfig {
    /// 0: no monitor; the programs skip everything else.
    pub enabled: u32,
    /// `monitor_types::*` bits.
    pub types: u32,
    /// Only packets from this identity (0: any).
    pub src_identity: u32,
    /// Only packets to this identity (0: any).
    pub dst_identity: u32,
}
const _: () = assert!(size_of::<MonitorConfig>() == 16);

/// Bits of [`MonitorConfig::types`].
pub mod monitor_types {
    /// Packets passed on.
    pub const TRACE: u32 = 1;
    /// Packets dropped.
    pub const DROP: u32 = 2;
}

/// [`TraceRecord::program`]: where the packet was decided on.
pub mod trace_program {
    /// `hm_lxc_from_container`: leaving a container.
    pub const FROM_CONTAINER: u8 = 1;
    /// `hm_lxc_to_container`: going into a container through the kernel's path.
    pub const TO_CONTAINER: u8 = 2;
    /// Host routing's local delivery (`bpf_redirect_peer`) from the overlay or another
    /// container of the node.
    pub const DELIVERED: u8 = 3;
}

/// One record of `HM_TRACE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceRecord {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub time_ns: u64,
    /// Addresses and ports in network byte order, as the program left the packet.
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// A [`trace_program`] code.
    pub program: u8,
    /// `reason::FORWARDED` or the drop reason.
    pub reason: u8,
    pub tcp_flags: u8,
    pub endpoint_id: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// Bytes of the packet.
    pub len: u32,
}
const _: () = assert!(size_of::<TraceRecord>() == 40);

/// Size of `HM_TRACE` in bytes (a power of two, a multiple of the page size).
pub const TRACE_RING_BYTES: u32 = 256 * 1024;

/// Verdicts of [`FlowRecord::verdict`].
pub mod verdict {
    pub const ALLOWED: u8 = 1;
    pub const DENIED: u8 = 2;
}

/// Key of `HM_METRICS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MetricsKey {
    pub endpoint_id: u32,
    /// One of the `DIR_*` constants.
    pub direction: u8,
    /// One of the codes in [`reason`].
    pub reason: u8,
    /// Always zero: hash maps compare keys byte by byte.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<MetricsKey>() == 8);

impl MetricsKey {
    pub const fn new(endpoint_id: u32, direction: u8, reason: u8) -> Self {
        Self {
            endpoint_id,
            direction,
            reason,
            _pad: [0; 2],
        }
    }
}

/// Value of `HM_TUNNELS`: where to send packets for one remote node's container subnet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelInfo {
    /// The remote node's underlay IPv4 address, network byte order (bytes in memory are the
    /// address octets).
    pub underlay_ip: u32,
    /// VXLAN network identifier (24 bits used), host byte order.
    pub vni: u32,
    /// Reserved for later use (e.g. encryption); 0 today.
    pub flags: u16,
    /// Always zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<TunnelInfo>() == 12);

/// Value of `HM_METRICS` (one per CPU; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsValue {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<MetricsValue>() == 16);

/// Key of `HM_SERVICES`: one slot of one frontend (VIP, port, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// The VIP, network byte order (bytes in memory are the address octets).
    pub vip: u32,
    /// The service port, network byte order.
    pub port: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// Always zero: hash maps compare keys byte by byte.
    pub _pad0: u8,
    /// 0 for the frontend's header (holding the count), `1..=count` for the backend slots.
    pub slot: u16,
    /// Always zero.
    pub _pad1: [u8; 2],
}
const _: () = assert!(size_of::<ServiceKey>() == 12);

impl ServiceKey {
    /// The key of `slot`; `vip` and `port` already in network byte order.
    pub const fn new(vip: u32, port: u16, proto: u8, slot: u16) -> Self {
        Self {
            vip,
            port,
            proto,
            _pad0: 0,
            slot,
            _pad1: [0; 2],
        }
    }
}

/// Value of `HM_SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// The backend of this slot (`HM_BACKENDS` key); 0 and unused in slot 0.
    pub backend_id: u32,
    /// Only in slot 0: the number of backend slots (0: the service has no backend and its
    /// traffic is dropped with `DROP_NO_BACKEND`).
    pub count: u16,
    /// Only in slot 0: `service_flags::*` bits.
    pub flags: u16,
}
const _: () = assert!(size_of::<ServiceValue>() == 8);

/// Value of `HM_BACKENDS`, keyed by a backend id the daemon assigns (unique per node).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// The backend's IPv4 address, network byte order.
    pub ip: u32,
    /// The backend's port, network byte order.
    pub port: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// Reserved; 0 today.
    pub flags: u8,
}
const _: () = assert!(size_of::<Backend>() == 8);

/// Key of `HM_CT`: a 5-tuple exactly as in the packet (addresses and ports in network byte
/// order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// Which table the entry belongs to: one of `ct_scope::*`.
    pub scope: u8,
    /// Always zero: hash maps compare keys byte by byte.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<CtKey>() == 16);

impl CtKey {
    pub const fn new(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> Self {
        Self {
            saddr,
            daddr,
            sport,
            dport,
            proto,
            scope: ct_scope::SERVICE,
            _pad: [0; 2],
        }
    }

    /// The same 5-tuple in another scope.
    pub const fn with_scope(self, scope: u8) -> Self {
        Self { scope, ..self }
    }
}

/// Scopes of [`CtKey::scope`]: the service entries and the policy entries of each check point
/// live side by side in `HM_CT` without colliding.
pub mod ct_scope {
    /// Service translation entries (see `ct_flags`).
    pub const SERVICE: u8 = 0;
    /// Flows the egress check of a local endpoint allowed (`hm_lxc_from_container`): the
    /// original direction, and the reply direction with `ct_flags::REPLY`.
    pub const EGRESS: u8 = 1;
    /// Flows the ingress check of a local endpoint allowed (`hm_lxc_to_container`).
    pub const INGRESS: u8 = 2;
}

/// Value of `HM_CT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// The backend the connection was sent to.
    pub backend_id: u32,
    /// The VIP the client addressed, network byte order (the source to restore on replies).
    pub rev_vip: u32,
    /// The service port the client addressed, network byte order.
    pub rev_port: u16,
    /// `ct_flags::*` bits.
    pub flags: u8,
    /// `ct_state::*` bits: what the entry's packets showed (TCP flags seen).
    pub state: u8,
    /// The address of the backend the entry was made for, network byte order (0 outside the
    /// load balancer): a tracked connection whose backend id now names another address picks
    /// a new backend.
    pub backend_ip: u32,
    /// The endpoint whose budget the entry counts against (`CT_OWNER_*` or an endpoint id).
    pub owner: u32,
    /// The backend's port, network byte order.
    pub backend_port: u16,
    /// `ct_flags::SNAT` only, network byte order: in the original entry the source port the
    /// client's packets get, in the reply entry the client's own port (the destination its
    /// replies get back).
    pub nat_port: u16,
    /// When a packet last matched the entry (CLOCK_MONOTONIC, as `bpf_ktime_get_ns`).
    pub last_seen_ns: u64,
    /// `ct_flags::SNAT` only, network byte order: in the original entry the source address the
    /// client's packets get (the node's gateway), in the reply entry the client's own address.
    pub nat_ip: u32,
    /// Always zero.
    pub _pad: u32,
}
const _: () = assert!(size_of::<CtValue>() == 40);

/// Bits of [`CtValue::state`], from the TCP flags of the packets the entry saw.
pub mod ct_state {
    pub const SYN: u8 = 1;
    /// A packet with ACK and no SYN: the handshake is done.
    pub const ESTABLISHED: u8 = 2;
    pub const FIN: u8 = 4;
    pub const RST: u8 = 8;

    /// The state bits a TCP packet with `tcp_flags` adds.
    pub const fn from_tcp_flags(tcp_flags: u8) -> u8 {
        let mut bits = 0;
        if tcp_flags & 0x02 != 0 {
            bits |= SYN;
        } else if tcp_flags & 0x10 != 0 {
            bits |= ESTABLISHED;
        }
        if tcp_flags & 0x01 != 0 {
            bits |= FIN;
        }
        if tcp_flags & 0x04 != 0 {
            bits |= RST;
        }
        bits
    }
}

/// Owner of a conntrack entry made for the node itself: no budget.
pub const CT_OWNER_NODE: u32 = 0;
/// Owner of conntrack entries made for clients outside the cluster (published ports): one
/// budget for all of them.
pub const CT_OWNER_OUTSIDE: u32 = u32::MAX;
/// Entries of `HM_CT` one owner (a local endpoint, or the outside) may hold once the table is
/// under pressure (`CT_PRESSURE`); a new connection beyond it is then dropped
/// (`DROP_CT_BUDGET`), so no container can fill the table the others need. Below the pressure
/// mark an owner may hold more: a busy published port is not cut off while the table has room.
pub const CT_OWNER_BUDGET: u32 = MAX_CT_ENTRIES / 8;
/// Entries in `HM_CT` from which the owners' budgets apply: three quarters of the table.
pub const CT_PRESSURE: u32 = MAX_CT_ENTRIES / 4 * 3;
/// The key of `HM_CT_BUDGET` that counts every entry, of any owner (the data path counts up,
/// the collector recounts).
pub const CT_TOTAL: u32 = u32::MAX - 1;

/// Seconds a conntrack entry lives without a packet, by protocol and state (the daemon's
/// collector removes it and its pair; the kernel's conntrack uses 5 days for established TCP,
/// Cilium 6 hours).
pub const CT_TCP_SYN_TIMEOUT_S: u64 = 60;
pub const CT_TCP_ESTABLISHED_TIMEOUT_S: u64 = 6 * 3600;
pub const CT_TCP_CLOSING_TIMEOUT_S: u64 = 10;
pub const CT_UDP_TIMEOUT_S: u64 = 60;
pub const CT_ICMP_TIMEOUT_S: u64 = 30;
/// How long the data path lets `last_seen_ns` lag before it writes it again (fewer writes to
/// a shared cache line).
pub const CT_TOUCH_NS: u64 = 1_000_000_000;

/// Bits of [`CtValue::flags`].
pub mod ct_flags {
    /// The connection was translated by a service (always set today).
    pub const SERVICE: u8 = 1;
    /// The entry is for the reply direction (backend -> client): restore the source to
    /// `rev_vip:rev_port`.
    pub const REPLY: u8 = 2;
    /// Hairpin: the client is its own backend. Its packets also get the source `HAIRPIN_IP`;
    /// on replies (addressed to `HAIRPIN_IP`) the destination goes back to the client, which is
    /// the reply's own source.
    pub const HAIRPIN: u8 = 4;
    /// Source NAT of a published port in `snat` mode: the client's packets get the node's
    /// gateway address and a port of their own as the source (`nat_ip`, `nat_port` of the
    /// original entry), so the backend answers through the node the client reached; replies get
    /// the published frontend as their source and the client back as their destination
    /// (`nat_ip`, `nat_port` of the reply entry).
    pub const SNAT: u8 = 8;
}

/// Bits of [`ServiceValue::flags`] (slot 0 only).
pub mod service_flags {
    /// A published frontend in `snat` mode (see `ct_flags::SNAT`).
    pub const SNAT: u16 = 1;
    /// Client-address affinity (an A/B test's variants): a new connection's slot is chosen by
    /// a hash of the client's address alone, so one client always lands in the same slot
    /// range (the daemon lays a variant's slots out together, `AFFINITY_SLOTS` of them in
    /// all). The socket-level balancer leaves such frontends to the per-packet path, which sees
    /// the client's address.
    pub const AFFINITY: u16 = 2;
}

/// Slots of a frontend with `service_flags::AFFINITY`: its shares are in permille, and a
/// client's slot (`hash % AFFINITY_SLOTS`) stays the same whatever its backends do.
pub const AFFINITY_SLOTS: u16 = 1000;

/// Where the run of slots of one group of an affinity frontend ends (exclusive), when the
/// groups up to and including it hold `taken` of `total` (their shares, in order): runs are
/// cut by cumulative share alone, so they never depend on the groups' backends. The kernel's
/// slot layout and the HTTP ingress's choice of an A/B variant both cut them here.
pub const fn affinity_run_end(taken: u64, total: u64) -> u64 {
    match (taken * AFFINITY_SLOTS as u64).checked_div(total) {
        Some(end) => end,
        None => 0,
    }
}

/// The hash of a client's address (as the packet holds it, read as a native `u32`) that picks
/// its slot on a frontend with `service_flags::AFFINITY`: the same client, the same slot, on
/// every frontend and every node, and in the HTTP ingress, which picks an A/B test's variant
/// the same way.
pub const fn client_hash(saddr: u32) -> u32 {
    // The murmur3 finalizer.
    let mut h = saddr ^ 0x9e37_79b9;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Source ports a published port's SNAT hands out (host order, inclusive): below the kernel's
/// ephemeral range (32768-60999 by default), so they do not meet the node's own connections
/// from the gateway address.
pub const SNAT_PORT_MIN: u16 = 1024;
pub const SNAT_PORT_MAX: u16 = 32767;
/// Ports SNAT tries for a new connection before it drops it (`DROP_NAT_NO_PORT`).
pub const SNAT_PROBES: u32 = 16;

/// Key of `HM_SOCK_REVNAT`: a socket (its cookie) and the backend it was sent to (network
/// byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevKey {
    pub cookie: u64,
    pub backend_ip: u32,
    pub backend_port: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<SockRevKey>() == 16);

/// Value of `HM_SOCK_REVNAT`: the VIP and port (network byte order) the socket addressed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevValue {
    pub vip: u32,
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<SockRevValue>() == 8);

/// Value of `HM_NODE_CONFIG` (index 0): what the node-originated service path and host routing
/// need. All zero until the daemon writes it: then a node-originated connection to a local
/// backend cannot be delivered (it is treated as remote and finds no tunnel), and every packet
/// takes the kernel's path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// Ifindex of the node's bridge (`hm0`): node-originated packets to a local backend are
    /// redirected there (`bpf_redirect_neigh`).
    pub bridge_ifindex: u32,
    /// The node's gateway address on the bridge, network byte order.
    pub gateway: u32,
    /// The node's container subnet, network byte order (`gateway & subnet_mask`).
    pub subnet: u32,
    /// Netmask of the node's container subnet, network byte order (bytes are the mask octets).
    pub subnet_mask: u32,
    /// `node_flags::*` bits.
    pub flags: u32,
    /// Ifindex of `hm-vxlan`: host routing redirects encapsulated frames there.
    pub vxlan_ifindex: u32,
    /// MTU of `hm-vxlan`: a frame that is larger and not GSO goes through the kernel, which
    /// answers it with the ICMP "fragmentation needed" it owes the sender.
    pub overlay_mtu: u32,
    /// MAC of the bridge: the source MAC of frames host routing delivers to a container.
    pub gateway_mac: [u8; 6],
    /// Always zero.
    pub _pad: [u8; 2],
    /// The service CIDR's network address, network byte order; every service VIP lies in it.
    pub service_net: u32,
    /// The service CIDR's netmask, network byte order; 0 (nothing written yet): no address is
    /// a service's.
    pub service_mask: u32,
    /// The node's underlay address, network byte order: the source of masqueraded packets.
    pub node_ip: u32,
}
const _: () = assert!(size_of::<NodeConfig>() == 48);

impl NodeConfig {
    /// Whether `addr` (network byte order) lies in the service CIDR.
    #[inline(always)]
    pub const fn in_service_cidr(&self, addr: u32) -> bool {
        self.service_mask != 0 && addr & self.service_mask == self.service_net
    }

    /// Sets the service CIDR to `network`/`prefix` (octets; prefix 1..=32).
    pub const fn with_service_cidr(self, network: [u8; 4], prefix: u8) -> Self {
        let mask = if prefix == 0 || prefix > 32 {
            0
        } else {
            u32::MAX << (32 - prefix as u32)
        };
        let mask = u32::from_ne_bytes(mask.to_be_bytes());
        NodeConfig {
            service_net: u32::from_ne_bytes(network) & mask,
            service_mask: mask,
            ..self
        }
    }
}

/// Bits of [`NodeConfig::flags`].
pub mod node_flags {
    /// Host routing in eBPF: the container and overlay programs deliver packets for local
    /// containers with `bpf_redirect_peer` and encapsulate packets for remote ones with
    /// `bpf_redirect` to `hm-vxlan`, instead of handing them to the kernel's bridge and IP
    /// forwarding.
    pub const HOST_ROUTING: u32 = 1;
    /// Egress NAT: packets from local containers to destinations outside `HM_NO_MASQ` leave
    /// the underlay interface from `NodeConfig::node_ip`.
    pub const MASQUERADE: u32 = 2;
    /// Some app publishes a port: the underlay's ingress translates packets to
    /// `NodeConfig::node_ip` on a published port, and the overlay's ingress remembers where
    /// backends answer clients that came through another node (`HM_PUBLISHED`).
    pub const PUBLISHED: u32 = 4;
}

/// Key of `HM_PUBLISHED`: a backend address and port (network byte order) and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublishedKey {
    pub ip: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<PublishedKey>() == 8);

/// Key of `HM_NAT`. Out entries (`dir` 0) are the container's side `{container, remote,
/// container port, remote port}`; in entries (`dir` 1) the wire's reply side `{remote, node,
/// remote port, NAT port}`. Addresses and ports in network byte order; ICMP echo uses the
/// identifier as the container / NAT "port" and 0 as the remote one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatKey {
    pub local: u32,
    pub remote: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub dir: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<NatKey>() == 16);

impl NatKey {
    pub const OUT: u8 = 0;
    pub const IN: u8 = 1;
}

/// Value of `HM_NAT`: for an out entry the NAT port (`addr` = node address), for an in entry
/// the container's address and port; both carry when the mapping last saw a packet
/// (`bpf_ktime_get_ns`) and its `nat_flags`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatValue {
    pub addr: u32,
    pub port: u16,
    pub flags: u8,
    pub _pad: u8,
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<NatValue>() == 16);

/// Bits of [`NatValue::flags`].
pub mod nat_flags {
    /// A FIN went through: the mapping is freed once the connection has been quiet for
    /// `NAT_CLOSING_TIMEOUT_S`.
    pub const CLOSING: u8 = 1;
}

/// Seconds a masqueraded mapping lives without a packet, by protocol and state (the kernel's
/// conntrack uses 5 days for established TCP; a NAT table frees them sooner).
pub const NAT_TCP_TIMEOUT_S: u64 = 7200;
pub const NAT_CLOSING_TIMEOUT_S: u64 = 10;
pub const NAT_UDP_TIMEOUT_S: u64 = 60;
pub const NAT_ICMP_TIMEOUT_S: u64 = 30;

/// The MAC of a container's eth0, fixed by its IPv4 address (`0a:58:` and the four octets,
/// locally administered). The daemon gives every container this MAC, so the data plane knows
/// it from the address alone.
pub const fn container_mac(ip: [u8; 4]) -> [u8; 6] {
    [0x0a, 0x58, ip[0], ip[1], ip[2], ip[3]]
}

/// Verdict reasons recorded in [`MetricsKey::reason`].
///
/// Numbering: 0..=127 are non-drop outcomes, 128..=255 are drop reasons (as in cilium's
/// `drop_reasons.h`, `reason >= 128` means the packet was dropped). A code, once published,
/// keeps its meaning forever; a retired code is commented out, never reused.
pub mod reason {
    /// The packet was passed on.
    pub const FORWARDED: u8 = 0;
    /// (`DIR_SERVICE`) A packet to a service VIP:port had its destination rewritten to a
    /// backend.
    pub const SERVICE_TRANSLATED: u8 = 1;
    /// (`DIR_SERVICE`) A reply from a backend had its source restored to the VIP:port.
    pub const SERVICE_REVERSE_TRANSLATED: u8 = 2;
    /// (`DIR_SERVICE`) A new connection to a service: a backend was picked and the conntrack
    /// entries were created (the packet is also counted as `SERVICE_TRANSLATED`).
    pub const SERVICE_NEW_CONNECTION: u8 = 3;
    /// (Flow events only, never in `HM_METRICS`) A new flow was allowed: by a rule, by an
    /// endpoint that enforces nothing in that direction, or by an always-allowed exception.
    pub const POLICY_ALLOWED: u8 = 4;
    /// A socket's connect (or a datagram's send) to a VIP:port was sent to a backend by the
    /// cgroup programs: the connection's packets need no translation.
    pub const SERVICE_SOCKET_TRANSLATED: u8 = 5;
    /// (`DIR_NAT`) A packet from a container left with the node's address as its source.
    pub const NAT_MASQUERADED: u8 = 6;
    /// (`DIR_NAT`) A reply to a masqueraded packet had its destination restored.
    pub const NAT_REVERSED: u8 = 7;
    /// (`DIR_NAT`) A new mapping was made (the packet is also counted as `NAT_MASQUERADED`).
    pub const NAT_NEW_MAPPING: u8 = 8;
    /// (Flow events only) A new flow of an endpoint no policy selects: a TCP SYN, or the first
    /// packet of a UDP or ICMP flow (`HM_FLOW_SEEN`).
    pub const UNPOLICED: u8 = 9;
    /// (`DIR_FROM_CONTAINER`) A TCP segment with RST set that the container sent and that was
    /// passed on (also counted as `FORWARDED`): a canary's analysis reads it.
    pub const TCP_RESET_SENT: u8 = 10;
    /// (`DIR_TO_CONTAINER`) A TCP SYN (without ACK) delivered into the container (also counted
    /// as `FORWARDED`).
    pub const TCP_SYN_RECEIVED: u8 = 11;
    /// (`DIR_FROM_CONTAINER`) A TCP SYN-ACK the container sent (also counted as `FORWARDED`):
    /// the SYNs it received and answered with neither this nor a reset timed out at their
    /// clients, which a canary's analysis reads.
    pub const TCP_SYNACK_SENT: u8 = 12;
    /// First drop reason; every code at or above this one is a drop. Drop reasons are
    /// added here (128, 129, ...) as the programs that produce them land.
    pub const DROP_FIRST: u8 = 128;
    /// Not an IPv4 packet where only IPv4 is carried (the overlay is IPv4-only).
    pub const DROP_NOT_IPV4: u8 = 128;
    /// IPv4 packet too short for its header, or with a bad version or header length.
    pub const DROP_MALFORMED_IPV4: u8 = 129;
    /// No `HM_TUNNELS` entry covers the destination.
    pub const DROP_NO_TUNNEL: u8 = 130;
    /// Setting or reading the tunnel metadata failed (e.g. a packet on the VXLAN device's
    /// ingress without tunnel metadata).
    pub const DROP_TUNNEL_KEY: u8 = 131;
    /// The VNI is outside the allowed range (`vni::allowed`).
    pub const DROP_UNKNOWN_VNI: u8 = 132;
    /// UDP to the VXLAN port, but truncated (VXLAN header or inner Ethernet missing) or with
    /// a VXLAN flags word other than "I set, every reserved bit zero".
    pub const DROP_MALFORMED_VXLAN: u8 = 133;
    /// Rewriting packet bytes failed.
    pub const DROP_REWRITE: u8 = 134;
    /// A packet to a service VIP:port whose service has no backend (count 0, or a slot or
    /// backend entry missing).
    pub const DROP_NO_BACKEND: u8 = 135;
    /// Creating the conntrack entries of a new service connection failed.
    pub const DROP_CT_FULL: u8 = 136;
    /// TCP or UDP to the service CIDR that cannot be translated: an IPv4 fragment (only the
    /// first one carries the ports) or a TCP/UDP header cut short.
    pub const DROP_SERVICE_UNSUPPORTED: u8 = 137;
    /// Denied by network policy: the endpoint enforces policy in that direction, the packet
    /// belongs to no established flow and no rule allows it.
    pub const DROP_POLICY: u8 = 138;
    /// A container sent a packet from an address or MAC that is not its own.
    pub const DROP_SPOOFED: u8 = 139;
    /// Egress NAT found no free port for a new mapping (every probe taken).
    pub const DROP_NAT_NO_PORT: u8 = 140;
    /// Egress NAT could not store a new mapping (`HM_NAT` full).
    pub const DROP_NAT_FULL: u8 = 141;
    /// A packet egress NAT cannot translate: a protocol other than TCP, UDP and ICMP echo, an
    /// IPv4 fragment, or a header cut short.
    pub const DROP_NAT_UNSUPPORTED: u8 = 142;
    /// Not IPv4 and not ARP, from or to a container (IPv6 is not carried yet).
    pub const DROP_NOT_IPV4_CONTAINER: u8 = 143;
    /// A new connection beyond its owner's conntrack budget (`CT_OWNER_BUDGET`).
    pub const DROP_CT_BUDGET: u8 = 144;

    /// The name of a code, for logs and the API (`"unknown"` for codes this build does not
    /// know).
    pub const fn name(reason: u8) -> &'static str {
        match reason {
            FORWARDED => "forwarded",
            SERVICE_TRANSLATED => "service_translated",
            SERVICE_REVERSE_TRANSLATED => "service_reverse_translated",
            SERVICE_NEW_CONNECTION => "service_new_connection",
            POLICY_ALLOWED => "policy_allowed",
            SERVICE_SOCKET_TRANSLATED => "service_socket_translated",
            NAT_MASQUERADED => "nat_masqueraded",
            NAT_REVERSED => "nat_reversed",
            NAT_NEW_MAPPING => "nat_new_mapping",
            UNPOLICED => "no_policy",
            TCP_RESET_SENT => "tcp_reset_sent",
            TCP_SYN_RECEIVED => "tcp_syn_received",
            TCP_SYNACK_SENT => "tcp_synack_sent",
            DROP_NOT_IPV4 => "drop_not_ipv4",
            DROP_MALFORMED_IPV4 => "drop_malformed_ipv4",
            DROP_NO_TUNNEL => "drop_no_tunnel",
            DROP_TUNNEL_KEY => "drop_tunnel_key",
            DROP_UNKNOWN_VNI => "drop_unknown_vni",
            DROP_MALFORMED_VXLAN => "drop_malformed_vxlan",
            DROP_REWRITE => "drop_rewrite",
            DROP_NO_BACKEND => "drop_no_backend",
            DROP_CT_FULL => "drop_ct_full",
            DROP_SERVICE_UNSUPPORTED => "drop_service_unsupported",
            DROP_POLICY => "drop_policy",
            DROP_SPOOFED => "drop_spoofed",
            DROP_NAT_NO_PORT => "drop_nat_no_port",
            DROP_NAT_FULL => "drop_nat_full",
            DROP_NAT_UNSUPPORTED => "drop_nat_unsupported",
            DROP_NOT_IPV4_CONTAINER => "drop_not_ipv4_container",
            DROP_CT_BUDGET => "drop_ct_budget",
            _ => "unknown",
        }
    }

    /// Whether `reason` is a drop reason.
    pub const fn is_drop(reason: u8) -> bool {
        reason >= DROP_FIRST
    }
}

#[cfg(feature = "user")]
mod user {
    use super::{
        Backend, CtKey, CtValue, EndpointInfo, FlowRecord, IpcacheValue, MetricsKey, MetricsValue,
        MonitorConfig, NatKey, NatValue, NodeConfig, PolicyCidrKey, PolicyEntry, PolicyKey,
        PortRange, PublishedKey, ServiceKey, ServiceValue, SockRevKey, SockRevValue, TraceRecord,
        TunnelInfo,
    };

    // SAFETY (the seven below): #[repr(C)], integer fields (or arrays of such structs) with
    // any padding as explicit fields (sizes asserted above); every bit pattern is valid.
    unsafe impl aya::Pod for IpcacheValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyCidrKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PortRange {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for MonitorConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TraceRecord {}

    // SAFETY: EndpointInfo is #[repr(C)], made only of u32 fields, has no padding (size
    // asserted above) and every bit pattern is a valid value.
    unsafe impl aya::Pod for EndpointInfo {}
    // SAFETY: MetricsKey is #[repr(C)], its padding is an explicit field (size asserted
    // above), and every bit pattern of its integer fields is valid.
    unsafe impl aya::Pod for MetricsKey {}
    // SAFETY: MetricsValue is #[repr(C)], two u64 fields, no padding, any bit pattern valid.
    unsafe impl aya::Pod for MetricsValue {}
    // SAFETY: TunnelInfo is #[repr(C)], integer fields with the padding as an explicit field
    // (size asserted above); every bit pattern is valid.
    unsafe impl aya::Pod for TunnelInfo {}
    // SAFETY: ServiceKey is #[repr(C)], integer fields with the padding as explicit fields
    // (size asserted above); every bit pattern is valid.
    unsafe impl aya::Pod for ServiceKey {}
    // SAFETY: ServiceValue is #[repr(C)], integer fields without padding (size asserted above).
    unsafe impl aya::Pod for ServiceValue {}
    // SAFETY: Backend is #[repr(C)], integer fields without padding (size asserted above).
    unsafe impl aya::Pod for Backend {}
    // SAFETY: CtKey is #[repr(C)], integer fields with the padding as an explicit field (size
    // asserted above); every bit pattern is valid.
    unsafe impl aya::Pod for CtKey {}
    // SAFETY: CtValue is #[repr(C)], integer fields with the padding as an explicit field (size
    // asserted above); every bit pattern is valid.
    unsafe impl aya::Pod for CtValue {}
    // SAFETY: SockRevKey is #[repr(C)], integer fields with the padding as an explicit field
    // (size asserted above); every bit pattern is valid.
    unsafe impl aya::Pod for SockRevKey {}
    // SAFETY: SockRevValue is #[repr(C)], integer fields with the padding as an explicit field
    // (size asserted above); every bit pattern is valid.
    unsafe impl aya::Pod for SockRevValue {}
    // SAFETY: NodeConfig is #[repr(C)], u32 fields and a byte array with the padding as an
    // explicit field (size asserted above); any bit pattern is valid.
    unsafe impl aya::Pod for NodeConfig {}
    // SAFETY: NatKey and NatValue are #[repr(C)], integer fields with the padding as explicit
    // fields (sizes asserted above); any bit pattern is valid.
    unsafe impl aya::Pod for NatKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NatValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PublishedKey {}
}

#[cfg(test)]
mod tests {
    use super::{reason, vni};

    #[test]
    fn drop_reasons_are_distinct_drops() {
        let codes = [
            reason::DROP_NOT_IPV4,
            reason::DROP_MALFORMED_IPV4,
            reason::DROP_NO_TUNNEL,
            reason::DROP_TUNNEL_KEY,
            reason::DROP_UNKNOWN_VNI,
            reason::DROP_MALFORMED_VXLAN,
            reason::DROP_REWRITE,
            reason::DROP_NO_BACKEND,
            reason::DROP_CT_FULL,
            reason::DROP_SERVICE_UNSUPPORTED,
            reason::DROP_POLICY,
            reason::DROP_SPOOFED,
            reason::DROP_NAT_NO_PORT,
            reason::DROP_NAT_FULL,
            reason::DROP_NAT_UNSUPPORTED,
            reason::DROP_NOT_IPV4_CONTAINER,
            reason::DROP_CT_BUDGET,
        ];
        for (i, a) in codes.iter().enumerate() {
            assert!(reason::is_drop(*a));
            assert!(codes[i + 1..].iter().all(|b| a != b), "code {a} reused");
        }
        assert!(!reason::is_drop(reason::FORWARDED));
        for code in [
            reason::SERVICE_TRANSLATED,
            reason::SERVICE_REVERSE_TRANSLATED,
            reason::SERVICE_NEW_CONNECTION,
            reason::POLICY_ALLOWED,
            reason::SERVICE_SOCKET_TRANSLATED,
            reason::NAT_MASQUERADED,
            reason::NAT_REVERSED,
            reason::NAT_NEW_MAPPING,
            reason::UNPOLICED,
            reason::TCP_RESET_SENT,
            reason::TCP_SYN_RECEIVED,
            reason::TCP_SYNACK_SENT,
        ] {
            assert!(!reason::is_drop(code));
        }
    }

    #[test]
    fn service_cidr_membership() {
        use super::{NodeConfig, SERVICE_CIDR, SERVICE_CIDR_PREFIX};
        let ip = |a: [u8; 4]| u32::from_ne_bytes(a);
        let unset = NodeConfig::default();
        assert!(!unset.in_service_cidr(ip([10, 96, 0, 10])));
        assert!(!unset.in_service_cidr(0));
        let c = unset.with_service_cidr(SERVICE_CIDR, SERVICE_CIDR_PREFIX);
        assert!(c.in_service_cidr(ip([10, 96, 0, 10])));
        assert!(c.in_service_cidr(ip([10, 96, 255, 255])));
        assert!(!c.in_service_cidr(ip([10, 97, 0, 10])));
        assert!(!c.in_service_cidr(ip([10, 244, 1, 2])));
        let c = unset.with_service_cidr([172, 20, 4, 0], 22);
        assert!(c.in_service_cidr(ip([172, 20, 7, 255])));
        assert!(!c.in_service_cidr(ip([172, 20, 8, 0])));
        assert!(!c.in_service_cidr(ip([172, 20, 3, 255])));
        assert!(
            unset
                .with_service_cidr([1, 2, 3, 4], 32)
                .in_service_cidr(ip([1, 2, 3, 4]))
        );
    }

    #[test]
    fn every_identity_is_an_allowed_vni() {
        use super::identity;
        assert!(vni::allowed(vni::DEFAULT));
        assert!(vni::allowed(identity::HOST));
        assert!(vni::allowed(identity::WORLD));
        assert!(vni::allowed(identity::FIRST_ALLOCATED));
        assert!(vni::allowed(identity::MAX));
        assert!(!vni::allowed(0));
        assert!(!vni::allowed(vni::MAX + 1));
    }

    #[test]
    fn reason_names_are_distinct() {
        let names: [&str; 4] = [
            reason::name(reason::FORWARDED),
            reason::name(reason::POLICY_ALLOWED),
            reason::name(reason::DROP_POLICY),
            reason::name(reason::DROP_CT_FULL),
        ];
        assert_eq!(names[2], "drop_policy");
        assert_eq!(reason::name(200), "unknown");
        for (i, a) in names.iter().enumerate() {
            assert!(names[i + 1..].iter().all(|b| a != b));
        }
    }
}
