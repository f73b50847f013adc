//! BPF_PROG_TEST_RUN through `libc::syscall`, as `hivemind/tests/dataplane.rs` calls it, plus
//! the XDP live-frames mode. Offsets are those of `union bpf_attr`'s `test` member
//! (include/uapi/linux/bpf.h).

use std::{io, os::fd::RawFd, time::Instant};

const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_F_TEST_XDP_LIVE_FRAMES` (include/uapi/linux/bpf.h: `1U << 1`).
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// Return codes the harness checks before it trusts a timing.
pub const TC_ACT_OK: u32 = 0;
pub const XDP_PASS: u32 = 2;

type Attr = [u8; 128];

fn bpf(attr: &mut Attr) -> io::Result<()> {
    // SAFETY: `attr` is a zero-initialised bpf_attr of 128 bytes (the kernel accepts a larger
    // attr whose tail is zero) that outlives the call; the pointers inside it point to buffers
    // the caller keeps alive across the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr.as_mut_ptr(),
            attr.len(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn put_u32(attr: &mut Attr, offset: usize, v: u32) {
    attr[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut Attr, offset: usize, v: u64) {
    attr[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(attr: &Attr, offset: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&attr[offset..offset + 4]);
    u32::from_ne_bytes(b)
}

fn u32_len(len: usize) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer too long"))
}

/// What one BPF_PROG_TEST_RUN call reported.
#[derive(Debug, Clone, Copy)]
pub struct RunResult {
    /// The program's return code (of the last repetition).
    pub retval: u32,
    /// The kernel's `duration`: mean nanoseconds per repetition, program only.
    pub ns_per_run: u32,
}

/// Runs `prog_fd` `repeat` times on the same copy of `packet` (the kernel copies `packet` in
/// once; every repetition sees what the previous one left in the buffer).
pub fn test_run(prog_fd: RawFd, packet: &[u8], repeat: u32) -> io::Result<RunResult> {
    let mut attr: Attr = [0; 128];
    put_u32(&mut attr, 0, prog_fd as u32); // test.prog_fd
    put_u32(&mut attr, 8, u32_len(packet.len())?); // test.data_size_in
    put_u64(&mut attr, 16, packet.as_ptr() as u64); // test.data_in
    put_u32(&mut attr, 32, repeat); // test.repeat
    bpf(&mut attr)?;
    Ok(RunResult {
        retval: get_u32(&attr, 4),      // test.retval
        ns_per_run: get_u32(&attr, 36), // test.duration
    })
}

/// Size of the `struct __sk_buff` handed in as context (larger than the kernel's; the tail is
/// zero, as the kernel requires) and the offset of its `ifindex`.
const SK_BUFF_SIZE: usize = 192;
const SK_BUFF_IFINDEX: usize = 40;

/// [`test_run`] of a TC program with a `__sk_buff` context whose `ifindex` names the interface
/// the packet is on (the kernel resolves it in the calling thread's network namespace).
pub fn test_run_on(
    prog_fd: RawFd,
    packet: &[u8],
    ifindex: u32,
    repeat: u32,
) -> io::Result<RunResult> {
    let mut ctx = [0u8; SK_BUFF_SIZE];
    ctx[SK_BUFF_IFINDEX..SK_BUFF_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    let mut attr: Attr = [0; 128];
    put_u32(&mut attr, 0, prog_fd as u32); // test.prog_fd
    put_u32(&mut attr, 8, u32_len(packet.len())?); // test.data_size_in
    put_u64(&mut attr, 16, packet.as_ptr() as u64); // test.data_in
    put_u32(&mut attr, 32, repeat); // test.repeat
    put_u32(&mut attr, 40, SK_BUFF_SIZE as u32); // test.ctx_size_in
    put_u64(&mut attr, 48, ctx.as_ptr() as u64); // test.ctx_in
    bpf(&mut attr)?;
    Ok(RunResult {
        retval: get_u32(&attr, 4),      // test.retval
        ns_per_run: get_u32(&attr, 36), // test.duration
    })
}

/// Pushes `frames` copies of `frame` through the XDP program `prog_fd` in live-frames mode
/// (`BPF_F_TEST_XDP_LIVE_FRAMES`), received on `ifindex` of the calling thread's network
/// namespace: XDP_PASS frames go up that device's stack, XDP_TX/REDIRECT are transmitted.
/// Returns the wall-clock rate in packets per second.
pub fn xdp_live_frames(prog_fd: RawFd, frame: &[u8], ifindex: u32, frames: u32) -> io::Result<f64> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex.
    let mut ctx = [0u32; 6];
    ctx[1] = u32_len(frame.len())?;
    ctx[3] = ifindex;
    let mut attr: Attr = [0; 128];
    put_u32(&mut attr, 0, prog_fd as u32); // test.prog_fd
    put_u32(&mut attr, 8, u32_len(frame.len())?); // test.data_size_in
    put_u64(&mut attr, 16, frame.as_ptr() as u64); // test.data_in
    put_u32(&mut attr, 32, frames); // test.repeat
    put_u32(&mut attr, 40, u32_len(size_of_val(&ctx))?); // test.ctx_size_in
    put_u64(&mut attr, 48, ctx.as_ptr() as u64); // test.ctx_in
    put_u32(&mut attr, 64, BPF_F_TEST_XDP_LIVE_FRAMES); // test.flags
    let start = Instant::now();
    bpf(&mut attr)?;
    let elapsed = start.elapsed().as_secs_f64();
    Ok(f64::from(frames) / elapsed)
}
