//! A receiver of HTTP POSTs in a namespace, standing in for what a daemon ships telemetry to
//! (an OTLP/HTTP collector, an Elasticsearch `_bulk` endpoint): it keeps every request's path
//! and body and answers each with a fixed status and body.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::NetNs;

/// One request the collector received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct Collector {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    /// Listens on `addr` inside `ns`; every request gets `status` with `answer` (JSON).
    pub fn start(ns: &NetNs, addr: SocketAddr, status: u16, answer: &str) -> Result<Self> {
        let listener = ns.run(move || TcpListener::bind(addr))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (stop_flag, kept, answer) = (stop.clone(), received.clone(), answer.to_string());
        std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (kept, answer) = (kept.clone(), answer.clone());
                        std::thread::spawn(move || {
                            let _ = serve(stream, status, &answer, &kept);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            received,
        })
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads requests off one kept-alive connection until the client closes it.
fn serve(stream: TcpStream, status: u16, answer: &str, kept: &Mutex<Vec<Received>>) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .context("request line")?
            .to_string();
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
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        if let Ok(mut kept) = kept.lock() {
            kept.push(Received {
                path,
                headers,
                body,
            });
        }
        write!(
            writer,
            "HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        )?;
        writer.flush()?;
    }
}
