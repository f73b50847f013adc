//! Request/response rate (netperf's TCP_RR: one connection, one byte each way per
//! transaction) and connection rate (TCP_CRR: connect, one byte each way, close) from container
//! A to a target, with a client and server of our own (netperf is not in Debian's main
//! archive). The server runs on CPU 1, the client on CPU 0. A CRR connection closes with a
//! reset (SO_LINGER 0), so that a few seconds of connections do not run out of ephemeral ports
//! in TIME_WAIT; every configuration closes the same way.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use hivemind_tests::netns::NetNs;

/// The RR/CRR server in container B; stopped when dropped.
pub(super) struct RrServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RrServer {
    /// Listens on `port` in `ns` and answers every byte it reads with one byte, one
    /// connection after the other (the client is sequential too).
    pub(super) fn start(ns: &NetNs, port: u16) -> Result<Self> {
        let listener = ns
            .run(move || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))?
            .context("rr server: bind")?;
        // A blocking accept that gives up every 100 ms to look at the stop flag (SO_RCVTIMEO
        // applies to accept): a polling loop would cap the connection rate at its sleep.
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        set_socket_option(&listener, libc::SO_RCVTIMEO, &timeout, "SO_RCVTIMEO")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            pin_to_cpu(1);
            while !flag.load(Ordering::Relaxed) {
                if let Ok((conn, _)) = listener.accept() {
                    serve(conn, &flag);
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RrServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut conn: TcpStream, stop: &AtomicBool) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let mut byte = [0u8; 1];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut byte) {
            Ok(1) => {
                if conn.write_all(&byte).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            _ => return,
        }
    }
}

/// Transactions per second over one connection for `seconds`.
pub(super) fn tcp_rr(ns: &NetNs, target: SocketAddr, seconds: u32) -> Result<f64> {
    ns.run(move || -> Result<f64> {
        pin_to_cpu(0);
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(3))
            .with_context(|| format!("rr: connect {target}"))?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut byte = [7u8; 1];
        let (start, mut done) = (Instant::now(), 0u64);
        while start.elapsed() < Duration::from_secs(u64::from(seconds)) {
            conn.write_all(&byte)?;
            conn.read_exact(&mut byte).context("rr: answer")?;
            done += 1;
        }
        Ok(done as f64 / start.elapsed().as_secs_f64())
    })?
}

/// Connections per second (connect, one byte each way, reset) for `seconds`.
pub(super) fn tcp_crr(ns: &NetNs, target: SocketAddr, seconds: u32) -> Result<f64> {
    ns.run(move || -> Result<f64> {
        pin_to_cpu(0);
        let (start, mut done) = (Instant::now(), 0u64);
        let mut byte = [7u8; 1];
        while start.elapsed() < Duration::from_secs(u64::from(seconds)) {
            let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(3))
                .with_context(|| format!("crr: connect {target} (after {done})"))?;
            conn.set_nodelay(true)?;
            conn.set_read_timeout(Some(Duration::from_secs(3)))?;
            reset_on_close(&conn)?;
            conn.write_all(&byte)?;
            conn.read_exact(&mut byte).context("crr: answer")?;
            done += 1;
        }
        Ok(done as f64 / start.elapsed().as_secs_f64())
    })?
}

/// SO_LINGER {on, 0}: close sends a reset and leaves no TIME_WAIT behind.
fn reset_on_close(conn: &TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_socket_option(conn, libc::SO_LINGER, &linger, "SO_LINGER")
}

/// `setsockopt(SOL_SOCKET, option, value)` on `socket`; `name` names the option in the error.
fn set_socket_option<T>(
    socket: &impl AsRawFd,
    option: libc::c_int,
    value: &T,
    name: &str,
) -> Result<()> {
    // SAFETY: a plain setsockopt on a socket the caller owns, with a value of the size passed.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    ensure!(ret == 0, "{name}: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Pins the calling thread to `cpu` (best effort: a machine with one CPU keeps both on it).
fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET and sched_setaffinity only touch it and the
    // calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
