//! Network policy in the kernel, end to end: two nodes in network namespaces wired the way the
//! daemon wires them (as `services_dataplane.rs` does), containers on both, identities in the
//! ipcache, real TCP connections through the policy programs.
//!
//! ```text
//!  node a: client 10.244.1.2 (identity 1000), a1 10.244.1.3 (2000)   (hm0 10.244.1.1)
//!  node b: b1 10.244.2.3 (3000)                                       (hm0 10.244.2.1)
//!  service 10.96.0.10:80/tcp -> b1:8080
//! ```
//!
//! Every address lives in a namespace this test creates (named with the pid, deleted by guards
//! even on panic); nothing touches the root namespace. Needs root; without it the test prints
//! why and passes, except under `CI=true`.

mod common;

use std::{
    io::Read as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    time::Duration,
};

use common::two_nodes;
use hivemind::dataplane::ServiceBackend;
use hivemind::policy::{Allow, EndpointRules, PeerMatch, Protocol};
use hivemind_common::reason;
use hivemind_tests::kernel::{Servers, can_run, ifindex, parse_answer};
use hivemind_tests::netns::NetNs;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const TCP: u8 = 6;
const HTTP_PORT: u16 = 80;
/// Where the backends listen (TCP and UDP alike): the service ports translate to it.
const BACKEND_PORT: u16 = 8080;

/// One TCP connection from `ns` to `target:port`: the answer's backend name, or `None` if the
/// connection failed (a dropped SYN times out).
fn tcp_try(ns: &NetNs, target: Ipv4Addr, port: u16) -> Option<String> {
    ns.run(move || {
        let target = SocketAddr::V4(SocketAddrV4::new(target, port));
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_millis(700)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).ok()?;
        Some(parse_answer(&answer).0)
    })
    .expect("client thread")
}

fn allow(peer: PeerMatch, port_min: u16, port_max: u16) -> Allow {
    Allow {
        peer,
        protocol: Protocol::Tcp,
        port_min,
        port_max,
    }
}

fn ingress(rules: &[Allow]) -> EndpointRules {
    EndpointRules {
        ingress: Some(rules.iter().copied().collect()),
        egress: None,
    }
}

const ID_CLIENT: u32 = 1000;
const ID_A1: u32 = 2000;
const ID_B1: u32 = 3000;

#[test]
fn policy_allows_and_denies_connections_with_host_routing() {
    if !can_run("policy_allows_and_denies_connections_with_host_routing") {
        return;
    }
    policy_scenario("hmpo", true);
}

#[test]
fn policy_allows_and_denies_connections_through_the_kernel_path() {
    if !can_run("policy_allows_and_denies_connections_through_the_kernel_path") {
        return;
    }
    policy_scenario("hmpk", false);
}

