//! SWIM membership: one task owns foca and drives it from the UDP socket,
//! its timers and the [`Cluster`](super::Cluster) commands; another reads
//! datagrams, rejects bad frames and feeds the first.
//!
//! After every interaction the driver folds foca's view into the shared
//! member table, which keeps departed members (Down or Left) with the time
//! their state changed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::hlc::unix_ms;
use super::identity::NodeIdentity;
use super::keyring::SEAL_OVERHEAD;
use super::wire::{self, Frame, MAX_DATAGRAM, MAX_PAYLOAD};
use super::{ClusterEvent, Member, MemberState, Shared};

type Swim = Foca<NodeIdentity, PostcardCodec, StdRng, NoCustomBroadcast>;
type Runtime = AccumulatingRuntime<NodeIdentity>;

/// How often to re-announce to the seeds while we know no member.
const JOIN_RETRY: Duration = Duration::from_secs(2);
/// Queue between the socket reader and the driver; a full queue drops
/// datagrams like a congested network would.
const INPUT_QUEUE: usize = 1024;

/// The foca configuration: memberlist's LAN profile with a shorter
/// suspicion, so a silent node is declared down in about 3-4 s (one probe
/// period to notice, 2 s of suspicion, gossip every 200 ms to spread it).
pub fn foca_config() -> foca::Config {
    let mut config = foca::Config::simple();
    config.probe_period = Duration::from_millis(1000);
    config.probe_rtt = Duration::from_millis(300);
    // simple() already has 3 indirect probes, 10 transmissions, 24 h
    // remove_down_after.
    config.suspect_to_down_after = Duration::from_millis(2000);
    config.max_packet_size = NonZeroUsize::new(MAX_PAYLOAD).unwrap_or(config.max_packet_size);
    config.notify_down_members = true;
    config.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(10),
        num_members: NonZeroUsize::MIN,
    });
    config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(30),
        num_members: NonZeroUsize::MIN,
    });
    config.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(200),
        num_members: config.num_indirect_probes,
    });
    config
}

/// A member table row: the public view plus the identity's bump.
#[derive(Clone, Debug)]
pub(crate) struct MemberEntry {
    pub(crate) member: Member,
    pub(crate) bump: u16,
}

impl MemberEntry {
    pub(crate) fn new(identity: &NodeIdentity, state: MemberState, is_self: bool) -> Self {
        Self {
            member: Member {
                id: identity.id.clone(),
                gossip: identity.gossip,
                api: identity.api,
                state,
                since_ms: unix_ms(),
                is_self,
            },
            bump: identity.bump,
        }
    }
}

/// What the driver task reacts to besides timers.
#[derive(Debug)]
pub(crate) enum FocaInput {
    Data(Vec<u8>),
    Announce(SocketAddr),
    LeaveNotice(NodeIdentity, SocketAddr),
    Leave(oneshot::Sender<()>),
}

/// Starts the reader and driver tasks.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    identity: NodeIdentity,
    seeds: Vec<SocketAddr>,
) -> (mpsc::Sender<FocaInput>, Vec<tokio::task::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let foca = Foca::new(
        identity,
        foca_config(),
        rand::make_rng::<StdRng>(),
        PostcardCodec,
    );
    let driver = Driver {
        shared: shared.clone(),
        socket: socket.clone(),
        foca,
        runtime: AccumulatingRuntime::new(),
        timers: BinaryHeap::new(),
        left_ids: HashSet::new(),
        seeds,
    };
    let reader = tokio::spawn(read_loop(shared, socket, tx.clone()));
    let driver = tokio::spawn(driver.run(rx));
    (tx, vec![reader, driver])
}

async fn read_loop(shared: Arc<Shared>, socket: Arc<UdpSocket>, tx: mpsc::Sender<FocaInput>) {
    // One byte more than the limit, so an oversized datagram shows up as
    // too large instead of silently truncated.
    let mut buf = vec![0u8; MAX_DATAGRAM + SEAL_OVERHEAD + 1];
    loop {
        let (len, src) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                if let Some(suppressed) = shared.logs.socket.check() {
                    tracing::warn!(error = %e, suppressed, "gossip socket receive failed");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(datagram) = buf.get(..len) else {
            continue;
        };
        // Only what the cluster key opens is gossip.
        let plain = match shared.keyring().open(datagram) {
            Ok(plain) => plain,
            Err(e) => {
                shared.count_bad_frame(src, &e);
                continue;
            }
        };
        let input = match wire::decode(&plain) {
            Ok(Frame::Foca(payload)) => FocaInput::Data(payload.to_vec()),
            Ok(Frame::Leave(identity)) => FocaInput::LeaveNotice(identity, src),
            Err(e) => {
                shared.count_bad_frame(src, &e);
                continue;
            }
        };
        match tx.try_send(input) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(suppressed) = shared.logs.socket.check() {
                    tracing::warn!(peer = %src, suppressed, "gossip input queue full, dropping datagram");
                }
            }
        }
    }
}

