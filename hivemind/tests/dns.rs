//! The node's DNS server over real sockets on 127.0.0.1: a fake directory,
//! a fake upstream on another port, queries built with hickory-proto or by
//! hand.
// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hivemind::discovery::{
    DnsConfig, DnsServer, Endpoint, Protocol, ServiceAnswer, ServiceDirectory,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const CUSTOM_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const C1: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const C2: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 7);
const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

struct FakeDirectory(HashMap<String, ServiceAnswer>);

impl ServiceDirectory for FakeDirectory {
    fn lookup(&self, name: &str) -> Option<ServiceAnswer> {
        self.0.get(name).cloned()
    }
}

fn directory() -> Arc<dyn ServiceDirectory> {
    let web = ServiceAnswer {
        vip: VIP,
        ports: vec![(80, Protocol::Tcp), (53, Protocol::Udp)],
        endpoints: vec![
            Endpoint {
                name: "c1".into(),
                ip: C1,
            },
            Endpoint {
                name: "c2".into(),
                ip: C2,
            },
        ],
    };
    let app = ServiceAnswer {
        vip: CUSTOM_VIP,
        ports: vec![(443, Protocol::Tcp)],
        endpoints: vec![],
    };
    Arc::new(FakeDirectory(HashMap::from([
        ("web".to_owned(), web),
        ("app.example.com".to_owned(), app),
    ])))
}

async fn start(upstreams: Vec<SocketAddr>) -> DnsServer {
    let config = DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        domain: "hivemind.local".into(),
        ttl: 5,
        upstreams,
    };
    DnsServer::start(config, directory()).await.unwrap()
}

fn query_bytes(name: &str, rtype: RecordType, class: DNSClass, op: OpCode) -> (u16, Vec<u8>) {
    let mut message = Message::new(rand_id(), MessageType::Query, op);
    message.metadata.recursion_desired = true;
    let mut query = Query::query(Name::from_ascii(name).unwrap(), rtype);
    query.set_query_class(class);
    message.add_query(query);
    (message.metadata.id, message.to_vec().unwrap())
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0x1234);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Sends a datagram; the reply, or `None` after `wait`.
async fn udp_raw(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (len, _) = timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    buf.truncate(len);
    Some(buf)
}

async fn udp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let (id, bytes) = query_bytes(name, rtype, DNSClass::IN, OpCode::Query);
    let reply = udp_raw(server, &bytes, WAIT).await.expect("a reply");
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, id);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    reply
}

async fn tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let (id, bytes) = query_bytes(name, rtype, DNSClass::IN, OpCode::Query);
    let mut stream = TcpStream::connect(server).await.unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.unwrap();
    let len = timeout(WAIT, stream.read_u16()).await.unwrap().unwrap();
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await.unwrap();
    let reply = Message::from_vec(&buf).unwrap();
    assert_eq!(reply.metadata.id, id);
    reply
}

fn a_records(records: &[Record]) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

fn rcode(bytes: &[u8]) -> u8 {
    bytes[3] & 0x0f
}

