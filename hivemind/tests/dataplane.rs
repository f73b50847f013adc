//! Kernel tests of the eBPF data plane: real programs, real veths, real packets.
//!
//! They need root. Without it they print why and pass, except under `CI=true`, where a skip
//! is a failure (a green CI run must mean the kernel paths ran).

use std::{
    ffi::CString,
    fs::File,
    net::UdpSocket,
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use hivemind::dataplane::{
    Dataplane, PROG_FROM_CONTAINER, PROG_TC_PASS, PROG_TO_CONTAINER, PROG_XDP_PASS,
};

const TC_ACT_OK: u32 = 0;
const XDP_PASS: u32 = 2;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// Whether the kernel tests can run here; panics instead of skipping under `CI=true`.
fn can_run(test: &str) -> bool {
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

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace that is deleted when the guard drops, panics included.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(suffix: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "hmdp-{}-{}-{suffix}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        Self { name }
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Moves the calling thread (only its network namespace) into this namespace.
    fn enter(&self) {
        let file = File::open(self.path()).expect("open netns file");
        // SAFETY: a valid namespace fd; CLONE_NEWNET only changes this thread's network namespace.
        let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(ret, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<()> {
    // SAFETY: `attr` is a zero-initialised bpf_attr of 128 bytes (the kernel accepts a larger
    // attr whose tail is zero) that outlives the call; pointers inside it point to live buffers.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn put_u32(attr: &mut [u8; 128], offset: usize, v: u32) {
    attr[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; 128], offset: usize, v: u64) {
    attr[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(attr: &[u8; 128], offset: usize) -> u32 {
    u32::from_ne_bytes(attr[offset..offset + 4].try_into().expect("4 bytes"))
}

/// BPF_PROG_TEST_RUN once on `packet`; returns the program's return code.
fn test_run(prog_fd: i32, packet: &[u8]) -> std::io::Result<u32> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog_fd as u32); // test.prog_fd
    put_u32(&mut attr, 8, packet.len() as u32); // test.data_size_in
    put_u64(&mut attr, 16, packet.as_ptr() as u64); // test.data_in
    put_u32(&mut attr, 32, 1); // test.repeat
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(get_u32(&attr, 4)) // test.retval
}

/// Number of programs attached through TCX to `ifindex` (of the calling thread's namespace).
fn tcx_prog_count(ifindex: u32, attach_type: u32) -> u32 {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, ifindex); // query.target_ifindex
    put_u32(&mut attr, 4, attach_type); // query.attach_type
    bpf(BPF_PROG_QUERY, &mut attr).expect("BPF_PROG_QUERY");
    get_u32(&attr, 24) // query.prog_cnt
}

/// Ethernet + IPv4 + UDP with `payload` bytes of payload (checksums are not checked by TC).
fn udp_packet(payload: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // destination MAC
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // source MAC
    p.extend_from_slice(&[0x08, 0x00]); // IPv4
    let ip_len = (20 + 8 + payload) as u16;
    p.extend_from_slice(&[
        0x45,
        0,
        (ip_len >> 8) as u8,
        ip_len as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    p.extend_from_slice(&[10, 199, 0, 2, 10, 199, 0, 1]); // source, destination
    let udp_len = (8 + payload) as u16;
    p.extend_from_slice(&[
        0x30,
        0x39,
        0x23,
        0x28,
        (udp_len >> 8) as u8,
        udp_len as u8,
        0,
        0,
    ]);
    p.extend(std::iter::repeat_n(0xab, payload));
    p
}

fn ifindex(name: &str) -> u32 {
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

#[test]
fn prog_test_run_counts_and_passes_every_packet() {
    if !can_run("prog_test_run_counts_and_passes_every_packet") {
        return;
    }
    let dp = Dataplane::load().expect("load dataplane");
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER).expect("fd");
    let packet = udp_packet(16);
    assert_eq!(packet.len(), 58);
    // Truncated packets the kernel still hands to the program: an IPv4 header whose UDP
    // header is cut off, and a bare Ethernet header (local experimental EtherType).
    let no_l4 = &packet[..34];
    let mut bare_eth = packet[..14].to_vec();
    bare_eth[12..14].copy_from_slice(&[0x88, 0xb5]);

    for _ in 0..3 {
        assert_eq!(test_run(from, &packet).expect("test run"), TC_ACT_OK);
    }
    assert_eq!(test_run(from, no_l4).expect("test run"), TC_ACT_OK);
    assert_eq!(test_run(from, &bare_eth).expect("test run"), TC_ACT_OK);
    assert_eq!(test_run(to, &packet).expect("test run"), TC_ACT_OK);
    // The kernel refuses to build an skb shorter than an Ethernet header (or an IPv4 frame
    // shorter than its IPv4 header): such packets never reach the program.
    for short in [&packet[..10], &packet[..20]] {
        let err = test_run(from, short).expect_err("short packet");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }

    // BPF_PROG_TEST_RUN runs on loopback, which has no endpoint entry: counted under id 0.
    let counters = dp.endpoint_counters(0).expect("counters");
    assert_eq!(counters.from_container.packets, 5);
    assert_eq!(counters.from_container.bytes, 3 * 58 + 34 + 14);
    assert_eq!(counters.to_container.packets, 1);
    assert_eq!(counters.to_container.bytes, 58);
    assert!(counters.drops.is_empty());

    // The benchmark baselines load and pass.
    let tc_pass = dp.program_fd_for_test(PROG_TC_PASS).expect("fd");
    assert_eq!(test_run(tc_pass, &packet).expect("test run"), TC_ACT_OK);
    let xdp_pass = dp.program_fd_for_test(PROG_XDP_PASS).expect("fd");
    assert_eq!(test_run(xdp_pass, &packet).expect("test run"), XDP_PASS);
}

#[test]
fn veth_traffic_is_counted_per_direction() {
    if !can_run("veth_traffic_is_counted_per_direction") {
        return;
    }
    let host = NetNs::new("h");
    let ctr = NetNs::new("c");
    ip(&[
        "-n", &host.name, "link", "add", "hm-h", "type", "veth", "peer", "name", "hm-c", "netns",
        &ctr.name,
    ]);
    ip(&[
        "-n",
        &host.name,
        "addr",
        "add",
        "10.199.0.1/24",
        "dev",
        "hm-h",
    ]);
    ip(&["-n", &host.name, "link", "set", "hm-h", "up"]);
    ip(&[
        "-n",
        &ctr.name,
        "addr",
        "add",
        "10.199.0.2/24",
        "dev",
        "hm-c",
    ]);
    ip(&["-n", &ctr.name, "link", "set", "hm-c", "up"]);

    // A dedicated thread whose network namespace we change; the guards stay on this thread
    // and delete the namespaces even if the scenario panics.
    thread::scope(|scope| {
        scope.spawn(|| {
            ctr.enter();
            let ctr_sock = UdpSocket::bind("10.199.0.2:0").expect("bind in container netns");
            host.enter();
            let host_sock = UdpSocket::bind("10.199.0.1:0").expect("bind in host netns");
            for s in [&ctr_sock, &host_sock] {
                s.set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
            }
            veth_scenario(&host_sock, &ctr_sock, ifindex("hm-h"));
        });
    });
}

/// Runs inside the host namespace: attach, send both ways, check counters, detach.
fn veth_scenario(host_sock: &UdpSocket, ctr_sock: &UdpSocket, ifindex: u32) {
    const N: u64 = 40;
    const PAYLOAD: usize = 100;
    const ENDPOINT: u32 = 4242;
    let mut dp = Dataplane::load().expect("load dataplane");
    dp.attach_endpoint(ifindex, ENDPOINT).expect("attach");
    // Attaching again replaces: still one program per hook.
    dp.attach_endpoint(ifindex, ENDPOINT).expect("attach again");
    assert_eq!(tcx_prog_count(ifindex, BPF_TCX_INGRESS), 1);
    assert_eq!(tcx_prog_count(ifindex, BPF_TCX_EGRESS), 1);
    assert!(dp.has_endpoint_entry(ifindex).expect("lookup"));

    let ctr_addr = ctr_sock.local_addr().expect("addr");
    let host_addr = host_sock.local_addr().expect("addr");
    let payload = [0x5a; PAYLOAD];
    let mut buf = [0u8; 2048];
    for _ in 0..N {
        host_sock
            .send_to(&payload, ctr_addr)
            .expect("send to container");
        assert_eq!(
            ctr_sock.recv(&mut buf).expect("container receives"),
            PAYLOAD
        );
        ctr_sock
            .send_to(&payload, host_addr)
            .expect("send from container");
        assert_eq!(host_sock.recv(&mut buf).expect("host receives"), PAYLOAD);
    }

    let c = dp.endpoint_counters(ENDPOINT).expect("counters");
    let min_bytes = N * (14 + 20 + 8 + PAYLOAD as u64);
    assert!(c.to_container.packets >= N, "{c:?}");
    assert!(c.from_container.packets >= N, "{c:?}");
    assert!(c.to_container.bytes >= min_bytes, "{c:?}");
    assert!(c.from_container.bytes >= min_bytes, "{c:?}");
    // A duplicate attachment would count every packet twice; ARP and IPv6 chatter stay few.
    assert!(c.to_container.packets < 2 * N, "{c:?}");
    assert!(c.from_container.packets < 2 * N, "{c:?}");
    assert!(c.drops.is_empty(), "{c:?}");
    // Nothing of this endpoint was counted as unknown.
    let unknown = dp.endpoint_counters(0).expect("counters");
    assert!(unknown.to_container.packets < N, "{unknown:?}");

    dp.detach_endpoint(ifindex).expect("detach");
    assert!(!dp.has_endpoint_entry(ifindex).expect("lookup"));
    assert_eq!(
        dp.endpoint_counters(ENDPOINT).expect("counters"),
        Default::default()
    );
    assert_eq!(tcx_prog_count(ifindex, BPF_TCX_INGRESS), 0);
    assert_eq!(tcx_prog_count(ifindex, BPF_TCX_EGRESS), 0);
    dp.detach_endpoint(ifindex)
        .expect("detaching twice is fine");

    // Links are owned by file descriptors: dropping the Dataplane (as a dying daemon does)
    // releases them without any explicit detach.
    dp.attach_endpoint(ifindex, ENDPOINT)
        .expect("attach after detach");
    assert_eq!(tcx_prog_count(ifindex, BPF_TCX_INGRESS), 1);
    drop(dp);
    assert_eq!(tcx_prog_count(ifindex, BPF_TCX_INGRESS), 0);
    assert_eq!(tcx_prog_count(ifindex, BPF_TCX_EGRESS), 0);
}
