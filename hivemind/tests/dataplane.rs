//! Kernel tests of the eBPF data plane: real programs, real veths, real packets.
//!
//! They need root. Without it they print why and pass, except under `CI=true`, where a skip
//! is a failure (a green CI run must mean the kernel paths ran).

use std::{
    fs::File,
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use hivemind::dataplane::{
    Counter, Dataplane, DataplaneError, IpcacheEntry, PROG_FROM_CONTAINER, PROG_NAT_EGRESS,
    PROG_OVERLAY_EGRESS, PROG_OVERLAY_INGRESS, PROG_TC_PASS, PROG_TC_UNDERLAY, PROG_TO_CONTAINER,
    PROG_XDP_PASS, PROG_XDP_UNDERLAY, ServiceBackend,
};
use hivemind_common::{OVERLAY_MAC, OVERLAY_SRC_MAC, VXLAN_PORT, reason, vni};
use hivemind_tests::kernel::{
    BPF_TCX_EGRESS, BPF_TCX_INGRESS, can_run, ifindex, ip, tcx_prog_count,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const BPF_PROG_TEST_RUN: libc::c_long = 10;

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

/// BPF_PROG_TEST_RUN once on `packet`; returns the program's return code and the packet as the
/// program left it.
fn test_run_out(prog_fd: i32, packet: &[u8]) -> std::io::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; packet.len() + 256];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog_fd as u32); // test.prog_fd
    put_u32(&mut attr, 8, packet.len() as u32); // test.data_size_in
    put_u32(&mut attr, 12, out.len() as u32); // test.data_size_out
    put_u64(&mut attr, 16, packet.as_ptr() as u64); // test.data_in
    put_u64(&mut attr, 24, out.as_mut_ptr() as u64); // test.data_out
    put_u32(&mut attr, 32, 1); // test.repeat
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    out.truncate(get_u32(&attr, 12) as usize);
    Ok((get_u32(&attr, 4), out))
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

#[test]
fn prog_test_run_counts_and_passes_every_packet() {
    if !can_run("prog_test_run_counts_and_passes_every_packet") {
        return;
    }
    let mut dp = Dataplane::load().expect("load dataplane");
    // The daemon's object carries no benchmark program: they come from the floor object.
    assert!(matches!(
        dp.program_fd_for_test(PROG_TC_PASS),
        Err(DataplaneError::ProgramMissing { .. })
    ));
    dp.load_floor_programs().expect("load the empty programs");
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
    // The MAC the daemon gives a container of that address: its program drops other sources.
    let mac = hivemind_common::container_mac([10, 199, 0, 2])
        .map(|b| format!("{b:02x}"))
        .join(":");
    ip(&["-n", &ctr.name, "link", "set", "hm-c", "address", &mac]);
    ip(&["-n", &ctr.name, "link", "set", "hm-c", "up"]);

    // A dedicated thread whose network namespace we change; the guards stay on this thread
    // and delete the namespaces even if the scenario panics.
    thread::scope(|scope| {
        scope.spawn(|| {
            ctr.enter();
            let ctr_sock = UdpSocket::bind("10.199.0.2:0").expect("bind in container netns");
            let listener =
                std::net::TcpListener::bind("10.199.0.2:0").expect("listen in container netns");
            host.enter();
            let host_sock = UdpSocket::bind("10.199.0.1:0").expect("bind in host netns");
            for s in [&ctr_sock, &host_sock] {
                s.set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
            }
            veth_scenario(&host_sock, &ctr_sock, &listener, ifindex("hm-h"));
        });
    });
}

/// Runs inside the host namespace: attach, send both ways, check counters, detach.
fn veth_scenario(
    host_sock: &UdpSocket,
    ctr_sock: &UdpSocket,
    listener: &std::net::TcpListener,
    ifindex: u32,
) {
    const N: u64 = 40;
    const PAYLOAD: usize = 100;
    const ENDPOINT: u32 = 4242;
    let mut dp = Dataplane::load().expect("load dataplane");
    dp.attach_endpoint(ifindex, ENDPOINT, Ipv4Addr::new(10, 199, 0, 2))
        .expect("attach");
    // Attaching again replaces: still one program per hook.
    dp.attach_endpoint(ifindex, ENDPOINT, Ipv4Addr::new(10, 199, 0, 2))
        .expect("attach again");
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

    // One TCP connection accepted, one refused: two SYNs in, a SYN-ACK and a reset out, none
    // left unanswered.
    let listening = listener.local_addr().expect("addr");
    let _client = std::net::TcpStream::connect_timeout(&listening, Duration::from_secs(3))
        .expect("connect to the container");
    let _accepted = listener.accept().expect("accept");
    let closed = std::net::SocketAddr::new(listening.ip(), 1);
    assert!(std::net::TcpStream::connect_timeout(&closed, Duration::from_secs(3)).is_err());
    let events = dp.tcp_events(ENDPOINT).expect("tcp events");
    assert_eq!(
        (
            events.tcp_syns_received,
            events.tcp_synacks_sent,
            events.tcp_resets_sent,
            events.unanswered_syns()
        ),
        (2, 1, 1, 0),
        "{events:?}"
    );

    let c = dp.endpoint_counters(ENDPOINT).expect("counters");
    assert_eq!(c.tcp_syns_received, 2, "{c:?}");
    let min_bytes = N * (14 + 20 + 8 + PAYLOAD as u64);
    assert!(c.to_container.packets >= N, "{c:?}");
    assert!(c.from_container.packets >= N, "{c:?}");
    assert!(c.to_container.bytes >= min_bytes, "{c:?}");
    assert!(c.from_container.bytes >= min_bytes, "{c:?}");
    // A duplicate attachment would count every packet twice; ARP and IPv6 chatter stay few.
    assert!(c.to_container.packets < 2 * N, "{c:?}");
    assert!(c.from_container.packets < 2 * N, "{c:?}");
    // The only drops: the namespaces' IPv6 chatter (router solicitations, MLD), which a
    // container may not send or receive.
    assert!(
        c.drops
            .keys()
            .all(|r| *r == reason::DROP_NOT_IPV4_CONTAINER),
        "{c:?}"
    );
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
    dp.attach_endpoint(ifindex, ENDPOINT, Ipv4Addr::new(10, 199, 0, 2))
        .expect("attach after detach");
    assert_eq!(tcx_prog_count(ifindex, BPF_TCX_INGRESS), 1);
    drop(dp);
    assert_eq!(tcx_prog_count(ifindex, BPF_TCX_INGRESS), 0);
    assert_eq!(tcx_prog_count(ifindex, BPF_TCX_EGRESS), 0);
}

/// Outer Ethernet + IPv4 (with `ip_options` bytes of options) + UDP to `dst_port` carrying
/// `payload`. Checksums are left zero (XDP does not check them).
fn outer_udp(ip_options: &[u8], frag: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    assert_eq!(ip_options.len() % 4, 0);
    let mut p = Vec::new();
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    let ihl = 5 + ip_options.len() / 4;
    let total = (ihl * 4 + 8 + payload.len()) as u16;
    p.push(0x40 | ihl as u8);
    p.push(0);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0]); // id
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, 17, 0, 0]); // ttl, UDP, checksum
    p.extend_from_slice(&[192, 168, 77, 1, 192, 168, 77, 2]);
    p.extend_from_slice(ip_options);
    p.extend_from_slice(&49152u16.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A VXLAN header with `flags` (the first 4 bytes), `vni` and reserved last byte `last`,
/// followed by an inner Ethernet + IPv4 header.
fn vxlan_payload(flags: [u8; 4], vni: u32, last: u8) -> Vec<u8> {
    let mut p = flags.to_vec();
    p.extend_from_slice(&vni.to_be_bytes()[1..]);
    p.push(last);
    p.extend_from_slice(&OVERLAY_MAC);
    p.extend_from_slice(&OVERLAY_SRC_MAC);
    p.extend_from_slice(&[0x08, 0x00]);
    p.extend_from_slice(&[0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 1, 0, 0]);
    p.extend_from_slice(&[10, 244, 1, 2, 10, 244, 2, 2]);
    p
}

const VXLAN_I: [u8; 4] = [0x08, 0, 0, 0];

#[test]
fn xdp_underlay_validates_vxlan() {
    if !can_run("xdp_underlay_validates_vxlan") {
        return;
    }
    underlay_validates_vxlan(PROG_XDP_UNDERLAY, XDP_PASS, XDP_DROP);
}

/// The TC variant (for veth underlays) gives the same verdicts and counts.
#[test]
fn tc_underlay_validates_vxlan() {
    if !can_run("tc_underlay_validates_vxlan") {
        return;
    }
    underlay_validates_vxlan(PROG_TC_UNDERLAY, TC_ACT_OK, TC_ACT_SHOT);
}

/// Runs the underlay checks of `program`, whose verdicts are `pass` and `drop`.
fn underlay_validates_vxlan(program: &'static str, pass: u32, drop: u32) {
    let dp = Dataplane::load().expect("load dataplane");
    let fd = dp.program_fd_for_test(program).expect("fd");
    let run = |packet: &[u8]| test_run(fd, packet).expect("test run");
    let valid_payload = vxlan_payload(VXLAN_I, vni::DEFAULT, 0);

    // Valid VXLAN passes and is counted, with or without IPv4 options. The options (4 NOPs)
    // make a parser that ignored the IHL read the options as the UDP ports and miss the packet,
    // so the count proves the offset came from the IHL.
    let valid = outer_udp(&[], 0, VXLAN_PORT, &valid_payload);
    let with_options = outer_udp(&[1, 1, 1, 1], 0, VXLAN_PORT, &valid_payload);
    assert_eq!(run(&valid), pass);
    assert_eq!(run(&with_options), pass);
    // Options followed by a bad VXLAN header: dropped, so the header was found behind them.
    let options_bad_flags = outer_udp(
        &[1, 1, 1, 1, 1, 1, 1, 1],
        0,
        VXLAN_PORT,
        &vxlan_payload([0, 0, 0, 0], 1, 0),
    );
    assert_eq!(run(&options_bad_flags), drop);

    // Malformed VXLAN: dropped.
    let truncated_header = outer_udp(&[], 0, VXLAN_PORT, &valid_payload[..6]);
    let no_inner_ethernet = outer_udp(&[], 0, VXLAN_PORT, &valid_payload[..8 + 10]);
    let i_flag_missing = outer_udp(&[], 0, VXLAN_PORT, &vxlan_payload([0, 0, 0, 0], 1, 0));
    let reserved_flag = outer_udp(&[], 0, VXLAN_PORT, &vxlan_payload([0x0c, 0, 0, 0], 1, 0));
    let reserved_byte = outer_udp(&[], 0, VXLAN_PORT, &vxlan_payload([0x08, 0, 1, 0], 1, 0));
    let reserved_last = outer_udp(&[], 0, VXLAN_PORT, &vxlan_payload(VXLAN_I, 1, 7));
    for packet in [
        &truncated_header,
        &no_inner_ethernet,
        &i_flag_missing,
        &reserved_flag,
        &reserved_byte,
        &reserved_last,
    ] {
        assert_eq!(run(packet), drop, "{packet:02x?}");
    }
    // A VNI outside the allowed range (0: no identity).
    let unknown_vni = outer_udp(&[], 0, VXLAN_PORT, &vxlan_payload(VXLAN_I, 0, 0));
    assert_eq!(run(&unknown_vni), drop);

    // Not overlay traffic: passes untouched and uncounted, however it looks inside.
    let first_fragment = outer_udp(&[], 0x2000, VXLAN_PORT, &[0xff; 4]);
    let later_fragment = outer_udp(&[], 0x0010, VXLAN_PORT, &[0xff; 4]);
    let other_port = outer_udp(&[], 0, 9000, &[0xff; 4]);
    let mut tcp = outer_udp(&[], 0, VXLAN_PORT, &[0xff; 12]);
    tcp[14 + 9] = 6;
    let mut ipv6 = vec![
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x86, 0xdd, 0x60,
    ];
    ipv6.extend_from_slice(&[0; 39]);
    ipv6[14 + 6] = 17; // next header UDP
    let mut arp = valid.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut bad_ihl = valid.clone();
    bad_ihl[14] = 0x44;
    for packet in [
        &first_fragment,
        &later_fragment,
        &other_port,
        &tcp,
        &ipv6,
        &arp,
        &bad_ihl,
    ] {
        assert_eq!(run(packet), pass, "{packet:02x?}");
    }

    let c = dp.overlay_counters().expect("counters");
    assert_eq!(
        c.underlay_vxlan,
        Counter {
            packets: 2,
            bytes: (valid.len() + with_options.len()) as u64
        }
    );
    assert_eq!(
        c.drops,
        [
            (reason::DROP_MALFORMED_VXLAN, 7),
            (reason::DROP_UNKNOWN_VNI, 1)
        ]
        .into()
    );
    assert_eq!(c.sent, Counter::default());
    assert_eq!(c.received, Counter::default());
    // Overlay counters never leak into the endpoint counters.
    assert_eq!(
        dp.endpoint_counters(0).expect("counters"),
        Default::default()
    );
}

#[test]
fn overlay_egress_and_ingress_under_test_run() {
    if !can_run("overlay_egress_and_ingress_under_test_run") {
        return;
    }
    let mut dp = Dataplane::load().expect("load dataplane");
    let egress = dp.program_fd_for_test(PROG_OVERLAY_EGRESS).expect("fd");
    let ingress = dp.program_fd_for_test(PROG_OVERLAY_INGRESS).expect("fd");
    // udp_packet goes to 10.199.0.1.
    let packet = udp_packet(16);

    // No tunnel: dropped.
    assert_eq!(test_run(egress, &packet).expect("test run"), TC_ACT_SHOT);
    // Not IPv4 (ARP), and an IPv4 header whose IHL claims more than the packet holds.
    let mut arp = packet.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(test_run(egress, &arp).expect("test run"), TC_ACT_SHOT);
    let mut truncated = packet[..34].to_vec();
    truncated[14] = 0x4f;
    assert_eq!(test_run(egress, &truncated).expect("test run"), TC_ACT_SHOT);
    let mut version6 = packet.clone();
    version6[14] = 0x65;
    assert_eq!(test_run(egress, &version6).expect("test run"), TC_ACT_SHOT);

    // Bad routes are refused before they reach the map.
    let a = Ipv4Addr::new(10, 199, 0, 0);
    let node = Ipv4Addr::new(192, 168, 77, 2);
    assert!(matches!(
        dp.set_tunnel(a, 24, node, 0),
        Err(DataplaneError::InvalidVni { vni: 0 })
    ));
    assert!(matches!(
        dp.set_tunnel(Ipv4Addr::new(10, 199, 0, 1), 24, node, 1),
        Err(DataplaneError::InvalidSubnet { .. })
    ));
    assert!(matches!(
        dp.set_tunnel(a, 33, node, 1),
        Err(DataplaneError::InvalidSubnet { .. })
    ));

    // With a tunnel: the key is set (bpf_skb_set_tunnel_key needs no device under test run),
    // the inner source MAC is rewritten, the rest of the frame is untouched.
    dp.set_tunnel(a, 24, Ipv4Addr::new(192, 168, 77, 9), vni::DEFAULT)
        .expect("set tunnel");
    dp.set_tunnel(a, 24, node, vni::DEFAULT)
        .expect("replace tunnel");
    dp.set_tunnel(Ipv4Addr::new(10, 198, 0, 0), 16, node, vni::DEFAULT)
        .expect("set tunnel");
    assert_eq!(
        dp.tunnels().expect("tunnels"),
        vec![
            (Ipv4Addr::new(10, 198, 0, 0), 16, node, 1),
            (a, 24, node, 1)
        ]
    );
    let (ret, out) = test_run_out(egress, &packet).expect("test run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(out.len(), packet.len());
    assert_eq!(&out[6..12], &OVERLAY_SRC_MAC);
    assert_eq!(&out[..6], &packet[..6]);
    assert_eq!(&out[12..], &packet[12..]);

    // Ingress under test run has no tunnel metadata: dropped as such.
    assert_eq!(test_run(ingress, &packet).expect("test run"), TC_ACT_SHOT);

    let c = dp.overlay_counters().expect("counters");
    assert_eq!(
        c.sent,
        Counter {
            packets: 1,
            bytes: packet.len() as u64
        }
    );
    assert_eq!(c.sent_by_node[&node], c.sent);
    assert_eq!(c.received, Counter::default());
    assert_eq!(
        c.drops,
        [
            (reason::DROP_NOT_IPV4, 1),
            (reason::DROP_MALFORMED_IPV4, 2),
            (reason::DROP_NO_TUNNEL, 1),
            (reason::DROP_TUNNEL_KEY, 1),
        ]
        .into()
    );

    // Removing is idempotent; without the route the packet is dropped again.
    dp.remove_tunnel(a, 24).expect("remove");
    dp.remove_tunnel(a, 24).expect("remove twice");
    assert_eq!(
        dp.tunnels().expect("tunnels"),
        vec![(Ipv4Addr::new(10, 198, 0, 0), 16, node, 1)]
    );
    assert_eq!(test_run(egress, &packet).expect("test run"), TC_ACT_SHOT);
    let c = dp.overlay_counters().expect("counters");
    assert_eq!(c.drops[&reason::DROP_NO_TUNNEL], 2);
}

// ---------------------------------------------------------------------------------------------
// Service load balancing under BPF_PROG_TEST_RUN: rewritten bytes, checksums, conntrack.

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// The Internet checksum (RFC 1071) of `data`, seeded with `sum`.
fn csum_fold(data: &[u8], mut sum: u32) -> u16 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The TCP/UDP checksum of `segment` (its checksum field zeroed) between `src` and `dst`.
fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    let sum = u32::from(!csum_fold(&pseudo, 0));
    csum_fold(segment, sum)
}

/// Ethernet + IPv4 (with `options`) + `l4` (a TCP or UDP header and payload whose checksum
/// field is filled here unless `udp_no_checksum`), with valid checksums.
fn ipv4_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: &[u8],
    frag: u16,
    mut l4: Vec<u8>,
    udp_no_checksum: bool,
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let csum_at = if proto == TCP { 16 } else { 6 };
    if l4.len() >= csum_at + 2 && !udp_no_checksum {
        let mut sum = l4_checksum(src, dst, proto, &l4);
        if proto == UDP && sum == 0 {
            sum = 0xffff;
        }
        l4[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
    }
    let ihl = 5 + options.len() / 4;
    let total = (ihl * 4 + l4.len()) as u16;
    let mut ip = vec![0x40 | ihl as u8, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34]);
    ip.extend_from_slice(&frag.to_be_bytes());
    ip.extend_from_slice(&[64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(options);
    let sum = csum_fold(&ip, 0);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    // The source MAC a container of that address has (a container's program checks it).
    let mut p = vec![0x02, 0, 0, 0, 0, 0x02];
    p.extend_from_slice(&hivemind_common::container_mac(src.octets()));
    p.extend_from_slice(&[0x08, 0x00]);
    p.extend_from_slice(&ip);
    p.extend_from_slice(&l4);
    p
}

fn tcp_segment(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes()); // seq
    t.extend_from_slice(&0u32.to_be_bytes()); // ack
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]); // offset, flags, window, csum, urg
    t.extend_from_slice(payload);
    t
}

fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn tcp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    ipv4_frame(
        src,
        dst,
        TCP,
        &[],
        0,
        tcp_segment(sport, dport, flags, b"hello"),
        false,
    )
}

/// (source, source port, destination, destination port) of an IPv4 TCP/UDP frame, after
/// checking that its IPv4 and TCP/UDP checksums are valid.
fn checked_tuple(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let ip = &frame[14..14 + ihl];
    assert_eq!(csum_fold(ip, 0), 0, "ipv4 header checksum: {frame:02x?}");
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let l4 = &frame[14 + ihl..14 + total];
    let proto = ip[9];
    let stored = if proto == TCP {
        u16::from_be_bytes([l4[16], l4[17]])
    } else {
        u16::from_be_bytes([l4[6], l4[7]])
    };
    if !(proto == UDP && stored == 0) {
        let mut zeroed = l4.to_vec();
        let at = if proto == TCP { 16 } else { 6 };
        zeroed[at..at + 2].copy_from_slice(&[0, 0]);
        let mut want = l4_checksum(src, dst, proto, &zeroed);
        if proto == UDP && want == 0 {
            want = 0xffff;
        }
        assert_eq!(stored, want, "l4 checksum: {frame:02x?}");
    }
    (
        src,
        u16::from_be_bytes([l4[0], l4[1]]),
        dst,
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}

fn backend(id: u32, last: u8, port: u16, weight: u32) -> ServiceBackend {
    ServiceBackend {
        id,
        ip: Ipv4Addr::new(10, 244, 1, last),
        port,
        weight,
    }
}

#[test]
fn helpers_build_valid_checksums() {
    // The test's own checksum code: a frame it builds verifies, a flipped bit does not.
    let frame = tcp_frame(CLIENT, 40000, VIP, 80, SYN);
    checked_tuple(&frame);
    let mut broken = frame.clone();
    broken[14 + 20 + 16] ^= 1;
    assert!(std::panic::catch_unwind(|| checked_tuple(&broken)).is_err());
}

#[test]
fn service_dnat_conntrack_and_reverse_nat_under_test_run() {
    if !can_run("service_dnat_conntrack_and_reverse_nat_under_test_run") {
        return;
    }
    let mut dp = Dataplane::load().expect("load dataplane");
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER).expect("fd");
    let b1 = backend(1, 5, 8080, 1);
    dp.set_service(VIP, 80, TCP, &[b1]).expect("set service");
    assert_eq!(
        dp.services().expect("services"),
        vec![(VIP, 80, TCP, vec![1])]
    );

    // A SYN to the VIP leaves with the backend's address and port, valid checksums.
    let syn = tcp_frame(CLIENT, 40000, VIP, 80, SYN);
    let (ret, out) = test_run_out(from, &syn).expect("test run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(out.len(), syn.len());
    assert_eq!(checked_tuple(&out), (CLIENT, 40000, b1.ip, 8080));
    // Only the addresses, ports and checksums changed.
    assert_eq!(&out[..14 + 10], &syn[..14 + 10]);
    assert_eq!(
        &out[14 + 20 + 4..14 + 20 + 16],
        &syn[14 + 20 + 4..14 + 20 + 16]
    );
    assert_eq!(&out[14 + 20 + 18..], &syn[14 + 20 + 18..]);
    assert_eq!(dp.conntrack_entries().expect("ct"), 2);

    // Three backends now: the same flow stays on its backend (conntrack)...
    let b2 = backend(2, 6, 8081, 1);
    let b3 = backend(3, 7, 8082, 1);
    dp.set_service(VIP, 80, TCP, &[b1, b2, b3])
        .expect("grow service");
    assert_eq!(
        dp.services().expect("services"),
        vec![(VIP, 80, TCP, vec![1, 2, 3])]
    );
    let ack = tcp_frame(CLIENT, 40000, VIP, 80, ACK);
    for _ in 0..3 {
        let (ret, out) = test_run_out(from, &ack).expect("test run");
        assert_eq!(ret, TC_ACT_OK);
        assert_eq!(checked_tuple(&out), (CLIENT, 40000, b1.ip, 8080));
    }
    // ...while new flows spread over all three.
    let mut seen = std::collections::BTreeSet::new();
    for sport in 41000..41060 {
        let (ret, out) =
            test_run_out(from, &tcp_frame(CLIENT, sport, VIP, 80, SYN)).expect("test run");
        assert_eq!(ret, TC_ACT_OK);
        let (src, port, dst, dport) = checked_tuple(&out);
        assert_eq!((src, port), (CLIENT, sport));
        assert!([b1, b2, b3].iter().any(|b| (b.ip, b.port) == (dst, dport)));
        seen.insert(dst);
    }
    assert_eq!(seen.len(), 3, "{seen:?}");

    // The backend's reply comes out of the client's veth from the VIP:port.
    let reply = tcp_frame(b1.ip, 8080, CLIENT, 40000, SYN | ACK);
    let (ret, out) = test_run_out(to, &reply).expect("test run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (VIP, 80, CLIENT, 40000));
    // A local backend's reply is restored on its own veth already (from_container).
    let (ret, out) = test_run_out(from, &reply).expect("test run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (VIP, 80, CLIENT, 40000));
    // Traffic that is no reply is left alone.
    let other = tcp_frame(b1.ip, 8080, CLIENT, 39999, ACK);
    let (ret, out) = test_run_out(to, &other).expect("test run");
    assert_eq!((ret, &out), (TC_ACT_OK, &other));

    // UDP, with a checksum and without one (0 stays 0).
    let dns = ServiceBackend {
        id: 10,
        ip: Ipv4Addr::new(10, 244, 2, 9),
        port: 5353,
        weight: 1,
    };
    dp.set_service(VIP, 53, UDP, &[dns]).expect("udp service");
    let query = ipv4_frame(
        CLIENT,
        VIP,
        UDP,
        &[],
        0,
        udp_datagram(5000, 53, b"query"),
        false,
    );
    let (ret, out) = test_run_out(from, &query).expect("test run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (CLIENT, 5000, dns.ip, 5353));
    let no_csum = ipv4_frame(
        CLIENT,
        VIP,
        UDP,
        &[],
        0,
        udp_datagram(5001, 53, b"query"),
        true,
    );
    let (ret, out) = test_run_out(from, &no_csum).expect("test run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (CLIENT, 5001, dns.ip, 5353));
    assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
    let answer = ipv4_frame(
        dns.ip,
        CLIENT,
        UDP,
        &[],
        0,
        udp_datagram(5353, 5000, b"answer"),
        false,
    );
    let (ret, out) = test_run_out(to, &answer).expect("test run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (VIP, 53, CLIENT, 5000));

    // IPv4 options: the TCP header is found behind them.
    let with_options = ipv4_frame(
        CLIENT,
        VIP,
        TCP,
        &[1, 1, 1, 1, 1, 1, 1, 0],
        0,
        tcp_segment(42000, 80, SYN, b""),
        false,
    );
    let (ret, out) = test_run_out(from, &with_options).expect("test run");
    assert_eq!(ret, TC_ACT_OK);
    let (src, sport, dst, dport) = checked_tuple(&out);
    assert_eq!((src, sport), (CLIENT, 42000));
    assert!([b1, b2, b3].iter().any(|b| (b.ip, b.port) == (dst, dport)));

    let c = dp.service_counters().expect("counters");
    // 1 SYN + 3 ACKs + 60 SYNs + 2 UDP + 1 with options translated; 62 + 2 + 1 new.
    assert_eq!(c.translated.packets, 1 + 3 + 60 + 2 + 1, "{c:?}");
    assert_eq!(c.new_connections, 1 + 60 + 2 + 1, "{c:?}");
    assert_eq!(c.reverse_translated.packets, 3, "{c:?}");
    assert!(c.drops.is_empty(), "{c:?}");

    // Removing a service: its flows pass untranslated; removing twice is fine.
    dp.remove_service(VIP, 53, UDP).expect("remove");
    dp.remove_service(VIP, 53, UDP).expect("remove twice");
    assert_eq!(
        dp.services().expect("services"),
        vec![(VIP, 80, TCP, vec![1, 2, 3])]
    );
    let fresh = ipv4_frame(
        CLIENT,
        VIP,
        UDP,
        &[],
        0,
        udp_datagram(6000, 53, b"query"),
        false,
    );
    let (ret, out) = test_run_out(from, &fresh).expect("test run");
    assert_eq!((ret, &out), (TC_ACT_OK, &fresh));

    // Shrinking to one backend: new flows all go there, the slots are gone from the map.
    dp.set_service(VIP, 80, TCP, &[b3]).expect("shrink");
    assert_eq!(
        dp.services().expect("services"),
        vec![(VIP, 80, TCP, vec![3])]
    );
    for sport in 43000..43020 {
        let (_, out) =
            test_run_out(from, &tcp_frame(CLIENT, sport, VIP, 80, SYN)).expect("test run");
        assert_eq!(checked_tuple(&out).2, b3.ip);
    }
    // The first flow's backend is gone: it is re-balanced rather than blackholed.
    let (_, out) = test_run_out(from, &ack).expect("test run");
    assert_eq!(checked_tuple(&out).2, b3.ip);
}

/// Client-address affinity (an A/B test): every connection of one client address goes to the
/// same variant's run of slots, whatever its source port; the clients split by the runs.
#[test]
fn affinity_frontends_keep_each_client_on_its_variant_under_test_run() {
    if !can_run("affinity_frontends_keep_each_client_on_its_variant_under_test_run") {
        return;
    }
    let mut dp = Dataplane::load().expect("load dataplane");
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    let (v1, v2) = (backend(1, 5, 8080, 1), backend(2, 6, 8080, 1));
    let slots = hivemind::dataplane::affinity_slots(&[(500, vec![1]), (500, vec![2])], &[]);
    dp.set_frontend_slots(
        VIP,
        80,
        TCP,
        &[v1, v2],
        &slots,
        hivemind_common::service_flags::AFFINITY,
    )
    .expect("affinity frontend");
    let mut on_v1 = 0;
    for client in 0..200u16 {
        let src = Ipv4Addr::new(10, 244, 3 + (client / 250) as u8, 1 + (client % 250) as u8);
        let mut seen = std::collections::BTreeSet::new();
        for sport in [40000, 40001, 51234] {
            let (ret, out) =
                test_run_out(from, &tcp_frame(src, sport, VIP, 80, SYN)).expect("test run");
            assert_eq!(ret, TC_ACT_OK);
            let (_, _, dst, _) = checked_tuple(&out);
            seen.insert(dst);
        }
        assert_eq!(seen.len(), 1, "client {src} went to {seen:?}");
        on_v1 += usize::from(seen.contains(&v1.ip));
    }
    assert!((80..=120).contains(&on_v1), "{on_v1} of 200 clients on v1");
    // The same frontend without affinity spreads one client's connections.
    dp.set_frontend_slots(VIP, 80, TCP, &[v1, v2], &slots, 0)
        .expect("plain frontend");
    let seen: std::collections::BTreeSet<Ipv4Addr> = (42000..42040)
        .map(|sport| {
            let (_, out) =
                test_run_out(from, &tcp_frame(CLIENT, sport, VIP, 80, SYN)).expect("test run");
            checked_tuple(&out).2
        })
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn service_drops_and_malformed_packets_under_test_run() {
    if !can_run("service_drops_and_malformed_packets_under_test_run") {
        return;
    }
    let mut dp = Dataplane::load().expect("load dataplane");
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER).expect("fd");

    // Refused before they reach the maps.
    let b = backend(1, 5, 8080, 1);
    assert!(matches!(
        dp.set_service(Ipv4Addr::new(10, 97, 0, 1), 80, TCP, &[b]),
        Err(DataplaneError::InvalidVip { .. })
    ));
    assert!(matches!(
        dp.set_service(VIP, 80, 1, &[b]),
        Err(DataplaneError::InvalidProtocol { proto: 1 })
    ));
    assert!(matches!(
        dp.set_node_config(1, Ipv4Addr::new(10, 244, 1, 1), 33),
        Err(DataplaneError::InvalidSubnet { .. })
    ));

    // A VIP with no backend (or only weight-0 ones): dropped and counted.
    dp.set_service(VIP, 80, TCP, &[]).expect("empty service");
    assert_eq!(
        dp.services().expect("services"),
        vec![(VIP, 80, TCP, vec![])]
    );
    let syn = tcp_frame(CLIENT, 40000, VIP, 80, SYN);
    assert_eq!(test_run(from, &syn).expect("test run"), TC_ACT_SHOT);
    dp.set_service(VIP, 80, TCP, &[backend(1, 5, 8080, 0)])
        .expect("weight-0 service");
    assert_eq!(test_run(from, &syn).expect("test run"), TC_ACT_SHOT);
    // Another port of the same VIP is no service: passes untouched.
    let other_port = tcp_frame(CLIENT, 40000, VIP, 81, SYN);
    let (ret, out) = test_run_out(from, &other_port).expect("test run");
    assert_eq!((ret, &out), (TC_ACT_OK, &other_port));

    dp.set_service(VIP, 80, TCP, &[b]).expect("service");
    // Truncated TCP header to the VIP: the ports are there, the checksum is not.
    let truncated = syn[..14 + 20 + 10].to_vec();
    assert_eq!(test_run(from, &truncated).expect("test run"), TC_ACT_SHOT);
    // A later fragment to the VIP whose first fragment was never seen: nothing to follow
    // (fragments that were are translated, see `fragments_and_icmp_errors_under_test_run`).
    let later_fragment = ipv4_frame(CLIENT, VIP, TCP, &[], 0x0004, vec![0xab; 24], false);
    assert_eq!(
        test_run(from, &later_fragment).expect("test run"),
        TC_ACT_SHOT
    );
    // The same shapes elsewhere are not the load balancer's: they pass untouched.
    let elsewhere = Ipv4Addr::new(10, 244, 2, 2);
    let mut truncated_elsewhere = tcp_frame(CLIENT, 40000, elsewhere, 80, SYN);
    truncated_elsewhere.truncate(14 + 20 + 10);
    let fragment_elsewhere = ipv4_frame(CLIENT, elsewhere, TCP, &[], 0x0004, vec![0; 24], false);
    let mut arp = syn.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut bad_version = syn.clone();
    bad_version[14] = 0x65;
    let mut icmp_to_vip = syn.clone();
    icmp_to_vip[14 + 9] = 1;
    for packet in [
        &truncated_elsewhere,
        &fragment_elsewhere,
        &arp,
        &bad_version,
        &icmp_to_vip,
    ] {
        let (ret, out) = test_run_out(from, packet).expect("test run");
        assert_eq!((ret, &out), (TC_ACT_OK, packet), "{packet:02x?}");
        let (ret, out) = test_run_out(to, packet).expect("test run");
        assert_eq!((ret, &out), (TC_ACT_OK, packet), "{packet:02x?}");
    }
    // Truncated replies are left for the kernel too.
    let mut truncated_reply = tcp_frame(b.ip, 8080, CLIENT, 40000, ACK);
    truncated_reply.truncate(14 + 20 + 10);
    assert_eq!(test_run(to, &truncated_reply).expect("test run"), TC_ACT_OK);

    let c = dp.service_counters().expect("counters");
    assert_eq!(c.no_backend_drops, 2, "{c:?}");
    assert_eq!(
        c.drops,
        [
            (reason::DROP_NO_BACKEND, 2),
            (reason::DROP_SERVICE_UNSUPPORTED, 2)
        ]
        .into()
    );
    assert_eq!(c.translated, Counter::default());
    // The drops show in the endpoint's counters as well (test runs: endpoint 0).
    let e = dp.endpoint_counters(0).expect("counters");
    assert_eq!(e.drops[&reason::DROP_NO_BACKEND], 2);
    assert_eq!(e.drops[&reason::DROP_SERVICE_UNSUPPORTED], 2);
    assert_eq!(dp.conntrack_entries().expect("ct"), 0);

    // Another service CIDR (`--service-cidr`): the programs translate there, and an address of
    // the old one is nobody's VIP any more.
    for (net, prefix) in [
        (Ipv4Addr::new(172, 20, 4, 0), 21),
        (Ipv4Addr::new(172, 20, 4, 1), 22),
        (Ipv4Addr::new(172, 20, 4, 0), 0),
        (Ipv4Addr::new(172, 20, 4, 0), 33),
    ] {
        assert!(
            matches!(
                dp.set_service_cidr(net, prefix),
                Err(DataplaneError::InvalidSubnet { .. })
            ),
            "{net}/{prefix}"
        );
    }
    dp.set_service_cidr(Ipv4Addr::new(172, 20, 4, 0), 22)
        .expect("service cidr");
    let new_vip = Ipv4Addr::new(172, 20, 7, 9);
    assert!(matches!(
        dp.set_service(VIP, 80, TCP, &[b]),
        Err(DataplaneError::InvalidVip { prefix: 22, .. })
    ));
    dp.set_service(new_vip, 80, TCP, &[b])
        .expect("service in the new cidr");
    let (ret, out) = test_run_out(from, &tcp_frame(CLIENT, 40002, new_vip, 80, SYN)).expect("run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (CLIENT, 40002, b.ip, 8080));
    // The old VIP's service is still in the map, but its address is no service's any more.
    assert_eq!(
        test_run_out(from, &syn).expect("test run"),
        (TC_ACT_OK, syn.clone())
    );
}

#[test]
fn node_originated_service_traffic_under_test_run() {
    if !can_run("node_originated_service_traffic_under_test_run") {
        return;
    }
    let mut dp = Dataplane::load().expect("load dataplane");
    let egress = dp.program_fd_for_test(PROG_OVERLAY_EGRESS).expect("fd");
    let gateway = Ipv4Addr::new(10, 244, 1, 1);
    dp.set_node_config(1, gateway, 24).expect("node config");
    let remote = ServiceBackend {
        id: 7,
        ip: Ipv4Addr::new(10, 244, 2, 2),
        port: 8080,
        weight: 1,
    };
    dp.set_service(VIP, 80, TCP, &[remote]).expect("service");
    let syn = tcp_frame(gateway, 50000, VIP, 80, SYN);
    // The backend's node has no tunnel yet: translated, then dropped for the missing tunnel.
    assert_eq!(test_run(egress, &syn).expect("test run"), TC_ACT_SHOT);
    dp.set_tunnel(
        Ipv4Addr::new(10, 244, 2, 0),
        24,
        Ipv4Addr::new(192, 168, 77, 2),
        vni::DEFAULT,
    )
    .expect("tunnel");
    let (ret, out) = test_run_out(egress, &syn).expect("test run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (gateway, 50000, remote.ip, 8080));
    assert_eq!(&out[6..12], &OVERLAY_SRC_MAC);
    let c = dp.overlay_counters().expect("counters");
    assert_eq!(c.sent_by_node[&Ipv4Addr::new(192, 168, 77, 2)].packets, 1);
    assert_eq!(c.drops, [(reason::DROP_NO_TUNNEL, 1)].into());

    // No backend: dropped on the overlay device, counted there.
    dp.set_service(VIP, 80, TCP, &[]).expect("empty");
    let syn2 = tcp_frame(gateway, 50001, VIP, 80, SYN);
    assert_eq!(test_run(egress, &syn2).expect("test run"), TC_ACT_SHOT);
    let c = dp.overlay_counters().expect("counters");
    assert_eq!(c.drops[&reason::DROP_NO_BACKEND], 1);
    assert_eq!(dp.service_counters().expect("counters").no_backend_drops, 1);
}

// ---------------------------------------------------------------------------------------------
// Network policy under BPF_PROG_TEST_RUN: identities, rules, conntrack, flow events.

mod policy_support {
    pub use hivemind::policy::{Allow, EndpointRules, PeerMatch, Protocol};
    pub use hivemind_common::mark;
}
use policy_support::*;

const SK_BUFF_SIZE: usize = 192;
const ICMP: u8 = 1;

/// BPF_PROG_TEST_RUN with a `__sk_buff` context carrying `ifindex` and `mark`.
fn test_run_ctx(prog_fd: i32, packet: &[u8], ifindex: u32, mark: u32) -> u32 {
    let mut ctx = [0u8; SK_BUFF_SIZE];
    ctx[8..12].copy_from_slice(&mark.to_ne_bytes()); // mark
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes()); // ifindex
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog_fd as u32); // test.prog_fd
    put_u32(&mut attr, 8, packet.len() as u32); // test.data_size_in
    put_u64(&mut attr, 16, packet.as_ptr() as u64); // test.data_in
    put_u32(&mut attr, 32, 1); // test.repeat
    put_u32(&mut attr, 40, ctx.len() as u32); // test.ctx_size_in
    put_u64(&mut attr, 48, ctx.as_ptr() as u64); // test.ctx_in
    bpf(BPF_PROG_TEST_RUN, &mut attr).expect("BPF_PROG_TEST_RUN with ctx");
    get_u32(&attr, 4)
}

fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    tcp_frame(src, sport, dst, dport, SYN)
}

fn allow(peer: PeerMatch, protocol: Protocol, port_min: u16, port_max: u16) -> Allow {
    Allow {
        peer,
        protocol,
        port_min,
        port_max,
    }
}

fn udp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    ipv4_frame(
        src,
        dst,
        UDP,
        &[],
        0,
        udp_datagram(sport, dport, b"q"),
        false,
    )
}

fn icmp_frame(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8) -> Vec<u8> {
    ipv4_frame(
        src,
        dst,
        ICMP,
        &[],
        0,
        vec![ty, code, 0, 0, 0, 0, 5, 0xdc],
        false,
    )
}

/// A namespace with veths standing in for container veths.
fn policy_testbed(names: &[&str]) -> (NetNs, Vec<u32>) {
    let ns = NetNs::new("pol");
    ns.enter();
    // No IPv6 autoconfiguration: its router solicitations and MLD reports
    // would reach the endpoints and make the verdict counts flaky.
    for knob in ["all", "default"] {
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6"), "1")
            .expect("disable ipv6");
    }
    let mut indexes = Vec::new();
    for name in names {
        let peer = format!("{name}p");
        ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", name, "up"]);
        ip(&["link", "set", &peer, "up"]);
        indexes.push(ifindex(name));
    }
    (ns, indexes)
}

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
const POD_C: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 5);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
const ID_A: u32 = 1000;
const ID_B: u32 = 2000;
const ID_C: u32 = 3000;
const EP_A: u32 = 10;
const EP_B: u32 = 20;

#[test]
fn policy_verdicts_under_test_run() {
    if !can_run("policy_verdicts_under_test_run") {
        return;
    }
    let (_ns, idx) = policy_testbed(&["hmpa", "hmpb"]);
    let (if_a, if_b) = (idx[0], idx[1]);
    let mut dp = Dataplane::load().expect("load dataplane");
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER).expect("fd");
    dp.attach_endpoint(if_a, EP_A, POD_A).expect("attach a");
    dp.attach_endpoint(if_b, EP_B, POD_B).expect("attach b");
    assert!(matches!(
        dp.set_endpoint_identity(9999, 1),
        Err(DataplaneError::EndpointNotAttached { ifindex: 9999 })
    ));
    dp.set_endpoint_identity(if_a, ID_A).expect("identity");
    dp.set_endpoint_identity(if_b, ID_B).expect("identity");
    dp.set_node_config(if_a, GATEWAY, 24).expect("node config");
    for (addr, id) in [(POD_A, ID_A), (POD_B, ID_B), (POD_C, ID_C), (GATEWAY, 1)] {
        dp.set_ipcache(addr, IpcacheEntry::local(id))
            .expect("ipcache");
    }
    assert!(matches!(
        dp.set_ipcache(POD_A, IpcacheEntry::remote(5, Ipv4Addr::UNSPECIFIED)),
        Err(DataplaneError::InvalidTunnelEndpoint { .. })
    ));
    assert!(matches!(
        dp.set_ipcache(POD_A, IpcacheEntry::local(0)),
        Err(DataplaneError::InvalidIdentity { identity: 0 })
    ));
    assert_eq!(dp.ipcache().expect("ipcache").len(), 4);
    let into_b = |p: &[u8]| test_run_ctx(to, p, if_b, 0);
    let from_b = |p: &[u8]| test_run_ctx(from, p, if_b, 0);

    // Unselected: everything passes and nothing is tracked; each new flow is reported once as
    // `no_policy`: a TCP SYN (not the rest of its connection), the first datagram of a UDP
    // tuple (not its repeats, not the replies).
    let ack = |src, sport, dst, dport| tcp_frame(src, sport, dst, dport, 0x10);
    assert_eq!(into_b(&syn(POD_C, 1, POD_B, 9)), TC_ACT_OK);
    assert_eq!(into_b(&ack(POD_C, 1, POD_B, 9)), TC_ACT_OK);
    assert_eq!(from_b(&tcp_frame(POD_B, 9, POD_C, 1, 0x12)), TC_ACT_OK);
    assert_eq!(from_b(&syn(POD_B, 2, POD_C, 9)), TC_ACT_OK);
    for _ in 0..3 {
        assert_eq!(into_b(&udp_frame(POD_C, 5353, POD_B, 53)), TC_ACT_OK);
        assert_eq!(from_b(&udp_frame(POD_B, 53, POD_C, 5353)), TC_ACT_OK);
    }
    assert_eq!(from_b(&udp_frame(POD_B, 6000, POD_C, 7000)), TC_ACT_OK);
    assert_eq!(into_b(&udp_frame(POD_C, 7000, POD_B, 6000)), TC_ACT_OK);
    let (events, lost) = dp.drain_flows().expect("flows");
    assert_eq!(lost, 0);
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.direction,
                e.src,
                e.sport,
                e.dst,
                e.dport,
                e.verdict,
                e.reason.name,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ingress", POD_C, 1, POD_B, 9, "allowed", "no_policy"),
            ("egress", POD_B, 2, POD_C, 9, "allowed", "no_policy"),
            ("ingress", POD_C, 5353, POD_B, 53, "allowed", "no_policy"),
            ("egress", POD_B, 6000, POD_C, 7000, "allowed", "no_policy"),
        ]
    );
    assert_eq!(
        events[0].peer_identity, ID_C,
        "the peer's identity from the ipcache"
    );
    assert_eq!(events[0].endpoint_id, EP_B);

    // B's ingress: identity A on TCP 8000-8100, the subnet 10.244.2.0/24 on TCP 443.
    let rules = EndpointRules {
        ingress: Some(
            [
                allow(PeerMatch::Identity(ID_A), Protocol::Tcp, 8000, 8100),
                allow(
                    PeerMatch::Cidr(Ipv4Addr::new(10, 244, 2, 0), 24),
                    Protocol::Tcp,
                    443,
                    443,
                ),
            ]
            .into(),
        ),
        egress: None,
    };
    dp.set_endpoint_policy(EP_B, &rules).expect("policy");
    assert_eq!(into_b(&syn(POD_A, 40000, POD_B, 8050)), TC_ACT_OK);
    assert_eq!(into_b(&syn(POD_A, 40001, POD_B, 9000)), TC_ACT_SHOT);
    // Rate-limited events: the same denied 5-tuple again is dropped but not recorded again.
    assert_eq!(into_b(&syn(POD_A, 40001, POD_B, 9000)), TC_ACT_SHOT);
    // CIDR: a container of the subnet matches by address, on the allowed port only.
    assert_eq!(into_b(&syn(POD_C, 40002, POD_B, 443)), TC_ACT_OK);
    assert_eq!(into_b(&syn(POD_C, 40003, POD_B, 8050)), TC_ACT_SHOT);
    // An address outside everything (world) is denied; with A's identity in the mark (as
    // hm_overlay_ingress writes it from the VNI) it is allowed without any ipcache lookup.
    let world = Ipv4Addr::new(192, 0, 2, 9);
    assert_eq!(into_b(&syn(world, 40004, POD_B, 8050)), TC_ACT_SHOT);
    let marked = mark::IDENTITY_MAGIC | ID_A;
    assert_eq!(
        test_run_ctx(to, &syn(world, 40005, POD_B, 8050), if_b, marked),
        TC_ACT_OK
    );
    // ICMP fragmentation-needed always passes; other ICMP does not.
    assert_eq!(into_b(&icmp_frame(world, POD_B, 3, 4)), TC_ACT_OK);
    assert_eq!(into_b(&icmp_frame(world, POD_B, 8, 0)), TC_ACT_SHOT);
    // Not IPv4 passes; a broken IPv4 header gets a counted drop; a cut TCP header is port 0.
    let mut arp = syn(POD_A, 1, POD_B, 2);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(into_b(&arp), TC_ACT_OK);
    let mut bad_ihl = syn(POD_A, 1, POD_B, 8050);
    bad_ihl[14] = 0x4f;
    assert_eq!(into_b(&bad_ihl[..40]), TC_ACT_SHOT);
    assert_eq!(
        into_b(&syn(POD_A, 1, POD_B, 8050)[..14 + 20 + 2]),
        TC_ACT_SHOT
    );

    let c = dp.endpoint_counters(EP_B).expect("counters");
    assert_eq!(c.drops[&reason::DROP_POLICY], 6);
    assert_eq!(c.drops[&reason::DROP_MALFORMED_IPV4], 1);
    let (events, lost) = dp.drain_flows().expect("flows");
    assert_eq!(lost, 0);
    let denied: Vec<_> = events.iter().filter(|e| e.verdict == "denied").collect();
    let allowed: Vec<_> = events.iter().filter(|e| e.verdict == "allowed").collect();
    // Six drops, five records: the repeated 5-tuple was recorded once.
    assert_eq!(denied.len(), 5, "{events:#?}");
    assert_eq!(allowed.len(), 3, "{events:#?}");
    let first = denied[0];
    assert_eq!(
        (first.src, first.sport, first.dst, first.dport, first.proto),
        (POD_A, 40001, POD_B, 9000, TCP)
    );
    assert_eq!(
        (first.endpoint_id, first.direction, first.peer_identity),
        (EP_B, "ingress", ID_A)
    );
    assert_eq!(first.reason.code, reason::DROP_POLICY);
    assert_eq!(first.reason.name, "drop_policy");
    assert!(first.time_ns > 0);
    assert_eq!(
        serde_json::to_value(first).expect("json")["verdict"],
        "denied"
    );
    assert!(
        allowed
            .iter()
            .any(|e| e.peer_identity == ID_A && e.dport == 8050 && e.sport == 40005)
    );

    // B's egress enforced with no rule: replies of allowed flows pass, new flows do not, DNS to
    // the gateway and fragmentation-needed do.
    let rules = EndpointRules {
        egress: Some(Default::default()),
        ..rules
    };
    dp.set_endpoint_policy(EP_B, &rules).expect("policy");
    assert_eq!(from_b(&syn(POD_B, 8050, POD_A, 40000)), TC_ACT_OK);
    assert_eq!(from_b(&syn(POD_B, 8051, POD_A, 40000)), TC_ACT_SHOT);
    assert_eq!(from_b(&syn(POD_B, 40010, POD_A, 8050)), TC_ACT_SHOT);
    assert_eq!(from_b(&udp_frame(POD_B, 5353, GATEWAY, 53)), TC_ACT_OK);
    assert_eq!(from_b(&syn(POD_B, 5354, GATEWAY, 53)), TC_ACT_OK);
    assert_eq!(from_b(&udp_frame(POD_B, 5355, POD_A, 53)), TC_ACT_SHOT);
    assert_eq!(from_b(&icmp_frame(POD_B, POD_A, 3, 4)), TC_ACT_OK);
    // The allowed inbound flow keeps flowing in its original direction.
    assert_eq!(into_b(&syn(POD_A, 40000, POD_B, 8050)), TC_ACT_OK);

    // A's egress to B on UDP 7000-7010 (and the reply of that flow goes into A).
    let a_rules = EndpointRules {
        ingress: Some(Default::default()),
        egress: Some([allow(PeerMatch::Identity(ID_B), Protocol::Udp, 7000, 7010)].into()),
    };
    dp.set_endpoint_policy(EP_A, &a_rules).expect("policy a");
    let from_a = |p: &[u8]| test_run_ctx(from, p, if_a, 0);
    let into_a = |p: &[u8]| test_run_ctx(to, p, if_a, 0);
    assert_eq!(from_a(&udp_frame(POD_A, 5000, POD_B, 7005)), TC_ACT_OK);
    assert_eq!(into_a(&udp_frame(POD_B, 7005, POD_A, 5000)), TC_ACT_OK);
    assert_eq!(into_a(&udp_frame(POD_B, 7006, POD_A, 5000)), TC_ACT_SHOT);
    assert_eq!(from_a(&udp_frame(POD_A, 5001, POD_B, 7011)), TC_ACT_SHOT);
    assert_eq!(from_a(&udp_frame(POD_A, 5002, POD_C, 7005)), TC_ACT_SHOT);

    // Updating takes effect for new flows; turning enforcement off allows everything again.
    let rules = EndpointRules {
        ingress: Some([allow(PeerMatch::Any, Protocol::Tcp, 9000, 9000)].into()),
        egress: None,
    };
    dp.set_endpoint_policy(EP_B, &rules).expect("policy");
    assert_eq!(into_b(&syn(POD_C, 41000, POD_B, 9000)), TC_ACT_OK);
    assert_eq!(into_b(&syn(POD_C, 41001, POD_B, 443)), TC_ACT_SHOT);
    assert_eq!(from_b(&syn(POD_B, 41002, POD_A, 1)), TC_ACT_OK);
    dp.set_endpoint_policy(EP_B, &EndpointRules::default())
        .expect("policy off");
    assert_eq!(into_b(&syn(POD_C, 41003, POD_B, 443)), TC_ACT_OK);
    assert_eq!(into_b(&icmp_frame(world, POD_B, 8, 0)), TC_ACT_OK);

    // More ranges than an entry holds are refused before anything is written.
    let many: std::collections::BTreeSet<Allow> = (0..9)
        .map(|i| allow(PeerMatch::Identity(ID_A), Protocol::Tcp, i * 10, i * 10))
        .collect();
    let too_many = EndpointRules {
        ingress: Some(many),
        egress: None,
    };
    assert!(matches!(
        dp.set_endpoint_policy(EP_B, &too_many),
        Err(DataplaneError::TooManyPortRanges { count: 9, .. })
    ));
    assert_eq!(into_b(&syn(POD_C, 41004, POD_B, 443)), TC_ACT_OK);

    // Every verdict is counted.
    let c = dp.endpoint_counters(EP_A).expect("counters a");
    assert_eq!(c.drops[&reason::DROP_POLICY], 3);
    assert_eq!(c.from_container.packets + c.to_container.packets, 2);
}

