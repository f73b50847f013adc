//! SWIM membership at scale, in one process: N foca instances with the daemon's configuration
//! ([`foca_config`]) and identity ([`NodeIdentity`]), driven by a discrete-event simulation in
//! virtual time. No sockets and no real clock: a datagram is an event delivered after a fixed
//! latency, a timer foca asks for is an event at now + its delay, and handling an event takes
//! no virtual time. Each run is deterministic (seeded random generators).
//!
//! Per size: members 1..N announce to member 0, one every [`JOIN_SPACING`]; once every member
//! knows the N-1 others as active (or [`JOIN_LIMIT`] after the last announce), the simulation
//! runs [`Phases::settle`] more, then counts the bytes sent during [`Phases::window`]; then one
//! member stops (receives and sends nothing) and the simulation runs until every live member
//! that knew it has declared it down.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use hivemind::cluster::{NodeIdentity, foca_config};
use rand::SeedableRng as _;
use rand::rngs::StdRng;

use crate::report::{Row, Target};

const SECTION: &str = "Control plane";
/// One-way delivery time of every datagram; the network loses and reorders nothing.
const LATENCY: Duration = Duration::from_micros(500);
/// Time between two members' announces to member 0.
const JOIN_SPACING: Duration = Duration::from_millis(10);
/// Bytes of the daemon's datagram envelope around a foca packet (`"HM"`, version, kind; see
/// `hivemind/src/cluster/wire.rs`): a counted datagram is the UDP payload the daemon sends.
const ENVELOPE: usize = 4;
/// How long after the last announce the joins may take to converge before the run goes on
/// without full convergence.
const JOIN_LIMIT: Duration = Duration::from_secs(900);
/// Bound on the detection phase, from the stop.
const DETECT_LIMIT: Duration = Duration::from_secs(60);
/// Detection by all members must stay under this for clusters up to [`TARGET_UP_TO`] members.
const DETECTION_TARGET_S: f64 = 5.0;
const TARGET_UP_TO: usize = 100;

/// Virtual durations of one run.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    /// From convergence of the joins to the start of the traffic window: lets the last join
    /// updates finish spreading, so the window sees steady-state traffic.
    pub settle: Duration,
    /// Traffic is counted over this window, then a member stops.
    pub window: Duration,
}

/// The phases of the benchmark run.
const PHASES: Phases = Phases {
    settle: Duration::from_secs(10),
    window: Duration::from_secs(30),
};

type Swim = Foca<NodeIdentity, PostcardCodec, StdRng, NoCustomBroadcast>;

enum Event {
    /// Member `member` announces itself to member 0.
    Announce {
        member: usize,
    },
    Deliver {
        to: usize,
        data: Vec<u8>,
    },
    Timer {
        member: usize,
        timer: Timer<NodeIdentity>,
    },
}

/// An event at a virtual instant; `seq` keeps events of the same instant in the order they
/// were scheduled.
struct Scheduled {
    at: Duration,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so that [`BinaryHeap`] pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Member {
    foca: Swim,
    runtime: AccumulatingRuntime<NodeIdentity>,
    /// Stopped: events addressed to it are dropped, like datagrams to a dead host.
    stopped: bool,
    /// Other members it knows as active (foca's `num_members`).
    known: usize,
    bytes_sent: u64,
    datagrams_sent: u64,
    /// When it declared the stopped member down.
    detected_at: Option<Duration>,
}

/// The cluster and its event queue.
struct Sim {
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    members: Vec<Member>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Sum of the members' `known`: member pairs (a, b) where a knows b as active.
    known_pairs: usize,
    /// Members that know all the others.
    complete: usize,
    /// First time 99% of the member pairs were known.
    most_known_at: Option<Duration>,
    /// First time every member knew all the others.
    converged_at: Option<Duration>,
    victim: Option<usize>,
    /// Live members that declared the victim down.
    detected: usize,
    /// `MemberDown` notifications about a member that was not stopped.
    false_downs: u64,
    /// Errors foca returned from `handle_data`, `handle_timer` or `announce`.
    errors: u64,
    events: u64,
}

/// Member `i`: `node-<i>` at 10.0.0.1 + i.
fn identity(i: usize) -> NodeIdentity {
    let ip = Ipv4Addr::from(0x0a00_0001 + i as u32);
    NodeIdentity {
        id: format!("node-{i}"),
        gossip: SocketAddr::V4(SocketAddrV4::new(ip, 7946)),
        api: SocketAddr::V4(SocketAddrV4::new(ip, 8080)),
        bump: 1,
    }
}

impl Sim {
    fn new(n: usize) -> Self {
        let mut sim = Self {
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            members: Vec::with_capacity(n),
            by_addr: HashMap::with_capacity(n),
            known_pairs: 0,
            complete: 0,
            most_known_at: None,
            converged_at: None,
            victim: None,
            detected: 0,
            false_downs: 0,
            errors: 0,
            events: 0,
        };
        for i in 0..n {
            let id = identity(i);
            sim.by_addr.insert(id.gossip, i);
            let rng = StdRng::seed_from_u64(i as u64);
            sim.members.push(Member {
                foca: Foca::new(id, foca_config(), rng, PostcardCodec),
                runtime: AccumulatingRuntime::new(),
                stopped: false,
                known: 0,
                bytes_sent: 0,
                datagrams_sent: 0,
                detected_at: None,
            });
        }
        for member in 1..n {
            sim.schedule(join_time(member), Event::Announce { member });
        }
        sim
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    /// Handles events up to `limit` or until `done` holds; returns whether it held.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
        while !done(self) {
            if self.queue.peek().is_none_or(|next| next.at > limit) {
                self.now = limit;
                return false;
            }
            let Some(next) = self.queue.pop() else {
                return false;
            };
            self.now = next.at;
            self.handle(next.event);
        }
        true
    }

