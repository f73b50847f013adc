//! The dashboard in a real browser (Debian's headless Chromium over the DevTools protocol)
//! against a live daemon with real containers: sign in, see the node and the apps, deploy from
//! the form, watch the app's traffic chart move while requests flow, see the flows a policy
//! denies in the flow table filtered by app and verdict, follow an update on the app page and
//! undo it from there. With `UPDATE_SCREENSHOTS=1` the
//! screenshots go to `docs/images/` (the ones docs/dashboard.md shows).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hivemind_tests::browser::{Browser, CHROMIUM, Page};
use hivemind_tests::containerd::{TestContainerd, prerequisites};
use hivemind_tests::daemon::{
    Daemon, TEST_TOKEN, api_json, api_url, ctr_purge, eventually, http, remove_netns_with_prefix,
};
use hivemind_tests::image::build_test_image;
use hivemind_tests::netns::NetNs;
use hivemind_tests::registry::Registry;

const BIN: &str = env!("CARGO_BIN_EXE_hivemind");
const IMAGE_REPO: &str = "hm/test-app";

#[test]
fn dashboard_in_a_real_browser() -> Result<()> {
    if !prerequisites(
        "dashboard_in_a_real_browser",
        &[
            "containerd",
            "runc",
            "ctr",
            "/usr/bin/docker-registry",
            "/bin/busybox",
            CHROMIUM,
        ],
    ) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let ns = NetNs::create(&format!("hmdash-{}", std::process::id()))?;
    let containerd = TestContainerd::start(&ns, &dir.path().join("containerd"))?;
    let image = build_test_image(&dir.path().join("image"))?;
    let registry = Registry::start(&ns, &dir.path().join("registry"), 5000)?;
    registry.push(&ns, &image, IMAGE_REPO, "1")?;
    let reference = format!("{}/{IMAGE_REPO}:1", registry.host());
    let daemon = Daemon::start(
        &ns,
        Path::new(BIN),
        &dir.path().join("data"),
        &containerd.socket,
    )?;
    let node_id = api_json(&ns, "/api/nodes")?[0]["id"]
        .as_str()
        .context("node id")?
        .to_string();
    let result = scenario(&ns, &daemon, &reference, dir.path());
    if result.is_err() {
        eprintln!("--- daemon log ---\n{}", daemon.log_tail());
    }
    drop(daemon);
    ctr_purge(&containerd.socket);
    remove_netns_with_prefix(&format!("hm-{node_id}-"));
    result
}

/// Where screenshots go: docs/images with UPDATE_SCREENSHOTS=1, the test's directory otherwise.
fn screenshot(page: &mut Page, dir: &Path, name: &str) -> Result<()> {
    let target = if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/images")
    } else {
        dir.join("screenshots")
    };
    page.screenshot(&target.join(format!("dashboard-{name}.png")))
}

/// The text of the element with `id` (empty when it is not there).
fn text_of(id: &str) -> String {
    format!("(document.getElementById('{id}') || {{textContent: ''}}).textContent")
}

