//! The data plane on bpffs: its maps and links pinned under one directory per node, so that
//! a daemon that stops (or is killed) leaves policy and load balancing enforced, and the next
//! daemon takes the same maps over (connections, NAT mappings and counters included) and
//! swaps its programs in without a gap.
//!
//! ```text
//! <dir>/maps/HM_CT, HM_POLICY, ...        every stateful map, reused at the next load when its
//!                                         type and sizes still match (else made anew, logged)
//! <dir>/links/lxc-<ifindex>-in|out        a container veth's TC links
//! <dir>/links/overlay-*, sock-*           the overlay's and the socket load balancer's links
//! ```
//!
//! A link is replaced by attaching the new program first (TCX runs the old one until it goes;
//! XDP swaps the program inside the link) and only then releasing the old pin. Links whose
//! interface is gone are released once the daemon has adopted what survived
//! ([`super::Dataplane::release_unheld_links`]).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::MapInfo;
use aya::programs::links::{FdLink, LinkError, PinnedLink};

use super::DataplaneError;

/// The maps that outlive the daemon: everything but the read-once ring buffer's loss counter
/// is state the programs or the next daemon need.
pub(super) const PINNED_MAPS: [&str; 23] = [
    hivemind_common::MAP_ENDPOINTS,
    hivemind_common::MAP_ENDPOINT_METRICS,
    hivemind_common::MAP_NODE_METRICS,
    hivemind_common::MAP_CT_BUDGET,
    hivemind_common::MAP_METRICS,
    hivemind_common::MAP_TUNNELS,
    hivemind_common::MAP_SERVICES,
    hivemind_common::MAP_BACKENDS,
    hivemind_common::MAP_CT,
    hivemind_common::MAP_NODE_CONFIG,
    hivemind_common::MAP_LXC,
    hivemind_common::MAP_SOCK_NETNS,
    hivemind_common::MAP_SOCK_REVNAT,
    hivemind_common::MAP_IPCACHE,
    hivemind_common::MAP_POLICY,
    hivemind_common::MAP_POLICY_CIDR,
    hivemind_common::MAP_FLOWS,
    hivemind_common::MAP_FLOWS_LOST,
    hivemind_common::MAP_FLOW_DROPS,
    hivemind_common::MAP_FLOW_SEEN,
    hivemind_common::MAP_NAT,
    hivemind_common::MAP_PUBLISHED,
    hivemind_common::MAP_NO_MASQ,
];