struct Driver {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    foca: Swim,
    runtime: Runtime,
    timers: BinaryHeap<Reverse<(Instant, Timer<NodeIdentity>)>>,
    /// Identities that announced a graceful leave.
    left_ids: HashSet<NodeIdentity>,
    seeds: Vec<SocketAddr>,
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<FocaInput>) {
        let mut rejoin = tokio::time::interval(JOIN_RETRY);
        rejoin.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                input = rx.recv() => {
                    let Some(input) = input else { return };
                    if let FocaInput::Leave(done) = input {
                        self.leave().await;
                        let _ = done.send(());
                        return;
                    }
                    self.handle_input(input);
                }
                () = sleep_until_opt(next_timer) => self.fire_timers(),
                _ = rejoin.tick() => {
                    if self.foca.num_members() == 0 {
                        let seeds = self.seeds.clone();
                        for seed in seeds {
                            self.announce(seed);
                        }
                    }
                }
            }
            self.flush().await;
        }
    }

    fn handle_input(&mut self, input: FocaInput) {
        match input {
            FocaInput::Data(data) => {
                if let Err(e) = self.foca.handle_data(&data, &mut self.runtime) {
                    match e {
                        foca::Error::Decode(_)
                        | foca::Error::MalformedPacket
                        | foca::Error::DataTooBig => self.shared.count_bad_frame_foca(&e),
                        other => tracing::debug!(error = %other, "gossip packet ignored"),
                    }
                }
            }
            FocaInput::Announce(addr) => {
                if !self.seeds.contains(&addr) {
                    self.seeds.push(addr);
                }
                self.announce(addr);
            }
            FocaInput::LeaveNotice(identity, src) => self.leave_notice(identity, src),
            // Handled by `run`.
            FocaInput::Leave(_) => {}
        }
    }

    fn announce(&mut self, addr: SocketAddr) {
        if addr == self.foca.identity().gossip {
            return;
        }
        // Foca accepts an announce addressed to any identity at its address,
        // so a placeholder with the seed's address is enough.
        let placeholder = NodeIdentity {
            id: "seed".to_owned(),
            gossip: addr,
            api: addr,
            bump: 0,
        };
        if let Err(e) = self.foca.announce(placeholder, &mut self.runtime) {
            tracing::warn!(seed = %addr, error = %e, "announce failed");
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(error = %e, "gossip timer failed");
            }
        }
    }

    fn leave_notice(&mut self, identity: NodeIdentity, src: SocketAddr) {
        // Only the member itself may say it leaves, and only a member we know.
        let known = self
            .foca
            .iter_membership_state()
            .any(|m| m.id() == &identity);
        if src.ip() != identity.gossip.ip() || !known {
            self.shared
                .count_bad_frame(src, &"leave notice from a stranger");
            return;
        }
        tracing::info!(node = %identity.id, peer = %src, "member is leaving");
        self.left_ids.insert(identity.clone());
        let down = foca::Member::new(identity, 0, foca::State::Down);
        if let Err(e) = self
            .foca
            .apply_many(std::iter::once(down), true, &mut self.runtime)
        {
            tracing::debug!(error = %e, "cannot apply leave");
        }
    }

    async fn leave(&mut self) {
        let me = self.foca.identity().clone();
        match wire::encode_leave(&me) {
            Ok(frame) => {
                let peers: Vec<SocketAddr> =
                    self.foca.iter_members().map(|m| m.id().gossip).collect();
                // Twice: the notice is what turns Down into Left elsewhere.
                for _ in 0..2 {
                    for peer in &peers {
                        self.send(*peer, &frame).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode leave notice"),
        }
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::warn!(error = %e, "foca leave failed");
        }
        self.flush().await;
        self.shared.set_self_state(MemberState::Left);
        tracing::info!(node = %me.id, "left the cluster");
    }

    async fn send(&self, dst: SocketAddr, frame: &[u8]) {
        let sealed = self.shared.keyring().seal(frame);
        if let Err(e) = self.socket.send_to(&sealed, dst).await
            && let Some(suppressed) = self.shared.logs.socket.check()
        {
            tracing::debug!(peer = %dst, error = %e, suppressed, "gossip send failed");
        }
    }

    /// Sends what foca produced, schedules its timers, reacts to its
    /// notifications and refreshes the member table.
    async fn flush(&mut self) {
        while let Some((dst, data)) = self.runtime.to_send() {
            let frame = wire::encode_foca(&data);
            self.send(dst.gossip, &frame).await;
        }
        let now = Instant::now();
        while let Some((delay, timer)) = self.runtime.to_schedule() {
            self.timers.push(Reverse((now + delay, timer)));
        }
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(id) => {
                    tracing::info!(node = %id.id, gossip = %id.gossip, "member up");
                }
                OwnedNotification::MemberDown(id) => {
                    tracing::info!(node = %id.id, gossip = %id.gossip, "member down");
                }
                OwnedNotification::Rename(old, new) => {
                    tracing::info!(node = %new.id, old_bump = old.bump, bump = new.bump, "member renewed its identity");
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::warn!(
                        bump = id.bump,
                        "cluster declared this node down; rejoined with a renewed identity"
                    );
                    self.shared.set_self_bump(id.bump);
                }
                OwnedNotification::Defunct => tracing::warn!("this node is declared down"),
                OwnedNotification::Idle => tracing::info!("no other live members"),
                OwnedNotification::Active => tracing::debug!("joined the cluster"),
                #[allow(unreachable_patterns)] // future foca notifications
                _ => {}
            }
        }
        self.sync_table();
    }

    fn sync_table(&self) {
        let self_id = &self.shared.node_id;
        // One row per node id; an active identity beats a down one.
        let mut best: HashMap<&str, (&NodeIdentity, foca::State)> = HashMap::new();
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            if &id.id == self_id {
                continue;
            }
            let active = m.state() != foca::State::Down;
            match best.get(id.id.as_str()) {
                Some((_, st)) if *st != foca::State::Down || !active => {}
                _ => {
                    best.insert(&id.id, (id, m.state()));
                }
            }
        }
        let now = unix_ms();
        let mut changed = Vec::new();
        {
            let mut table = self
                .shared
                .members
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for (id, (identity, st)) in best {
                let state = match st {
                    foca::State::Alive => MemberState::Alive,
                    foca::State::Suspect => MemberState::Suspect,
                    foca::State::Down if self.left_ids.contains(identity) => MemberState::Left,
                    foca::State::Down => MemberState::Down,
                };
                match table.get_mut(id) {
                    Some(entry) => {
                        let m = &mut entry.member;
                        let state_changed = m.state != state;
                        if state_changed
                            || m.gossip != identity.gossip
                            || m.api != identity.api
                            || entry.bump != identity.bump
                        {
                            m.gossip = identity.gossip;
                            m.api = identity.api;
                            entry.bump = identity.bump;
                            if state_changed {
                                m.state = state;
                                m.since_ms = now;
                            }
                            changed.push(m.clone());
                        }
                    }
                    None => {
                        let entry = MemberEntry::new(identity, state, false);
                        changed.push(entry.member.clone());
                        table.insert(id.to_owned(), entry);
                    }
                }
            }
        }
        for member in changed {
            tracing::debug!(node = %member.id, state = ?member.state, "member changed");
            let _ = self.shared.events.send(ClusterEvent::MemberChanged(member));
        }
    }
}

/// Counts a rejected frame; logs at most once per interval.
pub(crate) fn log_bad_frame(
    shared: &Shared,
    peer: Option<SocketAddr>,
    error: &dyn std::fmt::Display,
) {
    let total = shared.bad_frames.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(suppressed) = shared.logs.bad_frame.check() {
        match peer {
            Some(peer) => {
                tracing::warn!(%peer, error = %error, total, suppressed, "rejected gossip frame")
            }
            None => tracing::warn!(error = %error, total, suppressed, "rejected gossip frame"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_valid_for_a_lan() {
        let c = foca_config();
        assert!(c.probe_rtt < c.probe_period);
        assert_eq!(c.max_packet_size.get(), MAX_PAYLOAD);
        assert_eq!(c.num_indirect_probes.get(), 3);
        // Worst case to declare a silent node down stays well under 5 s.
        assert!(c.probe_period + c.suspect_to_down_after <= Duration::from_secs(3));
    }
}
