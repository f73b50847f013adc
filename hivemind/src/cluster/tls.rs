//! Cluster traffic over TLS with node certificates from the cluster's CA
//! ([`crate::pki`]), on TCP at the gossip port:
//!
//! - replication, key rotation and the secrets key need a client
//!   certificate the CA signed (mutual TLS); the certificate's node id is
//!   the sender, whatever the request claims;
//! - the join exchange needs none: a join token admits the caller, who
//!   pinned the CA's fingerprint (carried in the token) before sending it,
//!   and gets the CA, the cluster key and the secrets key back;
//! - the records only their node may write carry that node's signature and
//!   certificate ([`RecordSignature`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::error::ClusterError;
use super::keyring::{Key, Keyring};
use super::record::{Record, RecordSignature};
use super::{Cluster, Shared};
use crate::pki::{Ca, NodeCert, NodeTls, PkiError};

/// The join exchange's route.
pub const JOIN_PATH: &str = "/api/internal/cluster/join";
/// Set by the TLS listener to the node id of the verified client
/// certificate (a client's own value is always dropped).
pub const VERIFIED_NODE_HEADER: &str = "x-hivemind-verified-node";
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn pki(e: PkiError) -> ClusterError {
    ClusterError::Tls(e.to_string())
}

/// What admits a joining node: the join tokens of the cluster's state.
pub trait JoinAuthority: Send + Sync + 'static {
    /// Accepts `token` (and uses it up when it is single-use); the error is
    /// what the joiner is told.
    fn admit(&self, token: &str, node: &str) -> Result<(), String>;
}

/// This member's TLS identity, renewed in place.
pub struct ClusterTls {
    current: RwLock<Arc<TlsState>>,
    /// Where renewed certificates are kept.
    dir: Option<PathBuf>,
    lifetime: Duration,
    ips: Vec<IpAddr>,
    names: Vec<String>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterTls({:?})", self.state().node.cert)
    }
}

pub(crate) struct TlsState {
    pub node: NodeTls,
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The API's side (no client certificate asked).
    pub api_acceptor: tokio_rustls::TlsAcceptor,
    pub http: reqwest::Client,
}

impl TlsState {
    fn new(node: NodeTls) -> Result<Self, ClusterError> {
        let server = node.server_config().map_err(pki)?;
        let api = node.api_server_config().map_err(pki)?;
        let client = node.client_config().map_err(pki)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(client)
            .no_proxy()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClusterError::Tls(e.to_string()))?;
        Ok(Self {
            node,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            api_acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(api)),
            http,
        })
    }
}

impl ClusterTls {
    /// `node`'s identity; renewals are issued for `ips` and `names`, valid
    /// `lifetime`, and kept in `dir`.
    pub fn new(
        node: NodeTls,
        dir: Option<PathBuf>,
        lifetime: Duration,
        ips: Vec<IpAddr>,
        names: Vec<String>,
    ) -> Result<Arc<Self>, ClusterError> {
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(TlsState::new(node)?)),
            dir,
            lifetime,
            ips,
            names,
        }))
    }

    /// The TLS acceptor of the API, with the current certificate.
    pub fn api_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.state().api_acceptor.clone()
    }

    /// The PEM of the cluster CA's certificate.
    pub fn ca_pem(&self) -> String {
        self.state().node.ca.cert_pem().to_string()
    }

    pub(crate) fn state(&self) -> Arc<TlsState> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How long this node's certificates are valid.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The SHA-256 of the CA certificate, in hex.
    pub fn ca_fingerprint(&self) -> String {
        self.state().node.ca.fingerprint()
    }

    /// When this node's certificate expires (seconds since the epoch).
    pub fn cert_not_after(&self) -> u64 {
        self.state().node.cert.not_after()
    }

    /// The PEM of this node's certificate.
    pub fn cert_pem(&self) -> String {
        self.state().node.cert.cert_pem().to_string()
    }

    /// Issues this node a new certificate when a third or less of the old
    /// one's lifetime is left; whether it did.
    pub fn renew_if_due(&self) -> Result<bool, ClusterError> {
        let state = self.state();
        if !state.node.cert.needs_renewal(SystemTime::now()) {
            return Ok(false);
        }
        let ca = Ca::from_pem(state.node.ca.cert_pem(), &state.node.ca.key_pem()).map_err(pki)?;
        let cert = ca
            .issue_for(
                state.node.cert.node_id(),
                &self.ips,
                &self.names,
                self.lifetime,
            )
            .map_err(pki)?;
        if let Some(dir) = &self.dir {
            cert.save(dir).map_err(pki)?;
        }
        tracing::info!(node = %cert.node_id(), until = cert.not_after(), "node certificate renewed");
        let fresh = TlsState::new(NodeTls { ca, cert })?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(true)
    }

    /// Signs `record` as this node.
    pub(crate) fn sign(&self, record: &Record) -> Result<RecordSignature, ClusterError> {
        let state = self.state();
        let sig = state.node.cert.sign(&record.signed_bytes()).map_err(pki)?;
        Ok(RecordSignature {
            cert: state.node.cert.cert_pem().to_string(),
            sig: hex::encode(sig),
        })
    }

    /// Checks that `record` carries a valid signature of node `owner`.
    pub(crate) fn verify(&self, record: &Record, owner: &str) -> Result<(), String> {
        let signature = record
            .signature
            .as_ref()
            .ok_or_else(|| format!("only node {owner} may write it, and it is not signed"))?;
        let der = {
            let mut reader = std::io::BufReader::new(signature.cert.as_bytes());
            rustls_pemfile::certs(&mut reader)
                .next()
                .and_then(Result::ok)
                .ok_or("the signature's certificate is not PEM")?
        };
        let signer = self
            .state()
            .node
            .ca
            .verify_node(&der)
            .map_err(|e| format!("the signer's certificate: {e}"))?;
        if signer != owner {
            return Err(format!(
                "only node {owner} may write it; it is signed by node {signer}"
            ));
        }
        let sig = hex::decode(&signature.sig).map_err(|_| "the signature is not hex")?;
        crate::pki::verify_signature(&der, &record.signed_bytes(), &sig)
            .map_err(|e| format!("the signature of node {owner}: {e}"))
    }
}

