//! Writing cluster state as a member does, for the tests that plant records
//! (`single_node.rs`, `api_fuzz.rs`): a push over mutual TLS with a member
//! certificate from the daemon's CA, signed with the test cluster key.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hivemind::pki::{Ca, NodeCert, NodeTls};
use hivemind_tests::daemon::TEST_GOSSIP_KEY;
use hivemind_tests::netns::NetNs;

/// The TCP port of cluster traffic (the gossip port).
const CLUSTER_PORT: u16 = 7946;

/// The daemon's CA, from its data dir.
pub fn daemon_ca(data_dir: &Path) -> Result<Ca> {
    Ca::load(&data_dir.join("pki"))?.context("the daemon's CA")
}

/// A member certificate for `node` from the daemon's CA.
pub fn member(data_dir: &Path, node: &str) -> Result<NodeTls> {
    let ca = daemon_ca(data_dir)?;
    let cert: NodeCert = ca.issue(node, &[], Duration::from_secs(600))?;
    Ok(NodeTls { ca, cert })
}

/// POSTs records to the replication route of the daemon whose data dir is
/// `data_dir`, as member `planter` would: a certificate from the cluster's
/// CA, and the body signed with the cluster key.
pub fn push_as_a_member(ns: &NetNs, data_dir: &Path, body: &str) -> Result<(u16, String)> {
    let config = member(data_dir, "planter")?.client_config()?;
    push_with(ns, config, &[], body)
}

/// POSTs `body` to the replication route with `config`'s TLS (and `headers`),
/// signed with the cluster key.
pub fn push_with(
    ns: &NetNs,
    config: rustls::ClientConfig,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let path = hivemind::cluster::PUSH_PATH;
    let keyring = hivemind::cluster::Keyring::parse(TEST_GOSSIP_KEY)?;
    let auth = keyring.sign_request(hivemind::cluster::unix_ms(), path, body.as_bytes());
    let body = body.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ns.run(move || -> Result<(u16, String)> {
        let client = reqwest::blocking::Client::builder()
            .use_preconfigured_tls(config)
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut request = client
            .post(format!("https://127.0.0.1:{CLUSTER_PORT}{path}"))
            .header(hivemind::cluster::AUTH_HEADER, auth)
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.body(body).send()?;
        let status = response.status().as_u16();
        Ok((status, response.text()?))
    })?
}
