//! The gossip datagram envelope: `"HM"`, a version byte, a kind byte, then
//! the payload (a foca packet, or a postcard-encoded leave notice).
//!
//! Everything here is total: any byte string decodes to a frame or a
//! [`FrameError`], never a panic.

use super::identity::NodeIdentity;

pub(crate) const MAGIC: [u8; 2] = *b"HM";
pub(crate) const WIRE_VERSION: u8 = 1;
pub(crate) const HEADER_LEN: usize = 4;
/// Largest foca packet (foca's `max_packet_size`).
pub(crate) const MAX_PAYLOAD: usize = 1400;
/// Largest datagram we accept.
pub(crate) const MAX_DATAGRAM: usize = HEADER_LEN + MAX_PAYLOAD;

const KIND_FOCA: u8 = 1;
const KIND_LEAVE: u8 = 2;

#[derive(Debug, PartialEq)]
pub(crate) enum Frame<'a> {
    /// A SWIM packet for foca.
    Foca(&'a [u8]),
    /// The sender is leaving the cluster gracefully.
    Leave(NodeIdentity),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("datagram of {0} bytes is shorter than the header")]
    TooShort(usize),
    #[error("datagram of {0} bytes or more exceeds the limit")]
    TooLarge(usize),
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported wire version {0}")]
    BadVersion(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("empty payload")]
    Empty,
    #[error("bad leave notice: {0}")]
    BadLeave(postcard::Error),
}

pub(crate) fn decode(buf: &[u8]) -> Result<Frame<'_>, FrameError> {
    if buf.len() > MAX_DATAGRAM {
        return Err(FrameError::TooLarge(buf.len()));
    }
    let Some((header, payload)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::TooShort(buf.len()));
    };
    let [m0, m1, version, kind] = *header;
    if [m0, m1] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if version != WIRE_VERSION {
        return Err(FrameError::BadVersion(version));
    }
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    match kind {
        KIND_FOCA => Ok(Frame::Foca(payload)),
        KIND_LEAVE => {
            let (identity, rest) =
                postcard::take_from_bytes::<NodeIdentity>(payload).map_err(FrameError::BadLeave)?;
            if rest.is_empty() {
                Ok(Frame::Leave(identity))
            } else {
                Err(FrameError::BadLeave(
                    postcard::Error::DeserializeBadEncoding,
                ))
            }
        }
        other => Err(FrameError::UnknownKind(other)),
    }
}

fn with_header(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(WIRE_VERSION);
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

pub(crate) fn encode_foca(payload: &[u8]) -> Vec<u8> {
    with_header(KIND_FOCA, payload)
}

pub(crate) fn encode_leave(identity: &NodeIdentity) -> Result<Vec<u8>, postcard::Error> {
    Ok(with_header(KIND_LEAVE, &postcard::to_allocvec(identity)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident() -> NodeIdentity {
        NodeIdentity {
            id: "n1".into(),
            gossip: "127.0.0.1:1".parse().unwrap(),
            api: "127.0.0.1:2".parse().unwrap(),
            bump: 3,
        }
    }

    #[test]
    fn round_trips() {
        let f = encode_foca(b"abc");
        assert_eq!(decode(&f).unwrap(), Frame::Foca(b"abc"));
        let l = encode_leave(&ident()).unwrap();
        assert_eq!(decode(&l).unwrap(), Frame::Leave(ident()));
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(matches!(decode(b""), Err(FrameError::TooShort(0))));
        assert!(matches!(decode(b"HM\x01"), Err(FrameError::TooShort(3))));
        assert!(matches!(decode(b"XX\x01\x01a"), Err(FrameError::BadMagic)));
        assert!(matches!(
            decode(b"HM\x09\x01a"),
            Err(FrameError::BadVersion(9))
        ));
        assert!(matches!(
            decode(b"HM\x01\x07a"),
            Err(FrameError::UnknownKind(7))
        ));
        assert!(matches!(decode(b"HM\x01\x01"), Err(FrameError::Empty)));
        let big = vec![0u8; MAX_DATAGRAM + 1];
        assert!(matches!(decode(&big), Err(FrameError::TooLarge(_))));
        let mut leave = encode_leave(&ident()).unwrap();
        leave.truncate(leave.len() - 2);
        assert!(matches!(decode(&leave), Err(FrameError::BadLeave(_))));
        let mut trailing = encode_leave(&ident()).unwrap();
        trailing.push(0);
        assert!(matches!(decode(&trailing), Err(FrameError::BadLeave(_))));
    }

    #[test]
    fn never_panics_on_pseudo_random_bytes() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..600 {
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            if len > 4 {
                buf[..4].copy_from_slice(&[b'H', b'M', 1, 1 + (len % 2) as u8]);
            }
            let _ = decode(&buf);
        }
    }
}
