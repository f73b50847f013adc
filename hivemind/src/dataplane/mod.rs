//! The eBPF data plane: loads the programs built from `hivemind-ebpf`, attaches them to the
//! host-side veth of each container, to the VXLAN device and the underlay interface (see
//! `overlay`), and reads and writes their maps.
//!
//! Invariant: this module is the only place in the daemon that calls aya.
//!
//! Attachments are TCX, XDP and cgroup links (TCX, kernel >= 6.6, needs no clsact qdisc).
//! Loaded with [`Dataplane::load`] they belong to this process's file descriptors and detach
//! when it ends (tests, benchmarks); the daemon loads with [`Dataplane::load_pinned`], which
//! pins maps and links on bpffs so they outlive it (see `pins`).

mod conntrack;
mod counters;
mod dump;
mod error;
mod metrics;
mod monitor;
mod nat;
mod overlay;
mod pins;
mod policy;
mod pressure;
mod publish;
mod routing;
mod services;
mod socket;

use std::{
    collections::HashMap as StdHashMap,
    ffi::CStr,
    io,
    net::Ipv4Addr,
    os::fd::{AsFd as _, AsRawFd as _, RawFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, LpmTrie, MapData, MapError},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType, Xdp,
        tc::{SchedClassifierLink, TcAttachOptions},
    },
};
use hivemind_common::{
    EndpointInfo, MAP_ENDPOINTS, MAP_LXC, MAP_TUNNELS, NodeConfig, SERVICE_CIDR,
    SERVICE_CIDR_PREFIX, TunnelInfo, endpoint_flags, endpoint_roles,
};

pub use conntrack::{CtCollected, expired as conntrack_expired, pair_key as conntrack_pair};
pub use counters::{Counter, EndpointCounters, OverlayCounters, ServiceCounters};
pub use dump::PolicyDecision;
pub use error::DataplaneError;
pub use monitor::{KernelLine, TraceEvent};
pub use nat::{NatCounters, NatMapping, monotonic_now};
pub use overlay::{UnderlayHook, UnderlayProgram};
pub use pins::Pins;
use pins::{HeldLink, PINNED_MAPS};
pub use policy::{FlowEvent, FlowReason, IpcacheEntry, entry_counts as policy_entry_counts};
pub use pressure::MapPressure;
pub use services::{ServiceBackend, affinity_slots, weighted_slots};
pub use socket::{
    PROG_SOCK_CONNECT4, PROG_SOCK_GETPEERNAME4, PROG_SOCK_RECVMSG4, PROG_SOCK_SENDMSG4,
};

/// TC ingress of a container's host-side veth (packets leaving the container).
pub const PROG_FROM_CONTAINER: &str = "hm_lxc_from_container";
/// TC egress of a container's host-side veth (packets going into the container).
pub const PROG_TO_CONTAINER: &str = "hm_lxc_to_container";
/// TC egress of the VXLAN device (sets the tunnel key of the destination node).
pub const PROG_OVERLAY_EGRESS: &str = "hm_overlay_egress";
/// TC ingress of the VXLAN device (checks decapsulated packets).
pub const PROG_OVERLAY_INGRESS: &str = "hm_overlay_ingress";
/// XDP on the node's underlay interface (early validation of VXLAN packets).
pub const PROG_XDP_UNDERLAY: &str = "hm_xdp_underlay";
/// TC ingress alternative to `PROG_XDP_UNDERLAY` (same checks), for veth underlays.
pub const PROG_TC_UNDERLAY: &str = "hm_tc_underlay";
/// TC egress of the node's underlay interface (egress NAT of container traffic).
pub const PROG_NAT_EGRESS: &str = "hm_nat_egress";
/// TC ingress of the underlay where XDP validates the overlay (reverse NAT of replies).
pub const PROG_NAT_INGRESS: &str = "hm_nat_ingress";
/// Tail-called by the container programs to explain a drop in words (`aya-log`) while a monitor
/// is attached; never attached itself.
pub const PROG_EXPLAIN: &str = "hm_tc_explain";
/// Empty TC program, the benchmark floor.
pub const PROG_TC_PASS: &str = "hm_tc_pass";
/// `hm_tc_pass` plus the trace monitor's switch (benchmarks only).
pub const PROG_TC_MONITOR_SWITCH: &str = "hm_tc_monitor_switch";
/// Empty XDP program, the benchmark floor.
pub const PROG_XDP_PASS: &str = "hm_xdp_pass";

