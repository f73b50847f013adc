//! Writing cluster state as a member does, for the tests that plant records
//! (`single_node.rs`, `api_fuzz.rs`): a push signed with the test cluster key.

use anyhow::Result;
use hivemind_tests::daemon::{TEST_GOSSIP_KEY, api_url, http_with};
use hivemind_tests::netns::NetNs;

/// POSTs records to the replication route as a member would: signed with
/// the cluster key.
pub fn push_as_a_member(ns: &NetNs, body: &str) -> Result<(u16, String)> {
    let path = hivemind::cluster::PUSH_PATH;
    let keyring = hivemind::cluster::Keyring::parse(TEST_GOSSIP_KEY)?;
    let auth = keyring.sign_request(hivemind::cluster::unix_ms(), path, body.as_bytes());
    http_with(
        ns,
        None,
        &[(hivemind::cluster::AUTH_HEADER, &auth)],
        "POST",
        &api_url(path),
        Some(body),
    )
}