    fn handle(&mut self, event: Event) {
        self.events += 1;
        let i = match event {
            Event::Announce { member } => {
                let seed = identity(0);
                let m = &mut self.members[member];
                if m.foca.announce(seed, &mut m.runtime).is_err() {
                    self.errors += 1;
                }
                member
            }
            Event::Deliver { to, data } => {
                let m = &mut self.members[to];
                if m.stopped {
                    return;
                }
                if m.foca.handle_data(&data, &mut m.runtime).is_err() {
                    self.errors += 1;
                }
                to
            }
            Event::Timer { member, timer } => {
                let m = &mut self.members[member];
                if m.stopped {
                    return;
                }
                if m.foca.handle_timer(timer, &mut m.runtime).is_err() {
                    self.errors += 1;
                }
                member
            }
        };
        self.flush(i);
    }

    /// Turns what member `i`'s foca produced into events and records its notifications and
    /// what it knows.
    fn flush(&mut self, i: usize) {
        let now = self.now;
        let n = self.members.len();
        let mut out = Vec::new();
        let m = &mut self.members[i];
        while let Some((dst, data)) = m.runtime.to_send() {
            m.bytes_sent += (data.len() + ENVELOPE) as u64;
            m.datagrams_sent += 1;
            if let Some(&to) = self.by_addr.get(&dst.gossip) {
                let data = data.to_vec();
                out.push((now + LATENCY, Event::Deliver { to, data }));
            }
        }
        while let Some((delay, timer)) = m.runtime.to_schedule() {
            out.push((now + delay, Event::Timer { member: i, timer }));
        }
        while let Some(notification) = m.runtime.to_notify() {
            let OwnedNotification::MemberDown(down) = notification else {
                continue;
            };
            let is_victim = self
                .victim
                .is_some_and(|v| self.by_addr.get(&down.gossip) == Some(&v));
            if is_victim {
                if m.detected_at.is_none() {
                    m.detected_at = Some(now);
                    self.detected += 1;
                }
            } else {
                self.false_downs += 1;
            }
        }
        let known = m.foca.num_members();
        if known != m.known {
            let was_complete = m.known + 1 == n;
            self.known_pairs = self.known_pairs + known - m.known;
            m.known = known;
            match (was_complete, known + 1 == n) {
                (false, true) => self.complete += 1,
                (true, false) => self.complete -= 1,
                _ => {}
            }
            if self.most_known_at.is_none() && self.known_pairs * 100 >= 99 * n * (n - 1) {
                self.most_known_at = Some(now);
            }
            if self.converged_at.is_none() && self.complete == n {
                self.converged_at = Some(now);
            }
        }
        for (at, event) in out {
            self.schedule(at, event);
        }
    }