#[test]
fn policy_applies_to_the_service_backend_under_test_run() {
    if !can_run("policy_applies_to_the_service_backend_under_test_run") {
        return;
    }
    let (_ns, idx) = policy_testbed(&["hmsa"]);
    let if_a = idx[0];
    let mut dp = Dataplane::load().expect("load dataplane");
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER).expect("fd");
    dp.attach_endpoint(if_a, EP_A, POD_A).expect("attach");
    dp.set_ipcache(POD_B, IpcacheEntry::local(ID_B))
        .expect("ipcache");
    dp.set_ipcache(POD_C, IpcacheEntry::local(ID_C))
        .expect("ipcache");
    let vip_b = VIP;
    let vip_c = Ipv4Addr::new(10, 96, 0, 11);
    let b = ServiceBackend {
        id: 1,
        ip: POD_B,
        port: 8080,
        weight: 1,
    };
    let c = ServiceBackend {
        id: 2,
        ip: POD_C,
        port: 8080,
        weight: 1,
    };
    dp.set_service(vip_b, 80, TCP, &[b]).expect("service");
    dp.set_service(vip_c, 80, TCP, &[c]).expect("service");
    let rules = EndpointRules {
        ingress: Some(Default::default()),
        egress: Some([allow(PeerMatch::Identity(ID_B), Protocol::Tcp, 8080, 8080)].into()),
    };
    dp.set_endpoint_policy(EP_A, &rules).expect("policy");
    // The rule names the backend's identity and port, not the VIP's.
    let (ret, out) = test_run_out_ctx(from, &syn(POD_A, 40000, vip_b, 80), if_a);
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (POD_A, 40000, POD_B, 8080));
    assert_eq!(
        test_run_ctx(from, &syn(POD_A, 40001, vip_c, 80), if_a, 0),
        TC_ACT_SHOT
    );
    // The reply, already restored to the VIP (by the backend's veth or the overlay), passes
    // A's enforced ingress as the reply of the allowed flow; an unsolicited one does not.
    assert_eq!(
        test_run_ctx(to, &syn(vip_b, 80, POD_A, 40000), if_a, 0),
        TC_ACT_OK
    );
    assert_eq!(
        test_run_ctx(to, &syn(vip_b, 80, POD_A, 40009), if_a, 0),
        TC_ACT_SHOT
    );
    let (events, _) = dp.drain_flows().expect("flows");
    assert!(events.iter().any(|e| e.verdict == "denied"
        && e.dst == POD_C
        && e.dport == 8080
        && e.peer_identity == ID_C
        && e.direction == "egress"));
}

