//! Secrets: how a value is sealed for the replicated store, and how it
//! reaches a container.
//!
//! **At rest**, envelope encryption: each version of a secret gets a fresh
//! 256-bit data key; the value is sealed with it (XChaCha20-Poly1305, the
//! secret's name and version as associated data, so a sealed value cannot be
//! moved to another name or version), and the data key is sealed with the
//! cluster's key-encryption key ([`crate::cluster::SecretsKey`]), which lives
//! in a 0600 file on each member and never in replicated state. The store,
//! its redb file and the replication traffic hold ciphertext only.
//!
//! **In a container**, a file on a tmpfs, mode 0400, bind-mounted read-only
//! at the path the app asked for. A rotation rewrites the file in place (same
//! inode, so the bind mount shows the new bytes) without a restart.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::cluster::Key;
use crate::model::{MAX_SECRET_BYTES, ValidationError};
use crate::state::SecretRecord;

const NONCE_LEN: usize = 24;

/// A secret's value. Its bytes are never printed (`Debug` shows the
/// length) and are wiped when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({} bytes)", self.0.len())
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keeps the wipe from being optimized away.
        std::hint::black_box(&self.0);
    }
}

impl SecretValue {
    /// A value of 1 to [`MAX_SECRET_BYTES`] bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, ValidationError> {
        let value = Self(bytes);
        if value.0.is_empty() || value.0.len() > MAX_SECRET_BYTES {
            return Err(ValidationError::new(
                "value",
                format!(
                    "a secret holds 1 to {MAX_SECRET_BYTES} bytes, got {}",
                    value.0.len()
                ),
            ));
        }
        Ok(value)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The value as an environment variable's: UTF-8 without NUL bytes.
    pub fn to_env(&self, name: &str) -> Result<String, SecretError> {
        match std::str::from_utf8(&self.0) {
            Ok(text) if !text.contains('\0') => Ok(text.to_string()),
            _ => Err(SecretError::NotText(name.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secret {name} is sealed under key {sealed}, this node holds key {held}: the nodes disagree on the secrets key"
    )]
    OtherKey {
        name: String,
        sealed: String,
        held: String,
    },
    #[error("secret {0} does not open: its record is damaged or was forged")]
    Damaged(String),
    #[error(
        "secret {0} is not UTF-8 text without NUL bytes, so it cannot be an environment variable"
    )]
    NotText(String),
    #[error("{0}")]
    Io(String),
}

fn value_aad(name: &str, version: u32) -> Vec<u8> {
    format!("hivemind secret value {name} {version}").into_bytes()
}

fn data_key_aad(name: &str, version: u32) -> Vec<u8> {
    format!("hivemind secret data key {name} {version}").into_bytes()
}

fn seal_with(key: &[u8], plain: &[u8], aad: &[u8]) -> Vec<u8> {
    use rand::Rng as _;
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .expect("XChaCha20-Poly1305 seals any length we hand it");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    out
}

fn open_with(key: &[u8], sealed_hex: &str, aad: &[u8]) -> Option<Vec<u8>> {
    let sealed = hex::decode(sealed_hex).ok()?;
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
        .ok()
}

/// Seals `value` as version `version` of secret `name`.
pub fn seal(
    kek: &Key,
    name: &str,
    version: u32,
    value: &SecretValue,
    created_at: u64,
    updated_at: u64,
) -> SecretRecord {
    let data_key = SecretValue(Key::generate().as_bytes().to_vec());
    SecretRecord {
        name: name.to_string(),
        version,
        size: value.0.len() as u64,
        created_at,
        updated_at,
        kek: kek.fingerprint(),
        data_key: hex::encode(seal_with(
            kek.as_bytes(),
            data_key.as_bytes(),
            &data_key_aad(name, version),
        )),
        value: hex::encode(seal_with(
            data_key.as_bytes(),
            value.as_bytes(),
            &value_aad(name, version),
        )),
    }
}

/// Opens a secret's current version.
pub fn open(kek: &Key, record: &SecretRecord) -> Result<SecretValue, SecretError> {
    if record.kek != kek.fingerprint() {
        return Err(SecretError::OtherKey {
            name: record.name.clone(),
            sealed: record.kek.clone(),
            held: kek.fingerprint(),
        });
    }
    let damaged = || SecretError::Damaged(record.name.clone());
    let data_key = open_with(
        kek.as_bytes(),
        &record.data_key,
        &data_key_aad(&record.name, record.version),
    )
    .map(SecretValue)
    .ok_or_else(damaged)?;
    if data_key.0.len() != 32 {
        return Err(damaged());
    }
    open_with(
        data_key.as_bytes(),
        &record.value,
        &value_aad(&record.name, record.version),
    )
    .map(SecretValue)
    .ok_or_else(damaged)
}

/// Where a node keeps the secret files of its containers: a tmpfs, so
/// values never reach a disk. One directory per container (0700), one file
/// per secret mount (0400).
#[derive(Debug, Clone)]
pub struct SecretFiles {
    root: PathBuf,
}

