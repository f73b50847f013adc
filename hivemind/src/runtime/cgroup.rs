//! A container's CPU and memory use, read from its cgroup (`/hivemind/<id>`,
//! the path the runtime spec gives runc), on cgroup v1 or v2; and the node's
//! cgroup2 hierarchy, where the socket load balancer's programs attach.

use std::path::{Path, PathBuf};

/// Where the daemon mounts a cgroup2 hierarchy of its own when the machine
/// has none (a cgroup v1 machine), as Cilium mounts /run/cilium/cgroupv2.
pub const CGROUP2_MOUNT: &str = "/run/hivemind/cgroup2";

/// The root of a cgroup2 hierarchy: ours if mounted, else any the machine
/// has (`/sys/fs/cgroup` on a cgroup v2 machine), else ours, mounted now.
/// Every process starts in a hierarchy's root, so programs attached there
/// see every socket of the machine.
pub fn cgroup2_root() -> std::io::Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mounts = cgroup2_mounts(&mountinfo);
    let ours = PathBuf::from(CGROUP2_MOUNT);
    if let Some(found) = mounts.iter().find(|m| **m == ours).or(mounts.first()) {
        return Ok(found.clone());
    }
    std::fs::create_dir_all(&ours)?;
    nix::mount::mount(
        Some("none"),
        &ours,
        Some("cgroup2"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(std::io::Error::from)?;
    Ok(ours)
}

/// The mount points of cgroup2 file systems in a mountinfo text.
fn cgroup2_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, fs) = line.split_once(" - ")?;
            (fs.split_whitespace().next()? == "cgroup2")
                .then(|| fields.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .collect()
}

/// What a container used, as cAdvisor reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU time of every process, since the container started.
    pub cpu_seconds: f64,
    /// Memory in use less what the kernel can drop at once (inactive file
    /// pages): `container_memory_working_set_bytes`.
    pub memory_working_set: u64,
}

const ROOT: &str = "/sys/fs/cgroup";

/// The use of container `id`, when its cgroup can be read.
pub fn usage(id: &str) -> Option<Usage> {
    usage_under(Path::new(ROOT), id)
}

fn usage_under(root: &Path, id: &str) -> Option<Usage> {
    let relative = Path::new("hivemind").join(id);
    if root.join("cgroup.controllers").exists() {
        // cgroup v2: one hierarchy.
        let dir = root.join(&relative);
        let cpu_usec = stat_field(&dir.join("cpu.stat"), "usage_usec")?;
        let current = read_u64(&dir.join("memory.current"))?;
        let inactive = stat_field(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
        return Some(Usage {
            cpu_seconds: cpu_usec as f64 / 1e6,
            memory_working_set: current.saturating_sub(inactive),
        });
    }
    let cpu_ns = read_u64(&root.join("cpuacct").join(&relative).join("cpuacct.usage"))?;
    let memory = root.join("memory").join(&relative);
    let current = read_u64(&memory.join("memory.usage_in_bytes"))?;
    let inactive = stat_field(&memory.join("memory.stat"), "total_inactive_file").unwrap_or(0);
    Some(Usage {
        cpu_seconds: cpu_ns as f64 / 1e9,
        memory_working_set: current.saturating_sub(inactive),
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `key value` line of a cgroup stat file.
fn stat_field(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_mounts_are_found_in_mountinfo() {
        let mountinfo = "\
25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
40 25 0:35 / /run/hivemind/cgroup2 rw,relatime shared:9 - cgroup2 none rw
41 25 0:36 / /tmp/x\\040y rw - tmpfs tmpfs rw
";
        assert_eq!(
            cgroup2_mounts(mountinfo),
            vec![PathBuf::from("/run/hivemind/cgroup2")]
        );
        assert!(cgroup2_mounts("33 25 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw").is_empty());
    }

    #[test]
    fn v1_and_v2_layouts_are_read() {
        let v1 = tempfile::tempdir().unwrap();
        let cpu = v1.path().join("cpuacct/hivemind/c1");
        let mem = v1.path().join("memory/hivemind/c1");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(cpu.join("cpuacct.usage"), "2500000000\n").unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "1000\n").unwrap();
        std::fs::write(
            mem.join("memory.stat"),
            "cache 9\ntotal_inactive_file 300\n",
        )
        .unwrap();
        assert_eq!(
            usage_under(v1.path(), "c1"),
            Some(Usage {
                cpu_seconds: 2.5,
                memory_working_set: 700
            })
        );
        assert_eq!(usage_under(v1.path(), "gone"), None);

        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let dir = v2.path().join("hivemind/c2");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500000\nuser_usec 1\n").unwrap();
        std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.join("memory.stat"), "anon 1\ninactive_file 96\n").unwrap();
        assert_eq!(
            usage_under(v2.path(), "c2"),
            Some(Usage {
                cpu_seconds: 1.5,
                memory_working_set: 4000
            })
        );
    }
}