/// The object built by `build.rs` from `hivemind-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hivemind-ebpf"));
/// The benchmarks' floor (`PROG_TC_PASS`, `PROG_TC_MONITOR_SWITCH`, `PROG_XDP_PASS`), an object
/// of its own: the daemon never loads it.
static FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hivemind-floor"));

/// The two TC links of one endpoint; dropping them detaches the programs.
struct EndpointLinks {
    endpoint_id: u32,
    /// The container's address (its `HM_LXC` entry).
    ip: Ipv4Addr,
    /// Whether its `HM_ENDPOINTS` entry has the `BACKEND` role (so `mark_backends` need not
    /// look).
    backend: bool,
    from_container: HeldLink,
    to_container: HeldLink,
}

impl EndpointLinks {
    /// Detaches both programs.
    fn release(self) {
        self.from_container.release();
        self.to_container.release();
    }
}

/// The loaded programs, their maps and the links this process owns.
pub struct Dataplane {
    // Field order matters only for tidiness: links drop (detach) before the programs unload.
    links: StdHashMap<u32, EndpointLinks>,
    overlay: Option<overlay::OverlayLinks>,
    /// Socket load balancing, once attached.
    socket: Option<socket::SocketLb>,
    endpoints: HashMap<MapData, u32, EndpointInfo>,
    /// Container address (network order) -> host veth ifindex, for host routing.
    lxc: HashMap<MapData, u32, u32>,
    /// The counters' maps and the endpoints' slots in them.
    metrics: metrics::Metrics,
    /// Key data: IPv4 network in network byte order (see `hivemind_common::MAP_TUNNELS`).
    tunnels: LpmTrie<MapData, u32, TunnelInfo>,
    /// Service frontends, backends, conntrack and node configuration.
    services: services::ServiceMaps,
    /// Ipcache, policy rules and flow events.
    policy: policy::PolicyMaps,
    /// Egress NAT mappings and exclusions.
    nat: nat::NatMaps,
    /// Local backends' published ports.
    publish: publish::PublishMaps,
    /// The packet trace monitor's switch and records.
    monitor: monitor::MonitorMaps,
    /// Where maps and links are pinned (the daemon); `None`: they go with this process.
    pins: Option<Pins>,
    /// A newly attached endpoint denies everything until its policy is written.
    deny_new: bool,
    ebpf: Ebpf,
    /// The benchmarks' floor, once `load_floor_programs` loaded it.
    floor: Option<Ebpf>,
}

impl Dataplane {
    /// Loads the embedded object and its programs into the kernel; attaches nothing. Maps and
    /// links belong to this process.
    pub fn load() -> Result<Self, DataplaneError> {
        Self::load_with(None)
    }

    /// Loads with maps and links pinned under `pins`: the maps an earlier daemon pinned there
    /// are taken over (when their layout still matches), and what this process writes is read
    /// back from them, so programs and state survive the process.
    pub fn load_pinned(pins: Pins) -> Result<Self, DataplaneError> {
        Self::load_with(Some(pins))
    }