fn policy_scenario(prefix: &str, host_routing: bool) {
    let (a, b) = two_nodes(prefix);
    let mut dp_a = a.load_dataplane(&b, host_routing);
    let mut dp_b = b.load_dataplane(&a, host_routing);
    let client = a.container("client");
    let a1 = a.container("a1");
    let b1 = b.container("b1");
    let mut servers = Servers::default();
    servers.start(&a1.ns, a1.name, BACKEND_PORT);
    servers.start(&b1.ns, b1.name, BACKEND_PORT);

    // What the daemon does: every node knows every container's identity and node (and the
    // gateways as the host); each endpoint gets its own identity.
    for (node, peer, dp) in [(&a, &b, &mut dp_a), (&b, &a, &mut dp_b)] {
        for (c, id) in [(client, ID_CLIENT), (a1, ID_A1), (b1, ID_B1)] {
            dp.set_ipcache(c.ip, node.ipcache_entry(peer, c.ip, id))
                .expect("ipcache");
        }
        let on_node: Vec<(String, u32)> = node
            .containers
            .iter()
            .map(|c| {
                let id = match c.name {
                    "client" => ID_CLIENT,
                    "a1" => ID_A1,
                    _ => ID_B1,
                };
                (c.host_if.clone(), id)
            })
            .collect();
        for (host_if, id) in on_node {
            let index = node.ns.run(move || ifindex(&host_if)).expect("ns thread");
            dp.set_endpoint_identity(index, id).expect("identity");
        }
    }
    let ok = |from: &NetNs, to: Ipv4Addr, port: u16| tcp_try(from, to, port).is_some();

    // No policy: everything connects.
    assert!(ok(&client.ns, a1.ip, BACKEND_PORT));
    assert!(ok(&client.ns, b1.ip, BACKEND_PORT));
    assert!(ok(&b1.ns, a1.ip, BACKEND_PORT));

    // a1 and b1 accept the client only, on a port range containing the server's port.
    dp_a.set_endpoint_policy(
        a1.endpoint_id,
        &ingress(&[allow(PeerMatch::Identity(ID_CLIENT), 8000, 8100)]),
    )
    .expect("policy a1");
    dp_b.set_endpoint_policy(
        b1.endpoint_id,
        &ingress(&[allow(PeerMatch::Identity(ID_CLIENT), 8080, 8080)]),
    )
    .expect("policy b1");
    assert!(ok(&client.ns, a1.ip, BACKEND_PORT), "same node, allowed");
    assert!(ok(&client.ns, b1.ip, BACKEND_PORT), "across nodes, allowed");
    assert!(!ok(&b1.ns, a1.ip, BACKEND_PORT), "across nodes, denied");
    assert!(!ok(&a1.ns, b1.ip, BACKEND_PORT), "across nodes, denied");
    assert!(!ok(&a.ns, a1.ip, BACKEND_PORT), "the node itself, denied");
    // The denial on node a saw b1's identity, carried in the VNI.
    let (events, lost) = dp_a.drain_flows().expect("flows a");
    assert_eq!(lost, 0);
    assert!(
        events.iter().any(|e| e.verdict == "denied"
            && e.endpoint_id == a1.endpoint_id
            && e.peer_identity == ID_B1
            && e.direction == "ingress"
            && e.reason.code == reason::DROP_POLICY),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e.verdict == "allowed"
            && e.src == client.ip
            && e.dst == a1.ip
            && e.dport == BACKEND_PORT),
        "{events:#?}"
    );
    let (events, _) = dp_b.drain_flows().expect("flows b");
    assert!(
        events
            .iter()
            .any(|e| e.verdict == "allowed" && e.peer_identity == ID_CLIENT),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.verdict == "denied" && e.peer_identity == ID_A1),
        "{events:#?}"
    );
    assert!(
        dp_a.endpoint_counters(a1.endpoint_id)
            .expect("counters")
            .drops[&reason::DROP_POLICY]
            >= 2
    );
    assert!(
        dp_b.endpoint_counters(b1.endpoint_id)
            .expect("counters")
            .drops[&reason::DROP_POLICY]
            >= 1
    );

    // Through a service VIP: the policy sees the backend (b1:8080) and the client identity.
    let vip_backend = ServiceBackend {
        id: 1,
        ip: b1.ip,
        port: BACKEND_PORT,
        weight: 1,
    };
    for dp in [&mut dp_a, &mut dp_b] {
        dp.set_service(VIP, HTTP_PORT, TCP, &[vip_backend])
            .expect("service");
    }
    assert_eq!(tcp_try(&client.ns, VIP, HTTP_PORT).as_deref(), Some("b1"));
    assert!(!ok(&a1.ns, VIP, HTTP_PORT), "a1 via the vip, denied");

    // A CIDR rule: node a's container subnet may reach b1 (the client and a1 alike).
    dp_b.set_endpoint_policy(
        b1.endpoint_id,
        &ingress(&[allow(PeerMatch::Cidr(a.subnet, 24), 8080, 8080)]),
    )
    .expect("cidr policy");
    assert!(ok(&a1.ns, b1.ip, BACKEND_PORT), "cidr allows a1");
    assert!(
        ok(&client.ns, b1.ip, BACKEND_PORT),
        "cidr allows the client"
    );
    // A port range that leaves the server's port out.
    dp_b.set_endpoint_policy(
        b1.endpoint_id,
        &ingress(&[allow(PeerMatch::Cidr(a.subnet, 24), 9000, 9100)]),
    )
    .expect("range policy");
    assert!(
        !ok(&client.ns, b1.ip, BACKEND_PORT),
        "port outside the range"
    );

    // Deleting b1's policy: new connections pass again.
    dp_b.set_endpoint_policy(b1.endpoint_id, &EndpointRules::default())
        .expect("delete policy");
    assert!(ok(&a1.ns, b1.ip, BACKEND_PORT));

    // An egress rule: the client may reach b1 only; the reply still comes back in.
    dp_a.set_endpoint_policy(
        client.endpoint_id,
        &EndpointRules {
            ingress: None,
            egress: Some([allow(PeerMatch::Identity(ID_B1), 8080, 8080)].into()),
        },
    )
    .expect("egress policy");
    assert!(ok(&client.ns, b1.ip, BACKEND_PORT), "egress allowed");
    assert!(!ok(&client.ns, a1.ip, BACKEND_PORT), "egress denied");
    let c = dp_a
        .endpoint_counters(client.endpoint_id)
        .expect("counters");
    assert!(c.drops[&reason::DROP_POLICY] >= 1, "{c:?}");
    let (events, _) = dp_a.drain_flows().expect("flows");
    assert!(
        events.iter().any(|e| e.verdict == "denied"
            && e.endpoint_id == client.endpoint_id
            && e.direction == "egress"
            && e.peer_identity == ID_A1),
        "{events:#?}"
    );

    // A tightened policy cuts a connection it no longer allows, within 5 s: the client, free
    // again, holds a connection to b1:9000 that b1's rules allow, then b1 allows a1 only.
    dp_a.set_endpoint_policy(client.endpoint_id, &EndpointRules::default())
        .expect("client policy gone");
    dp_b.set_endpoint_policy(
        b1.endpoint_id,
        &ingress(&[allow(PeerMatch::Identity(ID_CLIENT), 9000, 9000)]),
    )
    .expect("b1 allows the client");
    let cut_after = long_lived_connection_cut(&client.ns, &b1.ns, b1.ip, || {
        dp_b.set_endpoint_policy(
            b1.endpoint_id,
            &ingress(&[allow(PeerMatch::Identity(ID_A1), 9000, 9000)]),
        )
        .expect("b1 allows a1 only");
    });
    eprintln!("connection cut {cut_after:?} after the policy changed");
    assert!(cut_after < Duration::from_secs(5), "{cut_after:?}");

    drop(servers);
}

