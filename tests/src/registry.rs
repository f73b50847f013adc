//! A real registry (Debian's docker-registry, the CNCF distribution) serving
//! on 127.0.0.1 inside a test's network namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::image::{OCI_MANIFEST, TestImage};
use crate::netns::NetNs;

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The registry process; killed on drop.
pub struct Registry {
    child: Child,
    /// Address it listens on, inside its namespace.
    pub ip: std::net::Ipv4Addr,
    pub port: u16,
    /// Storage root (the filesystem driver's rootdirectory).
    pub storage: PathBuf,
    pub log: PathBuf,
}

impl Registry {
    /// Starts the registry on 127.0.0.1:`port` inside `ns`, storing under
    /// `dir`, and waits until it answers GET /v2/.
    pub fn start(ns: &NetNs, dir: &Path, port: u16) -> Result<Registry> {
        Self::start_on(ns, dir, std::net::Ipv4Addr::LOCALHOST, port)
    }

    /// Starts the registry on `ip:port`, an address configured on `ns`.
    pub fn start_on(ns: &NetNs, dir: &Path, ip: std::net::Ipv4Addr, port: u16) -> Result<Registry> {
        std::fs::create_dir_all(dir)?;
        let storage = dir.join("storage");
        let config = dir.join("config.yml");
        let log = dir.join("registry.log");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n",
                storage.display()
            ),
        )?;
        let out = std::fs::File::create(&log)?;
        let child = ns
            .command(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawn {REGISTRY_BIN}"))?;
        let mut registry = Registry {
            child,
            ip,
            port,
            storage,
            log,
        };
        let url = format!("{}/v2/", registry.base());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let probe = url.clone();
            let answered = ns.run(move || {
                reqwest::blocking::Client::new()
                    .get(&probe)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            })?;
            if answered {
                return Ok(registry);
            }
            if let Some(status) = registry.child.try_wait()? {
                bail!(
                    "docker-registry exited with {status}: {}",
                    std::fs::read_to_string(&registry.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer {url} within 30s: {}",
                    std::fs::read_to_string(&registry.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`, reachable only from inside the namespace.
    pub fn base(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// `localhost:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// Where the registry keeps a blob's bytes (to corrupt them in tests).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes `image` as `repo:tag`: monolithic blob uploads, then the
    /// manifest.
    pub fn push(&self, ns: &NetNs, image: &TestImage, repo: &str, tag: &str) -> Result<()> {
        let base = self.base();
        let repo = repo.to_string();
        let tag = tag.to_string();
        let image = image.clone();
        ns.run(move || push_blocking(&base, &image, &repo, &tag))?
    }

    /// Puts a raw manifest or index (`media_type`) as `repo:reference`; what
    /// it references must be in the repository already.
    pub fn push_manifest(
        &self,
        ns: &NetNs,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<()> {
        let (base, repo, reference) = (self.base(), repo.to_string(), reference.to_string());
        let (media_type, body) = (media_type.to_string(), body.to_vec());
        ns.run(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?;
            put_manifest(&client, &base, &repo, &reference, &media_type, &body)
        })?
    }
}

fn push_blocking(base: &str, image: &TestImage, repo: &str, tag: &str) -> Result<()> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    for (digest, data) in &image.blobs {
        let response = client
            .post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .send()?;
        if response.status().as_u16() != 202 {
            bail!("start upload of {digest}: {}", response.status());
        }
        let location = response
            .headers()
            .get("location")
            .context("upload without Location")?
            .to_str()?
            .to_string();
        let mut url = if location.starts_with('/') {
            reqwest::Url::parse(&format!("{base}{location}"))?
        } else {
            reqwest::Url::parse(&location)?
        };
        url.query_pairs_mut().append_pair("digest", digest);
        let response = client
            .put(url)
            .header("content-type", "application/octet-stream")
            .body(data.clone())
            .send()?;
        if response.status().as_u16() != 201 {
            bail!(
                "upload of {digest}: {} {}",
                response.status(),
                response.text().unwrap_or_default()
            );
        }
    }
    put_manifest(&client, base, repo, tag, OCI_MANIFEST, &image.manifest)
}

fn put_manifest(
    client: &reqwest::blocking::Client,
    base: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Result<()> {
    let response = client
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()?;
    if response.status().as_u16() != 201 {
        bail!(
            "push manifest {repo}:{reference}: {} {}",
            response.status(),
            response.text().unwrap_or_default()
        );
    }
    Ok(())
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
