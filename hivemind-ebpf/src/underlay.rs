//! Early validation of VXLAN traffic on the node's underlay interface, before the kernel
//! spends anything on it: in XDP (`hm_xdp_underlay`) or at TC ingress (`hm_tc_underlay`, for
//! veth underlays, where native XDP would turn GSO off on the peer). Both run [`validate`].
//!
//! Verdicts: IPv4 / UDP to `VXLAN_PORT` that is not a fragment is overlay traffic; it passes
//! (counted FORWARDED under `DIR_UNDERLAY`) only if the frame holds outer Ethernet + IPv4 (with
//! its options, per IHL) + UDP + VXLAN + inner Ethernet, the VXLAN flags word is exactly "I set,
//! reserved bits zero" and the VNI is allowed; otherwise it is dropped with a counted reason.
//! Everything else (not IPv4, not UDP, other ports, fragments, IPv4 headers too short to
//! classify) passes untouched and uncounted: the kernel's own checks deal with it.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    programs::{TcContext, XdpContext},
};
use hivemind_common::{DIR_UNDERLAY, VXLAN_PORT, reason};

use crate::{metrics, nat, tunnel};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
const UDP_HLEN: usize = 8;
const VXLAN_HLEN: usize = 8;
/// The most the checks read: outer Ethernet, IPv4 with the longest options, UDP, VXLAN and
/// the inner Ethernet header.
const MAX_HEADERS: usize = ETH_HLEN + 60 + UDP_HLEN + VXLAN_HLEN + ETH_HLEN;
/// More-fragments flag and fragment offset of the IPv4 flags/offset field.
const IP_MF_OFFSET: u16 = 0x3fff;
/// First byte of the VXLAN header: only the I (valid VNI) flag.
const VXLAN_FLAGS_I: u8 = 0x08;

/// The bytes a program can read directly: `start..end` of the frame.
pub(crate) trait Frame {
    fn start(&self) -> usize;
    fn end(&self) -> usize;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
}

/// What [`validate`] found.
#[derive(Clone, Copy)]
pub(crate) enum Verdict {
    /// Not overlay traffic: passes uncounted.
    NotOverlay,
    /// Well-formed VXLAN with an allowed VNI.
    Valid,
    /// Overlay traffic to drop, with the reason.
    Drop(u8),
}

/// XDP: validates and counts the frame.
#[inline(always)]
pub(crate) fn xdp(ctx: &XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    if count(validate(ctx), bytes) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// TC ingress: pulls the headers into the linear area, then validates and counts the packet
/// (a GSO packet counts once, with all its bytes); what is not overlay traffic meets the
/// reverse NAT of masqueraded flows (`nat::ingress`).
#[inline(always)]
pub(crate) fn tc(ctx: &TcContext) -> i32 {
    let len = ctx.len() as usize;
    let want = if len < MAX_HEADERS { len } else { MAX_HEADERS };
    if ctx.data() + want > ctx.data_end() {
        // A failure leaves the bytes out of reach: the checks then see a short frame.
        let _ = ctx.pull_data(want as u32);
    }
    match validate(ctx) {
        Verdict::NotOverlay => nat::ingress(ctx),
        verdict if count(verdict, len as u64) => TC_ACT_OK,
        _ => TC_ACT_SHOT,
    }
}

/// Counts the verdict under `DIR_UNDERLAY`; whether the frame passes.
#[inline(always)]
fn count(verdict: Verdict, bytes: u64) -> bool {
    match verdict {
        Verdict::NotOverlay => true,
        Verdict::Valid => {
            metrics::count_node(DIR_UNDERLAY, reason::FORWARDED, bytes);
            true
        }
        Verdict::Drop(why) => {
            metrics::count(0, DIR_UNDERLAY, why, bytes);
            false
        }
    }
}

/// `N` bytes at `offset` of the packet, or `None` if the packet is shorter.
#[inline(always)]
fn bytes_at<const N: usize>(ctx: &impl Frame, offset: usize) -> Option<[u8; N]> {
    let start = ctx.start();
    let end = ctx.end();
    if start + offset + N > end {
        return None;
    }
    // SAFETY: the N bytes at `start + offset` were just checked to lie inside the packet;
    // read_unaligned because packet data has no alignment guarantee.
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const [u8; N]) })
}

#[inline(always)]
pub(crate) fn validate(ctx: &impl Frame) -> Verdict {
    let Some(udp_offset) = vxlan_udp_offset(ctx) else {
        return Verdict::NotOverlay;
    };
    match check_vxlan(ctx, udp_offset + UDP_HLEN) {
        Ok(()) => Verdict::Valid,
        Err(why) => Verdict::Drop(why),
    }
}

/// The offset of the UDP header if the frame is an unfragmented IPv4 / UDP datagram to the
/// VXLAN port, `None` for anything that is not overlay traffic.
#[inline(always)]
fn vxlan_udp_offset(ctx: &impl Frame) -> Option<usize> {
    let [t0, t1] = bytes_at::<2>(ctx, 12)?;
    if u16::from_be_bytes([t0, t1]) != ETH_P_IP {
        return None;
    }
    let ip: [u8; 20] = bytes_at(ctx, ETH_HLEN)?;
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || header_len < 20 || ip[9] != IPPROTO_UDP {
        return None;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & IP_MF_OFFSET != 0 {
        // A fragment: only the first one has the UDP header; reassembly is the kernel's.
        return None;
    }
    let udp_offset = ETH_HLEN + header_len;
    let [_, _, p0, p1] = bytes_at::<4>(ctx, udp_offset)?;
    (u16::from_be_bytes([p0, p1]) == VXLAN_PORT).then_some(udp_offset)
}

/// Checks the VXLAN header at `offset` and that an inner Ethernet header follows it.
#[inline(always)]
fn check_vxlan(ctx: &impl Frame, offset: usize) -> Result<(), u8> {
    // The inner Ethernet header must be there too.
    bytes_at::<ETH_HLEN>(ctx, offset + VXLAN_HLEN).ok_or(reason::DROP_MALFORMED_VXLAN)?;
    let vxlan: [u8; VXLAN_HLEN] = bytes_at(ctx, offset).ok_or(reason::DROP_MALFORMED_VXLAN)?;
    if vxlan[0] != VXLAN_FLAGS_I || vxlan[1] != 0 || vxlan[2] != 0 || vxlan[3] != 0 || vxlan[7] != 0
    {
        return Err(reason::DROP_MALFORMED_VXLAN);
    }
    tunnel::check_vni(u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]))
}