/// A backend's replies are restored to the VIP on its own veth whether the endpoint was attached
/// before its service was written or after (only backends are looked up for reverse NAT), and
/// an endpoint's forwarded packets count at a slot of its own that a later endpoint reuses from
/// zero.
#[test]
fn backends_are_reverse_translated_and_slots_start_from_zero_under_test_run() {
    if !can_run("backends_are_reverse_translated_and_slots_start_from_zero_under_test_run") {
        return;
    }
    let (_ns, idx) = policy_testbed(&["hmka", "hmkb", "hmkc"]);
    let (if_a, if_b, if_c) = (idx[0], idx[1], idx[2]);
    const POD_D: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 4);
    const EP_D: u32 = 40;
    let mut dp = Dataplane::load().expect("load dataplane");
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    dp.attach_endpoint(if_a, EP_A, POD_A).expect("attach a");
    // B is attached before its service is written, D after.
    dp.attach_endpoint(if_b, EP_B, POD_B).expect("attach b");
    let vip_d = Ipv4Addr::new(10, 96, 0, 11);
    dp.set_service(VIP, 80, TCP, &[backend(1, 3, 8080, 1)])
        .expect("service b");
    dp.set_service(vip_d, 80, TCP, &[backend(2, 4, 8080, 1)])
        .expect("service d");
    dp.attach_endpoint(if_c, EP_D, POD_D).expect("attach d");
    for (vip, pod, if_backend, sport) in [(VIP, POD_B, if_b, 40000), (vip_d, POD_D, if_c, 40001)] {
        let (ret, out) = test_run_out_ctx(from, &syn(POD_A, sport, vip, 80), if_a);
        assert_eq!(ret, TC_ACT_OK);
        assert_eq!(checked_tuple(&out), (POD_A, sport, pod, 8080));
        let reply = tcp_frame(pod, 8080, POD_A, sport, SYN | ACK);
        let (ret, out) = test_run_out_ctx(from, &reply, if_backend);
        assert_eq!(ret, TC_ACT_OK);
        assert_eq!(
            checked_tuple(&out),
            (vip, 80, POD_A, sport),
            "the reply of {pod} was not restored to its VIP"
        );
    }
    let a = dp.endpoint_counters(EP_A).expect("counters a");
    assert_eq!(a.from_container.packets, 2, "{a:?}");
    let d = dp.endpoint_counters(EP_D).expect("counters d");
    assert_eq!(d.from_container.packets, 1, "{d:?}");
    // A's slot is free again once it is detached, and the endpoint that takes it starts at 0.
    dp.detach_endpoint(if_a).expect("detach a");
    dp.attach_endpoint(if_a, EP_A + 1, POD_A)
        .expect("attach a again");
    assert_eq!(
        dp.endpoint_counters(EP_A + 1).expect("counters"),
        Default::default()
    );
    let (ret, _) = test_run_out_ctx(from, &udp_frame(POD_A, 5000, POD_B, 53), if_a);
    assert_eq!(ret, TC_ACT_OK);
    let a = dp.endpoint_counters(EP_A + 1).expect("counters");
    assert_eq!(
        (a.from_container.packets, a.to_container.packets),
        (1, 0),
        "{a:?}"
    );
}

