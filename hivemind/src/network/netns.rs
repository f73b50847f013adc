//! Named network namespaces, made as `ip netns add` makes them: a thread
//! unshares its network namespace and bind-mounts it on /run/netns/NAME.

use std::fs::File;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use super::NetworkError;

fn netns_error(path: &Path, message: impl std::fmt::Display) -> NetworkError {
    NetworkError::Netns {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Creates the namespace unless it exists. Runs on a throwaway thread so the
/// caller's thread keeps its namespace.
pub fn create_netns(path: &Path) -> Result<(), NetworkError> {
    if is_netns(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| netns_error(path, e))?;
    }
    File::create(path).map_err(|e| netns_error(path, e))?;
    let target = path.to_path_buf();
    let result = std::thread::spawn(move || -> Result<(), NetworkError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| netns_error(&target, e))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| netns_error(&target, e))
    })
    .join()
    .map_err(|_| netns_error(path, "namespace thread panicked"))?;
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Unmounts and removes the namespace file; succeeds when it is gone.
pub fn remove_netns(path: &Path) -> Result<(), NetworkError> {
    if !path.exists() {
        return Ok(());
    }
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(netns_error(path, e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(netns_error(path, e)),
    }
}

/// Whether a namespace is mounted at `path` (not merely an empty file).
fn is_netns(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // nsfs files answer the NS_GET_NSTYPE ioctl; a plain file does not.
    // SAFETY: the fd is valid for the duration of the call, and
    // NS_GET_NSTYPE (0xb703) takes no argument.
    let kind = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), 0xb703) };
    kind == libc::CLONE_NEWNET
}

/// Runs `f` on a new thread inside the namespace at `path`, with a
/// single-threaded tokio runtime for netlink.
pub fn run_in_netns<T, F, Fut>(path: &Path, f: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, NetworkError>>,
{
    let target = path.to_path_buf();
    std::thread::spawn(move || -> Result<T, NetworkError> {
        let file = File::open(&target).map_err(|e| netns_error(&target, e))?;
        setns(file, CloneFlags::CLONE_NEWNET).map_err(|e| netns_error(&target, e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| netns_error(&target, e))?;
        runtime.block_on(f())
    })
    .join()
    .map_err(|_| netns_error(path, "namespace thread panicked"))?
}

/// The cookie of the calling thread's network namespace (SO_NETNS_COOKIE, Linux 5.14).
pub fn current_netns_cookie() -> std::io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: a plain socket call; the descriptor is closed below.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` has the size passed in `len`; the kernel writes at most that.
    let ret = unsafe {
        libc::getsockopt(
            socket,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    let error = std::io::Error::last_os_error();
    // SAFETY: `socket` is ours and closed once.
    unsafe { libc::close(socket) };
    if ret != 0 {
        return Err(error);
    }
    Ok(cookie)
}

/// The cookie of the network namespace mounted at `path`.
pub fn netns_cookie(path: &Path) -> Result<u64, NetworkError> {
    let target = path.to_path_buf();
    run_in_netns(path, move || async move {
        current_netns_cookie().map_err(|e| netns_error(&target, e))
    })
}
