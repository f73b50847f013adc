//! The ingress's certificates: checking what a user adds (`security tls
//! add`), and choosing one per TLS handshake by the client's SNI.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::model::ValidationError;

/// Largest certificate chain accepted, in PEM bytes.
pub use crate::model::MAX_CERT_CHAIN_BYTES as MAX_CHAIN_BYTES;
/// Most certificates in one chain.
const MAX_CHAIN_CERTS: usize = 10;

/// What a checked certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The DNS names of the leaf (subject alternative names, else its CN).
    pub names: Vec<String>,
    pub issuer: String,
    /// Seconds since the epoch.
    pub not_before: u64,
    pub not_after: u64,
    /// SHA-256 of the leaf certificate (DER), hex.
    pub fingerprint: String,
}

fn field(name: &str, message: impl Into<String>) -> ValidationError {
    ValidationError::new(name, message)
}

/// The certificates of a PEM chain, leaf first.
pub fn parse_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, ValidationError> {
    if pem.len() > MAX_CHAIN_BYTES {
        return Err(field(
            "cert",
            format!("a certificate chain is at most {MAX_CHAIN_BYTES} bytes"),
        ));
    }
    let chain = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| field("cert", format!("not a PEM certificate chain: {e}")))?;
    match chain.len() {
        0 => Err(field(
            "cert",
            "no certificate found: expected PEM blocks \"-----BEGIN CERTIFICATE-----\"",
        )),
        n if n > MAX_CHAIN_CERTS => Err(field(
            "cert",
            format!("a chain has at most {MAX_CHAIN_CERTS} certificates, got {n}"),
        )),
        _ => Ok(chain),
    }
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, ValidationError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| field("key", format!("not a PEM private key: {e}")))?
        .ok_or_else(|| {
            field(
                "key",
                "no private key found: expected a PEM block \"-----BEGIN PRIVATE KEY-----\" (or RSA / EC)",
            )
        })
}

/// Whether certificate name `pattern` (maybe `*.example.com`) covers `domain`.
pub fn name_covers(pattern: &str, domain: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        // A wildcard covers one label, never the bare parent.
        Some(parent) => domain
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == domain,
    }
}

fn leaf_info(leaf: &CertificateDer<'_>) -> Result<CertInfo, ValidationError> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| field("cert", format!("the first certificate does not parse: {e}")))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let validity = cert.validity();
    Ok(CertInfo {
        names,
        issuer: cert.issuer().to_string(),
        not_before: validity.not_before.timestamp().max(0) as u64,
        not_after: validity.not_after.timestamp().max(0) as u64,
        fingerprint: hex::encode(ring::digest::digest(&ring::digest::SHA256, leaf.as_ref())),
    })
}

/// A certificate and key ready for handshakes.
fn certified(
    chain: Vec<CertificateDer<'static>>,
    key_pem: &[u8],
) -> Result<CertifiedKey, ValidationError> {
    let key = parse_key(key_pem)?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            field("key", "the key does not belong to the certificate")
        }
        other => field("key", format!("unusable private key: {other}")),
    })
}

/// Checks a certificate a user adds for `domain`: the chain and key parse,
/// the key is the leaf's, the leaf names `domain` and has not expired at
/// `now` (seconds since the epoch).
pub fn check(
    domain: &str,
    chain_pem: &str,
    key_pem: &[u8],
    now: u64,
) -> Result<CertInfo, ValidationError> {
    let chain = parse_chain(chain_pem)?;
    let info = leaf_info(&chain[0])?;
    certified(chain, key_pem)?;
    if !info.names.iter().any(|n| name_covers(n, domain)) {
        return Err(field(
            "cert",
            format!(
                "the certificate does not name {domain} (it names {})",
                if info.names.is_empty() {
                    "nothing".to_string()
                } else {
                    info.names.join(", ")
                }
            ),
        ));
    }
    if info.not_after <= now {
        return Err(field(
            "cert",
            format!(
                "the certificate expired at {} (seconds since the epoch)",
                info.not_after
            ),
        ));
    }
    Ok(info)
}

/// Certificates by domain (lowercase), chosen by SNI at each handshake.
#[derive(Debug, Default)]
pub struct CertStore {
    by_domain: RwLock<HashMap<String, Loaded>>,
}

