//! The frames the benchmarks push through the programs, built the way
//! `hivemind/tests/dataplane.rs` builds them. Checksums stay zero: TC and XDP do not check them.

use std::net::Ipv4Addr;

/// VXLAN's UDP port (`hivemind_common::VXLAN_PORT`).
const VXLAN_PORT: u16 = 4789;
/// The overlay's inner MACs (`hivemind_common::OVERLAY_MAC`, `OVERLAY_SRC_MAC`).
const OVERLAY_MAC: [u8; 6] = [0x02, 0x68, 0x6d, 0x00, 0x00, 0x01];
const OVERLAY_SRC_MAC: [u8; 6] = [0x02, 0x68, 0x6d, 0x00, 0x00, 0x02];
/// The default VNI (`hivemind_common::vni::DEFAULT`).
pub const VNI: u32 = 1;

/// Unicast MACs that belong to no device: frames to them that reach a stack are dropped as
/// PACKET_OTHERHOST before IP processing.
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload_len: usize) -> Vec<u8> {
    let total = u16::try_from(20 + payload_len).unwrap_or(u16::MAX);
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h
}

fn udp_header(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    let len = u16::try_from(8 + payload_len).unwrap_or(u16::MAX);
    let mut h = sport.to_be_bytes().to_vec();
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h
}

/// Ethernet + IPv4 + UDP with `payload` bytes, from `src` to `dst`.
pub fn udp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: usize) -> Vec<u8> {
    let mut p = DST_MAC.to_vec();
    // The MAC a container of that address has: a container's program drops other sources.
    p.extend_from_slice(&hivemind_common::container_mac(src.octets()));
    p.extend_from_slice(&[0x08, 0x00]);
    p.extend(ipv4_header(src, dst, 17, 8 + payload));
    p.extend(udp_header(sport, dport, payload));
    p.extend(std::iter::repeat_n(0xab, payload));
    p
}

/// Ethernet + IPv4 + TCP (20-byte header, flags `flags`) with `payload` bytes.
pub fn tcp_frame(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    payload: usize,
) -> Vec<u8> {
    let mut p = DST_MAC.to_vec();
    p.extend_from_slice(&hivemind_common::container_mac(src.octets()));
    p.extend_from_slice(&[0x08, 0x00]);
    p.extend(ipv4_header(src, dst, 6, 20 + payload));
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&1000u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend(std::iter::repeat_n(0xab, payload));
    p
}

/// A valid VXLAN frame as the underlay receives it: outer Ethernet + IPv4 + UDP to the VXLAN
/// port, VXLAN header (I flag, `VNI`), inner Ethernet + IPv4 + UDP with `payload` bytes.
pub fn vxlan_frame(payload: usize) -> Vec<u8> {
    let mut inner = OVERLAY_MAC.to_vec();
    inner.extend_from_slice(&OVERLAY_SRC_MAC);
    inner.extend_from_slice(&[0x08, 0x00]);
    let (a, b) = (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 2));
    inner.extend(ipv4_header(a, b, 17, 8 + payload));
    inner.extend(udp_header(40000, 8080, payload));
    inner.extend(std::iter::repeat_n(0xab, payload));

    let mut vxlan = vec![0x08, 0, 0, 0];
    vxlan.extend_from_slice(&VNI.to_be_bytes()[1..]);
    vxlan.push(0);
    vxlan.extend(inner);

    let mut p = DST_MAC.to_vec();
    p.extend_from_slice(&SRC_MAC);
    p.extend_from_slice(&[0x08, 0x00]);
    let (outer_src, outer_dst) = (
        Ipv4Addr::new(192, 168, 77, 1),
        Ipv4Addr::new(192, 168, 77, 2),
    );
    p.extend(ipv4_header(outer_src, outer_dst, 17, 8 + vxlan.len()));
    p.extend(udp_header(49152, VXLAN_PORT, vxlan.len()));
    p.extend(vxlan);
    p
}
