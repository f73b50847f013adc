//! The cluster layer: SWIM membership (foca over UDP) and replication of
//! last-writer-wins records between nodes (HTTP push plus anti-entropy),
//! the approach of Fly.io's Corrosion.
//!
//! Code map:
//! - `hlc`: hybrid logical clock, the version of every record.
//! - `record`: records, the [`ReplicaStore`] seam, validation of remote input.
//! - `identity`, `wire`, `membership`: the gossiped identity, the datagram
//!   envelope, and the task that drives foca and keeps the member table.
//! - `sync`: the two internal HTTP routes, push and anti-entropy.
//! - `rendezvous`: which live member owns a key.
//!
//! Invariant: only `membership` talks to foca and the UDP socket; only
//! `sync` talks HTTP to peers. Nothing a peer sends can panic this module.

mod error;
mod hlc;
mod identity;
mod kek;
mod keyring;
mod membership;
mod ratelimit;
mod record;
mod rendezvous;
mod rotation;
mod sync;
mod tls;
mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use error::ClusterError;
pub use hlc::{Clock, Hlc, OffsetWallClock, SystemWallClock, WallClock, node_number, unix_ms};
pub use identity::{NodeIdentity, validate_node_id};
pub use kek::{SECRETS_KEY_PATH, SecretsKey};
pub use keyring::{Key, Keyring, SealError};
pub use membership::foca_config;
pub use record::{
    MAX_FUTURE_MS, MemoryReplicaStore, Record, RecordKey, RecordSignature, ReplicaStore,
    supersedes, validate_key, validate_record,
};
pub use rendezvous::{rendezvous_owner, rendezvous_score};
pub use rotation::{KEYRING_PATH, KeyringStep, Rotation};
pub use sync::{
    ANTI_ENTROPY_PERIOD, AUTH_HEADER, DigestEntry, MAX_PUSH_BODY, MAX_RECORDS_PER_MESSAGE,
    MAX_SYNC_BODY, NODE_HEADER, PUSH_PATH, SYNC_PATH, SyncRequest, SyncResponse,
};
pub use tls::{
    ClusterTls, JOIN_PATH, JoinAuthority, JoinBundle, VERIFIED_NODE_HEADER, fetch_join_bundle,
};

use membership::{FocaInput, MemberEntry};
use ratelimit::LogLimiter;

/// Queue of records waiting to be pushed; when full, anti-entropy repairs.
const PUSH_QUEUE: usize = 4096;
const EVENT_QUEUE: usize = 1024;
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How a node joins the cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// Short node id, 1-64 characters of `[A-Za-z0-9._-]`.
    pub node_id: String,
    pub gossip_bind: SocketAddr,
    /// The gossip address peers use; port 0 means the port actually bound.
    pub gossip_advertise: SocketAddr,
    /// Where peers reach this node's HTTP API (for the internal routes).
    pub api_advertise: SocketAddr,
    /// Gossip addresses of members to announce to at start.
    pub join: Vec<SocketAddr>,
    /// A deletion marker is purged once every live member has seen it and
    /// it is at least this old.
    pub tombstone_grace: Duration,
    /// The wall clock versions follow (the system clock but in tests).
    pub wall: Arc<dyn WallClock>,
    /// Seals gossip and signs replication requests.
    pub keyring: Keyring,
    /// Where the keyring is kept; a rotation rewrites it.
    pub keyring_path: Option<std::path::PathBuf>,
    /// The key secrets are wrapped with, handed to members that ask.
    pub secrets_key: Arc<SecretsKey>,
    /// Node certificates: cluster traffic runs over (mutual) TLS on TCP at
    /// the gossip port. `None` serves [`Cluster::router`] as plain HTTP on
    /// the API instead (in-process tests).
    pub tls: Option<Arc<ClusterTls>>,
    /// What admits joining nodes (join tokens), with `tls`.
    pub join_authority: Option<Arc<dyn JoinAuthority>>,
}

/// Writes a keyring file, readable by its owner only, replacing the old one
/// whole (a crash leaves the old or the new, never half of one).
pub fn write_keyring(path: &std::path::Path, ring: &Keyring) -> Result<(), ClusterError> {
    kek::write_private(path, &ring.to_text())
}

/// How often a member checks whether its certificate is due for renewal.
const RENEW_CHECK: Duration = Duration::from_secs(30);

