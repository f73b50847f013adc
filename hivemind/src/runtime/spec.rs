//! The OCI runtime spec of a container, as runc reads it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::ContainerSpec;

/// CFS period; `--cpu 0.5` becomes a quota of half of it.
const CPU_PERIOD_US: u64 = 100_000;

/// Docker's default capability set.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Builds the runtime spec: the image's entrypoint, cmd, env and workdir, the
/// user's env on top, limits, bind mounts and the network namespace.
pub fn oci_spec_json(spec: &ContainerSpec) -> Value {
    let config = &spec.image.config;
    let mut args: Vec<String> = match &spec.command {
        Some(command) => command.clone(),
        None => {
            let mut args = config.entrypoint.clone();
            args.extend(config.cmd.iter().cloned());
            args
        }
    };
    if args.is_empty() {
        args.push("/bin/sh".to_string());
    }

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    for entry in &config.env {
        if let Some((key, value)) = entry.split_once('=') {
            env.insert(key.to_string(), value.to_string());
        }
    }
    env.insert("HOSTNAME".into(), spec.hostname.clone());
    for (key, value) in &spec.env {
        env.insert(key.clone(), value.clone());
    }
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();

    let cwd = spec
        .working_dir
        .clone()
        .or_else(|| config.working_dir.clone())
        .filter(|dir| dir.starts_with('/'))
        .unwrap_or_else(|| "/".to_string());
    let (uid, gid) = parse_user(config.user.as_deref());

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for mount in &spec.mounts {
        let mut options = vec!["rbind", "rprivate"];
        options.push(if mount.readonly { "ro" } else { "rw" });
        mounts.push(json!({
            "destination": mount.destination,
            "type": "bind",
            "source": mount.source,
            "options": options,
        }));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &spec.netns {
        Some(path) => namespaces.push(json!({"type": "network", "path": path})),
        None => namespaces.push(json!({"type": "network"})),
    }

    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
    });
    if let Some(memory) = spec.resources.memory {
        resources["memory"] = json!({"limit": memory, "swap": memory});
    }
    if let Some(cpu) = spec.resources.cpu {
        let quota = ((cpu * CPU_PERIOD_US as f64).round() as i64).max(1000);
        resources["cpu"] = json!({"quota": quota, "period": CPU_PERIOD_US});
    }

    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": CAPABILITIES,
                "effective": CAPABILITIES,
                "permitted": CAPABILITIES,
            },
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": format!("/hivemind/{}", spec.id),
            "resources": resources,
            "namespaces": namespaces,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
            "seccomp": super::seccomp::default_profile(),
        },
    })
}

/// Numeric `uid[:gid]`; names are not resolved (no passwd lookup), so they
/// run as root, as with images that do not set a user.
fn parse_user(user: Option<&str>) -> (u32, u32) {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return (0, 0);
    };
    let (uid, gid) = user.split_once(':').unwrap_or((user, ""));
    let uid = uid.parse().unwrap_or(0);
    let gid = gid.parse().unwrap_or(uid);
    (uid, gid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ResolvedImage, RunConfig};
    use crate::model::Resources;
    use crate::runtime::BindMount;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "web-abc123".into(),
            app: "web".into(),
            image: ResolvedImage {
                name: "docker.io/library/busybox:latest".into(),
                digest: "sha256:00".into(),
                chain_id: "sha256:11".into(),
                config: RunConfig {
                    entrypoint: vec!["/bin/app".into()],
                    cmd: vec!["--serve".into()],
                    env: vec!["GREETING=image".into(), "PATH=/bin".into()],
                    working_dir: Some("/srv".into()),
                    user: Some("1000:1000".into()),
                },
            },
            env: [("GREETING".to_string(), "user".to_string())].into(),
            mounts: vec![BindMount {
                source: "/var/lib/hivemind/volumes/data/_data".into(),
                destination: "/data".into(),
                readonly: false,
            }],
            resources: Resources {
                cpu: Some(0.5),
                memory: Some(64 << 20),
            },
            netns: Some("/run/netns/hm-x".into()),
            hostname: "web-abc123".into(),
            log_path: "/tmp/log".into(),
            command: None,
            working_dir: None,
        }
    }

    #[test]
    fn image_config_and_user_settings_are_merged() {
        let json = oci_spec_json(&spec());
        assert_eq!(json["process"]["args"], json!(["/bin/app", "--serve"]));
        let env = json["process"]["env"].as_array().unwrap();
        assert!(
            env.contains(&json!("GREETING=user")),
            "user env wins: {env:?}"
        );
        assert!(env.contains(&json!("PATH=/bin")), "image env kept: {env:?}");
        assert_eq!(json["process"]["cwd"], "/srv");
        assert_eq!(json["process"]["user"], json!({"uid": 1000, "gid": 1000}));
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        let net = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|ns| ns["type"] == "network")
            .unwrap();
        assert_eq!(net["path"], "/run/netns/hm-x");
        let data = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert_eq!(data["options"], json!(["rbind", "rprivate", "rw"]));
    }

    #[test]
    fn containers_run_confined() {
        let json = oci_spec_json(&spec());
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let caps = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(!caps.contains(&json!("CAP_SYS_ADMIN")), "{caps:?}");
        assert!(!caps.contains(&json!("CAP_NET_ADMIN")), "{caps:?}");
    }
}