impl SecretFiles {
    /// Files under `root`, which must be on a tmpfs when `require_tmpfs`
    /// (real runtimes): one is mounted there if it is not.
    pub fn open(root: PathBuf, require_tmpfs: bool) -> Result<Self, SecretError> {
        let io = |what: &str, e: &dyn std::fmt::Display| {
            SecretError::Io(format!("{what} {}: {e}", root.display()))
        };
        std::fs::create_dir_all(&root).map_err(|e| io("create", &e))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("chmod", &e))?;
        if require_tmpfs && !is_tmpfs(&root).map_err(|e| io("statfs", &e))? {
            use nix::mount::{MsFlags, mount};
            mount(
                Some("tmpfs"),
                &root,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=0700,size=64m"),
            )
            .map_err(|e| io("mount a tmpfs on", &e))?;
            tracing::info!(path = %root.display(), "tmpfs for secret files mounted");
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, container: &str) -> PathBuf {
        self.root.join(container)
    }

    /// The file of the `index`th secret mount of `container`.
    pub fn path(&self, container: &str, index: usize) -> PathBuf {
        self.dir(container).join(index.to_string())
    }

    /// Writes (or rewrites, in place) the `index`th secret file of
    /// `container`; the path, to bind-mount.
    pub fn write(
        &self,
        container: &str,
        index: usize,
        value: &SecretValue,
    ) -> Result<PathBuf, SecretError> {
        let dir = self.dir(container);
        let io = |e: std::io::Error| SecretError::Io(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let path = self.path(container, index);
        let io = |e: std::io::Error| SecretError::Io(format!("{}: {e}", path.display()));
        // Truncate and write the same inode: a bind mount of the file keeps
        // pointing at it, so a running container sees the new value.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o400)
            .open(&path)
            .map_err(io)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o400))
            .map_err(io)?;
        file.write_all(value.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(path)
    }

    /// Removes a container's secret files.
    pub fn remove(&self, container: &str) -> Result<(), SecretError> {
        let dir = self.dir(container);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SecretError::Io(format!("{}: {e}", dir.display()))),
        }
    }

    /// The containers that have files here.
    pub fn containers(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn is_tmpfs(path: &Path) -> nix::Result<bool> {
    let stat = nix::sys::statfs::statfs(path)?;
    Ok(stat.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Row as _;

    fn value(text: &str) -> SecretValue {
        SecretValue::new(text.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_with_its_key_only_and_holds_no_clear_text() {
        let kek = Key::generate();
        let record = seal(&kek, "db-password", 1, &value("hunter2-hunter2"), 10, 10);
        record.check("db-password").unwrap();
        let stored = serde_json::to_string(&record).unwrap();
        assert!(!stored.contains("hunter2"));
        assert!(!stored.contains(&hex::encode("hunter2")));
        assert_eq!(open(&kek, &record).unwrap().as_bytes(), b"hunter2-hunter2");
        let other = Key::generate();
        assert!(matches!(
            open(&other, &record),
            Err(SecretError::OtherKey { .. })
        ));
    }

    #[test]
    fn a_sealed_value_cannot_move_to_another_name_or_version_or_be_changed() {
        let kek = Key::generate();
        let a = seal(&kek, "a", 1, &value("one"), 1, 1);
        let b = seal(&kek, "b", 1, &value("two"), 1, 1);
        let moved = SecretRecord {
            name: "b".into(),
            ..a.clone()
        };
        assert!(matches!(open(&kek, &moved), Err(SecretError::Damaged(_))));
        let bumped = SecretRecord {
            version: 2,
            ..a.clone()
        };
        assert!(matches!(open(&kek, &bumped), Err(SecretError::Damaged(_))));
        let swapped = SecretRecord {
            value: b.value.clone(),
            ..a.clone()
        };
        assert!(matches!(open(&kek, &swapped), Err(SecretError::Damaged(_))));
        let mut flipped = a.clone();
        let last = flipped.value.pop().unwrap();
        flipped.value.push(if last == '0' { '1' } else { '0' });
        assert!(matches!(open(&kek, &flipped), Err(SecretError::Damaged(_))));
    }

    #[test]
    fn values_are_bounded_and_never_printed() {
        assert!(SecretValue::new(Vec::new()).is_err());
        assert!(SecretValue::new(vec![1; MAX_SECRET_BYTES + 1]).is_err());
        let v = value("hunter2");
        assert_eq!(format!("{v:?}"), "SecretValue(7 bytes)");
        assert!(v.to_env("x").is_ok());
        assert!(matches!(
            SecretValue::new(vec![0xff, 0]).unwrap().to_env("x"),
            Err(SecretError::NotText(_))
        ));
    }

    #[test]
    fn files_are_0400_and_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let files = SecretFiles::open(dir.path().join("secrets"), false).unwrap();
        let path = files.write("web-1", 0, &value("first")).unwrap();
        use std::os::unix::fs::MetadataExt as _;
        let before = std::fs::metadata(&path).unwrap();
        assert_eq!(before.mode() & 0o777, 0o400);
        files.write("web-1", 0, &value("second")).unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(before.ino(), after.ino());
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(files.containers(), ["web-1"]);
        files.remove("web-1").unwrap();
        assert!(files.containers().is_empty());
        files.remove("web-1").unwrap();
    }
}