#[tokio::test]
async fn service_name_answers_the_vip_with_the_configured_ttl() {
    let server = start(vec![]).await;
    let reply = udp(server.local_addr(), "web.hivemind.local.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert_eq!(a_records(&reply.answers), vec![VIP]);
    assert!(reply.answers.iter().all(|r| r.ttl == 5));
    // Case does not matter; the owner name keeps the client's case.
    let reply = udp(server.local_addr(), "WEB.Hivemind.LOCAL.", RecordType::A).await;
    assert_eq!(a_records(&reply.answers), vec![VIP]);
    assert_eq!(reply.answers[0].name.to_ascii(), "WEB.Hivemind.LOCAL.");
    server.stop().await;
}

#[tokio::test]
async fn srv_lists_ready_endpoints_with_their_addresses() {
    let server = start(vec![]).await;
    let reply = udp(
        server.local_addr(),
        "_80._tcp.web.hivemind.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let mut targets: Vec<(String, u16)> = reply
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(srv) => (srv.target.to_ascii(), srv.port),
            other => panic!("not srv: {other:?}"),
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            ("c1.web.hivemind.local.".to_owned(), 80),
            ("c2.web.hivemind.local.".to_owned(), 80)
        ]
    );
    assert_eq!(a_records(&reply.additionals), vec![C1, C2]);
    for record in &reply.additionals {
        let expected = if a_records(std::slice::from_ref(record)) == vec![C1] {
            "c1.web.hivemind.local."
        } else {
            "c2.web.hivemind.local."
        };
        assert_eq!(record.name.to_ascii(), expected);
    }
    assert!(
        reply
            .answers
            .iter()
            .chain(&reply.additionals)
            .all(|r| r.ttl == 5)
    );

    let udp_srv = udp(
        server.local_addr(),
        "_53._udp.web.hivemind.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(udp_srv.answers.len(), 2);
    // A port or protocol the service does not expose does not exist.
    let reply = udp(
        server.local_addr(),
        "_80._udp.web.hivemind.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test]
async fn headless_and_container_names() {
    let server = start(vec![]).await;
    let reply = udp(
        server.local_addr(),
        "endpoints.web.hivemind.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(a_records(&reply.answers), vec![C1, C2]);
    assert!(reply.answers.iter().all(|r| r.ttl == 5));
    let reply = udp(server.local_addr(), "c2.web.hivemind.local.", RecordType::A).await;
    assert_eq!(a_records(&reply.answers), vec![C2]);
    let reply = udp(server.local_addr(), "c9.web.hivemind.local.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    server.stop().await;
}

#[tokio::test]
async fn custom_service_domain_answers_the_vip() {
    let server = start(vec![]).await;
    let reply = udp(server.local_addr(), "app.example.com.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&reply.answers), vec![CUSTOM_VIP]);
    assert_eq!(reply.answers[0].ttl, 5);
    server.stop().await;
}

#[tokio::test]
async fn unknown_names_are_nxdomain_and_other_types_nodata() {
    let server = start(vec![]).await;
    let reply = udp(server.local_addr(), "db.hivemind.local.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(reply.answers.is_empty());
    // The SOA lets resolvers cache the negative answer for the TTL.
    assert!(matches!(
        reply.authorities.first().map(|r| &r.data),
        Some(RData::SOA(_))
    ));

    for (name, rtype) in [
        ("web.hivemind.local.", RecordType::AAAA),
        ("web.hivemind.local.", RecordType::TXT),
        ("c1.web.hivemind.local.", RecordType::AAAA),
        ("app.example.com.", RecordType::AAAA),
        ("_80._tcp.web.hivemind.local.", RecordType::A),
    ] {
        let reply = udp(server.local_addr(), name, rtype).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name} {rtype}"
        );
        assert!(reply.answers.is_empty(), "{name} {rtype}");
    }
    server.stop().await;
}

#[tokio::test]
async fn tcp_queries_work() {
    let server = start(vec![]).await;
    let reply = tcp(server.local_addr(), "web.hivemind.local.", RecordType::A).await;
    assert_eq!(a_records(&reply.answers), vec![VIP]);
    let reply = tcp(
        server.local_addr(),
        "_80._tcp.web.hivemind.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(reply.answers.len(), 2);
    assert_eq!(a_records(&reply.additionals), vec![C1, C2]);
    server.stop().await;
}

/// A fake upstream on UDP and TCP of one port: answers any A query with
/// `UPSTREAM_IP`, except that `big.example.org` is truncated over UDP.
async fn fake_upstream() -> SocketAddr {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let (len, peer) = udp.recv_from(&mut buf).await.unwrap();
            let reply = upstream_reply(&buf[..len], true);
            udp.send_to(&reply, peer).await.unwrap();
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tcp.accept().await.unwrap();
            let len = stream.read_u16().await.unwrap();
            let mut buf = vec![0u8; len as usize];
            stream.read_exact(&mut buf).await.unwrap();
            let reply = upstream_reply(&buf, false);
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            stream.write_all(&framed).await.unwrap();
        }
    });
    addr
}

fn upstream_reply(query: &[u8], over_udp: bool) -> Vec<u8> {
    let query = Message::from_vec(query).unwrap();
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    let question = query.queries[0].clone();
    let big = question.name().to_ascii() == "big.example.org.";
    if big && over_udp {
        reply.metadata.truncation = true;
    } else {
        reply.add_answer(Record::from_rdata(
            question.name().clone(),
            300,
            RData::A(A(UPSTREAM_IP)),
        ));
    }
    reply.add_query(question);
    reply.to_vec().unwrap()
}

fn dead_upstream() -> SocketAddr {
    // Bound then released: nothing listens there.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

#[tokio::test]
async fn other_names_are_forwarded_to_the_upstream() {
    let upstream = fake_upstream().await;
    let server = start(vec![dead_upstream(), upstream]).await;
    let reply = udp(server.local_addr(), "www.example.org.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.recursion_available);
    assert_eq!(a_records(&reply.answers), vec![UPSTREAM_IP]);
    // Truncated over UDP upstream: retried over TCP.
    let reply = udp(server.local_addr(), "big.example.org.", RecordType::A).await;
    assert_eq!(a_records(&reply.answers), vec![UPSTREAM_IP]);
    // TCP client, forwarded too.
    let reply = tcp(server.local_addr(), "www.example.org.", RecordType::A).await;
    assert_eq!(a_records(&reply.answers), vec![UPSTREAM_IP]);
    server.stop().await;
}

#[tokio::test]
async fn servfail_without_upstreams_or_with_a_dead_one() {
    for upstreams in [vec![], vec![dead_upstream()]] {
        let server = start(upstreams.clone()).await;
        let reply = udp(server.local_addr(), "www.example.org.", RecordType::A).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::ServFail,
            "{upstreams:?}"
        );
        assert!(reply.answers.is_empty());
        server.stop().await;
    }
}

#[tokio::test]
async fn malformed_and_unsupported_queries_get_an_rcode() {
    let server = start(vec![]).await;
    let addr = server.local_addr();

    // A header with one question, then a compression pointer past the end.
    let garbage = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff";
    let reply = udp_raw(addr, garbage, WAIT).await.expect("formerr");
    assert_eq!(&reply[..2], b"\xbe\xef");
    assert_eq!(reply[2] & 0x80, 0x80, "qr set");
    assert_eq!(rcode(&reply), 1, "formerr");

    // A name over 255 bytes.
    let mut long = b"\x00\x07\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00".to_vec();
    for _ in 0..5 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.extend_from_slice(b"\x00\x00\x01\x00\x01");
    let reply = udp_raw(addr, &long, WAIT).await.expect("formerr");
    assert_eq!(rcode(&reply), 1, "formerr for a long name");

    // Two questions, and none.
    let mut two = Message::new(7, MessageType::Query, OpCode::Query);
    two.add_query(Query::query(
        Name::from_ascii("web.hivemind.local.").unwrap(),
        RecordType::A,
    ));
    two.add_query(Query::query(
        Name::from_ascii("db.hivemind.local.").unwrap(),
        RecordType::A,
    ));
    let reply = udp_raw(addr, &two.to_vec().unwrap(), WAIT)
        .await
        .expect("formerr");
    assert_eq!(rcode(&reply), 1, "formerr for two questions");
    let none = Message::new(8, MessageType::Query, OpCode::Query);
    let reply = udp_raw(addr, &none.to_vec().unwrap(), WAIT)
        .await
        .expect("formerr");
    assert_eq!(rcode(&reply), 1, "formerr for no question");

    // Opcode STATUS.
    let (id, bytes) = query_bytes(
        "web.hivemind.local.",
        RecordType::A,
        DNSClass::IN,
        OpCode::Status,
    );
    let reply = Message::from_vec(&udp_raw(addr, &bytes, WAIT).await.expect("notimp")).unwrap();
    assert_eq!(reply.metadata.id, id);
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);

    // Class CH (version.bind and friends).
    let (_, bytes) = query_bytes(
        "version.bind.",
        RecordType::TXT,
        DNSClass::CH,
        OpCode::Query,
    );
    let reply = Message::from_vec(&udp_raw(addr, &bytes, WAIT).await.expect("refused")).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);

    // Zone transfer.
    let (_, bytes) = query_bytes(
        "hivemind.local.",
        RecordType::AXFR,
        DNSClass::IN,
        OpCode::Query,
    );
    let reply = Message::from_vec(&udp_raw(addr, &bytes, WAIT).await.expect("notimp")).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);

    // Shorter than a header: nothing to answer, and the server lives on.
    assert!(
        udp_raw(addr, b"\x01\x02\x03", Duration::from_millis(300))
            .await
            .is_none()
    );
    let reply = udp(addr, "web.hivemind.local.", RecordType::A).await;
    assert_eq!(a_records(&reply.answers), vec![VIP]);
    server.stop().await;
}

#[tokio::test]
async fn stop_releases_the_port() {
    let server = start(vec![]).await;
    let addr = server.local_addr();
    server.stop().await;
    // Both sockets are closed: the same port binds again.
    let udp = UdpSocket::bind(addr).await.unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    drop((udp, tcp));
}

#[tokio::test]
async fn random_datagrams_never_take_the_server_down() {
    let server = start(vec![]).await;
    let addr = server.local_addr();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // xorshift: deterministic garbage of every length up to 300 bytes.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut ids = std::collections::HashSet::new();
    for len in 0..300usize {
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len >= 12 {
            // Mostly queries, so most get past hickory's reflection guard.
            bytes[2] &= 0x7f;
            ids.insert(u16::from_be_bytes([bytes[0], bytes[1]]));
        }
        socket.send_to(&bytes, addr).await.unwrap();
    }
    let mut buf = vec![0u8; 65_535];
    let mut replies = 0;
    while let Ok(Ok((len, _))) =
        timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await
    {
        assert!(len >= 12);
        assert!(ids.contains(&u16::from_be_bytes([buf[0], buf[1]])));
        assert_eq!(buf[2] & 0x80, 0x80, "qr set");
        replies += 1;
    }
    assert!(replies > 0);
    let reply = udp(addr, "web.hivemind.local.", RecordType::A).await;
    assert_eq!(a_records(&reply.answers), vec![VIP]);
    server.stop().await;
}
