//! The cluster key: every gossip datagram is sealed with it (XChaCha20-
//! Poly1305), and every replication request carries an HMAC-SHA256 made with
//! it, so a process without the key can neither take part in membership nor
//! read or write cluster state through the replication routes.
//!
//! A keyring holds a primary key, which seals, and older ones, which still
//! open, as memberlist's keyring does: a new key is installed everywhere
//! before it becomes primary, and an old one is removed after.
//!
//! On disk (`<data dir>/gossip.key`, mode 0600): one key a line, 64 hex
//! digits, the primary first.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::ClusterError;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce (XChaCha20).
pub const NONCE_LEN: usize = 24;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a datagram: magic, version, nonce, tag.
pub const SEAL_OVERHEAD: usize = SEALED_MAGIC.len() + 1 + NONCE_LEN + TAG_LEN;
/// Most keys a keyring holds.
pub const MAX_KEYS: usize = 8;

const SEALED_MAGIC: [u8; 2] = *b"HE";
const SEALED_VERSION: u8 = 1;

/// One key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes: a short fingerprint to tell keys apart.
        write!(f, "Key({})", self.fingerprint())
    }
}

impl Key {
    pub fn generate() -> Self {
        use rand::Rng as _;
        let mut bytes = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_hex(text: &str) -> Result<Self, ClusterError> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| ClusterError::Key("a key is 64 hex digits".to_string()))?;
        let bytes: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| ClusterError::Key("a key is 64 hex digits".to_string()))?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ClusterError> {
        let bytes: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| ClusterError::Key(format!("a key is {KEY_LEN} bytes")))?;
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits of the key's SHA-256: names a key in logs and
    /// listings without showing it.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        hex::encode(&Sha256::digest(self.0)[..4])
    }
}

/// The primary key and the older ones still accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    pub fn new(primary: Key) -> Self {
        Self {
            keys: vec![primary],
        }
    }

    /// Parses the file form: a key a line, the primary first; blank lines
    /// and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, ClusterError> {
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(Key::from_hex)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() || keys.len() > MAX_KEYS {
            return Err(ClusterError::Key(format!(
                "a keyring holds 1 to {MAX_KEYS} keys, got {}",
                keys.len()
            )));
        }
        Ok(Self { keys })
    }

    pub fn to_text(&self) -> String {
        self.keys.iter().map(|k| k.to_hex() + "\n").collect()
    }

    pub fn primary(&self) -> &Key {
        // Construction guarantees at least one key.
        &self.keys[0]
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Adds `key` after the primary (it opens, it does not seal yet); the
    /// oldest key goes when the ring is full.
    pub fn install(&mut self, key: Key) {
        if self.keys.contains(&key) {
            return;
        }
        self.keys.insert(1, key);
        self.keys.truncate(MAX_KEYS);
    }

    /// Makes the key of that fingerprint the primary; false if absent.
    pub fn make_primary(&mut self, fingerprint: &str) -> bool {
        let Some(at) = self
            .keys
            .iter()
            .position(|k| k.fingerprint() == fingerprint)
        else {
            return false;
        };
        let key = self.keys.remove(at);
        self.keys.insert(0, key);
        true
    }

    /// Removes every key but the primary.
    pub fn keep_only_primary(&mut self) {
        self.keys.truncate(1);
    }

    /// Seals a datagram with the primary key.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        use rand::Rng as _;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let header = [SEALED_MAGIC[0], SEALED_MAGIC[1], SEALED_VERSION];
        let cipher = XChaCha20Poly1305::new((&self.primary().0).into());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &header,
                },
            )
            // Encryption fails only past 256 GiB per message.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(header.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a datagram sealed with any key of the ring.
    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some((header, rest)) = datagram.split_first_chunk::<3>() else {
            return Err(SealError::TooShort);
        };
        if header[..2] != SEALED_MAGIC {
            return Err(SealError::NotSealed);
        }
        if header[2] != SEALED_VERSION {
            return Err(SealError::Version(header[2]));
        }
        let Some((nonce, sealed)) = rest.split_first_chunk::<NONCE_LEN>() else {
            return Err(SealError::TooShort);
        };
        if sealed.len() < TAG_LEN {
            return Err(SealError::TooShort);
        }
        for key in &self.keys {
            let cipher = XChaCha20Poly1305::new((&key.0).into());
            if let Ok(plain) = cipher.decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: header,
                },
            ) {
                return Ok(plain);
            }
        }
        Err(SealError::NoKey)
    }

    /// The authentication of a replication request: HMAC-SHA256 with the
    /// primary key over the time, the path and the body.
    pub fn sign_request(&self, at_ms: u64, path: &str, body: &[u8]) -> String {
        format!(
            "{at_ms}.{}",
            hex::encode(mac(self.primary(), at_ms, path, body))
        )
    }

    /// Checks a request's authentication against every key of the ring, and
    /// that it was made within `window_ms` of `now_ms`.
    pub fn verify_request(
        &self,
        header: &str,
        now_ms: u64,
        window_ms: u64,
        path: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let (at, tag) = header
            .split_once('.')
            .ok_or_else(|| "the authentication is not <ms>.<hex>".to_string())?;
        let at_ms: u64 = at
            .parse()
            .map_err(|_| "the authentication's time is not a number".to_string())?;
        if at_ms.abs_diff(now_ms) > window_ms {
            return Err(format!(
                "the request was signed {} ms away from this node's clock (at most {window_ms})",
                at_ms.abs_diff(now_ms)
            ));
        }
        let tag = hex::decode(tag).map_err(|_| "the authentication is not hex".to_string())?;
        for key in &self.keys {
            let mut mac = new_mac(key);
            feed(&mut mac, at_ms, path, body);
            if mac.verify_slice(&tag).is_ok() {
                return Ok(());
            }
        }
        Err("no cluster key matches the request's authentication".to_string())
    }
}