/// What a joining node receives.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinBundle {
    pub ca_cert: String,
    pub ca_key: String,
    /// The cluster keyring, as in `gossip.key`.
    pub keyring: String,
    /// The secrets key in hex, when the member has it.
    pub secrets_key: Option<String>,
}

impl std::fmt::Debug for JoinBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinBundle(<keys>)")
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    token: String,
    node: String,
}

pub(crate) async fn join_handler(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let refuse = |status: StatusCode, code: &str, message: String| {
        tracing::warn!(code, error = %message, "join refused");
        (
            status,
            axum::Json(serde_json::json!({
                "success": false,
                "error": {"code": code, "message": message},
            })),
        )
            .into_response()
    };
    let (Some(tls), Some(authority)) = (&shared.tls, &shared.join_authority) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no_joins",
            "this member does not admit nodes".to_string(),
        );
    };
    let request: JoinRequest = match body
        .map_err(|e| e.body_text())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(request) => request,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("a join request is {{token, node}}: {e}"),
            );
        }
    };
    if let Err(e) = super::validate_node_id(&request.node) {
        return refuse(StatusCode::BAD_REQUEST, "invalid_node", e.to_string());
    }
    if let Err(e) = authority.admit(&request.token, &request.node) {
        return refuse(StatusCode::UNAUTHORIZED, "bad_join_token", e);
    }
    let state = tls.state();
    tracing::info!(node = %request.node, "node admitted with a join token");
    axum::Json(JoinBundle {
        ca_cert: state.node.ca.cert_pem().to_string(),
        ca_key: state.node.ca.key_pem(),
        keyring: shared.keyring().to_text(),
        secrets_key: shared.secrets_key.get().map(|k| k.to_hex()),
    })
    .into_response()
}

/// Asks the members at `addrs` (gossip addresses; TCP) to admit node
/// `node` with `token`, trusting only a CA of fingerprint `ca_sha256`.
pub async fn fetch_join_bundle(
    addrs: &[SocketAddr],
    token: &str,
    ca_sha256: &str,
    node: &str,
) -> Result<JoinBundle, ClusterError> {
    let config = crate::pki::pinned_client_config(ca_sha256).map_err(pki)?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ClusterError::Tls(e.to_string()))?;
    let body = serde_json::to_vec(&JoinRequest {
        token: token.to_string(),
        node: node.to_string(),
    })
    .map_err(|e| ClusterError::Tls(e.to_string()))?;
    let mut errors = Vec::new();
    for addr in addrs {
        let answer = http
            .post(format!("https://{addr}{JOIN_PATH}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => {
                let bundle: JoinBundle = response
                    .json()
                    .await
                    .map_err(|e| ClusterError::Tls(format!("{addr}: {e}")))?;
                return Ok(bundle);
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                errors.push(format!("{addr}: {status}: {text}"));
            }
            Err(e) => errors.push(format!("{addr}: {e:?}")),
        }
    }
    Err(ClusterError::Tls(format!(
        "no member admitted this node: {}",
        errors.join("; ")
    )))
}

impl JoinBundle {
    /// The CA, and a certificate for `node` at `ips` it signs.
    pub fn node_tls(
        &self,
        node: &str,
        ips: &[IpAddr],
        lifetime: Duration,
    ) -> Result<NodeTls, ClusterError> {
        let ca = Ca::from_pem(&self.ca_cert, &self.ca_key).map_err(pki)?;
        let cert: NodeCert = ca.issue(node, ips, lifetime).map_err(pki)?;
        Ok(NodeTls { ca, cert })
    }

    pub fn keyring(&self) -> Result<Keyring, ClusterError> {
        Keyring::parse(&self.keyring)
    }

    pub fn secrets_key(&self) -> Result<Option<Key>, ClusterError> {
        self.secrets_key.as_deref().map(Key::from_hex).transpose()
    }
}

/// Serves the cluster's internal routes over TLS on `listener` until the
/// task is aborted.
pub(crate) async fn serve_internal(shared: Arc<Shared>, listener: TcpListener, router: Router) {
    let Some(tls) = shared.tls.clone() else {
        return;
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a cluster connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = tls.state().acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "cluster TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            // rustls verified the chain to our CA: its common name is the
            // sender.
            let verified = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| crate::pki::node_id_of(cert))
                .and_then(|id| HeaderValue::from_str(&id).ok());
            let router = router.layer(axum::middleware::map_request(
                move |mut request: axum::extract::Request| {
                    let verified = verified.clone();
                    async move {
                        let headers = request.headers_mut();
                        headers.remove(VERIFIED_NODE_HEADER);
                        if let Some(id) = verified {
                            headers.insert(VERIFIED_NODE_HEADER, id);
                        }
                        request
                    }
                },
            ));
            crate::listener::serve_connection(stream, peer, router).await;
        });
    }
}

impl Cluster {
    /// This member's TLS identity, when cluster traffic runs over TLS.
    pub fn tls(&self) -> Option<&Arc<ClusterTls>> {
        self.shared.tls.as_ref()
    }
}
