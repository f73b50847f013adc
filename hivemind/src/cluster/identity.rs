//! The identity a node gossips about itself.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::error::ClusterError;

/// Longest node id, in bytes.
pub const MAX_NODE_ID_LEN: usize = 64;

/// What foca knows a member by. `gossip` is the foca address (one member per
/// address); `bump` grows on every rejoin so a renewed identity wins over
/// the one the cluster declared down.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawIdentity")]
pub struct NodeIdentity {
    pub id: String,
    pub gossip: SocketAddr,
    pub api: SocketAddr,
    pub bump: u16,
}

/// The unchecked wire shape; decoding goes through [`validate_node_id`].
#[derive(Deserialize)]
struct RawIdentity {
    id: String,
    gossip: SocketAddr,
    api: SocketAddr,
    bump: u16,
}

impl TryFrom<RawIdentity> for NodeIdentity {
    type Error = ClusterError;

    fn try_from(raw: RawIdentity) -> Result<Self, Self::Error> {
        validate_node_id(&raw.id)?;
        Ok(Self {
            id: raw.id,
            gossip: raw.gossip,
            api: raw.api,
            bump: raw.bump,
        })
    }
}

/// Node ids are short and printable: 1-64 characters of `[A-Za-z0-9._-]`.
pub fn validate_node_id(id: &str) -> Result<(), ClusterError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_NODE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ClusterError::InvalidNodeId(id.chars().take(80).collect()))
    }
}

/// Serial-number comparison (RFC 1982) so a wrapped-around bump still wins.
fn bump_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        if self.bump != adversary.bump {
            return bump_newer(self.bump, adversary.bump);
        }
        // Same address and bump but different metadata: pick deterministically.
        (&self.id, self.api) > (&adversary.id, adversary.api)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn ident(bump: u16) -> NodeIdentity {
        NodeIdentity {
            id: "n1".into(),
            gossip: "127.0.0.1:7946".parse().unwrap(),
            api: "127.0.0.1:8080".parse().unwrap(),
            bump,
        }
    }

    #[test]
    fn renewed_identity_wins_even_across_wraparound() {
        let a = ident(u16::MAX);
        let b = a.renew().unwrap();
        assert_eq!(b.bump, 0);
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        assert_eq!(a.addr(), b.addr());
    }

    #[test]
    fn decoding_rejects_bad_ids() {
        let good = postcard::to_allocvec(&ident(1)).unwrap();
        let back: NodeIdentity = postcard::from_bytes(&good).unwrap();
        assert_eq!(back, ident(1));
        let mut bad = ident(1);
        bad.id = "has space".into();
        let bytes = postcard::to_allocvec(&bad).unwrap();
        assert!(postcard::from_bytes::<NodeIdentity>(&bytes).is_err());
        assert!(validate_node_id(&"x".repeat(65)).is_err());
        assert!(validate_node_id("node-1.a_b").is_ok());
    }
}