/// Renews this member's certificate when a third of its lifetime is left.
async fn renew_loop(shared: Arc<Shared>) {
    let Some(tls) = shared.tls.clone() else {
        return;
    };
    loop {
        if let Err(e) = tls.renew_if_due() {
            tracing::warn!(error = %e, "renewing the node certificate failed");
        }
        tokio::time::sleep(RENEW_CHECK.min(tls.lifetime() / 6)).await;
    }
}

/// Purged keys are remembered at least this long (ms).
const PURGED_MEMORY_MIN_MS: u64 = 600_000;

/// How long deletion markers are kept at least.
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(600);

impl ClusterConfig {
    /// A configuration with the defaults for everything but the addresses.
    pub fn new(
        node_id: impl Into<String>,
        gossip_bind: SocketAddr,
        api_advertise: SocketAddr,
        keyring: Keyring,
    ) -> Self {
        Self {
            node_id: node_id.into(),
            gossip_bind,
            gossip_advertise: gossip_bind,
            api_advertise,
            join: Vec::new(),
            tombstone_grace: DEFAULT_TOMBSTONE_GRACE,
            wall: Arc::new(SystemWallClock),
            keyring,
            keyring_path: None,
            secrets_key: Arc::new(SecretsKey::default()),
            tls: None,
            join_authority: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
    Left,
}

impl MemberState {
    /// Alive or Suspect: still counted as a member.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Member {
    pub id: String,
    pub gossip: SocketAddr,
    pub api: SocketAddr,
    pub state: MemberState,
    /// When this node saw the member enter `state` (ms since the epoch).
    pub since_ms: u64,
    pub is_self: bool,
}

#[derive(Clone, Debug)]
pub enum ClusterEvent {
    MemberChanged(Member),
    /// Records merged into the store, from a local write or from a peer.
    RecordsApplied(Vec<RecordKey>),
}

#[derive(Debug)]
pub(crate) struct Logs {
    socket: LogLimiter,
    bad_frame: LogLimiter,
    push: LogLimiter,
    sync: LogLimiter,
    http_in: LogLimiter,
    rejected: LogLimiter,
}

/// State shared by the tasks, the HTTP handlers and [`Cluster`].
pub(crate) struct Shared {
    node_id: String,
    clock: Clock,
    store: Arc<dyn ReplicaStore>,
    members: RwLock<BTreeMap<String, MemberEntry>>,
    events: broadcast::Sender<ClusterEvent>,
    blocked: RwLock<HashSet<String>>,
    http: reqwest::Client,
    bad_frames: AtomicU64,
    /// Records from peers refused on their own.
    rejected_records: AtomicU64,
    purged_tombstones: AtomicU64,
    /// Tombstones not yet purged: version, and when this node stored it.
    tombstones: Mutex<HashMap<RecordKey, (Hlc, u64)>>,
    /// Tombstones purged here: version, and when.
    purged: Mutex<HashMap<RecordKey, (Hlc, u64)>>,
    /// Per peer: the time of this node's digest in the last anti-entropy
    /// round that left the peer with every record of that digest.
    full_syncs: Mutex<HashMap<String, u64>>,
    tombstone_grace: Duration,
    keyring: RwLock<Arc<Keyring>>,
    keyring_path: Option<std::path::PathBuf>,
    secrets_key: Arc<SecretsKey>,
    tls: Option<Arc<ClusterTls>>,
    join_authority: Option<Arc<dyn JoinAuthority>>,
    left: AtomicBool,
    logs: Logs,
}

impl Shared {
    fn keyring(&self) -> Arc<Keyring> {
        self.keyring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the keyring, and keeps it on disk when this member has a
    /// key file.
    fn set_keyring(&self, ring: Keyring) -> Result<(), ClusterError> {
        if let Some(path) = &self.keyring_path {
            write_keyring(path, &ring)?;
        }
        *self.keyring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        Ok(())
    }

    fn count_bad_frame(&self, peer: SocketAddr, error: &dyn std::fmt::Display) {
        membership::log_bad_frame(self, Some(peer), error);
    }

    fn count_bad_frame_foca(&self, error: &dyn std::fmt::Display) {
        membership::log_bad_frame(self, None, error);
    }

    fn update_self(&self, f: impl FnOnce(&mut MemberEntry)) {
        let member = {
            let mut table = self.members.write().unwrap_or_else(|p| p.into_inner());
            let Some(entry) = table.get_mut(&self.node_id) else {
                return;
            };
            f(entry);
            entry.member.clone()
        };
        let _ = self.events.send(ClusterEvent::MemberChanged(member));
    }

    fn set_self_state(&self, state: MemberState) {
        self.update_self(|e| {
            e.member.state = state;
            e.member.since_ms = unix_ms();
        });
    }

    fn set_self_bump(&self, bump: u16) {
        self.update_self(|e| e.bump = bump);
    }

    fn is_blocked(&self, id: &str) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    fn members(&self) -> Vec<Member> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| e.member.clone())
            .collect()
    }

    /// Live peers we replicate with: not us, not blocked, and none once we left.
    /// A record only its node may write must carry that node's signature.
    fn check_owner(&self, record: &Record) -> Result<(), String> {
        match (self.store.owner(&record.key), &self.tls) {
            (Some(owner), Some(tls)) => tls.verify(record, &owner),
            _ => Ok(()),
        }
    }

    /// The client replication requests go out with (the node certificate
    /// when cluster traffic runs over TLS).
    fn http(&self) -> reqwest::Client {
        match &self.tls {
            Some(tls) => tls.state().http.clone(),
            None => self.http.clone(),
        }
    }

    /// The URL of an internal route on `peer`.
    fn peer_url(&self, peer: &Member, path: &str) -> String {
        match &self.tls {
            Some(_) => format!("https://{}{path}", peer.gossip),
            None => format!("http://{}{path}", peer.api),
        }
    }

    fn replication_peers(&self) -> Vec<Member> {
        if self.left.load(Ordering::Acquire) {
            return Vec::new();
        }
        let blocked = self.blocked.read().unwrap_or_else(|p| p.into_inner());
        self.members()
            .into_iter()
            .filter(|m| !m.is_self && m.state.is_live() && !blocked.contains(&m.id))
            .collect()
    }

    /// Checks each record of a batch from `sender` on its own and merges the
    /// good ones: a record that does not decode, breaks its table's rules or
    /// comes from too far in the future is refused alone (counted, logged
    /// with its key and sender), never with the rest of its batch.
    fn apply_remote(
        &self,
        sender: &str,
        records: Vec<serde_json::Value>,
    ) -> Result<Applied, ClusterError> {
        if records.len() > MAX_RECORDS_PER_MESSAGE {
            return Err(ClusterError::InvalidRecord(format!(
                "{} records in one message, the limit is {MAX_RECORDS_PER_MESSAGE}",
                records.len()
            )));
        }
        let now = unix_ms();
        let mut report = Applied::default();
        let mut good = Vec::with_capacity(records.len());
        for (index, raw) in records.into_iter().enumerate() {
            let checked = serde_json::from_value::<Record>(raw)
                .map_err(|e| (None, format!("record {index} does not decode: {e}")))
                .and_then(|record| {
                    validate_record(&record, now)
                        .map_err(|e| e.to_string())
                        .and_then(|()| self.store.check(&record))
                        .and_then(|()| self.check_owner(&record))
                        .map(|()| record.clone())
                        .map_err(|e| (Some(record.key), e))
                });
            match checked {
                Ok(record) => good.push(record),
                Err((key, reason)) => {
                    self.rejected_records.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = self.logs.rejected.check() {
                        let shown = key
                            .as_ref()
                            .map(|k| format!("{}/{}", k.table, k.key))
                            .unwrap_or_default();
                        tracing::warn!(sender, key = %shown, reason = %reason, suppressed, "refused a record from a peer");
                    }
                    report.rejected.push(Rejected { key, reason });
                }
            }
        }
        if let Some(max) = good.iter().map(|r| r.version).max() {
            self.clock.observe(max);
        }
        let mut applied = Vec::new();
        for record in good {
            let key = record.key.clone();
            let version = record.version;
            let tombstone = record.value.is_none();
            // A peer that has not purged yet sends back what we purged, or
            // the record that was deleted: both are known dead.
            if self.was_purged(&key, version) {
                continue;
            }
            if self.store.merge(record)? {
                if tombstone {
                    self.note_tombstone(&key, version);
                }
                applied.push(key);
            }
        }
        report.applied = applied.len();
        if !applied.is_empty() {
            let _ = self.events.send(ClusterEvent::RecordsApplied(applied));
        }
        Ok(report)
    }

    /// Whether `key` was purged here at `version` or later (recently).
    fn was_purged(&self, key: &RecordKey, version: Hlc) -> bool {
        self.purged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|(purged, _)| version <= *purged)
    }

