//! A real two-node overlay in network namespaces: the eBPF programs on `hm-vxlan` and the
//! underlay, kernel routing and the VXLAN driver in between, real sockets at both ends.
//!
//! Topology (every address lives in a namespace this test creates; nothing touches the root
//! namespace):
//!
//! ```text
//!  ctr-a 10.244.1.2 ── hm0 10.244.1.1 [node-a] 192.168.77.1 ══ underlay veth ══
//!  ══ 192.168.77.2 [node-b] hm0 10.244.2.1 ── ctr-b 10.244.2.2
//! ```
//!
//! Each node: bridge `hm0` with the node's /24, `hm-vxlan` (external, UDP 4789, no learning,
//! MAC `OVERLAY_MAC`, NOARP, MTU 1450), route 10.244.0.0/16 dev hm-vxlan src <hm0 address>,
//! ip_forward=1. Needs root; without it the test prints why and passes, except under `CI=true`.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    thread,
    time::Duration,
};

use common::{CLUSTER_CIDR, MTU, UNDERLAY, configure_node, forwarded_datagrams, link_underlay};
use hivemind::dataplane::{
    Dataplane, IpcacheEntry, OverlayCounters, UnderlayHook, UnderlayProgram,
};
use hivemind_common::{OVERLAY_DEVICE, OVERLAY_MAC, OVERLAY_SRC_MAC, VXLAN_PORT, reason, vni};
use hivemind_tests::kernel::{
    BPF_TCX_EGRESS, BPF_TCX_INGRESS, add_container_veth, can_run, ifindex, ip, tcx_prog_count,
};
use hivemind_tests::netns::NetNs;

/// One node of the test cluster: its namespace and its container's.
struct Node {
    ns: NetNs,
    container: NetNs,
    /// The node's container subnet, e.g. 10.244.1.0.
    subnet: Ipv4Addr,
    gateway: Ipv4Addr,
    container_ip: Ipv4Addr,
    /// The container's identity in the ipcache, which its packets carry as their VNI.
    identity: u32,
    underlay_ip: Ipv4Addr,
}

impl Node {
    /// Creates both namespaces (guards first, so a failing setup still cleans up).
    fn new(tag: &str, index: u8) -> Self {
        let tag = format!("{tag}{index}");
        let pid = std::process::id();
        let ns = NetNs::create(&format!("hmov-{pid}-node-{tag}")).expect("create node netns");
        let container =
            NetNs::create(&format!("hmov-{pid}-ctr-{tag}")).expect("create container netns");
        Self {
            ns,
            container,
            subnet: Ipv4Addr::new(10, 244, index, 0),
            gateway: Ipv4Addr::new(10, 244, index, 1),
            container_ip: Ipv4Addr::new(10, 244, index, 2),
            identity: 100 + u32::from(index),
            underlay_ip: Ipv4Addr::new(192, 168, 77, index),
        }
    }

    /// Configures the node the way the daemon's network module does (underlay veth excluded).
    fn configure(&self) {
        configure_node(&self.ns, self.gateway, self.underlay_ip, &[CLUSTER_CIDR]);
        // The container: a veth into the bridge, default route via the gateway.
        let container_ip = format!("{}/24", self.container_ip);
        add_container_veth(
            &self.ns,
            &self.container,
            "hm-ctr",
            "hm0",
            MTU,
            &container_ip,
            self.gateway,
        );
    }