fn io_error(path: &Path, source: io::Error) -> DataplaneError {
    DataplaneError::Pin {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` is on a bpffs.
fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// The pin directory of one node's data plane.
#[derive(Debug, Clone)]
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    /// Makes `dir` (and its `maps` and `links`) on bpffs (whose names take no dots), mounting bpffs at `/sys/fs/bpf`
    /// first when nothing is mounted there (as Cilium does). Fails when `dir` is not on a
    /// bpffs after that.
    pub fn open(dir: &Path) -> Result<Self, DataplaneError> {
        let root = Path::new("/sys/fs/bpf");
        if dir.starts_with(root) && !is_bpffs(root) {
            std::fs::create_dir_all(root).map_err(|e| io_error(root, e))?;
            nix::mount::mount(
                Some("bpffs"),
                root,
                Some("bpf"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| io_error(root, e.into()))?;
            tracing::info!(path = %root.display(), "mounted bpffs");
        }
        for sub in ["maps", "links"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| io_error(&path, e))?;
        }
        if !is_bpffs(dir) {
            return Err(io_error(
                dir,
                io::Error::other("not on a bpf filesystem (mount -t bpf bpffs <dir>)"),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    pub(super) fn link(&self, name: &str) -> PathBuf {
        self.dir.join("links").join(name)
    }

    /// The names of the pinned links.
    pub(super) fn links(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.dir.join("links"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes the pinned maps whose type or sizes differ from `fresh`'s maps (an object of
    /// another version): they are made anew at the load. `fresh` pins its maps under a probe
    /// name to read their definitions, and removes them again. Returns the names of the pinned
    /// maps that will be reused.
    pub(super) fn drop_incompatible_maps(
        &self,
        fresh: &aya::Ebpf,
    ) -> Result<Vec<&'static str>, DataplaneError> {
        let mut reused = Vec::new();
        for name in PINNED_MAPS {
            let pinned = self.map(name);
            if !pinned.exists() {
                continue;
            }
            let Some(map) = fresh.map(name) else {
                continue;
            };
            // bpffs refuses dots in names.
            let probe = self.dir.join(format!("maps/probe-{name}"));
            let _ = std::fs::remove_file(&probe);
            map.pin(&probe)
                .map_err(|e| io_error(&probe, io::Error::other(e)))?;
            let same = match (MapInfo::from_pin(&pinned), MapInfo::from_pin(&probe)) {
                (Ok(old), Ok(new)) => {
                    old.map_type().ok() == new.map_type().ok()
                        && old.key_size() == new.key_size()
                        && old.value_size() == new.value_size()
                        && old.max_entries() == new.max_entries()
                }
                _ => false,
            };
            let _ = std::fs::remove_file(&probe);
            if same {
                reused.push(name);
            } else {
                tracing::warn!(
                    map = name,
                    "the pinned map has another layout (another version's); it is made anew and its state is lost"
                );
                std::fs::remove_file(&pinned).map_err(|e| io_error(&pinned, e))?;
            }
        }
        Ok(reused)
    }

    /// Removes the whole directory: maps and links go, and with them the programs (for a node
    /// that leaves for good, and for tests).
    pub fn remove(dir: &Path) -> io::Result<()> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A link this process keeps attached: by its file descriptor (it detaches when the process
/// drops it or dies), or pinned on bpffs (it stays until released).
#[derive(Debug)]
pub(super) enum HeldLink {
    Fd(#[allow(dead_code)] FdLink),
    /// The link and its pin's file name.
    Pinned(PinnedLink, String),
}

impl HeldLink {
    /// Keeps `link` attached, pinned as `name` when there are pins; a previous daemon's link
    /// pinned there is released now that the new one is attached.
    pub(super) fn hold<L>(pins: Option<&Pins>, name: &str, link: L) -> Result<Self, DataplaneError>
    where
        FdLink: TryFrom<L, Error = LinkError>,
    {
        let link = FdLink::try_from(link).map_err(|e| DataplaneError::Link {
            name: name.to_string(),
            source: Box::new(e),
        })?;
        let Some(pins) = pins else {
            return Ok(Self::Fd(link));
        };
        let path = pins.link(name);
        release_pin(&path);
        match link.pin(&path) {
            Ok(pinned) => Ok(Self::Pinned(pinned, name.to_string())),
            Err(e) => Err(io_error(&path, io::Error::other(e))),
        }
    }

    /// Detaches the program (unpins it first when pinned).
    pub(super) fn release(self) {
        match self {
            Self::Fd(link) => drop(link),
            Self::Pinned(pinned, _) => match pinned.unpin() {
                Ok(link) => drop(link),
                Err(e) => tracing::warn!(error = %e, "unpinning a link failed; it stays attached"),
            },
        }
    }

    /// The pin's file name, when pinned.
    pub(super) fn pin_name(&self) -> Option<String> {
        match self {
            Self::Fd(_) => None,
            Self::Pinned(_, name) => Some(name.clone()),
        }
    }
}

/// The link pinned at `path`, if any (an earlier daemon's).
pub(super) fn pinned_link(path: &Path) -> Option<FdLink> {
    PinnedLink::from_pin(path).ok().map(FdLink::from)
}

/// Detaches the link pinned at `path`, if any.
pub(super) fn release_pin(path: &Path) {
    if let Ok(old) = PinnedLink::from_pin(path) {
        match old.unpin() {
            Ok(link) => drop(link),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unpinning an old link failed")
            }
        }
    } else if path.exists() {
        let _ = std::fs::remove_file(path);
    }
}