    /// How long purged keys are remembered: until every peer surely purged
    /// them too, and long enough to refuse stale copies of the deleted record.
    fn purged_memory(&self) -> u64 {
        let grace = u64::try_from(self.tombstone_grace.as_millis()).unwrap_or(u64::MAX);
        grace.saturating_mul(10).max(PURGED_MEMORY_MIN_MS)
    }

    fn note_tombstone(&self, key: &RecordKey, version: Hlc) {
        self.tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), (version, unix_ms()));
    }

    /// Records that `peer` holds everything this node held at `as_of_ms`.
    fn note_full_sync(&self, peer: &str, as_of_ms: u64) {
        self.full_syncs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.to_string(), as_of_ms);
    }

    /// Removes the tombstones that every live member has seen: older than
    /// the grace period, and stored here before this node's last complete
    /// anti-entropy round with each live peer. Returns how many went.
    fn purge_tombstones(&self) -> Result<usize, ClusterError> {
        let now = unix_ms();
        let grace = u64::try_from(self.tombstone_grace.as_millis()).unwrap_or(u64::MAX);
        // Every live member but us must have had a complete round with us.
        let horizon = {
            let syncs = self.full_syncs.lock().unwrap_or_else(|p| p.into_inner());
            self.members()
                .iter()
                .filter(|m| !m.is_self && m.state.is_live())
                .map(|m| syncs.get(&m.id).copied().unwrap_or(0))
                .min()
                .unwrap_or(u64::MAX)
        };
        {
            let memory = self.purged_memory();
            self.purged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, (_, at)| now.saturating_sub(*at) < memory);
        }
        let due: Vec<(RecordKey, Hlc)> = {
            let tombstones = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
            tombstones
                .iter()
                .filter(|(_, (_, seen))| now.saturating_sub(*seen) >= grace && *seen < horizon)
                .map(|(key, (version, _))| (key.clone(), *version))
                .collect()
        };
        let mut purged = 0;
        for (key, version) in due {
            if self.store.purge(&key, version)? {
                purged += 1;
                self.purged
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone(), (version, now));
            }
            let mut tombstones = self.tombstones.lock().unwrap_or_else(|p| p.into_inner());
            if tombstones.get(&key).is_some_and(|(v, _)| *v == version) {
                tombstones.remove(&key);
            }
        }
        if purged > 0 {
            self.purged_tombstones
                .fetch_add(purged as u64, Ordering::Relaxed);
            tracing::debug!(purged, "purged tombstones every live member has seen");
        }
        Ok(purged)
    }
}