    /// Loads a data plane in the node's namespace, attaches the overlay (twice: the second
    /// replaces the first) with the underlay validation where `program` says, routes
    /// `peer`'s subnet to it and writes the ipcache as the daemon does (both containers with
    /// their identities, the peer's placed on the peer). With `host_routing`, also the container's endpoint and the node
    /// configuration, and host routing on.
    fn load_dataplane(
        &self,
        peer: &Node,
        program: UnderlayProgram,
        host_routing: bool,
    ) -> Dataplane {
        let (subnet, underlay) = (peer.subnet, peer.underlay_ip);
        let (gateway, container_ip) = (self.gateway, self.container_ip);
        let ipcache = [
            (container_ip, IpcacheEntry::local(self.identity)),
            (
                peer.container_ip,
                IpcacheEntry::remote(peer.identity, underlay),
            ),
        ];
        self.ns
            .run(move || {
                let vxlan = ifindex(OVERLAY_DEVICE);
                let underlay_if = ifindex(UNDERLAY);
                let mut dp = Dataplane::load().expect("load dataplane");
                dp.attach_overlay(vxlan, underlay_if, program)
                    .expect("attach overlay");
                dp.attach_overlay(vxlan, underlay_if, program)
                    .expect("attach overlay again");
                assert_eq!(tcx_prog_count(vxlan, BPF_TCX_EGRESS), 1);
                assert_eq!(tcx_prog_count(vxlan, BPF_TCX_INGRESS), 1);
                dp.set_tunnel(subnet, 24, underlay, vni::DEFAULT)
                    .expect("set tunnel");
                assert_eq!(
                    dp.tunnels().expect("tunnels"),
                    vec![(subnet, 24, underlay, vni::DEFAULT)]
                );
                for (ip, entry) in ipcache {
                    dp.set_ipcache(ip, entry).expect("ipcache");
                }
                if host_routing {
                    dp.set_node_config(ifindex("hm0"), gateway, 24)
                        .expect("node config");
                    let host_if = ifindex("hm-ctr");
                    dp.attach_endpoint(host_if, 7, container_ip)
                        .expect("attach endpoint");
                    dp.set_host_routing(true).expect("host routing");
                    assert_eq!(
                        dp.local_routes().expect("local routes"),
                        vec![(container_ip, host_if)]
                    );
                }
                dp
            })
            .expect("node thread")
    }

    fn udp_socket(ns: &NetNs, addr: Ipv4Addr, port: u16) -> UdpSocket {
        let sock = ns
            .run(move || UdpSocket::bind((addr, port)).expect("bind"))
            .expect("netns thread");
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        sock
    }

    /// (rx packets, tx packets) of the underlay veth.
    fn underlay_stats(&self) -> (u64, u64) {
        let stats = self.underlay_stats64();
        (
            stats["rx"]["packets"].as_u64().expect("rx packets"),
            stats["tx"]["packets"].as_u64().expect("tx packets"),
        )
    }

    /// (tx packets, tx bytes) of the underlay veth; a GSO packet counts once.
    fn underlay_tx(&self) -> (u64, u64) {
        let stats = self.underlay_stats64();
        (
            stats["tx"]["packets"].as_u64().expect("tx packets"),
            stats["tx"]["bytes"].as_u64().expect("tx bytes"),
        )
    }

    fn underlay_stats64(&self) -> serde_json::Value {
        let out = ip(&["-j", "-s", "-n", &self.ns.name, "link", "show", UNDERLAY]);
        let json: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
        json[0]["stats64"].clone()
    }
}

/// Sends `n` datagrams from `from` to `to` and echoes each back; every one must arrive.
fn udp_round_trips(from: &UdpSocket, to: &UdpSocket, n: usize) {
    let to_addr = to.local_addr().expect("addr");
    let mut buf = [0u8; 2048];
    for i in 0..n {
        let msg = format!("ping {i}");
        from.send_to(msg.as_bytes(), to_addr).expect("send");
        let (len, peer) = to
            .recv_from(&mut buf)
            .expect("datagram crosses the overlay");
        assert_eq!(&buf[..len], msg.as_bytes());
        to.send_to(&buf[..len], peer).expect("echo");
        let len = from.recv(&mut buf).expect("echo crosses back");
        assert_eq!(&buf[..len], msg.as_bytes());
    }
}

/// A raw AF_PACKET socket on the underlay of `ns` (tcpdump is not installed).
fn capture(ns: &NetNs) -> OwnedFd {
    ns.run(|| {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                i32::from(proto),
            )
        };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all zeroes is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex(UNDERLAY) as i32;
        // SAFETY: `addr` is a sockaddr_ll of the size passed.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(ret, 0, "bind: {}", std::io::Error::last_os_error());
        fd
    })
    .expect("netns thread")
}

/// What a captured underlay frame says about one overlay packet.
#[derive(Debug, PartialEq)]
struct VxlanFrame {
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
    vni: u32,
    inner_dst_mac: [u8; 6],
    inner_src_mac: [u8; 6],
    inner_src: Ipv4Addr,
    inner_dst: Ipv4Addr,
    /// The outer UDP checksum is 0 (none), as host routing asks of the VXLAN driver.
    zero_udp_checksum: bool,
}

