//! A real browser for the dashboard tests: Debian's headless Chromium in a test namespace,
//! driven over the DevTools protocol (a WebSocket): evaluate script in the page, wait for
//! what a user would see, take screenshots.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::WebSocket;

use crate::netns::NetNs;

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium, killed when dropped.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

/// The page's DevTools session.
pub struct Page {
    socket: WebSocket<TcpStream>,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium in `ns` on `url` (certificates not checked: the test cluster's CA is
    /// its own) and opens the DevTools session of its page.
    pub fn open(ns: &NetNs, url: &str) -> Result<(Self, Page)> {
        let profile = tempfile::tempdir().context("a profile directory")?;
        let mut child = ns
            .command(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--ignore-certificate-errors",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start chromium")?;
        let stderr = child.stderr.take().context("chromium's stderr")?;
        let (found, port) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1)
                    && !sent
                {
                    let port: u16 = rest.split('/').next().unwrap_or("").parse().unwrap_or(0);
                    let _ = found.send(port);
                    sent = true;
                }
            }
        });
        let browser = Self {
            child,
            _profile: profile,
        };
        let port = port
            .recv_timeout(Duration::from_secs(30))
            .context("chromium did not open its DevTools port within 30 s")?;
        let page = Page::attach(ns, port)?;
        Ok((browser, page))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Page {
    fn attach(ns: &NetNs, port: u16) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let target = loop {
            // The port may be open before its HTTP side answers: an error is "not yet".
            let list = ns.run(move || json_list(port))?.unwrap_or_default();
            if let Some(url) = list
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                break url.to_string();
            }
            if Instant::now() > deadline {
                bail!("no page target: {list}");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        // The socket lives in the namespace it was opened in, whichever thread uses it.
        let stream = ns.run(move || TcpStream::connect(("127.0.0.1", port)))??;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let (socket, _) = tungstenite::client(target.as_str(), stream)
            .map_err(|e| anyhow::anyhow!("DevTools handshake: {e}"))?;
        Ok(Self { socket, next_id: 1 })
    }

    /// Sends one DevTools command and waits for its answer (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(tungstenite::Message::text(message))
            .with_context(|| format!("send {method}"))?;
        loop {
            let message = self
                .socket
                .read()
                .with_context(|| format!("read {method}"))?;
            let tungstenite::Message::Text(text) = message else {
                continue;
            };
            let mut answer: Value = serde_json::from_str(text.as_str())?;
            if answer["id"] != id {
                continue;
            }
            if !answer["error"].is_null() {
                bail!("{method}: {}", answer["error"]);
            }
            return Ok(answer["result"].take());
        }
    }

    /// The value of `expression` in the page (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Result<Value> {
        let mut result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
        )?;
        if !result["exceptionDetails"].is_null() {
            bail!("{expression}: {}", result["exceptionDetails"]);
        }
        Ok(result["result"]["value"].take())
    }

    /// Waits until `expression` is truthy in the page; its value.
    pub fn wait_for(&mut self, what: &str, expression: &str, limit: Duration) -> Result<Value> {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            // An exception (the page still loading, an element not drawn yet) is "not yet".
            last = match self.eval(expression) {
                Ok(value) => value,
                Err(e) => {
                    std::thread::sleep(Duration::from_millis(250));
                    last = Value::String(format!("error: {e}"));
                    continue;
                }
            };
            let truthy = match &last {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                _ => true,
            };
            if truthy {
                return Ok(last);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!("{what}: not within {limit:?} (last: {last})")
    }

    /// Saves a PNG of what the page shows.
    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().context("screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, data).with_context(|| format!("write {}", path.display()))
    }
}

/// `GET /json/list` of the DevTools port (HTTP/1.1 on 127.0.0.1; the answer has a length and
/// the connection stays open).
fn json_list(port: u16) -> Result<Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("the DevTools port closed before its answer");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}
