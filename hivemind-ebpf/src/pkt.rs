//! One read of an Ethernet + IPv4 (+ first L4 bytes) frame per TC program run, by direct packet
//! access (`data` / `data_end`); the headers are pulled into the linear area first when they are
//! not there already. `policy`, `lb` and `tunnel` derive their own views from [`Headers`], with
//! the same verdicts as reading each field from the packet with `bpf_skb_load_bytes`.

#[cfg(not(target_arch = "bpf"))]
use core::ptr::read_unaligned;

use aya_ebpf::programs::TcContext;
use hivemind_common::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

pub(crate) const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
/// Ethernet + the fixed part of the IPv4 header.
const FIXED_LEN: usize = ETH_HLEN + 20;
/// Bytes of the L4 header kept (ports, or ICMP type and code).
const L4_BYTES: usize = 4;
/// Fragment offset of the IPv4 flags/offset field.
const IP_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS: usize = 13;
pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

/// An IPv4 header at least 20 bytes long with version 4 and IHL >= 5.
#[derive(Clone, Copy)]
pub(crate) struct Ipv4 {
    /// Network byte order.
    pub(crate) saddr: u32,
    /// Network byte order.
    pub(crate) daddr: u32,
    pub(crate) proto: u8,
    /// The flags/offset field, host byte order.
    pub(crate) frag: u16,
    /// The IP id, as on the wire (network order).
    pub(crate) id: u16,
    /// Offset of the L4 header (after the IPv4 options).
    pub(crate) l4_off: usize,
    /// Whether the packet holds the whole IPv4 header (options included).
    pub(crate) complete: bool,
    /// Bytes of the packet from `l4_off` on (0 if it ends before).
    pub(crate) l4_avail: usize,
    /// The first bytes of the L4 header as on the wire; only those below `l4_avail` are read,
    /// and only for TCP, UDP and ICMP packets that are not later fragments.
    pub(crate) l4: [u8; L4_BYTES],
    /// The TCP flags byte (0 for other protocols, later fragments and short headers).
    pub(crate) tcp_flags: u8,
}

