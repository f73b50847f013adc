//! The cluster's certificate authority and each node's certificate.
//!
//! The first node of a cluster makes a CA (ECDSA P-256, ten years) and every
//! node holds a certificate it signed: common name the node's id, subject
//! names its address and `<id>.node.hivemind`, for both TLS server and
//! client use, valid [`DEFAULT_NODE_CERT_LIFETIME`] and renewed when a third
//! of that is left. Cluster traffic (replication, key rotation, the join
//! exchange) runs over TLS with these certificates, mutual between members;
//! the records only a node may write (its node record, its subnet claim)
//! carry its signature and certificate.
//!
//! Every member holds the CA key, so any member can admit a joining node and
//! renew its own certificate (see `docs/security.md` for what that costs).
//!
//! On disk, under `<data dir>/pki/`: `ca.crt`, `ca.key`, `node.crt`,
//! `node.key`; keys are 0600.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use sha2::{Digest as _, Sha256};

/// How long a node certificate is valid.
pub const DEFAULT_NODE_CERT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long the CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The DNS name suffix of node certificates.
pub const NODE_DOMAIN: &str = "node.hivemind";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}")]
    Io(String),
    #[error("certificate: {0}")]
    Cert(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("signature: {0}")]
    Signature(String),
}

fn cert_err(e: impl std::fmt::Display) -> PkiError {
    PkiError::Cert(e.to_string())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The SHA-256 of a certificate's DER, in hex: what a joining node pins.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn pem_to_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    rustls_pemfile::certs(&mut reader)
        .next()
        .ok_or_else(|| PkiError::Cert("no certificate in the PEM text".to_string()))?
        .map_err(cert_err)
}

/// The cluster's certificate authority.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    /// The CA as rcgen signs with it (same name and key as `cert_der`).
    issuer: rcgen::Certificate,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ca({})", self.fingerprint())
    }
}

impl Ca {
    /// A new CA.
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Hivemind cluster CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + CA_LIFETIME;
        let cert = params.self_signed(&key).map_err(cert_err)?;
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// The CA from its certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_err)?;
        let cert_der = pem_to_der(cert_pem)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem).map_err(cert_err)?;
        if key.public_key_der() != subject_public_key(&cert_der)? {
            return Err(PkiError::Cert(
                "the CA key does not belong to the CA certificate".to_string(),
            ));
        }
        let issuer = params.self_signed(&key).map_err(cert_err)?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            cert_der,
            key,
            issuer,
        })
    }

    /// The CA kept in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<Self>, PkiError> {
        let (Some(cert), Some(key)) = (read(&dir.join("ca.crt"))?, read(&dir.join("ca.key"))?)
        else {
            return Ok(None);
        };
        Self::from_pem(&cert, &key).map(Some)
    }

    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        write_file(&dir.join("ca.crt"), &self.cert_pem, 0o644)?;
        write_file(&dir.join("ca.key"), &self.key.serialize_pem(), 0o600)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The SHA-256 of the CA certificate, in hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// A certificate for node `node_id`, reachable at `ips`, with a new key.
    pub fn issue(
        &self,
        node_id: &str,
        ips: &[IpAddr],
        lifetime: Duration,
    ) -> Result<NodeCert, PkiError> {
        self.issue_for(node_id, ips, &[], lifetime)
    }

    /// A certificate for node `node_id`, reachable at `ips` and by the DNS
    /// `names` (the names clients reach its API by), with a new key.
    pub fn issue_for(
        &self,
        node_id: &str,
        ips: &[IpAddr],
        names: &[String],
        lifetime: Duration,
    ) -> Result<NodeCert, PkiError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut dns = vec![format!("{node_id}.{NODE_DOMAIN}")];
        for name in names {
            // Names that are not DNS names (an IP given as --api-host) are
            // left out rather than refused.
            if !dns.contains(name) && name.parse::<IpAddr>().is_err() {
                dns.push(name.clone());
            }
        }
        let mut params = CertificateParams::new(dns).map_err(cert_err)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node_id);
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        // Some slack for clocks behind ours, small next to the lifetime.
        params.not_before = now - lifetime.min(Duration::from_secs(300)) / 10;
        params.not_after = now + lifetime;
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(cert_err)?;
        NodeCert::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// Checks that `cert` was signed by this CA and is valid now; its node id.
    pub fn verify_node(&self, cert: &CertificateDer<'_>) -> Result<String, PkiError> {
        let (_, ca) = x509_parser::parse_x509_certificate(&self.cert_der).map_err(cert_err)?;
        let (_, leaf) = x509_parser::parse_x509_certificate(cert).map_err(cert_err)?;
        leaf.verify_signature(Some(ca.public_key()))
            .map_err(|_| PkiError::Cert("not signed by this cluster's CA".to_string()))?;
        if !leaf.validity().is_valid() {
            return Err(PkiError::Cert("expired or not yet valid".to_string()));
        }
        common_name(&leaf).ok_or_else(|| PkiError::Cert("no common name".to_string()))
    }
}