fn scenario(ns: &NetNs, daemon: &Daemon, reference: &str, dir: &Path) -> Result<()> {
    let wait = Duration::from_secs(30);
    let node_name = api_json(ns, "/api/nodes")?[0]["name"]
        .as_str()
        .context("node name")?
        .to_string();
    let deployed = daemon.cli(&[
        "app",
        "deploy",
        "--image",
        reference,
        "--name",
        "web",
        "--replicas",
        "2",
    ]);
    anyhow::ensure!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );

    let (_browser, mut page) = Browser::open(ns, &daemon.url("/"))?;
    // Sign in with a token: the page keeps it in an HttpOnly cookie.
    page.wait_for(
        "the sign-in form",
        "!document.getElementById('signin').hidden",
        wait,
    )?;
    page.eval(&format!(
        "document.getElementById('token').value = {TEST_TOKEN:?}; \
         document.getElementById('signin').requestSubmit(); true"
    ))?;
    // The overview: the node, the app with its replicas ready.
    page.wait_for(
        "the node and the app on the overview",
        &format!(
            "{} .includes({node_name:?}) && {} .includes('web') && {} .includes('2/2')",
            text_of("node-table"),
            text_of("app-table"),
            text_of("app-table")
        ),
        Duration::from_secs(60),
    )?;
    screenshot(&mut page, dir, "overview")?;

    // Deploy from the form.
    page.eval("location.hash = '#/deploy'; true")?;
    page.wait_for(
        "the deploy form",
        "!!document.getElementById('deploy-form')",
        wait,
    )?;
    page.eval(&format!(
        "(() => {{ const f = document.getElementById('deploy-form');
            f.elements.name.value = 'formapp'; f.elements.image.value = {reference:?};
            f.elements.replicas.value = '1'; f.elements.env.value = 'GREETING=from the form';
            f.elements.memory.value = '64M';
            f.requestSubmit(); return true; }})()"
    ))?;
    page.wait_for(
        "the new app's page with its running container",
        "location.hash === '#/apps/formapp' && document.body.textContent.includes('running')",
        Duration::from_secs(90),
    )?;
    let app = api_json(ns, "/api/apps/formapp")?;
    assert_eq!(app["env"]["GREETING"], "from the form", "{app}");
    let ip = eventually("formapp's address", wait, || {
        let containers = api_json(ns, "/api/containers")?;
        Ok(containers
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["app"] == "formapp" && c["status"] == "running")
            .and_then(|c| c["ip"].as_str())
            .map(str::to_string))
    })?;

    // Requests into the app move its chart on the traffic page.
    page.eval("location.hash = '#/traffic'; true")?;
    let load = |count: usize| -> Result<()> {
        for _ in 0..count {
            let _ = http(ns, "GET", &format!("http://{ip}/greeting"), None);
        }
        Ok(())
    };
    let moved = (0..60).find_map(|_| {
        load(20).ok()?;
        std::thread::sleep(Duration::from_millis(500));
        page.eval(
            "[...document.querySelectorAll('h2')].filter(h => h.textContent.includes('App formapp'))
               .map(h => h.parentElement.querySelector('svg').dataset.last.split(',')[0])[0] || ''",
        )
        .ok()
        .and_then(|v| v.as_str().and_then(|s| s.parse::<f64>().ok()))
        .filter(|rx| *rx > 0.0)
    });
    let rx = moved.context("formapp's chart showed no traffic in 60 rounds of requests")?;
    assert!(rx > 0.0);
    screenshot(&mut page, dir, "traffic")?;
    // Longer ranges need a Prometheus; without one the page says how to configure it.
    page.eval("location.hash = '#/traffic?range=6h'; true")?;
    page.wait_for(
        "the 6 h range asking for a Prometheus",
        "!!document.getElementById('traffic-history-missing') && document.getElementById('traffic-history-missing').textContent.includes('configure-dashboard --prometheus')",
        wait,
    )?;

    // A policy that admits only app db: requests from the node are denied, and the flow table
    // filtered to formapp's denied flows shows them with why.
    let policy = serde_json::json!({
        "name": "formapp-from-db",
        "selector": {"labels": {"app": "formapp"}},
        "ingress_rules": [{"ports": [{"protocol": "TCP", "port_min": 80, "port_max": 80}],
                           "from": [{"selector": {"labels": {"app": "db"}}}]}],
    });
    let (status, body) = http(
        ns,
        "POST",
        &api_url("/api/security/network-policies"),
        Some(&policy.to_string()),
    )?;
    assert!(status == 201 || status == 200, "{status} {body}");
    page.eval("location.hash = '#/flows?app=formapp&verdict=denied'; true")?;
    page.wait_for(
        "the filter form showing the URL's filter",
        "document.getElementById('flow-filter') && document.getElementById('flow-filter').elements.app.value === 'formapp'",
        wait,
    )?;
    let denied = (0..15).find_map(|_| {
        let _ = http(ns, "GET", &format!("http://{ip}/greeting"), None);
        std::thread::sleep(Duration::from_millis(300));
        page.eval(&format!(
            "{}",
            format_args!(
                "{}.includes('by policy formapp-from-db')",
                text_of("flow-table")
            )
        ))
        .ok()
        .filter(|v| v == &serde_json::Value::Bool(true))
    });
    denied.context("no denied flow of formapp in the flow table")?;
    let rows = page.eval(
        "[...document.querySelectorAll('#flow-table tr')].slice(1).map(r => r.textContent)",
    )?;
    let rows = rows.as_array().context("rows")?;
    assert!(
        rows.iter().all(|r| r
            .as_str()
            .is_some_and(|r| r.contains("denied") && r.contains(&ip))),
        "only formapp's denied flows: {rows:?}"
    );
    screenshot(&mut page, dir, "flows")?;

    // The service map: the node's requests to formapp, allowed before the policy selected it
    // (new flows of containers no policy selects are reported too) and denied since.
    page.eval("location.hash = '#/map'; true")?;
    for verdict in ["allowed", "denied"] {
        page.wait_for(
            &format!("an {verdict} edge from the node to formapp on the map"),
            &format!(
                "!!document.querySelector('#service-map [data-from=\"node {node_name}\"][data-to=\"formapp\"][data-verdict=\"{verdict}\"]')"
            ),
            wait,
        )?;
    }
    screenshot(&mut page, dir, "map")?;

    // The app page follows an update and goes back: a redeploy with another greeting is
    // revision 2; "Undo to 1" on the page brings the form's greeting back as revision 3.
    let redeploy = serde_json::json!({
        "image": reference, "name": "formapp", "env": {"GREETING": "second"},
    });
    let (status, body) = http(
        ns,
        "POST",
        &api_url("/api/deploy"),
        Some(&redeploy.to_string()),
    )?;
    anyhow::ensure!(status == 200, "redeploy: {status} {body}");
    page.eval("location.hash = '#/apps/formapp'; true")?;
    let rollout = |text: &str| {
        format!(
            "(() => {{ const r = document.getElementById('rollout');
                return !!r && r.textContent.includes({text:?}) && r.textContent.includes('complete')
                  && !r.textContent.includes('in progress'); }})()"
        )
    };
    page.wait_for(
        "revision 2 rolled out, with an undo to 1",
        &format!(
            "{} && !!document.querySelector('#rollout .undo[data-revision=\"1\"]')",
            rollout("2 (current)")
        ),
        Duration::from_secs(90),
    )?;
    page.eval("document.querySelector('#rollout .undo[data-revision=\"1\"]').click(); true")?;
    page.wait_for(
        "revision 3 (undo to 1) rolled out",
        &format!(
            "{} && document.getElementById('rollout').textContent.includes('undo to 1')",
            rollout("3 (current)")
        ),
        Duration::from_secs(90),
    )?;
    let app = api_json(ns, "/api/apps/formapp")?;
    assert_eq!(app["env"]["GREETING"], "from the form", "{app}");

    // An update that never becomes ready shows as progressing, with Pause and Abort; Abort on
    // the page goes back to the form's greeting, and the page says why.
    let stuck = serde_json::json!({
        "image": reference, "name": "formapp", "env": {"GREETING": "stuck"},
        "health": {"readiness": {"probe": {"type": "http", "path": "/never", "port": 80}, "interval_s": 1}},
    });
    let (status, body) = http(
        ns,
        "POST",
        &api_url("/api/deploy"),
        Some(&stuck.to_string()),
    )?;
    anyhow::ensure!(status == 200, "stuck deploy: {status} {body}");
    page.eval("location.hash = '#/apps'; true")?;
    page.eval("location.hash = '#/apps/formapp'; true")?;
    page.wait_for(
        "the stuck update progressing, with Abort",
        "(() => { const r = document.getElementById('rollout');
            return !!r && r.textContent.includes('progressing')
              && !!r.querySelector('.rollout-action[data-action=\"abort\"]')
              && !!r.querySelector('.rollout-action[data-action=\"pause\"]'); })()",
        Duration::from_secs(60),
    )?;
    page.eval(
        "document.querySelector('#rollout .rollout-action[data-action=\"abort\"]').click(); true",
    )?;
    page.eval("location.hash = '#/apps'; true")?;
    page.eval("location.hash = '#/apps/formapp'; true")?;
    page.wait_for(
        "the update aborted, back on the form's greeting",
        "(() => { const m = document.getElementById('rollout-message');
            return !!m && m.textContent.includes('aborted by the operator')
              && document.getElementById('rollout').textContent.includes('rolled-back'); })()",
        Duration::from_secs(60),
    )?;
    let app = api_json(ns, "/api/apps/formapp")?;
    assert_eq!(app["env"]["GREETING"], "from the form", "{app}");
    Ok(())
}