/// `test_run_ctx` that also returns the packet as the program left it.
fn test_run_out_ctx(prog_fd: i32, packet: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
    let mut ctx = [0u8; SK_BUFF_SIZE];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; packet.len() + 256];
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog_fd as u32);
    put_u32(&mut attr, 8, packet.len() as u32);
    put_u32(&mut attr, 12, out.len() as u32);
    put_u64(&mut attr, 16, packet.as_ptr() as u64);
    put_u64(&mut attr, 24, out.as_mut_ptr() as u64);
    put_u32(&mut attr, 32, 1);
    put_u32(&mut attr, 40, ctx.len() as u32);
    put_u64(&mut attr, 48, ctx.as_ptr() as u64);
    bpf(BPF_PROG_TEST_RUN, &mut attr).expect("BPF_PROG_TEST_RUN with ctx");
    out.truncate(get_u32(&attr, 12) as usize);
    (get_u32(&attr, 4), out)
}

#[test]
fn policy_scale_thousands_of_rules_under_test_run() {
    if !can_run("policy_scale_thousands_of_rules_under_test_run") {
        return;
    }
    let (_ns, idx) = policy_testbed(&["hmsc"]);
    let if_b = idx[0];
    let mut dp = Dataplane::load().expect("load dataplane");
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER).expect("fd");
    dp.attach_endpoint(if_b, EP_B, POD_B).expect("attach");
    // 5,000 identities, each allowed on two ports of its own: 5,000 entries, 10,000 rules.
    let port_of = |id: u32| 1000 + (id % 5000) as u16;
    let rules: std::collections::BTreeSet<Allow> = (10_000..15_000u32)
        .flat_map(|id| {
            [
                allow(
                    PeerMatch::Identity(id),
                    Protocol::Tcp,
                    port_of(id),
                    port_of(id),
                ),
                allow(PeerMatch::Identity(id), Protocol::Tcp, 30000, 30010),
            ]
        })
        .collect();
    assert_eq!(rules.len(), 10_000);
    let started = std::time::Instant::now();
    dp.set_endpoint_policy(
        EP_B,
        &EndpointRules {
            ingress: Some(rules),
            egress: None,
        },
    )
    .expect("policy");
    eprintln!("5,000 policy entries written in {:?}", started.elapsed());
    for (i, id) in [10_000u32, 12_345, 14_999].into_iter().enumerate() {
        let peer = Ipv4Addr::new(10, 244, 3, 10 + i as u8);
        dp.set_ipcache(peer, IpcacheEntry::local(id))
            .expect("ipcache");
        assert_eq!(
            test_run_ctx(to, &syn(peer, 50000, POD_B, port_of(id)), if_b, 0),
            TC_ACT_OK,
            "identity {id}"
        );
        assert_eq!(
            test_run_ctx(to, &syn(peer, 50001, POD_B, 30005), if_b, 0),
            TC_ACT_OK
        );
        assert_eq!(
            test_run_ctx(to, &syn(peer, 50002, POD_B, port_of(id) + 1), if_b, 0),
            TC_ACT_SHOT,
            "identity {id}"
        );
    }
    // Shrinking to one rule removes the 4,999 stale entries.
    dp.set_endpoint_policy(
        EP_B,
        &EndpointRules {
            ingress: Some([allow(PeerMatch::Identity(10_000), Protocol::Tcp, 1, 1)].into()),
            egress: None,
        },
    )
    .expect("shrink");
    let peer = Ipv4Addr::new(10, 244, 3, 11);
    assert_eq!(
        test_run_ctx(to, &syn(peer, 50003, POD_B, port_of(12_345)), if_b, 0),
        TC_ACT_SHOT
    );
    let c = dp.endpoint_counters(EP_B).expect("counters");
    assert_eq!(c.drops[&reason::DROP_POLICY], 4);
    assert_eq!(c.to_container.packets, 6);
}

// ---------------------------------------------------------------------------------------------
// Host routing under BPF_PROG_TEST_RUN: the redirect verdicts and the headers as rewritten.

const TC_ACT_REDIRECT: u32 = 7;
const BRIDGE_MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];

/// Whether the IPv4 header of `frame` (no options) carries a valid checksum.
fn ipv4_checksum_ok(frame: &[u8]) -> bool {
    csum_fold(&frame[14..34], 0) == 0
}