/// Opens a connection from `client` to an echo server on `server_ip`:9000 in `server`, checks
/// it echoes, runs `change`, then exchanges a byte every 100 ms until one goes unanswered (1 s
/// timeout); returns how long after `change` that was. Fails if it still works after 10 s.
fn long_lived_connection_cut(
    client: &NetNs,
    server: &NetNs,
    server_ip: Ipv4Addr,
    change: impl FnOnce(),
) -> Duration {
    use std::io::Write as _;
    use std::sync::mpsc;
    use std::time::Instant;
    let (listening_tx, listening_rx) = mpsc::channel();
    let server_path = server.path();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&server_path).expect("server netns");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let listener = std::net::TcpListener::bind("0.0.0.0:9000").expect("bind 9000");
        listening_tx.send(()).expect("listening");
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut byte = [0u8; 1];
        while conn.read_exact(&mut byte).is_ok() && conn.write_all(&byte).is_ok() {}
    });
    listening_rx.recv().expect("server up");
    let (ready_tx, ready_rx) = mpsc::channel();
    let (changed_tx, changed_rx) = mpsc::channel::<Instant>();
    let client_path = client.path();
    let exchanges = std::thread::spawn(move || -> Result<Duration, String> {
        let file = std::fs::File::open(&client_path).map_err(|e| e.to_string())?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        let target = SocketAddr::V4(SocketAddrV4::new(server_ip, 9000));
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(3))
            .map_err(|e| format!("connect: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| e.to_string())?;
        let mut exchange = |i: u8| -> bool {
            let mut back = [0u8; 1];
            conn.write_all(&[i]).is_ok() && conn.read_exact(&mut back).is_ok() && back[0] == i
        };
        for i in 0..5 {
            if !exchange(i) {
                return Err(format!("exchange {i} before the change failed"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ready_tx.send(()).map_err(|e| e.to_string())?;
        let changed = changed_rx.recv().map_err(|e| e.to_string())?;
        let mut i = 5u8;
        while changed.elapsed() < Duration::from_secs(10) {
            if !exchange(i) {
                return Ok(changed.elapsed());
            }
            i = i.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("the connection still works 10 s after the change".to_string())
    });
    ready_rx.recv().expect("connection established");
    change();
    changed_tx.send(Instant::now()).expect("changed");
    exchanges
        .join()
        .expect("client thread")
        .unwrap_or_else(|e| panic!("{e}"))
}
