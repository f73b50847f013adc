//! Network policy: the reference guide's body, its validation, numeric
//! identities for label sets, and the rules each endpoint ends up with.
//!
//! Semantics (as Kubernetes NetworkPolicy users expect; docs/policy.md):
//! a container selected by no policy for a direction allows everything in
//! that direction; once selected, only what some rule allows passes. Replies
//! of allowed connections pass (conntrack), ICMP "fragmentation needed"
//! always passes, DNS to the node's resolver is allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::model::{ValidationError, validate_name};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub protocol: String,
    #[serde(default)]
    pub port_min: Option<u16>,
    #[serde(default)]
    pub port_max: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    #[serde(default)]
    pub ports: Vec<PortRange>,
    /// Peers of an ingress rule; the guide also writes egress peers here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Peer>>,
    /// Peers of an egress rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<Peer>>,
}

/// POST /api/security/network-policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    pub name: String,
    pub selector: Selector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rules: Option<Vec<RuleBody>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rules: Option<Vec<RuleBody>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Any,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Icmp => 1,
            Self::Any => 0,
        }
    }
}

/// Who a rule lets in or out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PeerMatch {
    /// Containers carrying this identity.
    Identity(u32),
    /// Addresses in this prefix.
    Cidr(Ipv4Addr, u8),
    /// Anyone.
    Any,
}

/// One allowed (peer, protocol, port range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Allow {
    pub peer: PeerMatch,
    pub protocol: Protocol,
    pub port_min: u16,
    pub port_max: u16,
}

/// What one endpoint enforces; `None` for a direction no policy selects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndpointRules {
    pub ingress: Option<BTreeSet<Allow>>,
    pub egress: Option<BTreeSet<Allow>>,
}

fn parse_protocol(field: &str, text: &str) -> Result<Protocol, ValidationError> {
    match text.to_ascii_uppercase().as_str() {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "ICMP" => Ok(Protocol::Icmp),
        "ANY" | "ALL" => Ok(Protocol::Any),
        _ => Err(ValidationError::new(
            field,
            format!("{text:?} is not a protocol: use TCP, UDP, ICMP or ANY"),
        )),
    }
}

fn validate_selector(field: &str, selector: &Selector) -> Result<(), ValidationError> {
    for (key, value) in &selector.labels {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        };
        if !ok(key) || !ok(value) {
            return Err(ValidationError::new(
                format!("{field}.labels"),
                format!("{key}={value} is not a valid label"),
            ));
        }
    }
    Ok(())
}