    fn load_with(pins: Option<Pins>) -> Result<Self, DataplaneError> {
        if OBJECT.is_empty() {
            return Err(DataplaneError::ObjectMissing);
        }
        bump_memlock_rlimit();
        let object_error = |e| DataplaneError::Object(Box::new(e));
        let mut reused = Vec::new();
        let mut ebpf = match &pins {
            None => Ebpf::load(OBJECT).map_err(object_error)?,
            Some(pins) => {
                // The object's own maps first, to compare the pinned ones with.
                let fresh = Ebpf::load(OBJECT).map_err(object_error)?;
                reused = pins.drop_incompatible_maps(&fresh)?;
                drop(fresh);
                let paths: Vec<(&str, std::path::PathBuf)> = PINNED_MAPS
                    .iter()
                    .map(|name| (*name, pins.map(name)))
                    .collect();
                let mut loader = EbpfLoader::new();
                for (name, path) in &paths {
                    loader.map_pin_path(name, path.as_path());
                }
                loader.load(OBJECT).map_err(object_error)?
            }
        };
        for program in [
            PROG_FROM_CONTAINER,
            PROG_TO_CONTAINER,
            PROG_OVERLAY_EGRESS,
            PROG_OVERLAY_INGRESS,
            PROG_TC_UNDERLAY,
            PROG_NAT_EGRESS,
            PROG_NAT_INGRESS,
            PROG_EXPLAIN,
        ] {
            let loaded = classifier(&mut ebpf, program)?;
            load_program(program, || loaded.load())?;
        }
        let loaded = xdp(&mut ebpf, PROG_XDP_UNDERLAY)?;
        load_program(PROG_XDP_UNDERLAY, || loaded.load())?;

        let endpoints = ebpf
            .take_map(MAP_ENDPOINTS)
            .ok_or(DataplaneError::MapMissing { map: MAP_ENDPOINTS })?;
        let endpoints =
            HashMap::try_from(endpoints).map_err(DataplaneError::map(MAP_ENDPOINTS, "opening"))?;
        let lxc = ebpf
            .take_map(MAP_LXC)
            .ok_or(DataplaneError::MapMissing { map: MAP_LXC })?;
        let lxc = HashMap::try_from(lxc).map_err(DataplaneError::map(MAP_LXC, "opening"))?;
        let metrics = metrics::Metrics::take(&mut ebpf)?;
        let tunnels = ebpf
            .take_map(MAP_TUNNELS)
            .ok_or(DataplaneError::MapMissing { map: MAP_TUNNELS })?;
        let tunnels =
            LpmTrie::try_from(tunnels).map_err(DataplaneError::map(MAP_TUNNELS, "opening"))?;
        let services = services::ServiceMaps::take(&mut ebpf)?;
        let policy = policy::PolicyMaps::take(&mut ebpf)?;
        let nat = nat::NatMaps::take(&mut ebpf)?;
        let publish = publish::PublishMaps::take(&mut ebpf)?;
        let monitor = monitor::MonitorMaps::take(&mut ebpf)?;
        let mut dataplane = Self {
            links: StdHashMap::new(),
            overlay: None,
            socket: None,
            endpoints,
            lxc,
            metrics,
            tunnels,
            services,
            policy,
            nat,
            publish,
            monitor,
            pins,
            deny_new: false,
            ebpf,
            floor: None,
        };
        if reused.contains(&hivemind_common::MAP_NODE_CONFIG) {
            // The running programs read it: it stays as the last daemon left it until this one
            // writes its own.
        } else {
            // The default service CIDR until `set_service_cidr` says otherwise.
            let config = NodeConfig::default().with_service_cidr(SERVICE_CIDR, SERVICE_CIDR_PREFIX);
            dataplane.write_node_config(config)?;
        }
        if !reused.is_empty() {
            dataplane.restore()?;
            tracing::info!(maps = reused.len(), "took over the pinned data-plane maps");
        }
        Ok(dataplane)
    }

    /// Attaches both TC programs to the host-side veth `ifindex` (of the calling thread's network
    /// namespace) and records it as `endpoint_id`, the container behind it holding `ip` (where
    /// host routing delivers). Attaching an ifindex again replaces its links and entries.
    pub fn attach_endpoint(
        &mut self,
        ifindex: u32,
        endpoint_id: u32,
        ip: Ipv4Addr,
    ) -> Result<(), DataplaneError> {
        let name = interface_name(ifindex)?;
        // Replace, never duplicate. This process's own links run the same programs, which a
        // hook takes once: they go first. Links an earlier daemon pinned go once the new ones
        // are attached and take their pins, so the interface is never without a program.
        if let Some(old) = self.links.remove(&ifindex) {
            if old.ip != ip {
                self.remove_lxc(old.ip, ifindex)?;
            }
            old.release();
        }
        let deny = endpoint_flags::INGRESS_ENFORCED | endpoint_flags::EGRESS_ENFORCED;
        // The map entry goes in first so the first packets already count for the endpoint (and
        // meet the endpoint's policy if `set_endpoint_policy` ran before; the identity is kept
        // when an ifindex is attached again).
        let (identity, roles) = match self.endpoints.get(&ifindex, 0) {
            Ok(old) if old.endpoint_id == endpoint_id => (old.identity, old.roles),
            _ => (0, 0),
        };
        let roles = if self.backs_service(ip) {
            roles | endpoint_roles::BACKEND
        } else {
            roles
        };
        let metrics_slot = self.metrics.slot_for(endpoint_id)?;
        let info = EndpointInfo {
            endpoint_id,
            // A new endpoint denies everything until its policy is written, where asked.
            flags: self
                .policy
                .flags
                .get(&endpoint_id)
                .copied()
                .unwrap_or(if self.deny_new { deny } else { 0 }),
            identity,
            ip: u32::from_ne_bytes(ip.octets()),
            metrics_slot,
            roles,
        };
        self.endpoints
            .insert(ifindex, info, 0)
            .map_err(DataplaneError::map(MAP_ENDPOINTS, "inserting"))?;
        let attached = self
            .attach_tc(PROG_FROM_CONTAINER, &name, ifindex, TcAttachType::Ingress)
            .and_then(|from| self.hold(&format!("lxc-{ifindex}-in"), from))
            .and_then(|from| {
                let to = self.attach_tc(PROG_TO_CONTAINER, &name, ifindex, TcAttachType::Egress)?;
                let to = self.hold(&format!("lxc-{ifindex}-out"), to)?;
                Ok((from, to))
            });
        let attached = attached.and_then(|links| {
            self.set_lxc(ip, ifindex)?;
            Ok(links)
        });
        match attached {
            Ok((from, to)) => {
                self.links.insert(
                    ifindex,
                    EndpointLinks {
                        endpoint_id,
                        ip,
                        backend: roles & endpoint_roles::BACKEND != 0,
                        from_container: from,
                        to_container: to,
                    },
                );
                tracing::debug!(ifindex, endpoint_id, interface = %name, "endpoint attached");
                Ok(())
            }
            Err(e) => {
                // Leave nothing half-attached; the ingress link (if any) was dropped above.
                if let Err(remove) = self.endpoints.remove(&ifindex) {
                    tracing::warn!(ifindex, error = %remove, "removing endpoint entry after failed attach");
                }
                Err(e)
            }
        }
    }

