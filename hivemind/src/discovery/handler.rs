//! The hickory request handler: validates a parsed query, answers names in
//! the cluster domain from the directory and forwards the rest.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::Semaphore;

use super::names::{Target, classify};
use super::ratelimit::LogLimiter;
use super::{DiscoveryError, Endpoint, ServiceDirectory, forward};

/// UDP payload size advertised to EDNS clients (the DNS flag day value).
const EDNS_PAYLOAD: u16 = 1232;
/// Forwards in flight at once; past this, queries get SERVFAIL at once, so
/// a flood of outside names cannot pile up sockets and tasks.
const MAX_FORWARDS: usize = 256;

/// What to send back for one request.
enum Outcome {
    /// A header-only error response.
    Error(ResponseCode),
    /// An authoritative answer from the directory.
    Local {
        code: ResponseCode,
        answers: Vec<Record>,
        additionals: Vec<Record>,
        /// Put the cluster SOA in the authority section (negative answers
        /// inside the domain, so resolvers cache them for the TTL).
        soa: bool,
    },
    /// An upstream's reply.
    Forwarded(Box<Message>),
}

pub(super) struct Handler {
    directory: Arc<dyn ServiceDirectory>,
    /// Lowercase, no trailing dot.
    domain: String,
    ttl: u32,
    upstreams: Vec<SocketAddr>,
    soa: Record,
    /// For what a client can trigger: malformed queries, failed sends.
    client_log: LogLimiter,
    /// For upstream failures.
    upstream_log: LogLimiter,
    forwards: Semaphore,
}