/// Every IPv4 / UDP-to-4789 frame the capture socket holds, parsed.
fn captured_vxlan(fd: &OwnedFd) -> Vec<VxlanFrame> {
    let mut frames = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        // SAFETY: `buf` is writable for its length.
        let len = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if len < 0 {
            break;
        }
        let f = &buf[..len as usize];
        if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 17 {
            continue;
        }
        let udp = 14 + usize::from(f[14] & 0x0f) * 4;
        if f.len() < udp + 8 + 8 + 14 + 20
            || u16::from_be_bytes([f[udp + 2], f[udp + 3]]) != VXLAN_PORT
        {
            continue;
        }
        let vx = udp + 8;
        assert_eq!(f[vx], 0x08, "VXLAN I flag");
        let inner = vx + 8;
        let ipv4 = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
        frames.push(VxlanFrame {
            outer_src: ipv4(14 + 12),
            outer_dst: ipv4(14 + 16),
            vni: u32::from_be_bytes([0, f[vx + 4], f[vx + 5], f[vx + 6]]),
            inner_dst_mac: f[inner..inner + 6].try_into().expect("6 bytes"),
            inner_src_mac: f[inner + 6..inner + 12].try_into().expect("6 bytes"),
            inner_src: ipv4(inner + 14 + 12),
            inner_dst: ipv4(inner + 14 + 16),
            zero_udp_checksum: f[udp + 6..udp + 8] == [0, 0],
        });
    }
    frames
}

fn sent_to(c: &OverlayCounters, node: Ipv4Addr) -> u64 {
    c.sent_by_node.get(&node).map_or(0, |c| c.packets)
}

fn received_from(c: &OverlayCounters, node: Ipv4Addr) -> u64 {
    c.received_by_node.get(&node).map_or(0, |c| c.packets)
}

fn drops(c: &OverlayCounters, reason: u8) -> u64 {
    c.drops.get(&reason).copied().unwrap_or(0)
}

#[test]
fn two_nodes_talk_over_the_vxlan_overlay_with_host_routing() {
    if !can_run("two_nodes_talk_over_the_vxlan_overlay_with_host_routing") {
        return;
    }
    overlay_scenario(true);
}

#[test]
fn two_nodes_talk_over_the_vxlan_overlay_through_the_kernel_path() {
    if !can_run("two_nodes_talk_over_the_vxlan_overlay_through_the_kernel_path") {
        return;
    }
    overlay_scenario(false);
}