impl Ipv4 {
    /// The 16-bit word at `offset` of the L4 header as read from the wire (network order).
    #[inline(always)]
    pub(crate) fn l4_u16(&self, offset: usize) -> u16 {
        u16::from_ne_bytes([self.l4[offset], self.l4[offset + 1]])
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Headers {
    /// Shorter than an Ethernet header, or not IPv4 by its EtherType.
    NotIpv4,
    /// IPv4 by its EtherType, but shorter than Ethernet + 20 bytes, or a version other than 4
    /// or an IHL below 5.
    Malformed,
    Ipv4(Ipv4),
}

/// Makes sure the first `want` bytes (no more than the packet holds) are in the linear area.
#[inline(always)]
fn linearize(ctx: &TcContext, want: usize) {
    if ctx.data() + want > ctx.data_end() {
        // A failure leaves the bytes out of reach: the reads below then see a short packet.
        let _ = ctx.pull_data(want as u32);
    }
}

/// The start of the linear area if its first `len` bytes are there, else `None`.
#[inline(always)]
fn linear(ctx: &TcContext, len: usize) -> Option<usize> {
    let start = ctx.data();
    if start + len > ctx.data_end() {
        return None;
    }
    Some(start)
}

/// The address of `offset` (not a constant) in the linear area if `len` bytes from there are in
/// it. The address is computed first and checked as `address + len` so that the verifier ties
/// the range to the very register the loads use (LLVM could otherwise fold `offset + len` and
/// check a different pointer).
#[inline(always)]
fn linear_at(ctx: &TcContext, offset: usize, len: usize) -> Option<usize> {
    #[allow(unused_mut)]
    let mut addr = ctx.data() + offset;
    #[cfg(target_arch = "bpf")]
    // SAFETY: an empty instruction sequence: keeps `addr` opaque to the optimizer.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) addr, options(nomem, nostack, preserves_flags));
    }
    if addr + len > ctx.data_end() {
        return None;
    }
    Some(addr)
}

/// One load of a `u8` / `u16` / `u32` (by the type's name) at `addr`, as on the wire (native
/// order of the bytes), zero-extended. One instruction of any alignment: the verifier does not
/// ask packet loads to be aligned (no strict alignment) and the JIT emits a plain load, where
/// LLVM would split an unaligned read into byte loads. `addr` must lie inside a range of the
/// linear area checked against `data_end`.
macro_rules! load {
    (u8, $addr:expr) => {
        load!(@ "u8", u8, $addr)
    };
    (u16, $addr:expr) => {
        load!(@ "u16", u16, $addr)
    };
    (u32, $addr:expr) => {
        load!(@ "u32", u32, $addr)
    };
    (@ $width:literal, $ty:ty, $addr:expr) => {{
        let addr: usize = $addr;
        #[cfg(target_arch = "bpf")]
        let value = {
            let value: u64;
            // SAFETY: the caller checked the bytes against `data_end`; a plain load.
            unsafe {
                core::arch::asm!(
                    concat!("{0} = *(", $width, " *)({1} + 0)"),
                    lateout(reg) value,
                    in(reg) addr,
                    options(readonly, nostack, preserves_flags),
                );
            }
            value as $ty
        };
        #[cfg(not(target_arch = "bpf"))]
        // SAFETY: as above.
        let value = unsafe { read_unaligned(addr as *const $ty) };
        value
    }};
}

/// What host routing reads of a frame besides [`Headers`]: the destination MAC as the first two
/// bytes and the last four as on the wire, and the IPv4 TTL/protocol word as on the wire.
#[derive(Clone, Copy)]
pub(crate) struct L2Fields {
    pub(crate) dst_mac_head: u16,
    pub(crate) dst_mac_tail: u32,
    pub(crate) ttl_proto: u16,
}

impl L2Fields {
    #[inline(always)]
    pub(crate) fn ttl(&self) -> u8 {
        self.ttl_proto.to_ne_bytes()[0]
    }
}

/// The [`L2Fields`] of a frame `parse` found to be IPv4 (its fixed header is linear then).
#[inline(always)]
pub(crate) fn l2_fields(ctx: &TcContext) -> Option<L2Fields> {
    let start = linear(ctx, FIXED_LEN)?;
    Some(L2Fields {
        dst_mac_head: load!(u16, start),
        dst_mac_tail: load!(u32, start + 2),
        ttl_proto: load!(u16, start + ETH_HLEN + 8),
    })
}

/// The EtherType of the frame (its Ethernet header is linear after `parse`).
#[inline(always)]
pub(crate) fn ethertype(ctx: &TcContext) -> Option<u16> {
    let start = linear(ctx, ETH_HLEN)?;
    Some(u16::from_be(load!(u16, start + ETH_HLEN - 2)))
}

/// The source MAC of the frame as its first two bytes and last four, as on the wire.
#[inline(always)]
pub(crate) fn source_mac(ctx: &TcContext) -> Option<(u16, u32)> {
    let start = linear(ctx, ETH_HLEN)?;
    Some((load!(u16, start + 6), load!(u32, start + 8)))
}

/// The Internet checksum `check` after one 16-bit word of what it covers changed from `old`
/// to `new` (RFC 1624: HC' = ~(~HC + ~m + m')); all three as on the wire.
#[inline(always)]
pub(crate) fn csum_replace2(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Reads the headers of the frame.
#[inline(always)]
pub(crate) fn parse(ctx: &TcContext) -> Headers {
    let len = ctx.len() as usize;
    if len < ETH_HLEN {
        return Headers::NotIpv4;
    }
    linearize(ctx, if len < FIXED_LEN { ETH_HLEN } else { FIXED_LEN });
    let Some(start) = linear(ctx, ETH_HLEN) else {
        return Headers::NotIpv4;
    };
    if u16::from_be(load!(u16, start + ETH_HLEN - 2)) != ETH_P_IP {
        return Headers::NotIpv4;
    }
    if len < FIXED_LEN {
        return Headers::Malformed;
    }
    let Some(start) = linear(ctx, FIXED_LEN) else {
        return Headers::Malformed;
    };
    let ip = start + ETH_HLEN;
    let version_ihl = load!(u8, ip);
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < 20 {
        return Headers::Malformed;
    }
    let l4_off = ETH_HLEN + header_len;
    let frag = u16::from_be(load!(u16, ip + 6));
    let proto = load!(u8, ip + 9);
    let mut h = Ipv4 {
        // Loaded as on the wire: network order.
        saddr: load!(u32, ip + 12),
        daddr: load!(u32, ip + 16),
        proto,
        frag,
        id: load!(u16, ip + 4),
        l4_off,
        complete: len >= l4_off,
        l4_avail: len.saturating_sub(l4_off),
        l4: [0; L4_BYTES],
        tcp_flags: 0,
    };
    let wants_l4 = matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP)
        && frag & IP_FRAG_OFFSET_MASK == 0;
    if wants_l4 && h.l4_avail >= 2 {
        if h.l4_avail >= L4_BYTES {
            linearize(ctx, l4_off + L4_BYTES);
            match linear_at(ctx, l4_off, L4_BYTES) {
                Some(l4) => h.l4 = load!(u32, l4).to_ne_bytes(),
                None => h.l4_avail = 0,
            }
        } else {
            linearize(ctx, l4_off + 2);
            match linear_at(ctx, l4_off, 2) {
                Some(l4) => {
                    let [a, b] = load!(u16, l4).to_ne_bytes();
                    h.l4[0] = a;
                    h.l4[1] = b;
                }
                None => h.l4_avail = 0,
            }
        }
    }
    if wants_l4 && proto == IPPROTO_TCP && h.l4_avail > TCP_FLAGS {
        h.tcp_flags = tcp_flags(ctx, l4_off);
    }
    Headers::Ipv4(h)
}

/// The flags byte of the TCP header at `l4_off` (0 if it cannot be read). A BPF subprogram,
/// not inlined: inlined into `parse` at its several call sites of one program, the toolchain
/// emitted two BTF line records for one instruction and the kernel refused
/// `hm_overlay_egress` ("Invalid line_info[46].insn_off:130 (prev_offset:130)").
#[inline(never)]
fn tcp_flags(ctx: &TcContext, l4_off: usize) -> u8 {
    linearize(ctx, l4_off + TCP_FLAGS + 1);
    match linear_at(ctx, l4_off + TCP_FLAGS, 1) {
        Some(flags) => load!(u8, flags),
        None => 0,
    }
}