type HmacSha256 = Hmac<Sha256>;

fn new_mac(key: &Key) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(&key.0).expect("HMAC takes keys of any length")
}

fn feed(mac: &mut HmacSha256, at_ms: u64, path: &str, body: &[u8]) {
    mac.update(&at_ms.to_be_bytes());
    mac.update(&(path.len() as u64).to_be_bytes());
    mac.update(path.as_bytes());
    mac.update(body);
}

fn mac(key: &Key, at_ms: u64, path: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = new_mac(key);
    feed(&mut mac, at_ms, path, body);
    mac.finalize().into_bytes().to_vec()
}

/// Why a datagram could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("datagram too short to be sealed")]
    TooShort,
    #[error("datagram is not sealed (plain gossip, or not Hivemind's)")]
    NotSealed,
    #[error("unsupported sealing version {0}")]
    Version(u8),
    #[error("no key of this node's keyring opens the datagram")]
    NoKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_datagrams_open_with_any_key_of_the_ring_and_nothing_else() {
        let old = Key::generate();
        let new = Key::generate();
        let sender = Keyring::new(old.clone());
        let datagram = sender.seal(b"hello");
        assert_eq!(datagram.len(), 5 + SEAL_OVERHEAD);
        let rotating = Keyring {
            keys: vec![new.clone(), old.clone()],
        };
        assert_eq!(rotating.open(&datagram).unwrap(), b"hello");
        assert_eq!(Keyring::new(new).open(&datagram), Err(SealError::NoKey));
        let mut tampered = datagram.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(sender.open(&tampered), Err(SealError::NoKey));
        assert_eq!(sender.open(b"HM\x01\x01plain"), Err(SealError::NotSealed));
        assert_eq!(sender.open(b"HE"), Err(SealError::TooShort));
        assert_ne!(sender.seal(b"hello"), datagram, "a fresh nonce each time");
    }

    #[test]
    fn requests_are_signed_for_their_path_body_and_time() {
        let ring = Keyring::new(Key::generate());
        let auth = ring.sign_request(1_000, "/push", b"[]");
        ring.verify_request(&auth, 1_500, 60_000, "/push", b"[]")
            .unwrap();
        assert!(
            ring.verify_request(&auth, 1_500, 60_000, "/sync", b"[]")
                .is_err()
        );
        assert!(
            ring.verify_request(&auth, 1_500, 60_000, "/push", b"[1]")
                .is_err()
        );
        assert!(
            ring.verify_request(&auth, 100_000, 60_000, "/push", b"[]")
                .is_err()
        );
        let other = Keyring::new(Key::generate());
        assert!(
            other
                .verify_request(&auth, 1_500, 60_000, "/push", b"[]")
                .is_err()
        );
        assert!(
            ring.verify_request("garbage", 1_500, 60_000, "/push", b"[]")
                .is_err()
        );
    }

    #[test]
    fn a_rotation_installs_then_switches_then_drops() {
        let old = Key::generate();
        let new = Key::generate();
        let mut ring = Keyring::new(old.clone());
        ring.install(new.clone());
        assert_eq!(ring.primary(), &old, "installing does not switch");
        let sealed_old = ring.seal(b"x");
        assert!(ring.make_primary(&new.fingerprint()));
        assert_eq!(ring.primary(), &new);
        assert_eq!(
            ring.open(&sealed_old).unwrap(),
            b"x",
            "the old key still opens"
        );
        ring.keep_only_primary();
        assert_eq!(ring.keys(), &[new]);
        assert!(ring.open(&sealed_old).is_err());
        assert!(!ring.make_primary("nothing"));
    }

    #[test]
    fn the_file_form_round_trips_and_refuses_bad_keys() {
        let ring = Keyring {
            keys: vec![Key::generate(), Key::generate()],
        };
        assert_eq!(Keyring::parse(&ring.to_text()).unwrap(), ring);
        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse("abcd\n").is_err());
        assert!(!format!("{:?}", ring.primary()).contains(&ring.primary().to_hex()));
    }
}
