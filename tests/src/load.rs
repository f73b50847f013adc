//! HTTP load from inside a container's network namespace, with the host's curl (how the tests
//! reach containers): a steady client that records every answer, and bursts of new
//! connections. The rollout tests and the harness count failed requests with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

/// What the client saw: each answer's body (the greeting), or the error.
#[derive(Default)]
pub struct Answers {
    pub ok: Vec<String>,
    pub failed: Vec<String>,
}

/// Requests VIP/greeting from inside a container, one after another, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Answers>,
}

impl Load {
    pub fn start(pid: u32, vip: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("http://{vip}/greeting");
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut answers = Answers::default();
            while !flag.load(Ordering::Relaxed) {
                let output = std::process::Command::new("nsenter")
                    .arg(format!("--net=/proc/{pid}/ns/net"))
                    .args(["curl", "-sS", "--max-time", "3", "--fail", &url])
                    .output();
                match output {
                    Ok(o) if o.status.success() => answers
                        .ok
                        .push(String::from_utf8_lossy(&o.stdout).trim().to_string()),
                    Ok(o) => answers
                        .failed
                        .push(String::from_utf8_lossy(&o.stderr).trim().to_string()),
                    Err(e) => answers.failed.push(e.to_string()),
                }
            }
            answers
        });
        Self { stop, thread }
    }

    pub fn finish(self) -> Answers {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the load thread")
    }
}

/// `count` HTTP requests to VIP/greeting from the container of `pid`, each on a new
/// connection (busybox httpd closes them); the answers in order.
pub fn burst(pid: u32, vip: &str, count: usize) -> Result<Vec<String>> {
    let answers = burst_lenient(pid, vip, count);
    answers
        .into_iter()
        .enumerate()
        .map(|(i, a)| a.with_context(|| format!("request {i} of {count} failed")))
        .collect()
}

/// Like [`burst`], with `None` for a request that failed.
pub fn burst_lenient(pid: u32, vip: &str, count: usize) -> Vec<Option<String>> {
    let output = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args([
            "curl",
            "-s",
            "--max-time",
            "120",
            "--connect-timeout",
            "3",
            "-w",
            "|%{http_code}\n",
            &format!("http://{vip}/greeting?[1-{count}]"),
        ])
        .output();
    let Ok(output) = output else {
        return vec![None; count];
    };
    // Each answer is the greeting's line, then `|200`; a failed request is a bare `|000`.
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let mut answers = Vec::new();
    let mut body = String::new();
    for line in text.lines() {
        match line.rsplit_once('|') {
            Some((before, code)) if code.len() == 3 && code.chars().all(|c| c.is_ascii_digit()) => {
                body.push_str(before);
                answers.push((code == "200").then(|| body.trim().to_string()));
                body.clear();
            }
            _ => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    answers.resize(count, None);
    answers
}