#[derive(Debug, Clone)]
struct Loaded {
    /// What the entry was built from, to skip unchanged ones.
    version: String,
    key: Arc<CertifiedKey>,
}

impl CertStore {
    /// The version (fingerprint and update time, say) loaded for `domain`.
    pub fn version(&self, domain: &str) -> Option<String> {
        self.read().get(domain).map(|l| l.version.clone())
    }

    /// Loads `domain`'s certificate; an entry that does not load keeps the
    /// one before it.
    pub fn load(
        &self,
        domain: &str,
        version: String,
        chain_pem: &str,
        key_pem: &[u8],
    ) -> Result<(), ValidationError> {
        let key = Arc::new(certified(parse_chain(chain_pem)?, key_pem)?);
        self.by_domain
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(domain.to_ascii_lowercase(), Loaded { version, key });
        Ok(())
    }

    /// Drops the domains not in `keep`.
    pub fn retain(&self, keep: &std::collections::BTreeSet<String>) {
        self.by_domain
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|domain, _| keep.contains(domain));
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Loaded>> {
        self.by_domain.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The certificate for `server_name`: its own, else a wildcard's.
    pub fn find(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        let map = self.read();
        if let Some(loaded) = map.get(&name) {
            return Some(loaded.key.clone());
        }
        let (_, parent) = name.split_once('.')?;
        map.get(&format!("*.{parent}")).map(|l| l.key.clone())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No SNI, or a name without a certificate: the handshake fails
        // (rustls sends an alert) rather than showing another domain's.
        self.find(hello.server_name()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::generate_simple_self_signed(names).unwrap();
        (cert.cert.pem(), cert.key_pair.serialize_pem())
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_covers("*.example.com", "web.example.com"));
        assert!(name_covers("WEB.example.com.", "web.example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(!name_covers("web.example.com", "api.example.com"));
    }

    #[test]
    fn a_good_certificate_passes_and_bad_ones_say_why() {
        let (cert, key) = self_signed(&["web.example.com"]);
        let info = check("web.example.com", &cert, key.as_bytes(), 0).unwrap();
        assert_eq!(info.names, vec!["web.example.com"]);
        assert_eq!(info.fingerprint.len(), 64);

        let wrong_name = check("api.example.com", &cert, key.as_bytes(), 0).unwrap_err();
        assert_eq!(wrong_name.field, "cert");
        assert!(
            wrong_name
                .to_string()
                .contains("does not name api.example.com")
        );

        let (_, other_key) = self_signed(&["web.example.com"]);
        let mismatch = check("web.example.com", &cert, other_key.as_bytes(), 0).unwrap_err();
        assert_eq!(mismatch.field, "key");
        assert!(
            mismatch.to_string().contains("does not belong"),
            "{mismatch}"
        );

        let expired = check("web.example.com", &cert, key.as_bytes(), u64::MAX).unwrap_err();
        assert!(expired.to_string().contains("expired"), "{expired}");

        let garbage = check("web.example.com", "hello", key.as_bytes(), 0).unwrap_err();
        assert_eq!(garbage.field, "cert");
        let no_key = check("web.example.com", &cert, b"hello", 0).unwrap_err();
        assert_eq!(no_key.field, "key");
    }

    #[test]
    fn the_store_picks_by_sni_with_wildcards() {
        let store = CertStore::default();
        let (cert, key) = self_signed(&["*.example.com"]);
        store
            .load("*.example.com", "v1".into(), &cert, key.as_bytes())
            .unwrap();
        let (exact, exact_key) = self_signed(&["web.example.com"]);
        store
            .load("web.example.com", "v1".into(), &exact, exact_key.as_bytes())
            .unwrap();
        let web = store.find("web.example.com").unwrap();
        let api = store.find("API.example.com").unwrap();
        assert_ne!(web.cert[0], api.cert[0], "the exact name wins");
        assert!(store.find("example.com").is_none());
        assert!(store.find("other.org").is_none());
        store.retain(&["web.example.com".to_string()].into());
        assert!(store.find("api.example.com").is_none());
        assert_eq!(store.len(), 1);
    }
}
