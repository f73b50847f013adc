//! Cloud providers end to end against a local AWS-compatible endpoint (the moto server, with
//! authentication enforced) in the test's namespace, driven with the CLI: bad credentials and
//! an unknown region are refused and keep nothing; an instance starts with user data that
//! joins this cluster; a load balancer forwards a port to the instances registered behind it;
//! both are deleted.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use hivemind_tests::daemon::{Daemon, api_json, free_port};
use hivemind_tests::moto::Moto;
use hivemind_tests::netns::NetNs;
use serde_json::Value;

use super::assert_cli_ok;

fn json(output: &std::process::Output, what: &str) -> Result<Value> {
    let text = assert_cli_ok(output, what);
    serde_json::from_str(&text).with_context(|| format!("{what}: not JSON: {text}"))
}

pub fn cloud(ns: &NetNs, daemon: &Daemon, dir: &Path) -> Result<()> {
    let moto = Moto::start(ns, &dir.join("moto"), free_port())?;
    let account = moto.credentials(ns)?;
    let configure = |key: &str, secret: &str, region: &str| {
        daemon.cli(&[
            "cloud",
            "configure",
            "--provider",
            "aws",
            "--access-key",
            key,
            "--secret-key",
            secret,
            "--region",
            region,
            "--endpoint-url",
            &moto.url,
        ])
    };

    // Keys the provider does not know, and a secret that does not sign: refused, nothing kept.
    for (key, secret) in [
        (
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        (account.access_key.as_str(), "not-the-secret-key"),
    ] {
        let refused = configure(key, secret, "us-east-1");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        ensure!(
            !refused.status.success() && stderr.contains("credentials"),
            "bad credentials: {stderr}"
        );
    }
    let refused = configure(&account.access_key, &account.secret_key, "mars-east-1");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success() && stderr.contains("mars-east-1") && stderr.contains("us-east-1"),
        "unknown region: {stderr}"
    );
    let refused = configure(&account.access_key, &account.secret_key, "mars");
    ensure!(!refused.status.success(), "a malformed region was accepted");
    ensure!(
        api_json(ns, "/api/cloud/providers")? == serde_json::json!([]),
        "a refused configuration was kept"
    );

    let out = assert_cli_ok(
        &configure(&account.access_key, &account.secret_key, "us-east-1"),
        "cloud configure",
    );
    ensure!(out.contains("cloud-aws-secret-key"), "{out}");
    let secrets = api_json(ns, "/api/security/secrets")?;
    ensure!(
        secrets.to_string().contains("cloud-aws-secret-key")
            && !secrets.to_string().contains(&account.secret_key),
        "{secrets}"
    );

    // An instance that joins this cluster at its first boot.
    let created = json(
        &daemon.cli(&[
            "-o",
            "json",
            "cloud",
            "create-instance",
            "--name",
            "worker-1",
            "--provider",
            "aws",
            "--region",
            "us-east-1",
            "--zone",
            "us-east-1a",
            "--instance-type",
            "t3.medium",
            "--image-id",
            &account.image_id,
            "--install-url",
            "https://downloads.example.com/hivemind",
        ]),
        "create-instance",
    )?;
    let instance = created["instance"]["id"]
        .as_str()
        .context("instance id")?
        .to_string();
    ensure!(created["instance"]["name"] == "worker-1", "{created}");
    // Its user data (as the provider keeps it) installs Hivemind and joins this node's gossip
    // address with the join token made for it.
    let user_data = moto.user_data(ns, &account, &instance)?;
    let token_id = created["join_token_id"].as_str().context("token id")?;
    let gossip = api_json(ns, "/api/nodes")?[0]["gossip"]
        .as_str()
        .context("gossip address")?
        .to_string();
    ensure!(
        user_data.contains(&format!(
            "daemon --join {gossip} --join-token hmjoin_{token_id}_"
        )),
        "{user_data}"
    );
    ensure!(
        user_data.contains("https://downloads.example.com/hivemind")
            && user_data.contains("systemctl enable --now hivemind"),
        "{user_data}"
    );
    let tokens = api_json(ns, "/api/cluster/join-tokens")?;
    ensure!(tokens.to_string().contains(token_id), "{tokens}");
    let bad = daemon.cli(&[
        "cloud",
        "create-instance",
        "--name",
        "worker-2",
        "--instance-type",
        "t3.medium",
        "--image-id",
        "ami-doesnotexist",
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    ensure!(
        !bad.status.success() && stderr.contains("InvalidAMIID"),
        "an unknown image: {stderr}"
    );
    // The join token made for the instance that did not start is revoked.
    let after = api_json(ns, "/api/cluster/join-tokens")?;
    ensure!(
        after.as_array().map(Vec::len) == tokens.as_array().map(Vec::len),
        "a failed create-instance left a join token: {after}"
    );

    // A load balancer in front of the instance.
    let lb = json(
        &daemon.cli(&[
            "-o",
            "json",
            "cloud",
            "create-load-balancer",
            "--name",
            "web-lb",
            "--provider",
            "aws",
            "--region",
            "us-east-1",
            "--type",
            "network",
            "--scheme",
            "internal",
            "--port",
            "8080",
        ]),
        "create-load-balancer",
    )?;
    ensure!(
        lb["kind"] == "network" && lb["scheme"] == "internal" && lb["port"] == 8080,
        "{lb}"
    );
    let registered = json(
        &daemon.cli(&[
            "-o",
            "json",
            "cloud",
            "register-instances",
            "--lb-name",
            "web-lb",
            "--instance-ids",
            &instance,
        ]),
        "register-instances",
    )?;
    ensure!(
        registered["instances"] == serde_json::json!([instance]),
        "{registered}"
    );
    let listed = json(&daemon.cli(&["-o", "json", "cloud", "ls"]), "cloud ls")?;
    ensure!(
        listed["instances"][0]["id"] == instance.as_str()
            && listed["load_balancers"][0]["name"] == "web-lb",
        "{listed}"
    );
    let table = assert_cli_ok(&daemon.cli(&["cloud", "ls"]), "cloud ls");
    ensure!(
        table.contains("worker-1") && table.contains("web-lb"),
        "{table}"
    );

    // Deleting both; an unknown load balancer is a clear not-found.
    assert_cli_ok(
        &daemon.cli(&["cloud", "delete-load-balancer", "--name", "web-lb"]),
        "delete-load-balancer",
    );
    let gone = daemon.cli(&["cloud", "delete-load-balancer", "--name", "web-lb"]);
    let stderr = String::from_utf8_lossy(&gone.stderr);
    ensure!(
        !gone.status.success() && stderr.contains("not found"),
        "{stderr}"
    );
    assert_cli_ok(
        &daemon.cli(&["cloud", "delete-instance", "--instance-id", &instance]),
        "delete-instance",
    );
    let listed = json(&daemon.cli(&["-o", "json", "cloud", "ls"]), "cloud ls")?;
    let state = listed["instances"][0]["state"].as_str().unwrap_or_default();
    ensure!(
        matches!(state, "shutting-down" | "terminated")
            && listed["load_balancers"] == serde_json::json!([]),
        "{listed}"
    );
    Ok(())
}