/// What a batch from a peer did.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Applied {
    pub applied: usize,
    pub rejected: Vec<Rejected>,
}

/// A record refused on its own, with the rule it broke.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Rejected {
    /// The record's key, when it decoded that far.
    pub key: Option<RecordKey>,
    pub reason: String,
}

/// A running cluster member. Dropping it stops its tasks.
pub struct Cluster {
    shared: Arc<Shared>,
    identity: NodeIdentity,
    foca_tx: mpsc::Sender<FocaInput>,
    push_tx: mpsc::Sender<Record>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Binds the gossip socket, spawns the membership, push and
    /// anti-entropy tasks, and announces to `config.join`.
    pub async fn start(
        config: ClusterConfig,
        store: Arc<dyn ReplicaStore>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        validate_node_id(&config.node_id)?;
        let bind_err = |source| ClusterError::Bind {
            addr: config.gossip_bind,
            source,
        };
        let socket = UdpSocket::bind(config.gossip_bind)
            .await
            .map_err(bind_err)?;
        let local = socket.local_addr().map_err(bind_err)?;
        let mut gossip = config.gossip_advertise;
        if gossip.port() == 0 {
            gossip.set_port(local.port());
        }
        if gossip.ip().is_unspecified() && !local.ip().is_unspecified() {
            gossip.set_ip(local.ip());
        }
        let identity = NodeIdentity {
            id: config.node_id.clone(),
            gossip,
            api: config.api_advertise,
            // Restarts get a fresh bump, so they win over the old identity.
            bump: (unix_ms() / 1000) as u16,
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClusterError::Http(e.to_string()))?;
        let mut table = BTreeMap::new();
        table.insert(
            identity.id.clone(),
            MemberEntry::new(&identity, MemberState::Alive, true),
        );
        // Versions continue above everything stored, whatever the wall
        // clock says after a restart: a write must never lose to our own past.
        let clock = Clock::with_wall(node_number(&identity.id), config.wall.clone());
        if let Some(newest) = store.digest()?.into_iter().map(|(_, v)| v).max() {
            clock.observe(newest);
        }
        let started = unix_ms();
        let tombstones = store
            .tombstones()?
            .into_iter()
            .map(|(key, version)| (key, (version, started)))
            .collect();
        let shared = Arc::new(Shared {
            node_id: identity.id.clone(),
            clock,
            store,
            members: RwLock::new(table),
            events: broadcast::channel(EVENT_QUEUE).0,
            blocked: RwLock::new(HashSet::new()),
            http,
            bad_frames: AtomicU64::new(0),
            rejected_records: AtomicU64::new(0),
            purged_tombstones: AtomicU64::new(0),
            tombstones: Mutex::new(tombstones),
            purged: Mutex::new(HashMap::new()),
            full_syncs: Mutex::new(HashMap::new()),
            tombstone_grace: config.tombstone_grace,
            keyring: RwLock::new(Arc::new(config.keyring.clone())),
            keyring_path: config.keyring_path.clone(),
            secrets_key: config.secrets_key.clone(),
            tls: config.tls.clone(),
            join_authority: config.join_authority.clone(),
            left: AtomicBool::new(false),
            logs: Logs {
                socket: LogLimiter::new(LOG_INTERVAL),
                bad_frame: LogLimiter::new(LOG_INTERVAL),
                push: LogLimiter::new(LOG_INTERVAL),
                sync: LogLimiter::new(LOG_INTERVAL),
                http_in: LogLimiter::new(LOG_INTERVAL),
                rejected: LogLimiter::new(LOG_INTERVAL),
            },
        });
        let seeds: Vec<SocketAddr> = config
            .join
            .iter()
            .copied()
            .filter(|a| *a != gossip)
            .collect();
        let (foca_tx, mut tasks) =
            membership::spawn(shared.clone(), Arc::new(socket), identity.clone(), seeds);
        if shared.tls.is_some() {
            // Cluster traffic: TCP at the gossip port, TLS only.
            let addr = SocketAddr::new(config.gossip_bind.ip(), local.port());
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ClusterError::Bind { addr, source })?;
            let router = sync::router(shared.clone());
            tasks.push(tokio::spawn(tls::serve_internal(
                shared.clone(),
                listener,
                router,
            )));
            tasks.push(tokio::spawn(renew_loop(shared.clone())));
        }
        let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE);
        tasks.push(tokio::spawn(sync::push_loop(shared.clone(), push_rx)));
        tasks.push(tokio::spawn(sync::anti_entropy_loop(shared.clone())));
        tracing::info!(node = %identity.id, gossip = %gossip, api = %identity.api, join = ?config.join, "cluster started");
        Ok(Arc::new(Cluster {
            shared,
            identity,
            foca_tx,
            push_tx,
            tasks: Mutex::new(tasks),
        }))
    }

    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    pub fn node_id(&self) -> &str {
        &self.identity.id
    }

    /// The advertised gossip address (with the bound port if 0 was asked).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.identity.gossip
    }

    /// All known members including self and departed ones, sorted by id.
    pub fn members(&self) -> Vec<Member> {
        self.shared.members()
    }

    /// Alive or Suspect members, including self.
    pub fn live_members(&self) -> Vec<Member> {
        let mut live = self.members();
        live.retain(|m| m.state.is_live());
        live
    }

    /// Announces to the member at gossip address `addr`; retried every 2 s
    /// while no other member is known.
    pub async fn join(&self, addr: SocketAddr) -> Result<(), ClusterError> {
        if self.shared.left.load(Ordering::Acquire) {
            return Err(ClusterError::Left);
        }
        self.foca_tx
            .send(FocaInput::Announce(addr))
            .await
            .map_err(|_| ClusterError::Stopped)
    }

    /// Leaves gracefully: peers see this node as Left. Membership and
    /// replication stop; the HTTP routes keep answering.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        if self.shared.left.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (done_tx, done_rx) = oneshot::channel();
        self.foca_tx
            .send(FocaInput::Leave(done_tx))
            .await
            .map_err(|_| ClusterError::Stopped)?;
        done_rx.await.map_err(|_| ClusterError::Stopped)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.shared.events.subscribe()
    }

    /// Stamps a local change: version = clock.now(), merges it locally,
    /// pushes it to live peers.
    pub async fn write(
        &self,
        key: RecordKey,
        value: Option<serde_json::Value>,
    ) -> Result<Record, ClusterError> {
        let version = self.shared.clock.now();
        self.write_at(key, value, version).await
    }

    /// A local change at a given version (see [`Hlc::just_after`]), merged and pushed like
    /// [`Cluster::write`].
    pub async fn write_at(
        &self,
        key: RecordKey,
        value: Option<serde_json::Value>,
        version: Hlc,
    ) -> Result<Record, ClusterError> {
        validate_key(&key)?;
        let mut record = Record {
            key,
            version,
            value,
            signature: None,
        };
        if let Some(owner) = self.shared.store.owner(&record.key) {
            if owner != self.shared.node_id {
                return Err(ClusterError::NotOwner {
                    owner,
                    table: record.key.table,
                    key: record.key.key,
                });
            }
            if let Some(tls) = &self.shared.tls {
                record.signature = Some(tls.sign(&record)?);
            }
        }
        self.shared
            .store
            .check(&record)
            .map_err(ClusterError::InvalidRecord)?;
        if !self.shared.store.merge(record.clone())? {
            // Only a newer version can beat a fresh one: a concurrent write (a peer's, or
            // another task's here) won. When it wrote this very value (two tasks deriving
            // the same row, as a deploy and the placement loop do), nothing is lost.
            if let Some(current) = self.shared.store.get(&record.key)?
                && current.value == record.value
            {
                return Ok(current);
            }
            // Otherwise say so rather than report a change that is lost.
            return Err(ClusterError::Superseded {
                table: record.key.table,
                key: record.key.key,
            });
        }
        if record.value.is_none() {
            self.shared.note_tombstone(&record.key, record.version);
        }
        let _ = self
            .shared
            .events
            .send(ClusterEvent::RecordsApplied(vec![record.key.clone()]));
        self.publish(record.clone());
        Ok(record)
    }

    /// Queues `record` for a best-effort push to every live peer.
    pub fn publish(&self, record: Record) {
        if let Err(mpsc::error::TrySendError::Full(record)) = self.push_tx.try_send(record)
            && let Some(suppressed) = self.shared.logs.push.check()
        {
            tracing::warn!(table = %record.key.table, key = %record.key.key, suppressed, "push queue full; anti-entropy will repair");
        }
    }

    /// The `/api/internal/cluster/*` routes as plain HTTP, for a cluster
    /// without TLS (with TLS they are served on their own listener, and
    /// this router refuses every request that needs a certificate).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        sync::router(self.shared.clone()).layer(axum::middleware::map_request(
            |mut request: axum::extract::Request| async move {
                request.headers_mut().remove(VERIFIED_NODE_HEADER);
                request
            },
        ))
    }

    /// Gossip datagrams rejected so far
    /// (`hivemind_cluster_bad_frames_total`).
    pub fn bad_frames(&self) -> u64 {
        self.shared.bad_frames.load(Ordering::Relaxed)
    }

    /// Waits until this node had a complete anti-entropy round, begun after
    /// `since_ms`, with every live member; false if `timeout` passed first.
    pub async fn wait_synced_since(&self, since_ms: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let done = {
                let syncs = self
                    .shared
                    .full_syncs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                self.shared
                    .replication_peers()
                    .iter()
                    .all(|m| syncs.get(&m.id).is_some_and(|at| *at >= since_ms))
            };
            if done {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Records from peers refused on their own so far.
    pub fn rejected_records(&self) -> u64 {
        self.shared.rejected_records.load(Ordering::Relaxed)
    }

    /// Deletion markers purged so far.
    pub fn purged_tombstones(&self) -> u64 {
        self.shared.purged_tombstones.load(Ordering::Relaxed)
    }

    /// Stops every task at once and closes the gossip socket, without a
    /// goodbye: what `kill -9` looks like to the other members.
    pub fn shutdown(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
        }
    }

    /// Test hook: stop replicating with `id` (push, anti-entropy, and its
    /// incoming requests), as in a partition. Gossip is unaffected.
    #[doc(hidden)]
    pub fn block_peer(&self, id: &str) {
        self.shared
            .blocked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned());
    }

    #[doc(hidden)]
    pub fn unblock_peer(&self, id: &str) {
        self.shared
            .blocked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
