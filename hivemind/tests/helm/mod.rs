//! Helm charts end to end, as a user drives them with the CLI on the real containerd:
//! `helm create-chart` output installs as is (with only the image set); a chart with a kind
//! Hivemind cannot run is refused, then installed without it; a chart repository served over
//! HTTP from the test's namespace (`index.yaml`, packages made by `helm package`, a package
//! whose digest does not match); an upgrade that changes the image and replica count and adds
//! a ConfigMap mounted as files and a Secret kept as a secret; a rollback; uninstalls that remove
//! what each release made and nothing else.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hivemind_tests::daemon::{Daemon, api_json, eventually, free_port};
use hivemind_tests::image::build_test_image_with;
use hivemind_tests::netns::NetNs;
use hivemind_tests::registry::Registry;
use serde_json::Value;
use sha2::Digest as _;

use super::{assert_cli_ok, container_ip, fetch, running_ids};

const INDEX_HTML: &[u8] = b"hello from a chart\n";

/// A static file server (`python3 -m http.server`) in the test's namespace.
struct FileServer {
    child: Child,
    url: String,
}

impl FileServer {
    fn start(ns: &NetNs, root: &Path) -> Result<Self> {
        let port = free_port();
        let child = ns
            .command("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn python3 -m http.server")?;
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        if !ns.listening(port, Duration::from_secs(20))? {
            bail!("the chart repository server did not listen within 20s");
        }
        Ok(server)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli_json(daemon: &Daemon, args: &[&str], what: &str) -> Result<Value> {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let text = assert_cli_ok(&daemon.cli(&all), what);
    serde_json::from_str(&text).with_context(|| format!("{what}: not JSON: {text}"))
}

fn refused(daemon: &Daemon, args: &[&str], what: &str) -> Result<String> {
    let output = daemon.cli(args);
    ensure!(!output.status.success(), "{what} was accepted");
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

fn app(ns: &NetNs, name: &str) -> Result<Option<Value>> {
    let apps = api_json(ns, "/api/apps")?;
    Ok(apps
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == name)
        .cloned())
}

fn app_names(ns: &NetNs) -> Result<Vec<String>> {
    Ok(api_json(ns, "/api/apps")?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["name"].as_str().map(str::to_string))
        .collect())
}

fn secret_names(ns: &NetNs) -> Result<Vec<String>> {
    Ok(api_json(ns, "/api/security/secrets")?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect())
}

/// Waits until `app` runs `n` replicas that all answer `file` with `want`.
fn serving(ns: &NetNs, app: &str, n: usize, file: &str, want: &str) -> Result<()> {
    eventually(
        &format!("{n} replicas of {app} serving {file} = {want:?}"),
        Duration::from_secs(90),
        || {
            let ids = running_ids(ns, app)?;
            if ids.len() != n {
                return Ok(None);
            }
            for id in &ids {
                let ip = container_ip(ns, id)?;
                if fetch(ns, &ip, file)? != want {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
}

pub fn helm(ns: &NetNs, daemon: &Daemon, registry: &Registry, dir: &Path) -> Result<()> {
    let dir = dir.join("helm");
    std::fs::create_dir_all(&dir)?;
    for (tag, greeting) in [("1", "one"), ("2", "two")] {
        let image = build_test_image_with(
            &dir.join(format!("image-{tag}")),
            greeting,
            &[("www/index.html", INDEX_HTML)],
            &format!("hivemind.test/hm/helm-app:{tag}"),
        )?;
        registry.push(ns, &image, "hm/helm-app", tag)?;
    }
    let repository = format!("{}/hm/helm-app", registry.host());
    let image_set = format!("image.repository={repository},image.tag=1");
    // What no release makes: every app and secret already there stays as it is.
    let bystanders = (app_names(ns)?, secret_names(ns)?);

    // `helm create-chart`: helm create's layout.
    let charts = dir.join("charts");
    std::fs::create_dir_all(&charts)?;
    let charts_arg = charts.display().to_string();
    let out = assert_cli_ok(
        &daemon.cli(&[
            "helm",
            "create-chart",
            "--name",
            "web",
            "--description",
            "My application chart",
            "--path",
            &charts_arg,
        ]),
        "helm create-chart",
    );
    ensure!(out.contains("Creating"), "{out}");
    let web = charts.join("web");
    for file in [
        "Chart.yaml",
        "values.yaml",
        ".helmignore",
        "templates/_helpers.tpl",
        "templates/deployment.yaml",
        "templates/service.yaml",
        "templates/serviceaccount.yaml",
        "templates/hpa.yaml",
        "templates/ingress.yaml",
        "templates/NOTES.txt",
        "templates/tests/test-connection.yaml",
    ] {
        ensure!(web.join(file).is_file(), "create-chart wrote no {file}");
    }
    ensure!(web.join("charts").is_dir(), "create-chart made no charts/");
    let chart_yaml = std::fs::read_to_string(web.join("Chart.yaml"))?;
    ensure!(
        chart_yaml
            .lines()
            .any(|l| l.starts_with("description:") && l.contains("My application chart")),
        "{chart_yaml}"
    );
    let again = refused(
        daemon,
        &[
            "helm",
            "create-chart",
            "--name",
            "web",
            "--path",
            &charts_arg,
        ],
        "create-chart over an existing chart",
    )?;
    ensure!(again.contains("exists"), "{again}");

    // A chart with a CronJob: refused, naming it, and nothing is made.
    let with_cron = charts.join("web-cron");
    copy_dir(&web, &with_cron)?;
    std::fs::write(
        with_cron.join("templates/cronjob.yaml"),
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: {{ include \"web.fullname\" . }}-backup\nspec:\n  schedule: \"@daily\"\n",
    )?;
    let with_cron_arg = with_cron.display().to_string();
    let install_prod = |extra: &[&str]| {
        let mut args = vec![
            "helm",
            "install",
            "--name",
            "prod",
            "--chart",
            &with_cron_arg,
            "--namespace",
            "default",
            "--set",
            &image_set,
        ];
        args.extend_from_slice(extra);
        daemon.cli(&args)
    };
    let output = install_prod(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("CronJob/prod-web-backup"),
        "a chart with a CronJob: {stderr}"
    );
    ensure!(
        app(ns, "prod-web")?.is_none(),
        "a refused install made an app"
    );
    ensure!(
        api_json(ns, "/api/helm/releases")? == serde_json::json!([]),
        "a refused install was kept"
    );

    // --dry-run: the plan, nothing made.
    let dry = cli_json(
        daemon,
        &[
            "helm",
            "install",
            "--name",
            "prod",
            "--chart",
            &with_cron_arg,
            "--set",
            &image_set,
            "--skip-unsupported",
            "--dry-run",
        ],
        "helm install --dry-run",
    )?;
    ensure!(
        dry["dry_run"] == true && dry["objects"]["apps"] == serde_json::json!(["prod-web"]),
        "{dry}"
    );
    ensure!(app(ns, "prod-web")?.is_none(), "a dry run made an app");

    // Installed as is, without the CronJob: the app serves, its probes are the chart's.
    let out = assert_cli_ok(&install_prod(&["--skip-unsupported"]), "helm install prod");
    for expected in [
        "Installed prod in namespace default: revision 1, chart web-0.1.0",
        "apps: prod-web",
        "accepted, nothing to run: ServiceAccount/prod-web",
        "left out (unsupported): CronJob/prod-web-backup",
        "hooks left out: Pod/prod-web-test-connection",
        "NOTES:",
    ] {
        ensure!(
            out.contains(expected),
            "helm install prod: no {expected:?} in\n{out}"
        );
    }
    serving(
        ns,
        "prod-web",
        1,
        "",
        std::str::from_utf8(INDEX_HTML)?.trim(),
    )?;
    // The chart's readiness probe (HTTP / on the port named http) passes: the app is ready.
    let prod = eventually("prod-web ready", Duration::from_secs(60), || {
        Ok(app(ns, "prod-web")?.filter(|a| a["ready"] == 1 && a["status"] == "running"))
    })?;
    ensure!(
        prod["labels"]["app.kubernetes.io/instance"] == "prod"
            && prod["ports"] == serde_json::json!([80]),
        "{prod}"
    );

    // A chart repository over HTTP: two versions of the chart and a package that is not
    // what the index says.
    let site = dir.join("repo");
    std::fs::create_dir_all(&site)?;
    let site_arg = site.display().to_string();
    let src = charts.join("shop-src");
    copy_dir(&web, &src)?;
    let src_arg = src.display().to_string();
    let package = |what| {
        assert_cli_ok(
            &daemon.cli(&[
                "helm",
                "package",
                "--chart",
                &src_arg,
                "--destination",
                &site_arg,
            ]),
            what,
        )
    };
    let out = package("helm package 0.1.0");
    ensure!(out.contains("web-0.1.0.tgz"), "{out}");
    std::fs::write(
        src.join("Chart.yaml"),
        chart_yaml
            .replace("version: 0.1.0", "version: 0.2.0")
            .replace("appVersion: \"1.16.0\"", "appVersion: \"2\""),
    )?;
    std::fs::write(
        src.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ include \"web.fullname\" . }}-conf\ndata:\n  greeting.txt: {{ .Values.greeting | default \"hello\" | quote }}\n",
    )?;
    std::fs::write(
        src.join("templates/secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ include \"web.fullname\" . }}-db\ntype: Opaque\ndata:\n  password: {{ .Values.password | default \"s3cret\" | b64enc | quote }}\n",
    )?;
    package("helm package 0.2.0");
    let digest = |file: &str| -> Result<String> {
        Ok(hex::encode(sha2::Sha256::digest(std::fs::read(
            site.join(file),
        )?)))
    };
    std::fs::copy(site.join("web-0.1.0.tgz"), site.join("bad-0.1.0.tgz"))?;
    let index = format!(
        "apiVersion: v1\nentries:\n  web:\n  - name: web\n    version: 0.2.0\n    appVersion: \"2\"\n    digest: {}\n    urls: [web-0.2.0.tgz]\n  - name: web\n    version: 0.1.0\n    appVersion: \"1.16.0\"\n    digest: {}\n    urls: [web-0.1.0.tgz]\n  bad:\n  - name: bad\n    version: 0.1.0\n    digest: {}\n    urls: [bad-0.1.0.tgz]\ngenerated: \"2026-12-01T00:00:00Z\"\n",
        digest("web-0.2.0.tgz")?,
        digest("web-0.1.0.tgz")?,
        "0".repeat(64),
    );
    std::fs::write(site.join("index.yaml"), index)?;
    let server = FileServer::start(ns, &site)?;

    let missing = refused(
        daemon,
        &[
            "helm",
            "repo",
            "add",
            "--name",
            "nowhere",
            "--url",
            &format!("{}/nothing-here", server.url),
        ],
        "repo add of a URL without an index",
    )?;
    ensure!(missing.contains("404"), "{missing}");
    let out = assert_cli_ok(
        &daemon.cli(&[
            "helm",
            "repo",
            "add",
            "--name",
            "local",
            "--url",
            &server.url,
        ]),
        "helm repo add",
    );
    ensure!(out.contains("\"local\" has been added"), "{out}");

    let bad = refused(
        daemon,
        &["helm", "install", "--name", "bad", "--chart", "local/bad"],
        "a package whose digest is wrong",
    )?;
    ensure!(bad.contains("the index says"), "{bad}");
    let no_version = refused(
        daemon,
        &[
            "helm",
            "install",
            "--name",
            "shop",
            "--chart",
            "local/web",
            "--version",
            "3.x",
        ],
        "a version the repository does not have",
    )?;
    ensure!(no_version.contains("0.2.0, 0.1.0"), "{no_version}");

    // Install 0.1.0 from the repository.
    let installed = cli_json(
        daemon,
        &[
            "helm",
            "install",
            "--name",
            "shop",
            "--chart",
            "local/web",
            "--version",
            "~0.1",
            "--set",
            &image_set,
        ],
        "helm install shop",
    )?;
    ensure!(
        installed["chart"] == "web-0.1.0" && installed["source"] == "local/web",
        "{installed}"
    );
    serving(ns, "shop-web", 1, "greeting", "one")?;

    // Upgrade to 0.2.0: new image, three replicas, the ConfigMap mounted as files (from a
    // values file), the Secret kept as a secret.
    let values = dir.join("upgrade.yaml");
    std::fs::write(
        &values,
        "replicaCount: 3\ngreeting: upgraded\nvolumes:\n- name: conf\n  configMap:\n    name: shop-web-conf\nvolumeMounts:\n- name: conf\n  mountPath: /www/conf\n",
    )?;
    let values_arg = values.display().to_string();
    let upgraded = cli_json(
        daemon,
        &[
            "helm",
            "upgrade",
            "--name",
            "shop",
            "--chart",
            "local/web",
            "-f",
            &values_arg,
            "--set",
            &format!("image.repository={repository}"),
            "--set",
            "image.tag=2",
        ],
        "helm upgrade shop",
    )?;
    ensure!(
        upgraded["revision"] == 2 && upgraded["chart"] == "web-0.2.0",
        "{upgraded}"
    );
    serving(ns, "shop-web", 3, "greeting", "two")?;
    serving(ns, "shop-web", 3, "conf/greeting.txt", "upgraded")?;
    let secrets = secret_names(ns)?;
    for name in ["shop-web-conf-greeting-txt", "shop-web-db-password"] {
        ensure!(
            secrets.iter().any(|s| s == name),
            "no secret {name}: {secrets:?}"
        );
    }
    let shop = app(ns, "shop-web")?.context("app shop-web")?;
    ensure!(
        shop["image"]
            .as_str()
            .is_some_and(|i| i.ends_with("hm/helm-app:2"))
            && shop["replicas"] == 3,
        "{shop}"
    );

    // History, then a rollback to revision 1: the old image, one replica, the files and the
    // secret gone.
    let history = cli_json(
        daemon,
        &["helm", "history", "--name", "shop"],
        "helm history",
    )?;
    let statuses: Vec<(u64, String)> = history
        .as_array()
        .context("history is a list")?
        .iter()
        .map(|r| (r["revision"].as_u64().unwrap_or(0), r["status"].to_string()))
        .collect();
    ensure!(
        statuses == [(1, "\"superseded\"".into()), (2, "\"deployed\"".into())],
        "{statuses:?}"
    );
    let out = assert_cli_ok(
        &daemon.cli(&["helm", "rollback", "--name", "shop", "--revision", "1"]),
        "helm rollback",
    );
    ensure!(out.contains("revision 3 (Rollback to 1)"), "{out}");
    serving(ns, "shop-web", 1, "greeting", "one")?;
    let secrets = secret_names(ns)?;
    ensure!(
        !secrets.iter().any(|s| s.starts_with("shop-web-")),
        "the rollback left the upgrade's secrets: {secrets:?}"
    );
    let ls = assert_cli_ok(&daemon.cli(&["helm", "ls"]), "helm ls");
    ensure!(
        ls.contains("shop") && ls.contains("web-0.1.0") && ls.contains("prod"),
        "{ls}"
    );

    // Another release cannot take over shop's app.
    let clash = refused(
        daemon,
        &[
            "helm",
            "install",
            "--name",
            "shop",
            "--namespace",
            "other",
            "--chart",
            "local/web",
            "--set",
            &image_set,
        ],
        "a release whose objects another release owns",
    )?;
    ensure!(clash.contains("app shop-web"), "{clash}");

    // Uninstall: each release's app goes, nothing else.
    for release in ["shop", "prod"] {
        let out = assert_cli_ok(
            &daemon.cli(&["helm", "uninstall", "--name", release]),
            "helm uninstall",
        );
        ensure!(out.contains("uninstalled"), "{out}");
        let gone = format!("{release}-web");
        eventually(&format!("{gone} removed"), Duration::from_secs(60), || {
            Ok((app(ns, &gone)?.is_none() && running_ids(ns, &gone)?.is_empty()).then_some(()))
        })?;
    }
    ensure!(
        api_json(ns, "/api/helm/releases")? == serde_json::json!([]),
        "uninstalled releases are listed"
    );
    ensure!(
        (app_names(ns)?, secret_names(ns)?) == bystanders,
        "the uninstalls left or took apps or secrets no release made: before {bystanders:?}"
    );
    assert_cli_ok(
        &daemon.cli(&["helm", "repo", "remove", "--name", "local"]),
        "helm repo remove",
    );
    drop(server);
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
