//! Helpers of the kernel tests (the eBPF data plane in network namespaces): whether they can
//! run here, `ip` and `sysctl`, interface indexes, TCX queries, veth-connected containers and
//! small TCP/UDP servers answering "<name> <peer address>".
//!
//! Everything here is independent of the daemon; the data plane itself is loaded by the tests.

use std::{
    ffi::CString,
    io::{ErrorKind, Write as _},
    net::{Ipv4Addr, TcpListener, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use crate::netns::NetNs;

pub const BPF_PROG_QUERY: libc::c_long = 16;
pub const BPF_TCX_INGRESS: u32 = 46;
pub const BPF_TCX_EGRESS: u32 = 47;

/// Whether the test can run here; panics instead of skipping under `CI=true`.
pub fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        "not running as root"
    } else if Command::new("ip").arg("-V").output().is_err() {
        "the `ip` command (iproute2) is missing"
    } else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}; CI treats a skipped kernel test as a failure");
    }
    eprintln!("skipping {test}: {why}");
    false
}

/// Runs `ip ARGS`, panicking with its stderr on failure; returns its stdout.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sysctl -w SETTING` in `ns`.
pub fn sysctl(ns: &NetNs, setting: &str) {
    let out = ns
        .command("sysctl")
        .args(["-qw", setting])
        .output()
        .expect("run sysctl");
    assert!(
        out.status.success(),
        "sysctl {setting} in {}: {}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ifindex of `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> u32 {
    let name = CString::new(name).expect("no NUL");
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(
        index,
        0,
        "if_nametoindex: {}",
        std::io::Error::last_os_error()
    );
    index
}

/// Number of programs attached through TCX to `ifindex` (of the calling thread's namespace).
pub fn tcx_prog_count(ifindex: u32, attach_type: u32) -> u32 {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&ifindex.to_ne_bytes()); // query.target_ifindex
    attr[4..8].copy_from_slice(&attach_type.to_ne_bytes()); // query.attach_type
    // SAFETY: a zeroed bpf_attr of 128 bytes that outlives the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_QUERY, attr.as_mut_ptr(), 128) };
    assert!(
        ret >= 0,
        "BPF_PROG_QUERY: {}",
        std::io::Error::last_os_error()
    );
    u32::from_ne_bytes(attr[24..28].try_into().expect("4 bytes")) // query.prog_cnt
}

/// A veth pair named `name` at both ends, from namespace `a` to namespace `b`.
pub fn link_veth(a: &NetNs, b: &NetNs, name: &str) {
    ip(&[
        "-n", &a.name, "link", "add", name, "type", "veth", "peer", "name", name, "netns", &b.name,
    ]);
}

/// Wires a container into its node: a veth `host_if` (in `node`, enslaved to `bridge`) to
/// `eth0` (in `container`, with `addr` and a default route via `gateway`).
pub fn add_container_veth(
    node: &NetNs,
    container: &NetNs,
    host_if: &str,
    bridge: &str,
    mtu: &str,
    addr: &str,
    gateway: Ipv4Addr,
) {
    let (n, c) = (node.name.as_str(), container.name.as_str());
    // The container's MAC follows from its address, as the daemon sets it (host routing writes
    // it without a lookup; see `hivemind_common::container_mac`).
    let address: Ipv4Addr = addr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("container address as A.B.C.D/len");
    let [a, b, c4, d] = address.octets();
    let mac = format!("0a:58:{a:02x}:{b:02x}:{c4:02x}:{d:02x}");
    ip(&[
        "-n", n, "link", "add", host_if, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu",
        mtu, "address", &mac, "netns", c,
    ]);
    ip(&["-n", n, "link", "set", host_if, "master", bridge, "up"]);
    ip(&["-n", c, "addr", "add", addr, "dev", "eth0"]);
    ip(&["-n", c, "link", "set", "eth0", "up"]);
    let gw = gateway.to_string();
    ip(&["-n", c, "route", "add", "default", "via", &gw]);
}

/// Test servers; dropping this stops them.
#[derive(Default)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// A TCP and a UDP server on `port` in `ns`, both answering "<name> <peer address>".
    pub fn start(&mut self, ns: &NetNs, name: &'static str, port: u16) {
        let (listener, udp) = ns
            .run(move || {
                let any = (Ipv4Addr::UNSPECIFIED, port);
                (
                    TcpListener::bind(any).expect("tcp listen"),
                    UdpSocket::bind(any).expect("udp bind"),
                )
            })
            .expect("netns thread");
        listener.set_nonblocking(true).expect("nonblocking");
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let stop = self.stop.clone();
        self.threads.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(format!("{name} {}", peer.ip()).as_bytes());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("{name}: accept: {e}"),
                }
            }
        }));
        let stop = self.stop.clone();
        self.threads.push(thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(format!("{name} {}", peer.ip()).as_bytes(), peer);
                }
            }
        }));
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Parses a server's answer "<name> <peer>".
pub fn parse_answer(answer: &str) -> (String, Ipv4Addr) {
    let (name, peer) = answer.split_once(' ').expect("answer has a space");
    (name.to_string(), peer.trim().parse().expect("peer address"))
}
