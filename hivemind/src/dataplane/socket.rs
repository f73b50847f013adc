//! Service load balancing at the socket (`hivemind daemon --socket-lb on`): the cgroup
//! programs `hm_sock_*` on a cgroup2 directory (the node's cgroup2 root), and `HM_SOCK_NETNS`,
//! the network namespaces whose sockets they translate. See the eBPF side's `sock` module.
//! Until `enable_socket_lb` succeeds, services are translated per packet only.

use std::{fs::File, io, path::Path};

use aya::{
    maps::{HashMap, MapData},
    programs::{CgroupAttachMode, CgroupSockAddr},
};
use hivemind_common::MAP_SOCK_NETNS;

use super::pins::HeldLink;
use super::{Dataplane, DataplaneError, is_not_found, program_of};

/// cgroup connect4 (TCP and connected UDP sockets to a VIP).
pub const PROG_SOCK_CONNECT4: &str = "hm_sock_connect4";
/// cgroup sendmsg4 (datagrams to a VIP).
pub const PROG_SOCK_SENDMSG4: &str = "hm_sock_sendmsg4";
/// cgroup recvmsg4 (datagrams from a backend show the VIP).
pub const PROG_SOCK_RECVMSG4: &str = "hm_sock_recvmsg4";
/// cgroup getpeername4 (a connected socket names the VIP).
pub const PROG_SOCK_GETPEERNAME4: &str = "hm_sock_getpeername4";

const PROGRAMS: [&str; 4] = [
    PROG_SOCK_CONNECT4,
    PROG_SOCK_SENDMSG4,
    PROG_SOCK_RECVMSG4,
    PROG_SOCK_GETPEERNAME4,
];

/// The attached socket programs; dropping them detaches them.
pub(super) struct SocketLb {
    pub(super) netns: HashMap<MapData, u64, u32>,
    links: Vec<HeldLink>,
}

impl SocketLb {
    pub(super) fn pin_names(&self) -> Vec<String> {
        self.links.iter().filter_map(HeldLink::pin_name).collect()
    }
}

impl Dataplane {
    /// Loads the socket programs and attaches them to the cgroup2 directory `cgroup` (next to
    /// whatever else is attached there). Calling again does nothing. On failure nothing stays
    /// attached and services keep the per-packet path.
    pub fn enable_socket_lb(&mut self, cgroup: &Path) -> Result<(), DataplaneError> {
        if self.socket.is_some() {
            return Ok(());
        }
        let cgroup_error = |source: io::Error| DataplaneError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        };
        let mut links = Vec::new();
        for program in PROGRAMS {
            let directory = File::open(cgroup).map_err(cgroup_error)?;
            let prog: &mut CgroupSockAddr = program_of(&mut self.ebpf, program)?;
            let load_error = |e| DataplaneError::ProgramLoad {
                program,
                source: Box::new(e),
            };
            if prog.fd().is_err() {
                prog.load().map_err(load_error)?;
            }
            let attach_error = |e| DataplaneError::AttachCgroup {
                program,
                path: cgroup.to_path_buf(),
                source: Box::new(e),
            };
            // A BPF link (kernel >= 5.7, which aya uses) is always attached beside the others
            // and takes no flags: the kernel refuses BPF_F_ALLOW_MULTI on a link (EINVAL).
            let id = prog
                .attach(directory, CgroupAttachMode::Single)
                .map_err(attach_error)?;
            let link = prog.take_link(id).map_err(attach_error)?;
            links.push(HeldLink::hold(
                self.pins.as_ref(),
                &format!("sock-{program}"),
                link,
            )?);
        }
        let netns = self
            .ebpf
            .take_map(MAP_SOCK_NETNS)
            .ok_or(DataplaneError::MapMissing {
                map: MAP_SOCK_NETNS,
            })?;
        let netns =
            HashMap::try_from(netns).map_err(DataplaneError::map(MAP_SOCK_NETNS, "opening"))?;
        self.socket = Some(SocketLb { netns, links });
        tracing::info!(cgroup = %cgroup.display(), "socket load balancing attached");
        Ok(())
    }

    /// Whether the socket programs are attached.
    pub fn socket_lb(&self) -> bool {
        self.socket.is_some()
    }

    /// Translates (or stops translating) the sockets of the network namespace whose cookie is
    /// `cookie`. Without socket load balancing, does nothing.
    pub fn set_socket_lb_netns(&mut self, cookie: u64, on: bool) -> Result<(), DataplaneError> {
        let Some(socket) = &mut self.socket else {
            return Ok(());
        };
        let result = if on {
            socket.netns.insert(cookie, 1, 0)
        } else {
            match socket.netns.remove(&cookie) {
                Err(e) if is_not_found(&e) => Ok(()),
                other => other,
            }
        };
        result.map_err(DataplaneError::map(MAP_SOCK_NETNS, "writing"))
    }

    /// The namespace cookies whose sockets are translated, sorted.
    pub fn socket_lb_namespaces(&self) -> Result<Vec<u64>, DataplaneError> {
        let Some(socket) = &self.socket else {
            return Ok(Vec::new());
        };
        let mut cookies = socket
            .netns
            .keys()
            .collect::<Result<Vec<u64>, _>>()
            .map_err(DataplaneError::map(MAP_SOCK_NETNS, "listing"))?;
        cookies.sort_unstable();
        Ok(cookies)
    }
}