    /// Gives the local endpoints among `ips` the `BACKEND` role (replies they send are looked
    /// up for reverse NAT), before a frontend sends them anything; kept for the endpoint's life.
    fn mark_backends(
        &mut self,
        ips: impl IntoIterator<Item = Ipv4Addr>,
    ) -> Result<(), DataplaneError> {
        let ips: std::collections::HashSet<Ipv4Addr> = ips.into_iter().collect();
        let unmarked: Vec<u32> = self
            .links
            .iter()
            .filter(|(_, links)| !links.backend && ips.contains(&links.ip))
            .map(|(&ifindex, _)| ifindex)
            .collect();
        for ifindex in unmarked {
            match self.endpoints.get(&ifindex, 0) {
                Ok(info) if info.roles & endpoint_roles::BACKEND == 0 => {
                    let info = EndpointInfo {
                        roles: info.roles | endpoint_roles::BACKEND,
                        ..info
                    };
                    self.endpoints
                        .insert(ifindex, info, 0)
                        .map_err(DataplaneError::map(MAP_ENDPOINTS, "updating"))?;
                }
                Ok(_) => {}
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(DataplaneError::map(MAP_ENDPOINTS, "looking up")(e)),
            }
            if let Some(links) = self.links.get_mut(&ifindex) {
                links.backend = true;
            }
        }
        Ok(())
    }

    /// Whether both programs are attached to `ifindex` for `endpoint_id` and its map entry is in
    /// place: then `attach_endpoint` has nothing to do.
    pub fn is_attached(&self, ifindex: u32, endpoint_id: u32) -> bool {
        self.links
            .get(&ifindex)
            .is_some_and(|links| links.endpoint_id == endpoint_id)
            && matches!(self.endpoints.get(&ifindex, 0), Ok(info) if info.endpoint_id == endpoint_id)
    }

    /// Detaches the programs from `ifindex` and forgets the endpoint's map entry and counters.
    /// Succeeds if the endpoint is already gone.
    pub fn detach_endpoint(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        let removed = self.links.remove(&ifindex);
        if let Some(links) = &removed {
            self.remove_lxc(links.ip, ifindex)?;
        }
        let from_links = removed.map(|links| {
            let id = links.endpoint_id;
            links.release();
            id
        });
        if let Some(pins) = &self.pins {
            // A link an earlier daemon pinned for this interface.
            for direction in ["in", "out"] {
                pins::release_pin(&pins.link(&format!("lxc-{ifindex}-{direction}")));
            }
        }
        let endpoint_id = match self.endpoints.get(&ifindex, 0) {
            Ok(info) => Some(info.endpoint_id),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(DataplaneError::map(MAP_ENDPOINTS, "looking up")(e)),
        }
        .or(from_links);
        match self.endpoints.remove(&ifindex) {
            Err(e) if !is_not_found(&e) => {
                return Err(DataplaneError::map(MAP_ENDPOINTS, "removing")(e));
            }
            _ => {}
        }
        let Some(endpoint_id) = endpoint_id else {
            return Ok(());
        };
        // Another interface may still carry the same endpoint id: keep its counters then.
        if self.links.values().any(|l| l.endpoint_id == endpoint_id) {
            return Ok(());
        }
        self.metrics.forget_endpoint(endpoint_id)?;
        tracing::debug!(ifindex, endpoint_id, "endpoint detached");
        Ok(())
    }