#[test]
fn host_routing_redirects_and_rewrites_under_test_run() {
    if !can_run("host_routing_redirects_and_rewrites_under_test_run") {
        return;
    }
    let (_ns, idx) = policy_testbed(&["hmra", "hmrb", "hmru"]);
    let (if_a, if_b, underlay) = (idx[0], idx[1], idx[2]);
    let mac = BRIDGE_MAC.map(|b| format!("{b:02x}")).join(":");
    ip(&["link", "add", "hm0", "address", &mac, "type", "bridge"]);
    ip(&[
        "link", "add", "hm-vxlan", "mtu", "1450", "type", "vxlan", "external", "dstport", "4789",
    ]);
    let mut dp = Dataplane::load().expect("load dataplane");
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    let egress = dp.program_fd_for_test(PROG_OVERLAY_EGRESS).expect("fd");
    dp.attach_endpoint(if_a, EP_A, POD_A).expect("attach a");
    dp.attach_endpoint(if_b, EP_B, POD_B).expect("attach b");
    dp.set_endpoint_identity(if_a, ID_A).expect("identity");
    dp.set_endpoint_identity(if_b, ID_B).expect("identity");
    // POD_C is in the subnet the tunnel routes to 192.168.77.2, but the ipcache places it on
    // 192.168.77.3: the encapsulation decision is the ipcache's (one lookup), the tunnels only
    // answer for an address it does not place.
    let (tunnel_node, pod_c_node) = (
        Ipv4Addr::new(192, 168, 77, 2),
        Ipv4Addr::new(192, 168, 77, 3),
    );
    for (addr, entry) in [
        (POD_A, IpcacheEntry::local(ID_A)),
        (POD_B, IpcacheEntry::local(ID_B)),
        (POD_C, IpcacheEntry::remote(ID_C, pod_c_node)),
    ] {
        dp.set_ipcache(addr, entry).expect("ipcache");
    }
    assert_eq!(
        dp.ipcache().expect("ipcache")[2],
        (POD_C, IpcacheEntry::remote(ID_C, pod_c_node))
    );
    dp.set_node_config(ifindex("hm0"), GATEWAY, 24)
        .expect("node config");
    dp.set_tunnel(Ipv4Addr::new(10, 244, 2, 0), 24, tunnel_node, vni::DEFAULT)
        .expect("tunnel");
    assert!(matches!(
        dp.set_host_routing(true),
        Err(DataplaneError::HostRoutingNeedsOverlay)
    ));
    dp.attach_overlay(
        ifindex("hm-vxlan"),
        underlay,
        hivemind::dataplane::UnderlayProgram::Tc,
    )
    .expect("attach overlay");
    assert_eq!(
        dp.local_routes().expect("routes"),
        vec![(POD_A, if_a), (POD_B, if_b)]
    );

    // Off: every packet goes to the kernel untouched.
    let remote = syn(POD_A, 40000, POD_C, 8080);
    assert_eq!(
        test_run_out_ctx(from, &remote, if_a),
        (TC_ACT_OK, remote.clone())
    );
    dp.set_host_routing(true).expect("host routing on");
    assert!(dp.host_routing().expect("switch"));

    // Remote: redirected to hm-vxlan with the overlay MACs, TTL 63 and a valid checksum; the
    // rest of the frame as it was. Counted for the overlay, once (not again on hm-vxlan).
    let (ret, out) = test_run_out_ctx(from, &remote, if_a);
    assert_eq!(ret, TC_ACT_REDIRECT);
    assert_eq!(&out[..6], &OVERLAY_MAC);
    assert_eq!(&out[6..12], &OVERLAY_SRC_MAC);
    assert_eq!(out[14 + 8], 63, "TTL");
    assert!(ipv4_checksum_ok(&out));
    assert_eq!(&out[14 + 12..], &remote[14 + 12..]);
    assert_eq!(checked_tuple(&out), (POD_A, 40000, POD_C, 8080));
    let sent = |dp: &Dataplane, node: Ipv4Addr| {
        dp.overlay_counters()
            .expect("counters")
            .sent_by_node
            .get(&node)
            .map_or(0, |c| c.packets)
    };
    assert_eq!((sent(&dp, pod_c_node), sent(&dp, tunnel_node)), (1, 0));
    assert_eq!(test_run_ctx(egress, &out, 0, mark::ENCAPSULATED), TC_ACT_OK);
    assert_eq!(sent(&dp, pod_c_node), 1, "keyed and counted once");
    // An address of the remote subnet the ipcache does not place: the kernel's path, where
    // hm-vxlan's program finds its node through the tunnels. The kernel path's own program
    // asks the ipcache first too.
    let unplaced = syn(POD_A, 40010, Ipv4Addr::new(10, 244, 2, 9), 8080);
    assert_eq!(
        test_run_out_ctx(from, &unplaced, if_a),
        (TC_ACT_OK, unplaced.clone())
    );
    assert_eq!(test_run_ctx(egress, &unplaced, 0, 0), TC_ACT_OK);
    assert_eq!(test_run_ctx(egress, &remote, 0, 0), TC_ACT_OK);
    assert_eq!((sent(&dp, pod_c_node), sent(&dp, tunnel_node)), (2, 1));

    // Local, addressed to the gateway (routed): destination MAC of the container from its
    // address, source MAC of the bridge, TTL decremented.
    let routed = syn(POD_A, 40001, POD_B, 8080);
    let (ret, out) = test_run_out_ctx(from, &routed, if_a);
    assert_eq!(ret, TC_ACT_REDIRECT);
    assert_eq!(&out[..6], &[0x0a, 0x58, 10, 244, 1, 3]);
    assert_eq!(&out[6..12], &BRIDGE_MAC);
    assert_eq!(out[14 + 8], 63, "TTL");
    assert!(ipv4_checksum_ok(&out));
    assert_eq!(checked_tuple(&out), (POD_A, 40001, POD_B, 8080));
    // Local, addressed to the container's own MAC (same subnet, switched): untouched.
    let mut switched = syn(POD_A, 40002, POD_B, 8080);
    switched[..6].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 3]);
    assert_eq!(
        test_run_out_ctx(from, &switched, if_a),
        (TC_ACT_REDIRECT, switched.clone())
    );
    let b = dp.endpoint_counters(EP_B).expect("counters");
    assert_eq!(b.to_container.packets, 2, "{b:?}");

    // The destination's ingress policy runs in the sender's program, with the sender's
    // identity: denied, counted for the destination, recorded.
    dp.set_endpoint_policy(
        EP_B,
        &EndpointRules {
            ingress: Some([allow(PeerMatch::Identity(ID_C), Protocol::Tcp, 8080, 8080)].into()),
            egress: None,
        },
    )
    .expect("policy");
    let denied = syn(POD_A, 40003, POD_B, 8080);
    assert_eq!(test_run_out_ctx(from, &denied, if_a).0, TC_ACT_SHOT);
    let b = dp.endpoint_counters(EP_B).expect("counters");
    assert_eq!(b.drops.get(&reason::DROP_POLICY), Some(&1), "{b:?}");
    let (events, _) = dp.drain_flows().expect("flows");
    assert!(
        events.iter().any(|e| e.verdict == "denied"
            && e.endpoint_id == EP_B
            && e.peer_identity == ID_A
            && e.direction == "ingress"),
        "{events:#?}"
    );

    // The kernel keeps what it does best: the node, the outside world, an expiring TTL, a frame
    // too big for the tunnel (it answers with the ICMP error it owes).
    for frame in [
        syn(POD_A, 40004, GATEWAY, 53),
        syn(POD_A, 40005, Ipv4Addr::new(192, 0, 2, 1), 443),
    ] {
        assert_eq!(
            test_run_out_ctx(from, &frame, if_a),
            (TC_ACT_OK, frame.clone())
        );
    }
    let mut expiring = syn(POD_A, 40006, POD_C, 8080);
    expiring[14 + 8] = 1;
    expiring[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let sum = csum_fold(&expiring[14..34], 0);
    expiring[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(
        test_run_out_ctx(from, &expiring, if_a),
        (TC_ACT_OK, expiring.clone())
    );
    let big = ipv4_frame(
        POD_A,
        POD_C,
        UDP,
        &[],
        0,
        udp_datagram(40007, 8080, &[0u8; 1440]),
        false,
    );
    assert!(big.len() > 14 + 1450);
    assert_eq!(test_run_out_ctx(from, &big, if_a), (TC_ACT_OK, big.clone()));

    // Off again: the kernel's path.
    dp.set_host_routing(false).expect("host routing off");
    assert_eq!(
        test_run_out_ctx(from, &remote, if_a),
        (TC_ACT_OK, remote.clone())
    );
    dp.detach_endpoint(if_b).expect("detach");
    assert_eq!(dp.local_routes().expect("routes"), vec![(POD_A, if_a)]);
}

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const RST: u8 = 0x04;

/// An Ethernet frame of `ethertype` with a zeroed payload, from the container MAC of `src`.
fn l2_frame(src: Ipv4Addr, ethertype: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 0x02];
    p.extend_from_slice(&hivemind_common::container_mac(src.octets()));
    p.extend_from_slice(&ethertype.to_be_bytes());
    p.extend(std::iter::repeat_n(0, 48));
    p
}