impl Handler {
    pub(super) fn new(
        directory: Arc<dyn ServiceDirectory>,
        domain: &str,
        ttl: u32,
        upstreams: Vec<SocketAddr>,
    ) -> Result<Handler, DiscoveryError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let invalid = |message: String| DiscoveryError::InvalidDomain {
            domain: domain.clone(),
            message,
        };
        if domain.is_empty() {
            return Err(invalid("empty".to_owned()));
        }
        let fqdn = |name: String| Name::from_ascii(name).map_err(|e| invalid(e.to_string()));
        let apex = fqdn(format!("{domain}."))?;
        let soa = SOA::new(
            fqdn(format!("ns.dns.{domain}."))?,
            fqdn(format!("hostmaster.{domain}."))?,
            1,
            7200,
            1800,
            86400,
            ttl,
        );
        Ok(Handler {
            directory,
            ttl,
            upstreams,
            soa: Record::from_rdata(apex, ttl, RData::SOA(soa)),
            client_log: LogLimiter::new(Duration::from_secs(10), 10),
            upstream_log: LogLimiter::new(Duration::from_secs(10), 10),
            forwards: Semaphore::new(MAX_FORWARDS),
            domain,
        })
    }

    async fn decide(&self, request: &Request) -> Outcome {
        if request.metadata.op_code != OpCode::Query {
            self.reject(request, "opcode not implemented");
            return Outcome::Error(ResponseCode::NotImp);
        }
        let [query] = request.queries.queries() else {
            self.reject(request, "not exactly one question");
            return Outcome::Error(ResponseCode::FormErr);
        };
        if query.query_class() != DNSClass::IN {
            self.reject(request, "class not IN");
            return Outcome::Error(ResponseCode::Refused);
        }
        let qtype = query.query_type();
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            self.reject(request, "zone transfer");
            return Outcome::Error(ResponseCode::NotImp);
        }
        let owner = query.original().name().clone();
        let qname = Name::from(query.name()).to_ascii().to_ascii_lowercase();
        let qname = qname.trim_end_matches('.');
        match classify(qname, &self.domain, self.directory.as_ref()) {
            Target::Outside => self.forward(request).await,
            target => self.local(target, &owner, qtype),
        }
    }

    fn local(&self, target: Target, owner: &Name, qtype: RecordType) -> Outcome {
        let wants_a = matches!(qtype, RecordType::A | RecordType::ANY);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let mut in_domain = true;
        match target {
            Target::NxDomain => {
                return Outcome::Local {
                    code: ResponseCode::NXDomain,
                    answers,
                    additionals,
                    soa: true,
                };
            }
            Target::Apex => {
                if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    answers.push(self.soa.clone());
                }
            }
            Target::Vip { ip, in_domain: d } => {
                in_domain = d;
                if wants_a {
                    answers.push(self.a(owner.clone(), ip));
                }
            }
            Target::Container(ip) => {
                if wants_a {
                    answers.push(self.a(owner.clone(), ip));
                }
            }
            Target::Headless(endpoints) => {
                if wants_a {
                    answers.extend(endpoints.iter().map(|e| self.a(owner.clone(), e.ip)));
                }
            }
            Target::Srv {
                service,
                port,
                endpoints,
            } => {
                if matches!(qtype, RecordType::SRV | RecordType::ANY) {
                    for endpoint in &endpoints {
                        let Some(target) = self.endpoint_name(endpoint, &service) else {
                            continue;
                        };
                        let srv = SRV::new(0, 1, port, target.clone());
                        answers.push(Record::from_rdata(owner.clone(), self.ttl, RData::SRV(srv)));
                        additionals.push(self.a(target, endpoint.ip));
                    }
                }
            }
            // Handled by the caller; answering it here would be a bug, so
            // fail the query rather than the daemon.
            Target::Outside => return Outcome::Error(ResponseCode::ServFail),
        }
        Outcome::Local {
            code: ResponseCode::NoError,
            soa: answers.is_empty() && in_domain,
            answers,
            additionals,
        }
    }

    async fn forward(&self, request: &Request) -> Outcome {
        if self.upstreams.is_empty() {
            return Outcome::Error(ResponseCode::ServFail);
        }
        let Ok(_permit) = self.forwards.try_acquire() else {
            if let Some(suppressed) = self.upstream_log.admit() {
                tracing::warn!(
                    src = %request.src(),
                    limit = MAX_FORWARDS,
                    suppressed,
                    "dns forwards at their limit, answering servfail"
                );
            }
            return Outcome::Error(ResponseCode::ServFail);
        };
        match forward::forward(
            &self.upstreams,
            request.as_slice(),
            request.metadata.id,
            &self.upstream_log,
        )
        .await
        {
            Ok(reply) => Outcome::Forwarded(Box::new(reply)),
            Err(error) => {
                if let Some(suppressed) = self.upstream_log.admit() {
                    tracing::warn!(%error, src = %request.src(), suppressed, "dns forward failed");
                }
                Outcome::Error(ResponseCode::ServFail)
            }
        }
    }

    fn a(&self, name: Name, ip: Ipv4Addr) -> Record {
        Record::from_rdata(name, self.ttl, RData::A(A(ip)))
    }

    /// `<container>.<service>.<domain>.`, or `None` when the container id is
    /// not a valid DNS label.
    fn endpoint_name(&self, endpoint: &Endpoint, service: &str) -> Option<Name> {
        let name = format!("{}.{service}.{}.", endpoint.name, self.domain);
        match Name::from_ascii(&name) {
            Ok(name) => Some(name),
            Err(error) => {
                if let Some(suppressed) = self.client_log.admit() {
                    tracing::warn!(
                        container = %endpoint.name,
                        %service,
                        %error,
                        suppressed,
                        "container id is not a dns label, left out of srv answer"
                    );
                }
                None
            }
        }
    }

    fn reject(&self, request: &Request, reason: &'static str) {
        if let Some(suppressed) = self.client_log.admit() {
            tracing::debug!(
                src = %request.src(),
                id = request.metadata.id,
                op_code = ?request.metadata.op_code,
                questions = request.queries.len(),
                reason,
                suppressed,
                "dns query rejected"
            );
        }
    }
}

#[async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let outcome = self.decide(request).await;
        let edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = !self.upstreams.is_empty();
        let sent = match &outcome {
            Outcome::Error(code) => {
                metadata.response_code = *code;
                let response = builder.build_no_records(metadata);
                response_handle.send_response(response).await
            }
            Outcome::Local {
                code,
                answers,
                additionals,
                soa,
            } => {
                metadata.response_code = *code;
                metadata.authoritative = true;
                let soa = soa.then_some(&self.soa);
                let response = builder.build(metadata, answers, [], soa, additionals);
                response_handle.send_response(response).await
            }
            Outcome::Forwarded(reply) => {
                metadata.response_code = reply.metadata.response_code;
                metadata.recursion_available = reply.metadata.recursion_available;
                metadata.truncation = reply.metadata.truncation;
                let response = builder.build(
                    metadata,
                    &reply.answers,
                    &reply.authorities,
                    [],
                    &reply.additionals,
                );
                response_handle.send_response(response).await
            }
        };
        match sent {
            Ok(info) => info,
            Err(error) => {
                if let Some(suppressed) = self.client_log.admit() {
                    tracing::warn!(%error, src = %request.src(), suppressed, "dns response not sent");
                }
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