    /// The counters of `endpoint_id`, summed over CPUs.
    pub fn endpoint_counters(&self, endpoint_id: u32) -> Result<EndpointCounters, DataplaneError> {
        let mut counters = EndpointCounters::default();
        self.metrics
            .each_of_endpoint(endpoint_id, |key, value| counters.add(key, value))?;
        Ok(counters)
    }

    /// The counters of every endpoint, summed over CPUs, in one pass over the map (what the
    /// per-second traffic sampler and `/metrics` read, whatever the number of containers).
    pub fn all_endpoint_counters(
        &self,
    ) -> Result<std::collections::BTreeMap<u32, EndpointCounters>, DataplaneError> {
        let mut all = std::collections::BTreeMap::<u32, EndpointCounters>::new();
        self.metrics.each_of_endpoints(|key, value| {
            all.entry(key.endpoint_id).or_default().add(key, value)
        })?;
        Ok(all)
    }

    /// The TCP resets `endpoint_id` sent, the SYNs it received and the SYN-ACKs it sent,
    /// summed over CPUs (the other fields stay 0): three lookups, as a rollout's analysis reads
    /// them for each of its containers on every pass.
    pub fn tcp_events(&self, endpoint_id: u32) -> Result<EndpointCounters, DataplaneError> {
        use hivemind_common::{DIR_FROM_CONTAINER, DIR_TO_CONTAINER, MetricsKey, reason};
        let mut events = EndpointCounters::default();
        for (direction, event) in [
            (DIR_FROM_CONTAINER, reason::TCP_RESET_SENT),
            (DIR_TO_CONTAINER, reason::TCP_SYN_RECEIVED),
            (DIR_FROM_CONTAINER, reason::TCP_SYNACK_SENT),
        ] {
            let key = MetricsKey::new(endpoint_id, direction, event);
            if let Some(value) = self.metrics.hashed(&key)? {
                events.add(&key, &value);
            }
        }
        Ok(events)
    }

    /// Whether `HM_ENDPOINTS` has an entry for `ifindex`.
    pub fn has_endpoint_entry(&self, ifindex: u32) -> Result<bool, DataplaneError> {
        match self.endpoints.get(&ifindex, 0) {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(DataplaneError::map(MAP_ENDPOINTS, "looking up")(e)),
        }
    }

    /// Loads the floor object's programs (the empty ones the per-packet benchmarks and tests
    /// measure against, and the monitor's switch alone) for `program_fd_for_test`; the daemon
    /// never loads them.
    #[doc(hidden)]
    pub fn load_floor_programs(&mut self) -> Result<(), DataplaneError> {
        let load_error = |program| {
            move |e| DataplaneError::ProgramLoad {
                program,
                source: Box::new(e),
            }
        };
        if FLOOR_OBJECT.is_empty() {
            return Err(DataplaneError::ObjectMissing);
        }
        let mut floor =
            Ebpf::load(FLOOR_OBJECT).map_err(|e| DataplaneError::Object(Box::new(e)))?;
        for program in [PROG_TC_PASS, PROG_TC_MONITOR_SWITCH] {
            classifier(&mut floor, program)?
                .load()
                .map_err(load_error(program))?;
        }
        xdp(&mut floor, PROG_XDP_PASS)?
            .load()
            .map_err(load_error(PROG_XDP_PASS))?;
        self.floor = Some(floor);
        Ok(())
    }

    /// The file descriptor of a loaded program (of the floor object first), for
    /// BPF_PROG_TEST_RUN in tests and benchmarks. Valid while `self` lives.
    #[doc(hidden)]
    pub fn program_fd_for_test(&self, program: &'static str) -> Result<RawFd, DataplaneError> {
        let fd = self
            .floor
            .as_ref()
            .and_then(|floor| floor.program(program))
            .or_else(|| self.ebpf.program(program))
            .ok_or(DataplaneError::ProgramMissing { program })?
            .fd()
            .map_err(|e| DataplaneError::ProgramLoad {
                program,
                source: Box::new(e),
            })?;
        Ok(fd.as_fd().as_raw_fd())
    }