#[test]
fn spoofing_hairpin_and_masquerade_under_test_run() {
    if !can_run("spoofing_hairpin_and_masquerade_under_test_run") {
        return;
    }
    let (_ns, idx) = policy_testbed(&["hmna", "hmnb"]);
    let (if_a, if_b) = (idx[0], idx[1]);
    let mut dp = Dataplane::load().expect("load dataplane");
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER).expect("fd");
    let nat_out = dp.program_fd_for_test(PROG_NAT_EGRESS).expect("fd");
    let nat_in = dp.program_fd_for_test(PROG_TC_UNDERLAY).expect("fd");
    dp.attach_endpoint(if_a, EP_A, POD_A).expect("attach a");
    dp.attach_endpoint(if_b, EP_B, POD_B).expect("attach b");

    // Anti-spoofing: A may only send from its own address and MAC; IPv6 passes neither way,
    // ARP does.
    assert_eq!(
        test_run_ctx(from, &syn(POD_A, 40000, POD_C, 80), if_a, 0),
        TC_ACT_OK
    );
    assert_eq!(
        test_run_ctx(from, &syn(POD_B, 40000, POD_C, 80), if_a, 0),
        TC_ACT_SHOT,
        "another container's address"
    );
    let mut foreign_mac = syn(POD_A, 40000, POD_C, 80);
    foreign_mac[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x09]);
    assert_eq!(test_run_ctx(from, &foreign_mac, if_a, 0), TC_ACT_SHOT);
    assert_eq!(
        test_run_ctx(from, &l2_frame(POD_A, 0x86dd), if_a, 0),
        TC_ACT_SHOT
    );
    assert_eq!(
        test_run_ctx(to, &l2_frame(POD_B, 0x86dd), if_a, 0),
        TC_ACT_SHOT
    );
    assert_eq!(
        test_run_ctx(from, &l2_frame(POD_A, 0x0806), if_a, 0),
        TC_ACT_OK
    );
    let drops = dp.endpoint_counters(EP_A).expect("counters").drops;
    assert_eq!(drops.get(&reason::DROP_SPOOFED), Some(&2), "{drops:?}");
    assert_eq!(
        drops.get(&reason::DROP_NOT_IPV4_CONTAINER),
        Some(&2),
        "{drops:?}"
    );

    // Hairpin: A reaches its own service and is picked; it sees the hairpin address as the
    // client, and its reply comes back from the VIP.
    let hairpin = Ipv4Addr::from(hivemind_common::HAIRPIN_IP);
    dp.set_service(VIP, 80, TCP, &[backend(1, 2, 8080, 1)])
        .expect("service");
    let (ret, out) = test_run_out_ctx(from, &syn(POD_A, 40010, VIP, 80), if_a);
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (hairpin, 40010, POD_A, 8080));
    let reply = tcp_frame(POD_A, 8080, hairpin, 40010, SYN | ACK);
    let (ret, out) = test_run_out_ctx(from, &reply, if_a);
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (VIP, 80, POD_A, 40010));

    // Masquerade: off until configured.
    let to_outside = syn(POD_A, 40020, OUTSIDE, 80);
    assert_eq!(
        test_run_out(nat_out, &to_outside).expect("run"),
        (TC_ACT_OK, to_outside.clone())
    );
    dp.set_node_config(ifindex("lo"), GATEWAY, 24)
        .expect("node config");
    dp.set_masquerade(
        Some(NODE),
        &[
            (Ipv4Addr::new(10, 244, 0, 0), 16),
            (Ipv4Addr::new(10, 96, 0, 0), 12),
        ],
    )
    .expect("masquerade");
    assert_eq!(dp.masquerade(), Some(NODE));
    // The original port is kept when free.
    let (ret, out) = test_run_out(nat_out, &to_outside).expect("run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (NODE, 40020, OUTSIDE, 80));
    // The same flow keeps its mapping.
    let (_, again) =
        test_run_out(nat_out, &tcp_frame(POD_A, 40020, OUTSIDE, 80, ACK)).expect("run");
    assert_eq!(checked_tuple(&again), (NODE, 40020, OUTSIDE, 80));
    // B with the same port to the same destination gets another one.
    let (ret, out) = test_run_out(nat_out, &syn(POD_B, 40020, OUTSIDE, 80)).expect("run");
    assert_eq!(ret, TC_ACT_OK);
    let (src, b_port, dst, dport) = checked_tuple(&out);
    assert_eq!((src, dst, dport), (NODE, OUTSIDE, 80));
    assert_ne!(b_port, 40020);
    assert!(b_port >= hivemind_common::NAT_PORT_MIN);
    // A port a socket of the node holds is not handed out.
    let listener = std::net::TcpListener::bind("0.0.0.0:40030").expect("listen");
    let (_, out) = test_run_out(nat_out, &syn(POD_A, 40030, OUTSIDE, 80)).expect("run");
    assert_ne!(checked_tuple(&out).1, 40030, "a port the node listens on");
    drop(listener);
    // Excluded destinations and the node's own packets are untouched.
    let inside = syn(POD_A, 40040, POD_C, 80);
    assert_eq!(
        test_run_out(nat_out, &inside).expect("run"),
        (TC_ACT_OK, inside.clone())
    );
    let own = syn(NODE, 40040, OUTSIDE, 80);
    assert_eq!(
        test_run_out(nat_out, &own).expect("run"),
        (TC_ACT_OK, own.clone())
    );
    // UDP and ICMP echo (by identifier) are translated too.
    let (_, out) = test_run_out(nat_out, &udp_frame(POD_A, 5353, OUTSIDE, 53)).expect("run");
    assert_eq!(checked_tuple(&out), (NODE, 5353, OUTSIDE, 53));
    let (ret, out) = test_run_out(nat_out, &icmp_frame(POD_A, OUTSIDE, 8, 0)).expect("run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(&out[14 + 12..14 + 16], &NODE.octets());
    // What cannot be translated is dropped and counted, never sent with a container address.
    let gre = ipv4_frame(POD_A, OUTSIDE, 47, &[], 0, vec![0; 8], false);
    assert_eq!(test_run(nat_out, &gre).expect("run"), TC_ACT_SHOT);
    let later_fragment = ipv4_frame(POD_A, OUTSIDE, UDP, &[], 0x0010, vec![0; 8], true);
    assert_eq!(
        test_run(nat_out, &later_fragment).expect("run"),
        TC_ACT_SHOT
    );

    // Replies get the container's address back; other traffic to the node is untouched.
    let (ret, out) =
        test_run_out(nat_in, &tcp_frame(OUTSIDE, 80, NODE, 40020, SYN | ACK)).expect("run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (OUTSIDE, 80, POD_A, 40020));
    let (_, out) = test_run_out(nat_in, &tcp_frame(OUTSIDE, 80, NODE, b_port, ACK)).expect("run");
    assert_eq!(checked_tuple(&out), (OUTSIDE, 80, POD_B, 40020));
    let (_, out) = test_run_out(nat_in, &udp_frame(OUTSIDE, 53, NODE, 5353)).expect("run");
    assert_eq!(checked_tuple(&out), (OUTSIDE, 53, POD_A, 5353));
    let (_, out) = test_run_out(nat_in, &icmp_frame(OUTSIDE, NODE, 0, 0)).expect("run");
    assert_eq!(&out[14 + 16..14 + 20], &POD_A.octets());
    let unrelated = tcp_frame(OUTSIDE, 80, NODE, 22, SYN);
    assert_eq!(
        test_run_out(nat_in, &unrelated).expect("run"),
        (TC_ACT_OK, unrelated.clone())
    );

    let mappings = dp.nat_mappings().expect("mappings");
    assert_eq!(mappings.len(), 5, "{mappings:?}");
    let nat = dp.nat_counters().expect("counters");
    assert_eq!(nat.new_mappings, 5);
    assert_eq!(
        nat.drops.get(&reason::DROP_NAT_UNSUPPORTED),
        Some(&2),
        "{nat:?}"
    );
    // An RST frees its mapping at once; the rest go when idle.
    test_run_out(nat_in, &tcp_frame(OUTSIDE, 80, NODE, 40020, RST)).expect("run");
    assert_eq!(dp.nat_mappings().expect("mappings").len(), 4);
    assert_eq!(
        dp.collect_nat(hivemind::dataplane::monotonic_now())
            .expect("gc"),
        0
    );
    let later = hivemind::dataplane::monotonic_now() + Duration::from_secs(3 * 3600);
    assert_eq!(dp.collect_nat(later).expect("gc"), 8);
    assert!(dp.nat_mappings().expect("mappings").is_empty());
    assert_eq!(dp.nat_usage().0, 0);

    // A published port: the node's address on 8080 reaches A's port 80 (the client's address
    // kept), and A's reply leaves from the node's address and port. Off until switched on.
    let to_node = syn(OUTSIDE, 5555, NODE, 8080);
    assert_eq!(
        test_run_out(nat_in, &to_node).expect("run"),
        (TC_ACT_OK, to_node.clone())
    );
    dp.set_node_address(NODE).expect("node address");
    dp.set_service(NODE, 8080, TCP, &[backend(1, 2, 80, 1)])
        .expect("published frontend");
    dp.set_published(true, &[((POD_A, 80, TCP), 8080)].into())
        .expect("published");
    let (ret, out) = test_run_out(nat_in, &to_node).expect("run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (OUTSIDE, 5555, POD_A, 80));
    let (_, out) = test_run_out_ctx(from, &tcp_frame(POD_A, 80, OUTSIDE, 5555, SYN | ACK), if_a);
    assert_eq!(checked_tuple(&out), (NODE, 8080, OUTSIDE, 5555));
    // Other ports of the node are its own.
    let api = syn(OUTSIDE, 5555, NODE, 3000);
    assert_eq!(
        test_run_out(nat_in, &api).expect("run"),
        (TC_ACT_OK, api.clone())
    );
}

const FIN: u8 = 0x01;

/// The conntrack key of a packet from `src:sport` to `dst:dport` (TCP), as the data path
/// writes it.
fn ct_key(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> hivemind_common::CtKey {
    hivemind_common::CtKey::new(
        u32::from_ne_bytes(src.octets()),
        u32::from_ne_bytes(dst.octets()),
        sport.to_be(),
        dport.to_be(),
        TCP,
    )
}

fn ct_entry(dp: &Dataplane, key: hivemind_common::CtKey) -> Option<hivemind_common::CtValue> {
    dp.conntrack()
        .expect("conntrack")
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Conntrack with TCP state: a connection's entries follow its flags, the collector removes
/// closed and idle connections (both entries) and keeps established ones; a tracked
/// connection whose backend id now names another address is balanced again; and an endpoint
/// that spends its budget gets its next connection dropped while another endpoint's passes.
#[test]
fn conntrack_state_collection_budget_and_stale_backends_under_test_run() {
    use hivemind_common::{CT_OWNER_BUDGET, CT_PRESSURE, ct_state};
    if !can_run("conntrack_state_collection_budget_and_stale_backends_under_test_run") {
        return;
    }
    let (_ns, idx) = policy_testbed(&["hmca", "hmcb"]);
    let (if_a, if_b) = (idx[0], idx[1]);
    let mut dp = Dataplane::load().expect("load dataplane");
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER).expect("fd");
    dp.attach_endpoint(if_a, EP_A, POD_A).expect("attach a");
    dp.attach_endpoint(if_b, EP_B, POD_B).expect("attach b");
    let b1 = backend(1, 5, 8080, 1);
    dp.set_service(VIP, 80, TCP, &[b1]).expect("service");
    let from_a = |p: &[u8]| test_run_ctx(from, p, if_a, 0);
    let now = hivemind::dataplane::monotonic_now();

    // A connection's life: SYN, SYN-ACK, ACK, then FIN.
    let original = ct_key(POD_A, 40000, VIP, 80);
    let reply = ct_key(b1.ip, 8080, POD_A, 40000);
    assert_eq!(from_a(&tcp_frame(POD_A, 40000, VIP, 80, SYN)), TC_ACT_OK);
    let entry = ct_entry(&dp, original).expect("tracked");
    assert_eq!(entry.state, ct_state::SYN);
    assert_eq!(entry.owner, EP_A);
    assert_eq!(entry.backend_ip, u32::from_ne_bytes(b1.ip.octets()));
    assert_eq!(
        test_run_ctx(
            to,
            &tcp_frame(b1.ip, 8080, POD_A, 40000, SYN | ACK),
            if_a,
            0
        ),
        TC_ACT_OK
    );
    assert_eq!(ct_entry(&dp, reply).expect("reply").state, ct_state::SYN);
    assert_eq!(from_a(&tcp_frame(POD_A, 40000, VIP, 80, ACK)), TC_ACT_OK);
    assert_eq!(
        ct_entry(&dp, original).expect("tracked").state,
        ct_state::SYN | ct_state::ESTABLISHED
    );
    // Established: still there past the handshake timeout.
    let collected = dp
        .collect_conntrack(now + Duration::from_secs(61))
        .expect("collect");
    assert_eq!(collected.removed, 0, "{collected:?}");
    assert!(ct_entry(&dp, original).is_some());
    // Closed: both entries go after 10 s of quiet.
    assert_eq!(
        from_a(&tcp_frame(POD_A, 40000, VIP, 80, FIN | ACK)),
        TC_ACT_OK
    );
    assert!(ct_entry(&dp, original).expect("tracked").state & ct_state::FIN != 0);
    let later = hivemind::dataplane::monotonic_now();
    assert_eq!(
        dp.collect_conntrack(later + Duration::from_secs(5))
            .expect("collect")
            .removed,
        0
    );
    let collected = dp
        .collect_conntrack(later + Duration::from_secs(11))
        .expect("collect");
    assert_eq!(collected.removed, 2, "{collected:?}");
    assert!(ct_entry(&dp, original).is_none() && ct_entry(&dp, reply).is_none());

    // A tracked connection on backend id 1; then the service moves to id 2 and id 1 comes to
    // name another service's backend: the connection is balanced again within its own service.
    assert_eq!(from_a(&tcp_frame(POD_A, 41000, VIP, 80, SYN)), TC_ACT_OK);
    let b2 = backend(2, 6, 8080, 1);
    dp.set_service(VIP, 80, TCP, &[b2]).expect("move");
    let elsewhere = Ipv4Addr::new(10, 96, 0, 99);
    dp.set_service(elsewhere, 80, TCP, &[backend(1, 9, 9090, 1)])
        .expect("another service");
    let (ret, out) = test_run_out_ctx(from, &tcp_frame(POD_A, 41000, VIP, 80, ACK), if_a);
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(
        checked_tuple(&out).2,
        b2.ip,
        "not the other service's backend"
    );

    // Budget: while the table has room, A may hold more than its share (a busy client is not
    // cut off); under pressure (three quarters full, made to look so here), its next
    // connection is dropped and counted, B's still passes. A collection (here: the handshakes
    // time out) recounts the table and gives the share back.
    let mut sport = 1024u16;
    for _ in 0..CT_OWNER_BUDGET / 2 + 100 {
        sport += 1;
        assert_eq!(
            from_a(&tcp_frame(POD_A, sport, VIP, 80, SYN)),
            TC_ACT_OK,
            "connection from port {sport}: the table has room"
        );
    }
    let total = dp.conntrack_total().expect("total");
    assert!(
        total >= u64::from(CT_OWNER_BUDGET) + 200 && total < u64::from(CT_PRESSURE),
        "every entry counted: {total}"
    );
    dp.set_conntrack_total_for_test(u64::from(CT_PRESSURE))
        .expect("pressure");
    sport += 1;
    assert_eq!(from_a(&tcp_frame(POD_A, sport, VIP, 80, SYN)), TC_ACT_SHOT);
    let drops = dp.service_counters().expect("counters").drops;
    assert!(
        drops.get(&reason::DROP_CT_BUDGET).copied() >= Some(1),
        "{drops:?}"
    );
    assert_eq!(
        test_run_ctx(from, &tcp_frame(POD_B, 50000, VIP, 80, SYN), if_b, 0),
        TC_ACT_OK,
        "another endpoint is not starved"
    );
    let owners = dp.conntrack_owners().expect("owners");
    assert!(
        owners
            .iter()
            .any(|(owner, n)| *owner == EP_A && *n >= u64::from(CT_OWNER_BUDGET) - 1),
        "{owners:?}"
    );
    let collected = dp
        .collect_conntrack(hivemind::dataplane::monotonic_now() + Duration::from_secs(61))
        .expect("collect");
    assert!(
        collected.removed as u32 >= CT_OWNER_BUDGET - 1,
        "{collected:?}"
    );
    assert!(
        dp.conntrack_total().expect("total") < u64::from(CT_PRESSURE),
        "the collection recounted the table"
    );
    assert_eq!(from_a(&tcp_frame(POD_A, 65000, VIP, 80, SYN)), TC_ACT_OK);
}

/// Whether the IPv4 header of `frame` (no options) has a valid checksum.
fn ip_checksum_ok(frame: &[u8]) -> bool {
    csum_fold(&frame[14..34], 0) == 0
}

/// `frame` (Ethernet + plain IPv4) with IP id `id`, its header checksum fixed.
fn with_ip_id(frame: &[u8], id: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[14 + 4..14 + 6].copy_from_slice(&id.to_be_bytes());
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let sum = csum_fold(&f[14..34], 0);
    f[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    f
}

/// An ICMP error `ty`/`code` from `src` to `dst` quoting `quoted`'s IPv4 header and first
/// 8 bytes, with a valid ICMP checksum (`rest`: the header's last 4 bytes, an MTU say).
fn icmp_error_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    (ty, code): (u8, u8),
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![ty, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(&quoted[14..14 + 28]);
    let sum = csum_fold(&icmp, 0);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4_frame(src, dst, 1, &[], 0, icmp, true)
}

fn addr_at(frame: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3])
}

/// Fragments and ICMP errors of service traffic: a datagram to a VIP in fragments gets the
/// backend in every fragment (the later ones, which carry no UDP header, follow the first), its
/// reply gets the VIP back in every fragment, a later fragment whose first was never seen is
/// dropped; an ICMP error about a translated connection reaches the client quoting the VIP:port
/// it used (and from the VIP when the backend sent it), with valid checksums.
#[test]
fn fragments_and_icmp_errors_under_test_run() {
    if !can_run("fragments_and_icmp_errors_under_test_run") {
        return;
    }
    let mut dp = Dataplane::load().expect("load dataplane");
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER).expect("fd");
    let dns = ServiceBackend {
        id: 1,
        ip: Ipv4Addr::new(10, 244, 1, 5),
        port: 5353,
        weight: 1,
    };
    dp.set_service(VIP, 53, UDP, &[dns]).expect("service");

    // A query in two fragments (MF set on the first; the second at offset 24 bytes).
    let first = ipv4_frame(
        CLIENT,
        VIP,
        UDP,
        &[],
        0x2000,
        udp_datagram(5000, 53, &[7; 16]),
        false,
    );
    let (ret, out) = test_run_out(from, &first).expect("run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (CLIENT, 5000, dns.ip, 5353));
    let later = ipv4_frame(CLIENT, VIP, UDP, &[], 0x0003, vec![9; 16], true);
    let (ret, out) = test_run_out(from, &later).expect("run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(
        addr_at(&out, 14 + 16),
        dns.ip,
        "the later fragment follows the first"
    );
    assert!(ip_checksum_ok(&out));
    assert_eq!(&out[14 + 20..], &later[14 + 20..], "its payload untouched");
    // A later fragment of a datagram whose first fragment never came: dropped.
    let stray = with_ip_id(&later, 0x9999);
    assert_eq!(test_run(from, &stray).expect("run"), TC_ACT_SHOT);

    // The answer in two fragments: the VIP comes back as the source of both.
    let answer = ipv4_frame(
        dns.ip,
        CLIENT,
        UDP,
        &[],
        0x2000,
        udp_datagram(5353, 5000, &[1; 16]),
        false,
    );
    let (ret, out) = test_run_out(to, &answer).expect("run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(checked_tuple(&out), (VIP, 53, CLIENT, 5000));
    let answer_later = ipv4_frame(dns.ip, CLIENT, UDP, &[], 0x0003, vec![2; 16], true);
    let (ret, out) = test_run_out(to, &answer_later).expect("run");
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(addr_at(&out, 14 + 12), VIP);
    assert!(ip_checksum_ok(&out));

    // ICMP errors about a translated TCP connection.
    let web = backend(2, 6, 8080, 1);
    dp.set_service(VIP, 80, TCP, &[web]).expect("service");
    let (_, sent) = test_run_out(from, &tcp_frame(CLIENT, 40000, VIP, 80, SYN)).expect("run");
    assert_eq!(checked_tuple(&sent).2, web.ip);
    let router = Ipv4Addr::new(10, 244, 9, 1);
    for (sender, ty, code) in [(web.ip, 3u8, 3u8), (router, 3, 4), (router, 11, 0)] {
        // The error quotes the packet as it was sent: to the backend.
        let error = icmp_error_frame(sender, CLIENT, (ty, code), [0, 0, 0x05, 0xa0], &sent);
        let (ret, out) = test_run_out(to, &error).expect("run");
        assert_eq!(ret, TC_ACT_OK);
        let expected_source = if sender == web.ip { VIP } else { router };
        assert_eq!(
            addr_at(&out, 14 + 12),
            expected_source,
            "outer source ({ty}/{code})"
        );
        assert!(ip_checksum_ok(&out));
        let quoted = &out[14 + 20 + 8..];
        assert_eq!(addr_at(quoted, 16), VIP, "quoted destination ({ty}/{code})");
        assert_eq!(&quoted[22..24], &80u16.to_be_bytes(), "quoted port");
        assert_eq!(addr_at(quoted, 12), CLIENT);
        assert_eq!(csum_fold(&quoted[..20], 0), 0, "quoted IPv4 checksum");
        assert_eq!(csum_fold(&out[14 + 20..], 0), 0, "ICMP checksum");
    }
    // An error about a connection nobody translated is left alone.
    let never = tcp_frame(CLIENT, 40999, web.ip, 8080, SYN);
    let unrelated = icmp_error_frame(web.ip, CLIENT, (3, 3), [0; 4], &never);
    let (ret, out) = test_run_out(to, &unrelated).expect("run");
    assert_eq!((ret, &out), (TC_ACT_OK, &unrelated));
}

/// Policy on fragments: the first fragment (with the ports) decides, and the later ones of the
/// same datagram pass only where it passed; a later fragment nobody decided about is dropped.
#[test]
fn policy_fragments_follow_their_first_under_test_run() {
    if !can_run("policy_fragments_follow_their_first_under_test_run") {
        return;
    }
    let (_ns, idx) = policy_testbed(&["hmfa", "hmfb"]);
    let if_b = idx[1];
    let mut dp = Dataplane::load().expect("load dataplane");
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER).expect("fd");
    dp.attach_endpoint(idx[0], EP_A, POD_A).expect("attach a");
    dp.attach_endpoint(if_b, EP_B, POD_B).expect("attach b");
    dp.set_endpoint_identity(idx[0], ID_A).expect("identity");
    dp.set_endpoint_identity(if_b, ID_B).expect("identity");
    for (addr, id) in [(POD_A, ID_A), (POD_B, ID_B)] {
        dp.set_ipcache(addr, IpcacheEntry::local(id))
            .expect("ipcache");
    }
    let rules = EndpointRules {
        ingress: Some([allow(PeerMatch::Identity(ID_A), Protocol::Udp, 53, 53)].into()),
        egress: None,
    };
    dp.set_endpoint_policy(EP_B, &rules).expect("policy");
    let into_b = |p: &[u8]| test_run_ctx(to, p, if_b, 0);
    let first = |dport: u16, id: u16| {
        with_ip_id(
            &ipv4_frame(
                POD_A,
                POD_B,
                UDP,
                &[],
                0x2000,
                udp_datagram(5000, dport, &[1; 16]),
                false,
            ),
            id,
        )
    };
    let later = |id: u16| {
        with_ip_id(
            &ipv4_frame(POD_A, POD_B, UDP, &[], 0x0003, vec![2; 16], true),
            id,
        )
    };

    // Allowed port: both fragments in.
    assert_eq!(into_b(&first(53, 1)), TC_ACT_OK);
    assert_eq!(into_b(&later(1)), TC_ACT_OK);
    // Denied port: neither.
    assert_eq!(into_b(&first(54, 2)), TC_ACT_SHOT);
    assert_eq!(into_b(&later(2)), TC_ACT_SHOT);
    // A later fragment alone: no ports to check, nothing decided: dropped.
    assert_eq!(into_b(&later(3)), TC_ACT_SHOT);
    // Where nothing is enforced, fragments pass as before.
    dp.set_endpoint_policy(EP_B, &EndpointRules::default())
        .expect("no policy");
    assert_eq!(into_b(&later(4)), TC_ACT_OK);
}

/// An endpoint whose ingress is enforced admits an ICMP error about a connection it opened
/// (related traffic: port unreachable, time exceeded), and drops one about a connection it
/// never had.
#[test]
fn policy_admits_icmp_errors_of_known_connections_under_test_run() {
    if !can_run("policy_admits_icmp_errors_of_known_connections_under_test_run") {
        return;
    }
    let (_ns, idx) = policy_testbed(&["hmia", "hmib"]);
    let if_b = idx[1];
    let mut dp = Dataplane::load().expect("load dataplane");
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER).expect("fd");
    dp.attach_endpoint(idx[0], EP_A, POD_A).expect("attach a");
    dp.attach_endpoint(if_b, EP_B, POD_B).expect("attach b");
    dp.set_endpoint_identity(if_b, ID_B).expect("identity");
    for (addr, id) in [(POD_A, ID_A), (POD_B, ID_B), (POD_C, ID_C)] {
        dp.set_ipcache(addr, IpcacheEntry::local(id))
            .expect("ipcache");
    }
    let rules = EndpointRules {
        ingress: Some([allow(PeerMatch::Identity(ID_A), Protocol::Tcp, 80, 80)].into()),
        egress: None,
    };
    dp.set_endpoint_policy(EP_B, &rules).expect("policy");
    // B opens a connection to C (its egress is not enforced, the connection is tracked).
    let sent = syn(POD_B, 40000, POD_C, 443);
    assert_eq!(test_run_ctx(from, &sent, if_b, 0), TC_ACT_OK);
    let error_about = |quoted: &[u8], ty: u8, code: u8| {
        icmp_error_frame(POD_C, POD_B, (ty, code), [0; 4], quoted)
    };
    for (ty, code) in [(3u8, 3u8), (11, 0)] {
        assert_eq!(
            test_run_ctx(to, &error_about(&sent, ty, code), if_b, 0),
            TC_ACT_OK,
            "ICMP {ty}/{code} about B's own connection"
        );
    }
    let never = syn(POD_B, 40001, POD_C, 443);
    assert_eq!(
        test_run_ctx(to, &error_about(&never, 3, 3), if_b, 0),
        TC_ACT_SHOT,
        "an error about nothing B sent"
    );
}

/// The packet trace monitor: off, the programs record nothing; on, they record each packet
/// they decide on that matches the filter (identities, drops only), with its outcome; off
/// again, nothing more.
#[test]
fn monitor_traces_only_while_on_and_only_what_matches_under_test_run() {
    use hivemind::policy::{EndpointRules, PeerMatch, Protocol};
    use hivemind_common::{MonitorConfig, monitor_types};

    if !can_run("monitor_traces_only_while_on_and_only_what_matches_under_test_run") {
        return;
    }
    let (_ns, idx) = policy_testbed(&["hmma", "hmmb"]);
    let (if_a, if_b) = (idx[0], idx[1]);
    let mut dp = Dataplane::load().expect("load dataplane");
    let to = dp.program_fd_for_test(PROG_TO_CONTAINER).expect("fd");
    dp.attach_endpoint(if_a, EP_A, POD_A).expect("attach a");
    dp.attach_endpoint(if_b, EP_B, POD_B).expect("attach b");
    dp.set_endpoint_identity(if_a, ID_A).expect("identity");
    dp.set_endpoint_identity(if_b, ID_B).expect("identity");
    for (addr, id) in [(POD_A, ID_A), (POD_B, ID_B), (POD_C, ID_C)] {
        dp.set_ipcache(addr, IpcacheEntry::local(id))
            .expect("ipcache");
    }
    // B admits A on TCP 80 only.
    dp.set_endpoint_policy(
        EP_B,
        &EndpointRules {
            ingress: Some([allow(PeerMatch::Identity(ID_A), Protocol::Tcp, 80, 80)].into()),
            egress: None,
        },
    )
    .expect("policy");
    let into_b = |p: &[u8]| test_run_ctx(to, p, if_b, 0);
    let into_a = |p: &[u8]| test_run_ctx(to, p, if_a, 0);

    // Off: nothing is traced.
    assert_eq!(dp.monitor().expect("monitor"), None);
    assert_eq!(into_b(&syn(POD_A, 40000, POD_B, 80)), TC_ACT_OK);
    assert_eq!(into_b(&syn(POD_C, 40001, POD_B, 80)), TC_ACT_SHOT);
    assert!(dp.drain_trace().expect("trace").0.is_empty());

    // On for drops into B: the denied SYN from C, not the allowed one from A, not A's traffic.
    dp.set_monitor(Some(MonitorConfig {
        enabled: 0,
        types: monitor_types::DROP,
        src_identity: 0,
        dst_identity: ID_B,
    }))
    .expect("monitor on");
    assert!(dp.monitor().expect("monitor").is_some());
    assert_eq!(into_b(&syn(POD_A, 40002, POD_B, 80)), TC_ACT_OK);
    assert_eq!(into_b(&syn(POD_C, 40003, POD_B, 80)), TC_ACT_SHOT);
    assert_eq!(into_a(&syn(POD_C, 40004, POD_A, 80)), TC_ACT_OK);
    let (events, lost) = dp.drain_trace().expect("trace");
    assert_eq!(lost, 0);
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.program, e.src, e.sport, e.dst, e.dport, e.reason.name))
        .collect();
    assert_eq!(
        seen,
        [("to_container", POD_C, 40003, POD_B, 80, "drop_policy")],
        "{events:#?}"
    );
    assert_eq!(
        (events[0].src_identity, events[0].dst_identity),
        (ID_C, ID_B)
    );
    assert_eq!(events[0].endpoint_id, EP_B);
    assert!(events[0].len > 0 && events[0].tcp_flags & 0x02 != 0);

    // Every decision, any identity: the allowed one too.
    dp.set_monitor(Some(MonitorConfig {
        enabled: 0,
        types: monitor_types::TRACE | monitor_types::DROP,
        src_identity: 0,
        dst_identity: 0,
    }))
    .expect("monitor on");
    assert_eq!(into_b(&syn(POD_A, 40005, POD_B, 80)), TC_ACT_OK);
    let (events, _) = dp.drain_trace().expect("trace");
    assert!(
        events
            .iter()
            .any(|e| e.sport == 40005 && e.reason.name == "forwarded"),
        "{events:#?}"
    );

    // Off again.
    dp.set_monitor(None).expect("monitor off");
    assert_eq!(into_b(&syn(POD_C, 40006, POD_B, 80)), TC_ACT_SHOT);
    assert!(dp.drain_trace().expect("trace").0.is_empty());

    // A drop that means a gap in the node's state (here a service with no backend) is also
    // explained in words through aya-log, behind the same switch: nothing while off.
    let from = dp.program_fd_for_test(PROG_FROM_CONTAINER).expect("fd");
    let empty_vip = Ipv4Addr::new(10, 96, 0, 99);
    dp.set_service(empty_vip, 80, TCP, &[]).expect("service");
    let from_a = |p: &[u8]| test_run_ctx(from, p, if_a, 0);
    assert_eq!(from_a(&syn(POD_A, 40007, empty_vip, 80)), TC_ACT_SHOT);
    assert_eq!(dp.drain_kernel_log(), []);
    dp.set_monitor(Some(MonitorConfig {
        enabled: 0,
        types: monitor_types::DROP,
        src_identity: 0,
        dst_identity: 0,
    }))
    .expect("monitor on");
    assert_eq!(from_a(&syn(POD_A, 40008, empty_vip, 80)), TC_ACT_SHOT);
    let lines = dp.drain_kernel_log();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(
        lines[0].message,
        format!("dropped: the service has no backend: {POD_A}:40008 -> {empty_vip}:80 protocol 6")
    );
    assert_eq!(format!("{:?}", lines[0].level), "Warn");
    // A decision (a policy drop) gets its trace record, not a line.
    assert_eq!(into_b(&syn(POD_C, 40009, POD_B, 80)), TC_ACT_SHOT);
    assert_eq!(dp.drain_kernel_log(), []);
    dp.set_monitor(None).expect("monitor off");
}