impl NetworkPolicy {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("name", &self.name)?;
        validate_selector("selector", &self.selector)?;
        if self.ingress_rules.is_none() && self.egress_rules.is_none() {
            return Err(ValidationError::new(
                "ingress_rules",
                "give ingress_rules and/or egress_rules (an empty list denies everything)",
            ));
        }
        for (direction, rules) in [
            ("ingress_rules", &self.ingress_rules),
            ("egress_rules", &self.egress_rules),
        ] {
            for (i, rule) in rules.iter().flatten().enumerate() {
                let field = format!("{direction}[{i}]");
                if rule.from.is_some() && rule.to.is_some() {
                    return Err(ValidationError::new(
                        format!("{field}.to"),
                        "give the peers in either from or to, not both",
                    ));
                }
                for (j, port) in rule.ports.iter().enumerate() {
                    let field = format!("{field}.ports[{j}]");
                    let protocol = parse_protocol(&format!("{field}.protocol"), &port.protocol)?;
                    let (min, max) = (port.port_min, port.port_max);
                    if matches!(protocol, Protocol::Icmp) && (min.is_some() || max.is_some()) {
                        return Err(ValidationError::new(
                            format!("{field}.port_min"),
                            "ICMP has no ports",
                        ));
                    }
                    if min == Some(0) || max == Some(0) {
                        return Err(ValidationError::new(
                            format!("{field}.port_min"),
                            "ports are between 1 and 65535",
                        ));
                    }
                    if let (Some(min), Some(max)) = (min, max)
                        && min > max
                    {
                        return Err(ValidationError::new(
                            format!("{field}.port_max"),
                            format!("port_max {max} is below port_min {min}"),
                        ));
                    }
                    if min.is_none() && max.is_some() {
                        return Err(ValidationError::new(
                            format!("{field}.port_min"),
                            "port_max needs port_min",
                        ));
                    }
                }
                for (j, peer) in rule.peers().iter().enumerate() {
                    let field = format!("{field}.peers[{j}]");
                    match (&peer.ip_block, &peer.selector) {
                        (Some(cidr), None) => {
                            parse_cidr(cidr).map_err(|e| {
                                ValidationError::new(format!("{field}.ip_block"), e)
                            })?;
                        }
                        (None, Some(selector)) => {
                            validate_selector(&format!("{field}.selector"), selector)?
                        }
                        _ => {
                            return Err(ValidationError::new(
                                field,
                                "give exactly one of ip_block or selector",
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl RuleBody {
    fn peers(&self) -> &[Peer] {
        self.to.as_deref().or(self.from.as_deref()).unwrap_or(&[])
    }
}

/// `a.b.c.d/n` with no host bits set.
pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not a CIDR like 10.0.0.0/8"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("/{prefix} is not a prefix length from 0 to 32"))?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    if u32::from(ip) & !mask != 0 {
        return Err(format!("{text} has host bits set"));
    }
    Ok((ip, prefix))
}

/// First identity given to label sets; lower ones are reserved.
pub const FIRST_IDENTITY: u32 = 256;
/// Identities must fit the 24-bit VXLAN VNI.
pub const MAX_IDENTITY: u32 = 0x00ff_ffff;

/// Numeric identities of label sets, the same on every node that knows
/// the same apps: sets are taken in sorted order, each gets a hash of its
/// labels, moved to the next free number on a collision.
pub fn identities(
    label_sets: &BTreeSet<BTreeMap<String, String>>,
) -> BTreeMap<BTreeMap<String, String>, u32> {
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    let span = MAX_IDENTITY - FIRST_IDENTITY + 1;
    for labels in label_sets {
        let text: String = labels.iter().map(|(k, v)| format!("{k}={v};")).collect();
        let hash = text.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let mut identity = FIRST_IDENTITY + hash % span;
        while taken.contains(&identity) {
            identity = FIRST_IDENTITY + (identity - FIRST_IDENTITY + 1) % span;
        }
        taken.insert(identity);
        out.insert(labels.clone(), identity);
    }
    out
}

/// The rules of an endpoint with `labels`, given every policy and the
/// identity of every known label set.
pub fn endpoint_rules(
    labels: &BTreeMap<String, String>,
    policies: &[NetworkPolicy],
    identities: &BTreeMap<BTreeMap<String, String>, u32>,
) -> EndpointRules {
    let mut rules = EndpointRules::default();
    for policy in policies.iter().filter(|p| p.selector.matches(labels)) {
        for (direction, bodies) in [
            (&mut rules.ingress, &policy.ingress_rules),
            (&mut rules.egress, &policy.egress_rules),
        ] {
            let Some(bodies) = bodies else { continue };
            let set = direction.get_or_insert_with(BTreeSet::new);
            for body in bodies {
                let peers: Vec<PeerMatch> = if body.peers().is_empty() {
                    vec![PeerMatch::Any]
                } else {
                    body.peers()
                        .iter()
                        .flat_map(|peer| match (&peer.ip_block, &peer.selector) {
                            (Some(cidr), _) => parse_cidr(cidr)
                                .map(|(ip, prefix)| vec![PeerMatch::Cidr(ip, prefix)])
                                .unwrap_or_default(),
                            (None, Some(selector)) => identities
                                .iter()
                                .filter(|(set, _)| selector.matches(set))
                                .map(|(_, id)| PeerMatch::Identity(*id))
                                .collect(),
                            (None, None) => Vec::new(),
                        })
                        .collect()
                };
                let ports: Vec<(Protocol, u16, u16)> = if body.ports.is_empty() {
                    vec![(Protocol::Any, 0, u16::MAX)]
                } else {
                    body.ports
                        .iter()
                        .filter_map(|p| {
                            let protocol = parse_protocol("", &p.protocol).ok()?;
                            let min = p.port_min.unwrap_or(0);
                            let max = p.port_max.or(p.port_min).unwrap_or(u16::MAX);
                            Some((protocol, min, max))
                        })
                        .collect()
                };
                for peer in &peers {
                    for (protocol, port_min, port_max) in &ports {
                        set.insert(Allow {
                            peer: *peer,
                            protocol: *protocol,
                            port_min: *port_min,
                            port_max: *port_max,
                        });
                    }
                }
            }
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE: &str = r#"{
        "name": "web-to-db",
        "selector": {"labels": {"app": "web"}},
        "ingress_rules": [{"ports": [{"protocol": "TCP", "port_min": 80, "port_max": 80}],
                           "from": [{"ip_block": "10.244.2.0/24"}]}],
        "egress_rules": [{"ports": [{"protocol": "TCP", "port_min": 5432, "port_max": 5432}],
                          "from": [{"selector": {"labels": {"app": "db"}}}]}]
    }"#;

    fn labels(app: &str) -> BTreeMap<String, String> {
        [("app".to_string(), app.to_string())].into()
    }

    #[test]
    fn the_guide_policy_parses_and_validates() {
        let policy: NetworkPolicy = serde_json::from_str(GUIDE).unwrap();
        policy.validate().unwrap();
        let sets: BTreeSet<_> = [labels("web"), labels("db")].into();
        let ids = identities(&sets);
        let rules = endpoint_rules(&labels("web"), &[policy], &ids);
        let ingress = rules.ingress.unwrap();
        assert!(ingress.contains(&Allow {
            peer: PeerMatch::Cidr(Ipv4Addr::new(10, 244, 2, 0), 24),
            protocol: Protocol::Tcp,
            port_min: 80,
            port_max: 80
        }));
        let egress = rules.egress.unwrap();
        assert!(egress.contains(&Allow {
            peer: PeerMatch::Identity(ids[&labels("db")]),
            protocol: Protocol::Tcp,
            port_min: 5432,
            port_max: 5432
        }));
    }

    #[test]
    fn unselected_endpoints_have_no_rules() {
        let policy: NetworkPolicy = serde_json::from_str(GUIDE).unwrap();
        let rules = endpoint_rules(&labels("db"), &[policy], &BTreeMap::new());
        assert_eq!(rules, EndpointRules::default());
    }

    #[test]
    fn bad_policies_name_the_field() {
        let cases = [
            (r#"{"name":"","selector":{},"ingress_rules":[]}"#, "name"),
            (
                r#"{"name":"p","selector":{},"ingress_rules":[{"from":[{"ip_block":"10.0.0.1/8"}]}]}"#,
                "ingress_rules[0].peers[0].ip_block",
            ),
            (
                r#"{"name":"p","selector":{},"ingress_rules":[{"ports":[{"protocol":"SCTP"}]}]}"#,
                "ingress_rules[0].ports[0].protocol",
            ),
            (
                r#"{"name":"p","selector":{},"ingress_rules":[{"ports":[{"protocol":"TCP","port_min":90,"port_max":80}]}]}"#,
                "ingress_rules[0].ports[0].port_max",
            ),
            (
                r#"{"name":"p","selector":{},"egress_rules":[{"to":[{}]}]}"#,
                "egress_rules[0].peers[0]",
            ),
            (r#"{"name":"p","selector":{}}"#, "ingress_rules"),
        ];
        for (body, field) in cases {
            let policy: NetworkPolicy = serde_json::from_str(body).unwrap();
            assert_eq!(policy.validate().unwrap_err().field, field, "{body}");
        }
        let unknown = serde_json::from_str::<NetworkPolicy>(
            r#"{"name":"p","selector":{},"ingres_rules":[]}"#,
        );
        assert!(unknown.unwrap_err().to_string().contains("ingres_rules"));
    }

    #[test]
    fn identities_are_deterministic_and_unique() {
        let sets: BTreeSet<_> = (0..500).map(|i| labels(&format!("app{i}"))).collect();
        let a = identities(&sets);
        let b = identities(&sets);
        assert_eq!(a, b);
        let unique: BTreeSet<u32> = a.values().copied().collect();
        assert_eq!(unique.len(), 500);
        assert!(
            unique
                .iter()
                .all(|id| (FIRST_IDENTITY..=MAX_IDENTITY).contains(id))
        );
    }
}
