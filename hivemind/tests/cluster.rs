//! The cluster layer in process: several `Cluster`s on 127.0.0.1 with
//! ephemeral ports, each with its own axum server and in-memory store.
//!
//! Waits are bounded (`eventually`); timing is printed and asserted only
//! loosely.

// Helpers outside #[test] fns unwrap too: a failed setup should fail loudly.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hivemind::cluster::{
    AUTH_HEADER, Cluster, ClusterConfig, ClusterEvent, Hlc, Key, Keyring, MAX_PUSH_BODY,
    MemberState, MemoryReplicaStore, PUSH_PATH, Record, RecordKey, ReplicaStore, SYNC_PATH,
    SyncResponse, rendezvous_owner,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

struct Node {
    cluster: Arc<Cluster>,
    store: Arc<MemoryReplicaStore>,
    server: JoinHandle<()>,
    api: SocketAddr,
}

impl Node {
    fn id(&self) -> &str {
        self.cluster.node_id()
    }

    fn state_of(&self, id: &str) -> Option<MemberState> {
        self.cluster
            .members()
            .into_iter()
            .find(|m| m.id == id)
            .map(|m| m.state)
    }

    fn value(&self, key: &RecordKey) -> Option<Value> {
        self.store.value(key)
    }

    /// What `kill -9` does: every task stops, the socket and server close.
    fn kill(&self) {
        self.cluster.shutdown();
        self.server.abort();
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn start_node(id: &str, join: Vec<SocketAddr>) -> Node {
    start_node_with(id, join, Arc::new(MemoryReplicaStore::new()), |_| {}).await
}

async fn start_node_with(
    id: &str,
    join: Vec<SocketAddr>,
    store: Arc<MemoryReplicaStore>,
    configure: impl FnOnce(&mut ClusterConfig),
) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let mut config = ClusterConfig::new(id, "127.0.0.1:0".parse().unwrap(), api, test_keyring());
    config.join = join;
    configure(&mut config);
    let cluster = Cluster::start(config, store.clone()).await.unwrap();
    let app = cluster.router();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Node {
        cluster,
        store,
        server,
        api,
    }
}

/// Polls `check` every 50 ms until it holds; panics after `deadline`.
async fn eventually(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` nodes joined through the first; returns once all see all Alive.
async fn cluster_of(prefix: &str, n: usize) -> Vec<Node> {
    init_tracing();
    let seed = start_node(&format!("{prefix}0"), vec![]).await;
    let seed_addr = seed.cluster.gossip_addr();
    let mut nodes = vec![seed];
    for i in 1..n {
        nodes.push(start_node(&format!("{prefix}{i}"), vec![seed_addr]).await);
    }
    let took = eventually(
        "every member alive everywhere",
        Duration::from_secs(20),
        || all_alive(&nodes, n),
    )
    .await;
    println!("{prefix}: {n} members alive everywhere after {took:?}");
    nodes
}

fn all_alive(nodes: &[Node], n: usize) -> bool {
    nodes.iter().all(|node| {
        let members = node.cluster.members();
        members.len() == n && members.iter().all(|m| m.state == MemberState::Alive)
    })
}

fn key(k: &str) -> RecordKey {
    RecordKey::new("apps", k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_through_one_seed() {
    let nodes = cluster_of("join", 5).await;
    for node in &nodes {
        let members = node.cluster.members();
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["join0", "join1", "join2", "join3", "join4"]);
        let me: Vec<_> = members.iter().filter(|m| m.is_self).collect();
        assert_eq!(me.len(), 1);
        assert_eq!(me[0].id, node.id());
        assert_eq!(me[0].api, node.api);
        assert_eq!(node.cluster.live_members().len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reaches_every_member() {
    let nodes = cluster_of("write", 3).await;
    let mut events = nodes[2].cluster.subscribe();
    let k = key("web");
    let start = Instant::now();
    let record = nodes[0]
        .cluster
        .write(k.clone(), Some(json!({"replicas": 3})))
        .await
        .unwrap();
    eventually("the write on every member", Duration::from_secs(5), || {
        nodes
            .iter()
            .all(|n| n.value(&k) == Some(json!({"replicas": 3})))
    })
    .await;
    println!("write visible on all 3 members after {:?}", start.elapsed());
    for node in &nodes {
        assert_eq!(node.store.get(&k).unwrap().unwrap(), record);
    }
    // The receiver saw it applied.
    let applied = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let ClusterEvent::RecordsApplied(keys) = events.recv().await.unwrap()
                && keys.contains(&k)
            {
                return;
            }
        }
    })
    .await;
    assert!(applied.is_ok(), "no RecordsApplied event for {k:?}");
    // A later version from another node wins; a tombstone deletes.
    let delete = nodes[1].cluster.write(k.clone(), None).await.unwrap();
    assert!(
        delete.version > record.version,
        "the clock observed the remote version"
    );
    eventually("the delete on every member", Duration::from_secs(5), || {
        nodes.iter().all(|n| {
            n.store
                .get(&k)
                .unwrap()
                .is_some_and(|r| r.value.is_none() && r.version == delete.version)
        })
    })
    .await;
}

/// A write that a newer version beats is refused as lost, unless the newer version holds
/// the same value (two writers deriving the same row): then the newer record stands and the
/// write succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_beaten_by_the_same_value_is_not_lost() {
    let node = start_node("same-value", vec![]).await;
    let k = key("placement");
    let ahead = Hlc {
        wall_ms: u64::MAX / 2,
        counter: 0,
        node: 0,
    };
    let newer = node
        .cluster
        .write_at(k.clone(), Some(json!({"nodes": ["a"]})), ahead)
        .await
        .unwrap();
    let same = node
        .cluster
        .write(k.clone(), Some(json!({"nodes": ["a"]})))
        .await
        .unwrap();
    assert_eq!(same, newer, "the newer record stands");
    let lost = node
        .cluster
        .write(k.clone(), Some(json!({"nodes": ["b"]})))
        .await;
    assert!(
        matches!(
            lost,
            Err(hivemind::cluster::ClusterError::Superseded { .. })
        ),
        "{lost:?}"
    );
    assert_eq!(node.store.get(&k).unwrap(), Some(newer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_converge_on_one_winner() {
    let nodes = cluster_of("race", 3).await;
    let k = key("contended");
    let (a, b, c) = tokio::join!(
        nodes[0].cluster.write(k.clone(), Some(json!("from-0"))),
        nodes[1].cluster.write(k.clone(), Some(json!("from-1"))),
        nodes[2].cluster.write(k.clone(), Some(json!("from-2"))),
    );
    let written = [a.unwrap(), b.unwrap(), c.unwrap()];
    let winner = written.iter().max_by_key(|r| r.version).cloned().unwrap();
    let took = eventually(
        "every member holds the same winner",
        Duration::from_secs(5),
        || {
            nodes
                .iter()
                .all(|n| n.store.get(&k).unwrap().as_ref() == Some(&winner))
        },
    )
    .await;
    println!(
        "concurrent writes converged on {:?} after {took:?}",
        winner.value
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_is_marked_down() {
    let nodes = cluster_of("kill", 4).await;
    let victim = &nodes[3];
    let victim_id = victim.id().to_owned();
    let mut events = nodes[0].cluster.subscribe();
    victim.kill();
    let start = Instant::now();
    let took = eventually(
        "the killed member down everywhere",
        Duration::from_secs(15),
        || {
            nodes[..3]
                .iter()
                .all(|n| n.state_of(&victim_id) == Some(MemberState::Down))
        },
    )
    .await;
    println!("killed member declared down on all 3 survivors after {took:?}");
    assert!(start.elapsed() < Duration::from_secs(15));
    // Its row stays, with the time it went down.
    let row = nodes[0]
        .cluster
        .members()
        .into_iter()
        .find(|m| m.id == victim_id)
        .unwrap();
    assert!(row.since_ms > 0);
    assert_eq!(nodes[0].cluster.live_members().len(), 3);
    let mut saw_down = false;
    while let Ok(event) = events.try_recv() {
        if let ClusterEvent::MemberChanged(m) = event
            && m.id == victim_id
            && m.state == MemberState::Down
        {
            saw_down = true;
        }
    }
    assert!(saw_down, "no MemberChanged(Down) event");
    // The survivors keep replicating.
    nodes[1]
        .cluster
        .write(key("after"), Some(json!(1)))
        .await
        .unwrap();
    eventually(
        "replication among survivors",
        Duration::from_secs(5),
        || {
            nodes[..3]
                .iter()
                .all(|n| n.value(&key("after")) == Some(json!(1)))
        },
    )
    .await;
    // The node comes back (new process, new port, same id): Alive again,
    // and anti-entropy fills its empty store.
    let reborn = start_node(&victim_id, vec![nodes[0].cluster.gossip_addr()]).await;
    let new_gossip = reborn.cluster.gossip_addr();
    let took = eventually(
        "the restarted member alive everywhere",
        Duration::from_secs(15),
        || {
            nodes[..3].iter().all(|n| {
                n.cluster.members().iter().any(|m| {
                    m.id == victim_id && m.state == MemberState::Alive && m.gossip == new_gossip
                })
            }) && reborn.value(&key("after")) == Some(json!(1))
        },
    )
    .await;
    println!("restarted member alive and caught up after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_shows_left() {
    let nodes = cluster_of("leave", 3).await;
    let leaver = nodes[2].id().to_owned();
    nodes[2].cluster.leave().await.unwrap();
    let took = eventually(
        "the leaver Left everywhere",
        Duration::from_secs(10),
        || {
            nodes[..2]
                .iter()
                .all(|n| n.state_of(&leaver) == Some(MemberState::Left))
        },
    )
    .await;
    println!("graceful leave seen as Left after {took:?}");
    assert_eq!(nodes[2].state_of(&leaver), Some(MemberState::Left));
    assert!(
        nodes[2]
            .cluster
            .join(nodes[0].cluster.gossip_addr())
            .await
            .is_err()
    );
    assert_eq!(nodes[0].cluster.live_members().len(), 2);
    // Left is final: the suspicion timeout passing does not turn it into Down.
    let mut events = nodes[0].cluster.subscribe();
    nodes[0]
        .cluster
        .write(key("probe"), Some(json!(1)))
        .await
        .unwrap();
    eventually(
        "a write between the remaining two",
        Duration::from_secs(5),
        || nodes[1].value(&key("probe")) == Some(json!(1)),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(nodes[0].state_of(&leaver), Some(MemberState::Left));
    while let Ok(event) = events.try_recv() {
        if let ClusterEvent::MemberChanged(m) = event {
            assert_ne!(m.id, leaver, "the leaver changed state again: {m:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals() {
    let nodes = cluster_of("part", 4).await;
    let (left, right) = nodes.split_at(2);
    for a in left {
        for b in right {
            a.cluster.block_peer(b.id());
            b.cluster.block_peer(a.id());
        }
    }
    nodes[0]
        .cluster
        .write(key("only-left"), Some(json!("l")))
        .await
        .unwrap();
    nodes[2]
        .cluster
        .write(key("only-right"), Some(json!("r")))
        .await
        .unwrap();
    let l = nodes[1]
        .cluster
        .write(key("both"), Some(json!("left")))
        .await
        .unwrap();
    let r = nodes[3]
        .cluster
        .write(key("both"), Some(json!("right")))
        .await
        .unwrap();
    eventually("writes inside each side", Duration::from_secs(5), || {
        nodes[1].value(&key("only-left")).is_some() && nodes[3].value(&key("only-right")).is_some()
    })
    .await;
    // Two anti-entropy rounds later, nothing crossed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in right {
        assert_eq!(
            n.value(&key("only-left")),
            None,
            "{} saw a blocked write",
            n.id()
        );
    }
    for n in left {
        assert_eq!(
            n.value(&key("only-right")),
            None,
            "{} saw a blocked write",
            n.id()
        );
    }
    for a in left {
        for b in right {
            a.cluster.unblock_peer(b.id());
            b.cluster.unblock_peer(a.id());
        }
    }
    let winner = if l.version > r.version { l } else { r };
    let took = eventually("both sides converge", Duration::from_secs(15), || {
        nodes.iter().all(|n| {
            n.value(&key("only-left")) == Some(json!("l"))
                && n.value(&key("only-right")) == Some(json!("r"))
                && n.store.get(&key("both")).unwrap().as_ref() == Some(&winner)
        })
    })
    .await;
    println!("partition healed by anti-entropy after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_do_not_disturb_a_member() {
    let nodes = cluster_of("junk", 3).await;
    let target = nodes[0].cluster.gossip_addr();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut frames: Vec<Vec<u8>> = vec![
        vec![],
        b"hello".to_vec(),
        b"HM".to_vec(),
        b"HM\x01".to_vec(),
        b"HM\x02\x01abc".to_vec(),
        b"HM\x01\x09abc".to_vec(),
        vec![0xff; 3000],
    ];
    // A valid envelope around junk foca bytes, and truncated payloads.
    let mut x: u32 = 12345;
    for len in [1usize, 2, 10, 100, 1400] {
        let mut f = b"HM\x01\x01".to_vec();
        for _ in 0..len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            f.push((x >> 16) as u8);
        }
        frames.push(f);
    }
    frames.push(b"HM\x01\x02\x05abc".to_vec()); // truncated leave notice
    for f in &frames {
        sock.send_to(f, target).await.unwrap();
    }
    // The empty datagram may or may not count; all the others must.
    let expected = frames.len() as u64 - 1;
    eventually("bad frames counted", Duration::from_secs(5), || {
        nodes[0].cluster.bad_frames() >= expected
    })
    .await;
    println!("bad frames counted: {}", nodes[0].cluster.bad_frames());
    // Membership and replication carry on.
    nodes[0]
        .cluster
        .write(key("still"), Some(json!(true)))
        .await
        .unwrap();
    eventually("replication after junk", Duration::from_secs(5), || {
        nodes
            .iter()
            .all(|n| n.value(&key("still")) == Some(json!(true)))
    })
    .await;
    assert!(all_alive(&nodes, 3));
}

/// The cluster key of these tests' members.
fn test_keyring() -> Keyring {
    Keyring::parse("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff").unwrap()
}

/// POSTs a body signed with `keyring` (as members sign replication requests).
async fn post_signed(
    client: &reqwest::Client,
    node: &Node,
    path: &str,
    body: Vec<u8>,
    keyring: Option<&Keyring>,
) -> (u16, Value) {
    let mut request = client
        .post(format!("http://{}{path}", node.api))
        .header("content-type", "application/json");
    if let Some(keyring) = keyring {
        let auth = keyring.sign_request(hivemind::cluster::unix_ms(), path, &body);
        request = request.header(AUTH_HEADER, auth);
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

async fn post(client: &reqwest::Client, node: &Node, path: &str, body: Vec<u8>) -> (u16, Value) {
    post_signed(client, node, path, body, Some(&test_keyring())).await
}

fn record(k: &str, wall_ms: u64, value: Value) -> Record {
    Record {
        key: key(k),
        version: Hlc {
            wall_ms,
            counter: 0,
            node: 42,
        },
        value: Some(value),
        signature: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_push_and_sync_bodies_are_rejected() {
    init_tracing();
    let node = start_node("solo", vec![]).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let now = hivemind::cluster::unix_ms();
    let good = record("good", now, json!(1));
    let mut bad_table = record("x", now, json!(1));
    bad_table.key.table = "Not A Table".into();
    let future = record("future", now + 3_600_000, json!(1));
    let too_many: Vec<Record> = (0..1001)
        .map(|i| record(&format!("k{i}"), now, json!(i)))
        .collect();
    let oversized = vec![b' '; MAX_PUSH_BODY + 1];
    // Framing errors refuse the whole body.
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("garbage", b"\x00\x01 not json".to_vec(), 400, "json array"),
        (
            "truncated",
            b"[{\"key\":{\"table\":\"apps\"".to_vec(),
            400,
            "json array",
        ),
        (
            "wrong shape",
            br#"{"records": []}"#.to_vec(),
            400,
            "json array",
        ),
        (
            "too many",
            serde_json::to_vec(&too_many).unwrap(),
            400,
            "limit",
        ),
        ("oversized", oversized, 413, "limit"),
    ];
    for (name, body, status, needle) in cases {
        let (got, value) = post(&client, &node, PUSH_PATH, body).await;
        assert_eq!(got, status, "{name}: {value}");
        let message = value["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{name}: message {message:?}");
        assert_eq!(value["success"], json!(false), "{name}");
    }
    assert!(
        node.store.records().is_empty(),
        "a rejected batch changed the store"
    );
    let (got, value) = post(&client, &node, SYNC_PATH, b"{\"digest\": 5}".to_vec()).await;
    assert_eq!(got, 400, "{value}");
    // A digest entry with a bad key is ignored, not wanted.
    let bad_digest =
        json!({"digest": [{"key": {"table": "apps", "key": ""}, "version": good.version}]});
    let (got, value) = post(
        &client,
        &node,
        SYNC_PATH,
        serde_json::to_vec(&bad_digest).unwrap(),
    )
    .await;
    assert_eq!((got, value["want"].clone()), (200, json!([])), "{value}");
    assert!(node.store.records().is_empty());

    // Bad records are refused one by one; the good one in the same batch applies.
    let body = json!([good, bad_table, future, {"key": 5}]);
    let (got, value) = post(
        &client,
        &node,
        PUSH_PATH,
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!((got, value["applied"].clone()), (200, json!(1)), "{value}");
    let reasons: Vec<&str> = value["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 3, "{value}");
    assert!(reasons[0].contains("table name"), "{reasons:?}");
    assert!(reasons[1].contains("ahead"), "{reasons:?}");
    assert!(reasons[2].contains("does not decode"), "{reasons:?}");
    assert_eq!(node.cluster.rejected_records(), 3);
    assert_eq!(node.store.records(), vec![good.clone()]);
    assert!(node.cluster.clock().now() > good.version);
    let theirs = json!({"digest": [{"key": key("theirs"), "version": good.version}]});
    let (got, value) = post(
        &client,
        &node,
        SYNC_PATH,
        serde_json::to_vec(&theirs).unwrap(),
    )
    .await;
    assert_eq!(got, 200, "{value}");
    let answer: SyncResponse = serde_json::from_value(value).unwrap();
    assert_eq!(answer.records, vec![serde_json::to_value(&good).unwrap()]);
    assert_eq!(answer.want, vec![key("theirs")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendezvous_owner_follows_live_members() {
    let nodes = cluster_of("owner", 3).await;
    let live = nodes[0].cluster.live_members();
    let owners: Vec<String> = (0..50)
        .map(|i| {
            rendezvous_owner(&format!("app-{i}"), &live)
                .unwrap()
                .id
                .clone()
        })
        .collect();
    // Every node computes the same owners.
    for node in &nodes[1..] {
        let theirs = node.cluster.live_members();
        for (i, owner) in owners.iter().enumerate() {
            assert_eq!(
                &rendezvous_owner(&format!("app-{i}"), &theirs).unwrap().id,
                owner
            );
        }
    }
    nodes[2].kill();
    let gone = nodes[2].id().to_owned();
    eventually("the dead owner drops out", Duration::from_secs(15), || {
        nodes[0].cluster.live_members().len() == 2
    })
    .await;
    let live = nodes[0].cluster.live_members();
    for (i, owner) in owners.iter().enumerate() {
        let now = &rendezvous_owner(&format!("app-{i}"), &live).unwrap().id;
        if *owner != gone {
            assert_eq!(now, owner, "app-{i} moved off a live member");
        } else {
            assert_ne!(*now, gone);
        }
    }
}

/// A wall clock the test sets.
struct FixedWall(std::sync::atomic::AtomicU64);

impl hivemind::cluster::WallClock for FixedWall {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_clock_behind_keeps_later_writes() {
    init_tracing();
    let now = hivemind::cluster::unix_ms();
    let store = Arc::new(MemoryReplicaStore::new());
    // What the node wrote before its restart, when its clock was 10 minutes ahead.
    store
        .merge(record("app", now + 600_000, json!("before")))
        .unwrap();
    let node = start_node_with("behind", vec![], store, |config| {
        config.wall = Arc::new(FixedWall(now.into()));
    })
    .await;
    let written = node
        .cluster
        .write(key("app"), Some(json!("after")))
        .await
        .unwrap();
    assert!(
        written.version.wall_ms >= now + 600_000,
        "{:?}",
        written.version
    );
    assert_eq!(node.value(&key("app")), Some(json!("after")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_go_once_every_live_member_has_seen_them() {
    init_tracing();
    let grace = |config: &mut ClusterConfig| config.tombstone_grace = Duration::from_millis(200);
    let a = start_node_with("ta", vec![], Arc::new(MemoryReplicaStore::new()), grace).await;
    let b = start_node_with(
        "tb",
        vec![a.cluster.gossip_addr()],
        Arc::new(MemoryReplicaStore::new()),
        grace,
    )
    .await;
    let nodes = [a, b];
    eventually("both alive", Duration::from_secs(20), || {
        all_alive(&nodes, 2)
    })
    .await;
    nodes[0]
        .cluster
        .write(key("gone"), Some(json!(1)))
        .await
        .unwrap();
    eventually("the record everywhere", Duration::from_secs(10), || {
        nodes.iter().all(|n| n.value(&key("gone")).is_some())
    })
    .await;
    nodes[0].cluster.write(key("gone"), None).await.unwrap();
    let has_tombstone = |n: &Node| {
        n.store
            .records()
            .iter()
            .any(|r| r.key == key("gone") && r.value.is_none())
    };
    eventually("the tombstone everywhere", Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|n| has_tombstone(n) || n.cluster.purged_tombstones() > 0)
    })
    .await;
    // Both run anti-entropy with each other every second; after the grace
    // period and a complete round each way, the marker goes everywhere. (A
    // node counts a purge just after its store dropped the record, so wait
    // for both.)
    eventually(
        "the tombstone purged everywhere",
        Duration::from_secs(15),
        || {
            nodes.iter().all(|n| {
                n.store.records().iter().all(|r| r.key != key("gone"))
                    && n.cluster.purged_tombstones() > 0
            })
        },
    )
    .await;
    // Purged once each: a peer's late copy of the marker is not taken back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts: Vec<u64> = nodes
        .iter()
        .map(|n| n.cluster.purged_tombstones())
        .collect();
    assert_eq!(counts, [1, 1]);
    assert!(
        nodes
            .iter()
            .all(|n| n.store.records().iter().all(|r| r.key != key("gone")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_the_cluster_key_is_kept_out() {
    init_tracing();
    let member = start_node("keyed", vec![]).await;
    let stranger = start_node_with(
        "stranger",
        vec![member.cluster.gossip_addr()],
        Arc::new(MemoryReplicaStore::new()),
        |config| config.keyring = Keyring::new(Key::generate()),
    )
    .await;
    // Its gossip is dropped and counted; it never becomes a member.
    eventually(
        "the stranger's datagrams counted",
        Duration::from_secs(10),
        || member.cluster.bad_frames() > 0,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        member.state_of("stranger"),
        None,
        "{:?}",
        member.cluster.members()
    );
    assert_eq!(stranger.state_of("keyed"), None);
    // Its replication requests are refused, signed or not.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let now = hivemind::cluster::unix_ms();
    let body = serde_json::to_vec(&[record("planted", now, json!(1))]).unwrap();
    for keyring in [None, Some(Keyring::new(Key::generate()))] {
        for path in [PUSH_PATH, SYNC_PATH] {
            let (status, answer) =
                post_signed(&client, &member, path, body.clone(), keyring.as_ref()).await;
            assert_eq!(status, 401, "{path} {answer}");
            assert_eq!(answer["error"]["code"], "unauthenticated");
        }
    }
    assert!(member.value(&key("planted")).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_key_rotates_without_anyone_going_down() {
    let nodes = cluster_of("rot", 3).await;
    let before = nodes[0].cluster.key_fingerprints();
    let watch = async {
        // Every member sees every other alive the whole time.
        for _ in 0..60 {
            assert!(
                all_alive(&nodes, 3),
                "a member left Alive during the rotation"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (rotation, ()) = tokio::join!(nodes[0].cluster.rotate_key(), watch);
    let rotation = rotation.unwrap();
    assert!(rotation.missed.is_empty(), "{rotation:?}");
    assert_eq!(rotation.members.len(), 3);
    assert_ne!(vec![rotation.fingerprint.clone()], before);
    for node in &nodes {
        assert_eq!(
            node.cluster.key_fingerprints(),
            vec![rotation.fingerprint.clone()],
            "{} uses only the new key",
            node.id()
        );
    }
    // Gossip and replication go on with the new key.
    nodes[2]
        .cluster
        .write(key("after"), Some(json!(1)))
        .await
        .unwrap();
    eventually(
        "a write after the rotation everywhere",
        Duration::from_secs(10),
        || nodes.iter().all(|n| n.value(&key("after")).is_some()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(all_alive(&nodes, 3));
}

/// Admits the token `ok-token` only.
struct OneToken;

impl hivemind::cluster::JoinAuthority for OneToken {
    fn admit(&self, token: &str, _node: &str) -> Result<(), String> {
        if token == "ok-token" {
            Ok(())
        } else {
            Err("unknown or revoked join token".to_string())
        }
    }
}

/// A TLS identity for node `id` from `ca`, valid `lifetime`.
fn tls_for(
    ca: &hivemind::pki::Ca,
    id: &str,
    lifetime: Duration,
) -> Arc<hivemind::cluster::ClusterTls> {
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let cert = ca.issue(id, &[ip], lifetime).unwrap();
    let ca = hivemind::pki::Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    hivemind::cluster::ClusterTls::new(
        hivemind::pki::NodeTls { ca, cert },
        None,
        lifetime,
        vec![ip],
        Vec::new(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_only_certified_members_replicate_joins_need_a_token_and_certificates_renew() {
    init_tracing();
    let ca = hivemind::pki::Ca::generate().unwrap();
    let short = Duration::from_secs(6);
    let a = start_node_with("tls0", vec![], Arc::new(MemoryReplicaStore::new()), |c| {
        c.tls = Some(tls_for(&ca, "tls0", short));
        c.join_authority = Some(Arc::new(OneToken));
    })
    .await;
    let seed = a.cluster.gossip_addr();
    let b = start_node_with(
        "tls1",
        vec![seed],
        Arc::new(MemoryReplicaStore::new()),
        |c| {
            c.tls = Some(tls_for(&ca, "tls1", short));
        },
    )
    .await;
    // It holds the cluster key, but its certificate is from another CA.
    let other = hivemind::pki::Ca::generate().unwrap();
    let c = start_node_with(
        "tls2",
        vec![seed],
        Arc::new(MemoryReplicaStore::new()),
        |c| {
            c.tls = Some(tls_for(&other, "tls2", Duration::from_secs(3600)));
        },
    )
    .await;

    let first_cert = b.cluster.tls().unwrap().cert_pem();
    let k = key("certified");
    a.cluster.write(k.clone(), Some(json!(1))).await.unwrap();
    eventually(
        "a's write on b, over mutual TLS",
        Duration::from_secs(10),
        || b.value(&k) == Some(json!(1)),
    )
    .await;
    let outsider = key("outsider");
    c.cluster
        .write(outsider.clone(), Some(json!(2)))
        .await
        .unwrap();

    // Renewal: with 6 s certificates, each member renews within seconds
    // and replication goes on with the new ones.
    eventually("b renewed its certificate", Duration::from_secs(15), || {
        b.cluster.tls().unwrap().cert_pem() != first_cert
    })
    .await;
    let later = key("after-renewal");
    b.cluster
        .write(later.clone(), Some(json!(3)))
        .await
        .unwrap();
    eventually(
        "b's write on a after renewal",
        Duration::from_secs(10),
        || a.value(&later) == Some(json!(3)),
    )
    .await;
    assert_eq!(a.value(&outsider), None, "the outsider's write reached a");
    assert_eq!(b.value(&outsider), None, "the outsider's write reached b");
    assert_eq!(c.value(&k), None, "the outsider synced a's state");

    // The join exchange: the token admits, the pinned CA must match.
    let pin = ca.fingerprint();
    let bad = hivemind::cluster::fetch_join_bundle(&[seed], "wrong", &pin, "n9").await;
    assert!(
        bad.as_ref()
            .unwrap_err()
            .to_string()
            .contains("bad_join_token"),
        "{bad:?}"
    );
    let impostor =
        hivemind::cluster::fetch_join_bundle(&[seed], "ok-token", &other.fingerprint(), "n9").await;
    assert!(
        impostor.is_err(),
        "a CA other than the pinned one was trusted"
    );
    let bundle = hivemind::cluster::fetch_join_bundle(&[seed], "ok-token", &pin, "n9")
        .await
        .unwrap();
    assert_eq!(bundle.keyring().unwrap(), test_keyring());
    let joined = bundle
        .node_tls("n9", &["127.0.0.1".parse().unwrap()], short)
        .unwrap();
    assert_eq!(ca.verify_node(joined.cert.cert_der()).unwrap(), "n9");
    for node in [a, b, c] {
        node.kill();
    }
}
