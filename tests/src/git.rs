//! Git repositories for the CI/CD tests: a bare repository with commits made by the test, and
//! a smart HTTP server for it (`git http-backend` run as CGI, as a Git host runs it), with an
//! optional token checked as HTTP basic auth.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;

use crate::netns::NetNs;

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Hivemind Test")
        .env("GIT_AUTHOR_EMAIL", "test@hivemind.local")
        .env("GIT_COMMITTER_NAME", "Hivemind Test")
        .env("GIT_COMMITTER_EMAIL", "test@hivemind.local")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .context("run git (apt install git)")?;
    if !output.status.success() {
        bail!(
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// A bare repository (`<dir>/<name>.git`) and a working copy the test commits in.
pub struct Repo {
    pub bare: PathBuf,
    work: PathBuf,
}

impl Repo {
    pub fn create(dir: &Path, name: &str) -> Result<Self> {
        let bare = dir.join(format!("{name}.git"));
        let work = dir.join(format!("{name}-work"));
        std::fs::create_dir_all(&bare)?;
        std::fs::create_dir_all(&work)?;
        git(
            &bare,
            &["init", "--quiet", "--bare", "--initial-branch=main"],
        )?;
        git(&work, &["init", "--quiet", "--initial-branch=main"])?;
        git(&work, &["remote", "add", "origin", &bare.to_string_lossy()])?;
        Ok(Self { bare, work })
    }

    /// `file://` URL of the bare repository.
    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Writes `files` (path, content), commits them on `branch` and pushes; the commit.
    pub fn commit(&self, branch: &str, files: &[(&str, &str)], message: &str) -> Result<String> {
        let current = git(&self.work, &["rev-parse", "--abbrev-ref", "HEAD"]).unwrap_or_default();
        if current != branch {
            let exists = git(&self.work, &["rev-parse", "--verify", "--quiet", branch]).is_ok();
            if exists {
                git(&self.work, &["checkout", "--quiet", branch])?;
            } else {
                git(&self.work, &["checkout", "--quiet", "-b", branch])?;
            }
        }
        for (path, content) in files {
            let path = self.work.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, content)?;
        }
        git(&self.work, &["add", "--all"])?;
        git(&self.work, &["commit", "--quiet", "-m", message])?;
        git(&self.work, &["push", "--quiet", "origin", branch])?;
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// Smart HTTP for every repository under a directory, inside a namespace.
pub struct GitServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
}

impl GitServer {
    /// Serves `root`'s repositories at `http://<addr>/<name>.git`; with `token`, only to
    /// requests whose basic auth password is the token (others get 401).
    pub fn start(ns: &NetNs, addr: SocketAddr, root: &Path, token: Option<&str>) -> Result<Self> {
        let listener = ns.run(move || TcpListener::bind(addr))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicU64::new(0));
        let served = Arc::new(AtomicU64::new(0));
        let (flag, root, token) = (stop.clone(), root.to_path_buf(), token.map(str::to_string));
        let (refused_count, served_count) = (refused.clone(), served.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let (root, token) = (root.clone(), token.clone());
                        let (refused, served) = (refused_count.clone(), served_count.clone());
                        std::thread::spawn(move || {
                            match serve(stream, peer, &root, token.as_deref()) {
                                Ok(true) => served.fetch_add(1, Ordering::Relaxed),
                                Ok(false) => refused.fetch_add(1, Ordering::Relaxed),
                                Err(e) => {
                                    eprintln!("git server: {e:#}");
                                    0
                                }
                            };
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            refused,
            served,
        })
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}.git", self.addr)
    }

    /// Requests refused for a missing or wrong token.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Requests handed to git.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One request: `Ok(false)` when refused for its token.
fn serve(stream: TcpStream, peer: SocketAddr, root: &Path, token: Option<&str>) -> Result<bool> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut out = stream;
    if let Some(token) = token {
        let given = header("authorization")
            .and_then(|a| a.strip_prefix("Basic ").map(str::to_string))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let ok = given
            .as_deref()
            .and_then(|g| g.split_once(':'))
            .is_some_and(|(_, password)| password == token);
        if !ok {
            out.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(false);
        }
    }
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).context("chunk size")?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = header("content-length") {
        let mut data = vec![0; length.parse().context("content length")?];
        reader.read_exact(&mut data)?;
        body = data;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", peer.ip().to_string())
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(kind) = header("content-type") {
        cgi.env("CONTENT_TYPE", kind);
    }
    if let Some(encoding) = header("content-encoding") {
        cgi.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = header("git-protocol") {
        cgi.env("GIT_PROTOCOL", protocol);
    }
    let mut child = cgi.spawn().context("spawn git http-backend")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output()?;
    let _ = writer.join();
    let split = output
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            output
                .stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .context("git http-backend wrote no headers")?;
    let head = String::from_utf8_lossy(&output.stdout[..split.0]).into_owned();
    let content = &output.stdout[split.0 + split.1..];
    let mut status = "200 OK".to_string();
    let mut response = String::new();
    for line in head.lines() {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string();
            }
            Some(_) => {
                response.push_str(line.trim_end());
                response.push_str("\r\n");
            }
            None => {}
        }
    }
    out.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
            content.len()
        )
        .as_bytes(),
    )?;
    out.write_all(content)?;
    Ok(true)
}