fn overlay_scenario(host_routing: bool) {
    // Guards first: every namespace (and with it every link) goes away on drop, panics included.
    let tag = if host_routing { "h" } else { "k" };
    let a = Node::new(tag, 1);
    let b = Node::new(tag, 2);
    link_underlay(&a.ns, &b.ns);
    a.configure();
    b.configure();

    // Node a validates the underlay in XDP (native on a veth), node b where `auto` puts it on
    // a veth: TC ingress, which leaves node a's GSO alone.
    let mut dp_a = a.load_dataplane(&b, UnderlayProgram::Xdp, host_routing);
    let mut dp_b = b.load_dataplane(&a, UnderlayProgram::Auto, host_routing);
    assert_eq!(dp_a.underlay_hook(), Some(UnderlayHook::XdpNative));
    assert_eq!(dp_b.underlay_hook(), Some(UnderlayHook::Tc));
    let link_a = ip(&["-d", "-n", &a.ns.name, "link", "show", UNDERLAY]);
    assert!(link_a.contains("xdp"), "{link_a}");
    let link_b = ip(&["-d", "-n", &b.ns.name, "link", "show", UNDERLAY]);
    assert!(!link_b.contains("xdp"), "{link_b}");
    let underlay_b = b.ns.run(|| ifindex(UNDERLAY)).expect("netns thread");
    assert_eq!(
        b.ns.run(move || tcx_prog_count(underlay_b, BPF_TCX_INGRESS))
            .expect("netns thread"),
        1
    );

    // Container to container, both ways, watched on node-b's underlay.
    const N: usize = 20;
    let cap = capture(&b.ns);
    let (rx_b0, tx_b0) = b.underlay_stats();
    let forwarded = [forwarded_datagrams(&a.ns), forwarded_datagrams(&b.ns)];
    let sock_a = Node::udp_socket(&a.container, a.container_ip, 7000);
    let sock_b = Node::udp_socket(&b.container, b.container_ip, 7000);
    udp_round_trips(&sock_a, &sock_b, N);
    udp_round_trips(&sock_b, &sock_a, N);
    let (rx_b1, tx_b1) = b.underlay_stats();
    // Host routing encapsulated and delivered every datagram itself; the kernel path forwards
    // each one on both nodes (once out of the sender's bridge, once out of the overlay).
    let forwarded_now = [forwarded_datagrams(&a.ns), forwarded_datagrams(&b.ns)];
    eprintln!("forwarded datagrams {forwarded:?} -> {forwarded_now:?}");
    for (before, now) in forwarded.iter().zip(&forwarded_now) {
        if host_routing {
            assert_eq!(now, before);
        } else {
            assert!(*now >= before + 4 * N as u64, "{before} -> {now}");
        }
    }
    assert!(
        rx_b1 - rx_b0 >= 2 * N as u64,
        "underlay rx {rx_b0} -> {rx_b1}"
    );
    assert!(
        tx_b1 - tx_b0 >= 2 * N as u64,
        "underlay tx {tx_b0} -> {tx_b1}"
    );

    // What crossed the wire: VXLAN on UDP 4789, VNI = the sending container's identity,
    // between the underlay addresses, with the inner frame addressed to the overlay MAC and
    // the container IPs intact.
    let frames = captured_vxlan(&cap);
    let a_to_b = VxlanFrame {
        outer_src: a.underlay_ip,
        outer_dst: b.underlay_ip,
        vni: a.identity,
        inner_dst_mac: OVERLAY_MAC,
        inner_src_mac: OVERLAY_SRC_MAC,
        inner_src: a.container_ip,
        inner_dst: b.container_ip,
        zero_udp_checksum: host_routing,
    };
    let b_to_a = VxlanFrame {
        outer_src: b.underlay_ip,
        outer_dst: a.underlay_ip,
        vni: b.identity,
        inner_src: b.container_ip,
        inner_dst: a.container_ip,
        ..a_to_b
    };
    let count = |want: &VxlanFrame| frames.iter().filter(|f| *f == want).count();
    assert!(count(&a_to_b) >= 2 * N, "{frames:?}");
    assert!(count(&b_to_a) >= 2 * N, "{frames:?}");
    assert_eq!(count(&a_to_b) + count(&b_to_a), frames.len(), "{frames:?}");
    drop(cap);

    // The programs on both sides saw exactly this traffic.
    let ca = dp_a.overlay_counters().expect("counters");
    let cb = dp_b.overlay_counters().expect("counters");
    eprintln!("node-a overlay counters: {ca:?}\nnode-b overlay counters: {cb:?}");
    for (mine, theirs, c) in [
        (a.underlay_ip, b.underlay_ip, &ca),
        (b.underlay_ip, a.underlay_ip, &cb),
    ] {
        assert_eq!(sent_to(c, theirs), 2 * N as u64, "{mine}: {c:?}");
        assert_eq!(received_from(c, theirs), 2 * N as u64, "{mine}: {c:?}");
        assert_eq!(c.underlay_vxlan.packets, 2 * N as u64, "{mine}: {c:?}");
        assert!(c.drops.is_empty(), "{mine}: {c:?}");
        // Bytes: inner frames of 14 + 20 + 8 + "ping N" at least; the outer frames 50 more.
        assert!(c.sent.bytes >= 2 * N as u64 * 48, "{c:?}");
        assert!(
            c.underlay_vxlan.bytes >= c.received.bytes + 2 * N as u64 * 50,
            "{c:?}"
        );
    }

    // A TCP stream large enough for GSO/TSO-sized writes crosses intact.
    const STREAM: usize = 4 << 20;
    let listener = b
        .container
        .run(|| TcpListener::bind("10.244.2.2:7001").expect("listen"))
        .expect("netns thread");
    let server = thread::spawn(move || {
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = conn.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|&x| x == 0xa5));
            total += n;
        }
        conn.write_all(&(total as u64).to_be_bytes())
            .expect("reply");
        (peer, total)
    });
    let mut client = a
        .container
        .run(|| TcpStream::connect("10.244.2.2:7001").expect("connect across the overlay"))
        .expect("netns thread");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (tx_packets0, tx_bytes0) = a.underlay_tx();
    client.write_all(&vec![0xa5; STREAM]).expect("send stream");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut reply = [0u8; 8];
    client.read_exact(&mut reply).expect("server's count");
    assert_eq!(u64::from_be_bytes(reply), STREAM as u64);
    let (peer, total) = server.join().expect("server thread");
    assert_eq!(total, STREAM);
    // Node b's underlay runs TC, not XDP, so node a's underlay veth kept GSO: the stream
    // crossed as encapsulated super-packets, far larger on average than the MTU.
    let (tx_packets1, tx_bytes1) = a.underlay_tx();
    let mean = (tx_bytes1 - tx_bytes0) / (tx_packets1 - tx_packets0).max(1);
    eprintln!("node-a underlay: {mean} bytes per packet during the stream");
    assert!(
        mean > 2 * MTU.parse::<u64>().expect("MTU"),
        "GSO kept across the underlay: {mean} bytes per packet"
    );
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(a.container_ip),
        "no NAT on the way"
    );

    // The node itself reaches a remote container (source: its hm0 address, per the route).
    let node_sock = Node::udp_socket(&a.ns, Ipv4Addr::UNSPECIFIED, 0);
    node_sock
        .send_to(b"from node-a", (b.container_ip, 7000))
        .expect("send");
    let mut buf = [0u8; 64];
    let (len, from) = sock_b
        .recv_from(&mut buf)
        .expect("node -> remote container");
    assert_eq!(&buf[..len], b"from node-a");
    assert_eq!(
        from,
        SocketAddr::from((a.gateway, node_sock.local_addr().expect("addr").port()))
    );
    sock_b.send_to(b"back", from).expect("reply");
    let len = node_sock.recv(&mut buf).expect("reply reaches node-a");
    assert_eq!(&buf[..len], b"back");

    // Without the tunnel route, the ipcache still places b's container on node b: the
    // encapsulation decision is its one lookup.
    dp_a.remove_tunnel(b.subnet, 24).expect("remove tunnel");
    assert!(dp_a.tunnels().expect("tunnels").is_empty());
    udp_round_trips(&sock_a, &sock_b, 1);
    // Without the placement either (what the daemon writes once node b has left), node-a's
    // egress drops the traffic and says why.
    let before = dp_a.overlay_counters().expect("counters");
    dp_a.set_ipcache(b.container_ip, IpcacheEntry::local(b.identity))
        .expect("ipcache");
    sock_b
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    for _ in 0..3 {
        sock_a
            .send_to(b"lost", sock_b.local_addr().expect("addr"))
            .expect("send");
        assert!(
            sock_b.recv_from(&mut buf).is_err(),
            "delivered without a tunnel"
        );
    }
    let after = dp_a.overlay_counters().expect("counters");
    assert!(
        drops(&after, reason::DROP_NO_TUNNEL) >= drops(&before, reason::DROP_NO_TUNNEL) + 3,
        "{after:?}"
    );
    assert_eq!(
        sent_to(&after, b.underlay_ip),
        sent_to(&before, b.underlay_ip)
    );

    // Back with the route (the ipcache still does not place b's container: the tunnels
    // answer); then detaching leaves no program behind.
    dp_a.set_tunnel(b.subnet, 24, b.underlay_ip, vni::DEFAULT)
        .expect("set tunnel");
    sock_b
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    udp_round_trips(&sock_a, &sock_b, 1);
    for (node, dp) in [(&a, &mut dp_a), (&b, &mut dp_b)] {
        dp.detach_overlay().expect("detach");
        dp.detach_overlay().expect("detach twice");
        assert_eq!(dp.underlay_hook(), None);
        let (egress, ingress) = node
            .ns
            .run(|| {
                let vxlan = ifindex(OVERLAY_DEVICE);
                (
                    tcx_prog_count(vxlan, BPF_TCX_EGRESS),
                    tcx_prog_count(vxlan, BPF_TCX_INGRESS),
                )
            })
            .expect("netns thread");
        assert_eq!((egress, ingress), (0, 0));
        let link = ip(&["-d", "-n", &node.ns.name, "link", "show", UNDERLAY]);
        assert!(!link.contains("xdp"), "{link}");
    }
}