fn subject_public_key(der: &[u8]) -> Result<Vec<u8>, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(cert_err)?;
    Ok(cert.public_key().raw.to_vec())
}

fn common_name(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// The node id (common name) of a certificate, unchecked.
pub fn node_id_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    common_name(&cert)
}

/// A node's certificate and key.
#[derive(Clone)]
pub struct NodeCert {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    node_id: String,
    not_before: u64,
    not_after: u64,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeCert({}, until {})", self.node_id, self.not_after)
    }
}

impl NodeCert {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let cert_der = pem_to_der(cert_pem)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der).map_err(cert_err)?;
        let node_id = common_name(&parsed)
            .ok_or_else(|| PkiError::Cert("the node certificate has no common name".into()))?;
        let not_before = parsed.validity().not_before.timestamp().max(0) as u64;
        let not_after = parsed.validity().not_after.timestamp().max(0) as u64;
        let key = KeyPair::from_pem(key_pem).map_err(cert_err)?;
        if key.public_key_der() != parsed.public_key().raw {
            return Err(PkiError::Cert(
                "the node key does not belong to the node certificate".to_string(),
            ));
        }
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            cert_der: cert_der.clone(),
            node_id,
            not_before,
            not_after,
        })
    }

    pub fn load(dir: &Path) -> Result<Option<Self>, PkiError> {
        let (Some(cert), Some(key)) = (read(&dir.join("node.crt"))?, read(&dir.join("node.key"))?)
        else {
            return Ok(None);
        };
        Self::from_pem(&cert, &key).map(Some)
    }

    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        write_file(&dir.join("node.key"), &self.key_pem, 0o600)?;
        write_file(&dir.join("node.crt"), &self.cert_pem, 0o644)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// Whether a third or less of its lifetime is left (or it is over).
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        let now = unix_secs(now);
        let lifetime = self.not_after.saturating_sub(self.not_before);
        self.not_after.saturating_sub(now) <= lifetime / 3
    }

    fn key_der(&self) -> Result<PrivateKeyDer<'static>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(cert_err)?;
        Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
    }

    /// Signs `message` with the node's key (ECDSA P-256, SHA-256, ASN.1).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        let key = KeyPair::from_pem(&self.key_pem).map_err(cert_err)?;
        let rng = ring::rand::SystemRandom::new();
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key.serialize_der(), &rng)
                .map_err(|e| PkiError::Signature(e.to_string()))?;
        signer
            .sign(&rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| PkiError::Signature(e.to_string()))
    }
}

/// Checks that `signature` over `message` was made with the key of `cert`.
pub fn verify_signature(
    cert: &CertificateDer<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), PkiError> {
    use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(cert_err)?;
    UnparsedPublicKey::new(
        &ECDSA_P256_SHA256_ASN1,
        parsed.public_key().subject_public_key.data.as_ref(),
    )
    .verify(message, signature)
    .map_err(|_| PkiError::Signature("does not verify".to_string()))
}

/// The CA and this node's certificate: everything cluster TLS needs.
#[derive(Debug)]
pub struct NodeTls {
    pub ca: Ca,
    pub cert: NodeCert,
}

impl NodeTls {
    fn roots(&self) -> Result<RootCertStore, PkiError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.cert_der().clone())
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        Ok(roots)
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.cert_der().clone(), self.ca.cert_der().clone()]
    }

    /// The server side: this node's certificate; a client certificate from
    /// the CA is verified when given (routes decide whether they need one).
    pub fn server_config(&self) -> Result<ServerConfig, PkiError> {
        let tls = |e: rustls::Error| PkiError::Tls(e.to_string());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain(), self.cert.key_der()?)
            .map_err(tls)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The API's side: this node's certificate, no client certificate asked.
    pub fn api_server_config(&self) -> Result<ServerConfig, PkiError> {
        server_config(self.chain(), self.cert.key_der()?)
    }

    /// The client side: trusts the CA only and shows this node's certificate.
    pub fn client_config(&self) -> Result<ClientConfig, PkiError> {
        self.client_config_trusting(self.roots()?)
    }

    /// A client showing this node's certificate to servers `roots` vouch for.
    pub fn client_config_trusting(&self, roots: RootCertStore) -> Result<ClientConfig, PkiError> {
        let tls = |e: rustls::Error| PkiError::Tls(e.to_string());
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_root_certificates(roots)
            .with_client_auth_cert(self.chain(), self.cert.key_der()?)
            .map_err(tls)
    }
}