    fn bytes_and_datagrams(&self) -> (u64, u64) {
        self.members
            .iter()
            .fold((0, 0), |(b, d), m| (b + m.bytes_sent, d + m.datagrams_sent))
    }
}

/// When member `i` (1..N) announces itself.
fn join_time(i: usize) -> Duration {
    JOIN_SPACING * (i as u32).saturating_sub(1)
}

/// The figures of one run.
#[derive(Debug)]
pub struct Outcome {
    pub members: usize,
    /// From the last announce to 99% of the member pairs known.
    pub most_known: Duration,
    /// From the last announce to every member knowing all others as active; `None`: not
    /// within [`JOIN_LIMIT`].
    pub converged: Option<Duration>,
    /// Members knowing all others when the traffic window started.
    pub complete: usize,
    /// From the stop to the first live member declaring the stopped one down.
    pub first_detection: Duration,
    /// From the stop to every live member that knew it having declared it down.
    pub all_detection: Duration,
    /// Live members that knew the stopped member as active when it stopped.
    pub witnesses: usize,
    /// Over the window, per member and per virtual second.
    pub bytes_per_s: f64,
    pub datagrams_per_s: f64,
    pub false_downs: u64,
    pub errors: u64,
    pub events: u64,
    /// Real time the run took.
    pub elapsed: Duration,
}

/// Joins `n` members, measures traffic, stops one, measures detection.
pub fn simulate(n: usize, phases: Phases) -> Result<Outcome> {
    if !(3..=1 << 24).contains(&n) {
        bail!("membership: {n} members: need 3 (a seed, a stopped member, a witness) to 2^24");
    }
    let started = Instant::now();
    let mut sim = Sim::new(n);

    let last_announce = join_time(n - 1);
    sim.run_until(last_announce + JOIN_LIMIT, |s| s.converged_at.is_some());
    let Some(most_known_at) = sim.most_known_at else {
        bail!(
            "membership: {n} members: fewer than 99% of member pairs known {} s after the last \
             announce",
            JOIN_LIMIT.as_secs()
        );
    };
    let since_last = |at: Duration| at.saturating_sub(last_announce);

    let window_start = sim.now + phases.settle;
    sim.run_until(window_start, |_| false);
    let complete = sim.complete;
    let (bytes_before, datagrams_before) = sim.bytes_and_datagrams();
    sim.run_until(window_start + phases.window, |_| false);
    let (bytes_after, datagrams_after) = sim.bytes_and_datagrams();
    let per_member_second = |count: u64| count as f64 / n as f64 / phases.window.as_secs_f64();

    // Not member 0, the one every member announced to.
    let victim = n / 2;
    let victim_id = identity(victim);
    sim.members[victim].stopped = true;
    sim.victim = Some(victim);
    let witnesses = sim
        .members
        .iter()
        .filter(|m| !m.stopped && m.foca.iter_members().any(|p| p.id() == &victim_id))
        .count();
    if witnesses == 0 {
        bail!("membership: {n} members: no live member knew the member to stop");
    }
    let stopped_at = sim.now;
    if !sim.run_until(stopped_at + DETECT_LIMIT, |s| s.detected >= witnesses) {
        bail!(
            "membership: {n} members: {} of {witnesses} declared the stopped member down within \
             {} s",
            sim.detected,
            DETECT_LIMIT.as_secs()
        );
    }
    let detections = sim.members.iter().filter_map(|m| m.detected_at);
    let first = detections.clone().min().unwrap_or(sim.now);
    let last = detections.max().unwrap_or(sim.now);
    Ok(Outcome {
        members: n,
        most_known: since_last(most_known_at),
        converged: sim.converged_at.map(since_last),
        complete,
        first_detection: first - stopped_at,
        all_detection: last - stopped_at,
        witnesses,
        bytes_per_s: per_member_second(bytes_after - bytes_before),
        datagrams_per_s: per_member_second(datagrams_after - datagrams_before),
        false_downs: sim.false_downs,
        errors: sim.errors,
        events: sim.events,
        elapsed: started.elapsed(),
    })
}

fn describe(o: &Outcome) -> String {
    let converged = match o.converged {
        Some(c) => format!("all members knew all others {:.1} s", c.as_secs_f64()),
        None => format!(
            "NOT converged {} s after it ({} of {} members knew all others)",
            JOIN_LIMIT.as_secs(),
            o.complete,
            o.members
        ),
    };
    format!(
        "{} members: 99% of member pairs known {:.1} s after the last announce, {converged}; \
         {:.0} B/s and {:.1} datagrams/s sent per member; detection by the first member {:.2} s, \
         by all {} that knew the stopped member {:.2} s; {} false downs, {} foca errors, {} \
         events, {:.1} s of real time",
        o.members,
        o.most_known.as_secs_f64(),
        o.bytes_per_s,
        o.datagrams_per_s,
        o.first_detection.as_secs_f64(),
        o.witnesses,
        o.all_detection.as_secs_f64(),
        o.false_downs,
        o.errors,
        o.events,
        o.elapsed.as_secs_f64()
    )
}

fn method_note(outcomes: &[Outcome]) -> String {
    let config = foca_config();
    let periodic = |p: Option<&foca::PeriodicParams>| {
        p.map_or((0, Duration::ZERO), |p| (p.num_members.get(), p.frequency))
    };
    let (gossip_to, gossip_every) = periodic(config.periodic_gossip.as_ref());
    let (_, announce_every) = periodic(config.periodic_announce.as_ref());
    let raw: Vec<String> = outcomes.iter().map(describe).collect();
    format!(
        "SWIM membership at scale: simulated in one process, not measured on a network. Each \
         member is a foca instance with the daemon's identity type and configuration \
         (`foca_config()`: probe every {} ms, {} ms probe timeout, {} indirect probes, suspect \
         for {} ms before down, each update sent at most {} times, gossip to {gossip_to} members \
         every {} ms, announce to one member every {} s, packets of at most {} bytes), driven \
         by a discrete-event simulation in virtual time: every datagram arrives {} µs after it \
         is sent, none is lost, and handling takes no virtual time. Members announce to member \
         0, one every {} ms; join convergence runs from the last announce until 99% of the \
         member pairs are known, and until every member counts all the others as active \
         (bounded at {} s). Both figures are times after the last announce; the long tail of the \
         second is the few pairs a join update missed before its transmissions ran out, \
         repaired later by probes and periodic announces (the update backlog is empty long \
         before). {} s after convergence, the bytes every member sends (foca packet plus the \
         daemon's {ENVELOPE}-byte envelope, no IP/UDP headers) are counted over {} s and divided \
         by the member count and the window; foca gossips only while it has updates to spread, \
         so with no membership change that traffic is probes, acks, and the periodic announces \
         and their replies. Then member N/2 stops receiving and sending; detection runs from \
         the stop to the first, and to the last, MemberDown notification for it among the live \
         members that knew it. One deterministic run per size (seeded random generators), so \
         no median. Raw figures: {}.",
        config.probe_period.as_millis(),
        config.probe_rtt.as_millis(),
        config.num_indirect_probes,
        config.suspect_to_down_after.as_millis(),
        config.max_transmissions,
        gossip_every.as_millis(),
        announce_every.as_secs(),
        config.max_packet_size,
        LATENCY.as_micros(),
        JOIN_SPACING.as_millis(),
        JOIN_LIMIT.as_secs(),
        PHASES.settle.as_secs(),
        PHASES.window.as_secs(),
        raw.join("; ")
    )
}

pub fn run(sizes: &[usize], notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let mut outcomes = Vec::new();
    for &n in sizes {
        eprintln!("bench: membership, {n} simulated members");
        outcomes.push(simulate(n, PHASES)?);
    }
    notes.push(method_note(&outcomes));

    let row = |name: String, value: f64, unit: &'static str, target: Target| Row {
        section: SECTION,
        name,
        value,
        baseline: None,
        baseline_name: "none".into(),
        unit,
        target,
    };
    let mut rows = Vec::new();
    for o in &outcomes {
        let n = o.members;
        let secs = |d: Duration| d.as_secs_f64();
        rows.push(row(
            format!("SWIM joins: 99% of member pairs known ({n} simulated members)"),
            secs(o.most_known),
            "s",
            Target::None,
        ));
        // Without convergence there is no figure; the note says how far it got.
        if let Some(converged) = o.converged {
            rows.push(row(
                format!("SWIM joins: every member knows all others ({n} simulated members)"),
                secs(converged),
                "s",
                Target::None,
            ));
        }
        let all_target = if n <= TARGET_UP_TO {
            Target::ValueAtMost(DETECTION_TARGET_S)
        } else {
            Target::None
        };
        rows.extend([
            row(
                format!("SWIM failure detection, first member ({n} simulated members)"),
                secs(o.first_detection),
                "s",
                Target::None,
            ),
            row(
                format!("SWIM failure detection, all members ({n} simulated members)"),
                secs(o.all_detection),
                "s",
                all_target,
            ),
            row(
                format!("SWIM traffic sent per member, steady state ({n} simulated members)"),
                o.bytes_per_s,
                "B/s",
                Target::None,
            ),
        ]);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_member_is_declared_down_by_all() {
        let phases = Phases {
            settle: Duration::from_secs(1),
            window: Duration::from_secs(2),
        };
        let outcome = simulate(10, phases).unwrap();
        assert!(outcome.converged.is_some());
        assert_eq!(outcome.witnesses, 9);
        assert!(outcome.first_detection <= outcome.all_detection);
        assert_eq!(outcome.false_downs, 0);
        assert_eq!(outcome.errors, 0);
        assert!(outcome.bytes_per_s > 0.0);
    }
}
