//! Rendezvous (highest-random-weight) hashing: every node computes the same
//! owner for a key from the same member list, and removing a member moves
//! only the keys it owned.

use super::Member;

/// The member that owns `key`: the highest score, ties broken by id. Pass
/// the live members (see [`Cluster::live_members`](super::Cluster::live_members)).
pub fn rendezvous_owner<'a>(key: &str, members: &'a [Member]) -> Option<&'a Member> {
    members.iter().max_by(|a, b| {
        rendezvous_score(key, &a.id)
            .cmp(&rendezvous_score(key, &b.id))
            .then_with(|| a.id.cmp(&b.id))
    })
}

/// A stable 64-bit weight for (key, node): FNV-1a over both, separated by a
/// byte that cannot occur in UTF-8, then the splitmix64 finalizer. Fixed
/// constants, so every build and every node agrees.
pub fn rendezvous_score(key: &str, node_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(node_id.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MemberState;

    fn member(id: &str) -> Member {
        Member {
            id: id.into(),
            gossip: "127.0.0.1:1".parse().unwrap(),
            api: "127.0.0.1:2".parse().unwrap(),
            state: MemberState::Alive,
            since_ms: 0,
            is_self: false,
        }
    }

    #[test]
    fn stable_and_order_independent() {
        let a: Vec<Member> = ["n1", "n2", "n3", "n4"].map(member).to_vec();
        let mut b = a.clone();
        b.reverse();
        for i in 0..200 {
            let key = format!("app-{i}");
            let x = rendezvous_owner(&key, &a).unwrap();
            let y = rendezvous_owner(&key, &b).unwrap();
            assert_eq!(x.id, y.id);
        }
        assert!(rendezvous_owner("k", &[]).is_none());
        // Pinned value: the hash must not change between builds.
        assert_eq!(rendezvous_score("web", "n1"), 0x1875_4fee_50ee_3272);
    }

    #[test]
    fn removing_a_member_moves_only_its_keys_and_spreads_them() {
        let all: Vec<Member> = ["n1", "n2", "n3", "n4", "n5"].map(member).to_vec();
        let without: Vec<Member> = all.iter().filter(|m| m.id != "n3").cloned().collect();
        let mut counts = std::collections::HashMap::new();
        for i in 0..2000 {
            let key = format!("app-{i}");
            let before = rendezvous_owner(&key, &all).unwrap();
            let after = rendezvous_owner(&key, &without).unwrap();
            *counts.entry(before.id.clone()).or_insert(0) += 1;
            if before.id != "n3" {
                assert_eq!(
                    before.id, after.id,
                    "key {key} moved off a surviving member"
                );
            } else {
                assert_ne!(after.id, "n3");
            }
        }
        for (id, n) in counts {
            assert!((200..=600).contains(&n), "{id} owns {n} of 2000 keys");
        }
    }
}