/// An API server's side from a certificate chain and key in PEM files
/// (`--tls-cert`, `--tls-key`).
pub fn api_server_config_from_files(cert: &Path, key: &Path) -> Result<ServerConfig, PkiError> {
    let io =
        |path: &Path, e: &dyn std::fmt::Display| PkiError::Io(format!("{}: {e}", path.display()));
    let cert_pem = std::fs::read(cert).map_err(|e| io(cert, &e))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io(cert, &e))?;
    if chain.is_empty() {
        return Err(io(cert, &"no certificate in it"));
    }
    let key_pem = std::fs::read(key).map_err(|e| io(key, &e))?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| io(key, &e))?
        .ok_or_else(|| io(key, &"no private key in it"))?;
    server_config(chain, key_der)
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, PkiError> {
    let tls = |e: rustls::Error| PkiError::Tls(e.to_string());
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The handshake-signature half of a `ServerCertVerifier`: what the
/// provider verifies, for verifiers that only change how a chain is judged.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// The SHA-256 of the last certificate a TLS server at `addr` shows (its
/// CA, when it sends its chain), without trusting it: what `hivemind login`
/// shows the user to compare.
pub async fn probe_ca_fingerprint(addr: &str, host: &str) -> Result<String, PkiError> {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let verifier = Recorder {
        seen: seen.clone(),
        provider: provider(),
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| PkiError::Io(format!("{addr}: {e}")))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| PkiError::Tls(format!("{host}: {e}")))?;
    connector
        .connect(name, stream)
        .await
        .map_err(|e| PkiError::Tls(format!("{addr}: {e}")))?;
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    seen.ok_or_else(|| PkiError::Tls(format!("{addr} showed no certificate")))
}

/// Accepts any server, remembering the fingerprint of the last certificate
/// of its chain. Only [`probe_ca_fingerprint`] uses it, and sends nothing.
#[derive(Debug)]
struct Recorder {
    seen: Arc<std::sync::Mutex<Option<String>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let last = intermediates.last().unwrap_or(end_entity);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint(last));
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// A client for the join exchange: it trusts a server whose chain holds the
/// CA of fingerprint `ca_sha256` and whose certificate that CA signed.
pub fn pinned_client_config(ca_sha256: &str) -> Result<ClientConfig, PkiError> {
    let verifier = PinnedCa {
        fingerprint: ca_sha256.to_ascii_lowercase(),
        provider: provider(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's chain has no CA of fingerprint {}",
                    self.fingerprint
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?
        .verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    handshake_signatures!();
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::Io(format!("{}: {e}", path.display()))),
    }
}

/// Writes a file whole (a crash leaves the old or the new) with `mode`,
/// making its directory if needed.
pub fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |e: std::io::Error| PkiError::Io(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_is_signed_by_its_ca_only_and_names_its_node() {
        let ca = Ca::generate().unwrap();
        let cert = ca
            .issue(
                "n1",
                &["10.0.0.1".parse().unwrap()],
                Duration::from_secs(3600),
            )
            .unwrap();
        assert_eq!(cert.node_id(), "n1");
        assert_eq!(ca.verify_node(cert.cert_der()).unwrap(), "n1");
        let other = Ca::generate().unwrap();
        assert!(other.verify_node(cert.cert_der()).is_err());
        assert_ne!(ca.fingerprint(), other.fingerprint());
        assert!(!cert.needs_renewal(SystemTime::now()));
        assert!(cert.needs_renewal(SystemTime::now() + Duration::from_secs(2500)));
    }

    #[test]
    fn the_ca_and_node_certificate_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate().unwrap();
        ca.save(dir.path()).unwrap();
        let cert = ca.issue("n2", &[], Duration::from_secs(60)).unwrap();
        cert.save(dir.path()).unwrap();
        let again = Ca::load(dir.path()).unwrap().unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        // Certificates issued after the reload still chain to the same CA.
        let later = again.issue("n3", &[], Duration::from_secs(60)).unwrap();
        assert_eq!(ca.verify_node(later.cert_der()).unwrap(), "n3");
        let cert_again = NodeCert::load(dir.path()).unwrap().unwrap();
        assert_eq!(cert_again.node_id(), "n2");
        use std::os::unix::fs::PermissionsExt as _;
        for key in ["ca.key", "node.key"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let mismatched = Ca::from_pem(ca.cert_pem(), &other_key());
        assert!(mismatched.is_err());
    }

    fn other_key() -> String {
        KeyPair::generate().unwrap().serialize_pem()
    }

    #[test]
    fn signatures_verify_with_the_signers_certificate_only() {
        let ca = Ca::generate().unwrap();
        let a = ca.issue("a", &[], Duration::from_secs(60)).unwrap();
        let b = ca.issue("b", &[], Duration::from_secs(60)).unwrap();
        let sig = a.sign(b"record").unwrap();
        verify_signature(a.cert_der(), b"record", &sig).unwrap();
        assert!(verify_signature(a.cert_der(), b"other", &sig).is_err());
        assert!(verify_signature(b.cert_der(), b"record", &sig).is_err());
    }

    #[test]
    fn tls_configs_build() {
        let ca = Ca::generate().unwrap();
        let cert = ca.issue("n1", &[], Duration::from_secs(60)).unwrap();
        let tls = NodeTls { ca, cert };
        tls.server_config().unwrap();
        tls.client_config().unwrap();
        pinned_client_config(&tls.ca.fingerprint()).unwrap();
    }
}
