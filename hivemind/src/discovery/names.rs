//! Which name a query asks for: pure classification of a lowercased query
//! name against the cluster domain and the directory, no DNS types.

use std::net::Ipv4Addr;

use super::{Endpoint, HEADLESS_LABEL, Protocol, ServiceDirectory};

/// What a query name refers to.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Target {
    /// The cluster domain itself.
    Apex,
    /// `<service>.<domain>` or a custom service domain.
    Vip { ip: Ipv4Addr, in_domain: bool },
    /// `_<port>._<proto>.<service>.<domain>`, the service exposing that port.
    Srv {
        service: String,
        port: u16,
        endpoints: Vec<Endpoint>,
    },
    /// `endpoints.<service>.<domain>`.
    Headless(Vec<Endpoint>),
    /// `<container>.<service>.<domain>`.
    Container(Ipv4Addr),
    /// Inside the domain but nothing by that name.
    NxDomain,
    /// Outside the domain and unknown to the directory: forward.
    Outside,
}

/// Classifies `qname` (lowercase, no trailing dot) against `domain`
/// (lowercase, no trailing dot).
pub(super) fn classify(qname: &str, domain: &str, directory: &dyn ServiceDirectory) -> Target {
    let relative = if qname == domain {
        return Target::Apex;
    } else {
        qname
            .strip_suffix(domain)
            .and_then(|rest| rest.strip_suffix('.'))
    };
    let Some(relative) = relative.filter(|r| !r.is_empty()) else {
        return match directory.lookup(qname) {
            Some(service) => Target::Vip {
                ip: service.vip,
                in_domain: false,
            },
            None => Target::Outside,
        };
    };

    if let Some(service) = directory.lookup(relative) {
        return Target::Vip {
            ip: service.vip,
            in_domain: true,
        };
    }
    let Some((first, rest)) = relative.split_once('.') else {
        return Target::NxDomain;
    };
    if let Some(port) = first.strip_prefix('_') {
        return classify_srv(port, rest, directory);
    }
    let Some(service) = directory.lookup(rest) else {
        return Target::NxDomain;
    };
    if first == HEADLESS_LABEL {
        return Target::Headless(service.endpoints);
    }
    service
        .endpoints
        .iter()
        .find(|endpoint| endpoint.name.eq_ignore_ascii_case(first))
        .map_or(Target::NxDomain, |endpoint| Target::Container(endpoint.ip))
}

/// `port` is the first label without its underscore, `rest` is
/// `_<proto>.<service>`.
fn classify_srv(port: &str, rest: &str, directory: &dyn ServiceDirectory) -> Target {
    let Some((proto, service_name)) = rest.split_once('.') else {
        return Target::NxDomain;
    };
    let protocol = match proto {
        "_tcp" => Protocol::Tcp,
        "_udp" => Protocol::Udp,
        _ => return Target::NxDomain,
    };
    let (Ok(port), Some(service)) = (port.parse::<u16>(), directory.lookup(service_name)) else {
        return Target::NxDomain;
    };
    if !service.ports.contains(&(port, protocol)) {
        return Target::NxDomain;
    }
    Target::Srv {
        service: service_name.to_owned(),
        port,
        endpoints: service.endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::ServiceAnswer;

    struct Fake;

    impl ServiceDirectory for Fake {
        fn lookup(&self, name: &str) -> Option<ServiceAnswer> {
            let vip = match name {
                "web" => Ipv4Addr::new(10, 96, 0, 1),
                "app.example.com" => Ipv4Addr::new(10, 96, 0, 2),
                _ => return None,
            };
            Some(ServiceAnswer {
                vip,
                ports: vec![(80, Protocol::Tcp), (53, Protocol::Udp)],
                endpoints: vec![Endpoint {
                    name: "c1".to_owned(),
                    ip: Ipv4Addr::new(10, 0, 0, 5),
                }],
            })
        }
    }

    const D: &str = "hivemind.local";

    #[test]
    fn service_and_custom_domain_give_the_vip() {
        assert_eq!(
            classify("web.hivemind.local", D, &Fake),
            Target::Vip {
                ip: Ipv4Addr::new(10, 96, 0, 1),
                in_domain: true
            }
        );
        assert_eq!(
            classify("app.example.com", D, &Fake),
            Target::Vip {
                ip: Ipv4Addr::new(10, 96, 0, 2),
                in_domain: false
            }
        );
    }

    #[test]
    fn srv_needs_a_declared_port_and_protocol() {
        assert!(matches!(
            classify("_80._tcp.web.hivemind.local", D, &Fake),
            Target::Srv { port: 80, .. }
        ));
        assert!(matches!(
            classify("_53._udp.web.hivemind.local", D, &Fake),
            Target::Srv { port: 53, .. }
        ));
        for name in [
            "_80._udp.web.hivemind.local",
            "_81._tcp.web.hivemind.local",
            "_http._tcp.web.hivemind.local",
            "_80._sctp.web.hivemind.local",
            "_80._tcp.db.hivemind.local",
            "_80.web.hivemind.local",
        ] {
            assert_eq!(classify(name, D, &Fake), Target::NxDomain, "{name}");
        }
    }

    #[test]
    fn headless_and_container_names() {
        assert_eq!(
            classify("endpoints.web.hivemind.local", D, &Fake),
            Target::Headless(vec![Endpoint {
                name: "c1".to_owned(),
                ip: Ipv4Addr::new(10, 0, 0, 5)
            }])
        );
        assert_eq!(
            classify("c1.web.hivemind.local", D, &Fake),
            Target::Container(Ipv4Addr::new(10, 0, 0, 5))
        );
        assert_eq!(
            classify("c2.web.hivemind.local", D, &Fake),
            Target::NxDomain
        );
    }

    #[test]
    fn apex_unknown_and_outside() {
        assert_eq!(classify("hivemind.local", D, &Fake), Target::Apex);
        assert_eq!(classify("db.hivemind.local", D, &Fake), Target::NxDomain);
        assert_eq!(classify("example.org", D, &Fake), Target::Outside);
        // A suffix match must fall on a label boundary.
        assert_eq!(classify("xhivemind.local", D, &Fake), Target::Outside);
        assert_eq!(classify("local", D, &Fake), Target::Outside);
    }
}
