//! Upstreams from the host's resolv.conf.

use std::net::{IpAddr, SocketAddr};

/// The `nameserver` lines of a resolv.conf text, in order, deduplicated, on
/// port 53. Loopback stub resolvers (systemd-resolved's 127.0.0.53) are
/// kept: the DNS server runs in the host's network namespace and can reach
/// them; pass the result through [`non_loopback`] to drop them when asked.
/// Addresses with a zone (`fe80::1%eth0`) and unparsable lines are skipped.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut upstreams = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let addr = SocketAddr::new(ip, 53);
        if !upstreams.contains(&addr) {
            upstreams.push(addr);
        }
    }
    upstreams
}

/// `upstreams` without loopback addresses, for when the forwarding happens
/// from a namespace that cannot reach the host's stub resolver.
pub fn non_loopback(upstreams: &[SocketAddr]) -> Vec<SocketAddr> {
    upstreams
        .iter()
        .filter(|addr| !addr.ip().is_loopback())
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# generated
nameserver 127.0.0.53
options edns0 trust-ad
search example.com
nameserver 192.0.2.1 # primary
;nameserver 192.0.2.9
nameserver   2001:db8::1
nameserver fe80::1%eth0
nameserver not-an-ip
nameserver 192.0.2.1
nameserver
";

    #[test]
    fn parses_nameservers_in_order() {
        let expected: Vec<SocketAddr> = vec![
            "127.0.0.53:53".parse().expect("literal"),
            "192.0.2.1:53".parse().expect("literal"),
            "[2001:db8::1]:53".parse().expect("literal"),
        ];
        assert_eq!(upstreams_from_resolv_conf(TEXT), expected);
    }

    #[test]
    fn drops_loopback_only_when_asked() {
        let all = upstreams_from_resolv_conf(TEXT);
        let remote = non_loopback(&all);
        assert_eq!(remote.len(), 2);
        assert!(remote.iter().all(|a| !a.ip().is_loopback()));
        assert!(upstreams_from_resolv_conf("").is_empty());
    }
}