    /// Keeps `link` attached (pinned as `name` when this data plane pins).
    fn hold<L>(&self, name: &str, link: L) -> Result<HeldLink, DataplaneError>
    where
        aya::programs::links::FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
    {
        HeldLink::hold(self.pins.as_ref(), name, link)
    }

    /// Where maps and links are pinned, if they are.
    pub fn pins(&self) -> Option<&Pins> {
        self.pins.as_ref()
    }

    /// Whether an endpoint attached from now on denies everything until its policy is written
    /// (the daemon's choice; tests that attach endpoints by hand leave them open).
    pub fn set_deny_new_endpoints(&mut self, deny: bool) {
        self.deny_new = deny;
    }

    /// Detaches the links an earlier daemon pinned that this one has not taken over (their
    /// container is gone). Call once the surviving containers are attached again.
    pub fn release_unheld_links(&mut self) -> usize {
        let Some(pins) = &self.pins else {
            return 0;
        };
        let mut held: std::collections::BTreeSet<String> = self
            .links
            .values()
            .flat_map(|l| [l.from_container.pin_name(), l.to_container.pin_name()])
            .flatten()
            .collect();
        held.extend(self.overlay.iter().flat_map(|o| o.pin_names()));
        held.extend(self.socket.iter().flat_map(|s| s.pin_names()));
        let mut released = 0;
        for name in pins.links() {
            if !held.contains(&name) {
                pins::release_pin(&pins.link(&name));
                released += 1;
            }
        }
        if released > 0 {
            tracing::info!(released, "released links of containers that are gone");
        }
        released
    }

    /// Rebuilds what this process remembers of the maps from their contents (after taking
    /// pinned maps over).
    fn restore(&mut self) -> Result<(), DataplaneError> {
        for entry in self.endpoints.iter() {
            let (_, info) = entry.map_err(DataplaneError::map(MAP_ENDPOINTS, "reading"))?;
            self.policy.flags.insert(info.endpoint_id, info.flags);
            self.metrics.adopt_slot(info.endpoint_id, info.metrics_slot);
        }
        self.restore_policy()?;
        self.restore_services()?;
        self.restore_nat()?;
        self.restore_published()
    }

    fn attach_tc(
        &mut self,
        program: &'static str,
        interface: &str,
        ifindex: u32,
        attach_type: TcAttachType,
    ) -> Result<SchedClassifierLink, DataplaneError> {
        let attach_error = |e| DataplaneError::Attach {
            program,
            ifindex,
            source: Box::new(e),
        };
        let prog = classifier(&mut self.ebpf, program)?;
        // TCX only: a netlink (cls_bpf) filter would outlive the daemon.
        let link_id = prog
            .attach_with_options(
                interface,
                attach_type,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(attach_error)?;
        prog.take_link(link_id).map_err(attach_error)
    }
}

/// Whether a map operation failed only because the key is absent (aya reports a lookup miss as
/// `KeyNotFound` but a delete miss as a raw ENOENT).
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(e) => e.io_error.kind() == io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Program `program` of the object as the program type `T`.
fn program_of<'a, T>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(program)
        .ok_or(DataplaneError::ProgramMissing { program })?
        .try_into()
        .map_err(|e| DataplaneError::ProgramType {
            program,
            source: Box::new(e),
        })
}

/// Loads a program into the kernel, again (up to 5 times) when its verification was
/// interrupted by a signal (EAGAIN), as libbpf does: the container programs take the verifier
/// long enough that a signal to the process may land meanwhile.
fn load_program(
    program: &'static str,
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), DataplaneError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < 5 =>
            {
                tracing::debug!(
                    program,
                    tries,
                    "program verification interrupted; loading again"
                );
            }
            result => {
                return result.map_err(|e| DataplaneError::ProgramLoad {
                    program,
                    source: Box::new(e),
                });
            }
        }
    }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    program_of(ebpf, program)
}

fn xdp<'a>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut Xdp, DataplaneError> {
    program_of(ebpf, program)
}

/// The name of interface `ifindex` in the calling thread's network namespace.
fn interface_name(ifindex: u32) -> Result<String, DataplaneError> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write, NUL included.
    let ret = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if ret.is_null() {
        return Err(DataplaneError::InterfaceNotFound {
            ifindex,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// Lifts RLIMIT_MEMLOCK for kernels that still charge BPF memory to it (before 5.11);
/// failure is only logged, since current kernels account BPF memory to the cgroup instead.
fn bump_memlock_rlimit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "raising RLIMIT_MEMLOCK failed");
    }
}
