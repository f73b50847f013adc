//! The command line: `daemon` and `web` start a node; every other command is
//! a client of a node's REST API.

mod cicd;
mod client;
mod cloud;
mod commands;
pub mod config;
mod helm;
mod output;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use client::{Client, ClientError};
pub use commands::run_client_command;

#[derive(Debug, Parser)]
#[command(
    name = "hivemind",
    version,
    about = "Container orchestration with an eBPF data plane"
)]
pub struct Cli {
    /// URL of a node's API (default: the current context of `hivemind login`, else
    /// https://127.0.0.1:3000)
    #[arg(long, global = true, env = "HIVEMIND_SERVER")]
    pub server: Option<String>,
    /// API token
    #[arg(long, global = true, env = "HIVEMIND_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The cluster CA to trust (a node's <data-dir>/pki/ca.crt; default: the one `hivemind
    /// login` pinned, else /var/lib/hivemind/pki/ca.crt when it exists)
    #[arg(long, global = true, env = "HIVEMIND_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Output format
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: TopCommand,
}

/// A switch flag's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    /// SARIF 2.1.0, for code-scanning tools (`security scan-image` only)
    Sarif,
}

#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// Run a full node: API and dashboard, containerd, networking, eBPF data plane
    Daemon(DaemonArgs),
    /// Run the API and dashboard; with --mock, on an in-memory runtime without kernel features
    Web(WebArgs),
    /// Write a container's output to its log file (containerd's shim runs this; not for users)
    #[command(name = "log-driver", hide = true)]
    LogDriver { file: std::path::PathBuf },
    /// Deploy and manage applications
    #[command(subcommand)]
    App(AppCommand),
    /// Manage named volumes
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Pull and import images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Cluster nodes
    #[command(subcommand)]
    Node(NodeCommand),
    /// Network policies
    #[command(subcommand)]
    Security(SecurityCommand),
    /// The dashboard and what observes the cluster
    #[command(subcommand)]
    Observability(ObservabilityCommand),
    /// Flow events of the answering node's data plane (new flows, denied packets)
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// Look inside the data plane: its maps with names, policy traces
    #[command(subcommand)]
    Debug(DebugCommand),
    /// API tokens, their policies, and the audit log of changes
    #[command(subcommand)]
    Acl(AclCommand),
    /// The cluster's key
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// CI/CD pipelines: test, build and deploy a branch of a git repository
    #[command(subcommand)]
    Cicd(cicd::CicdCommand),
    /// Cloud providers: instances that join the cluster, load balancers in front of it
    #[command(subcommand)]
    Cloud(cloud::CloudCommand),
    /// Helm charts: repositories, releases of real Helm v3 charts mapped onto apps
    #[command(subcommand)]
    Helm(helm::HelmCommand),
    /// Check --server and --token against the node and keep them as the current context
    /// (~/.config/hivemind/config, or $HIVEMIND_CONFIG)
    Login {
        /// Name of the context (default: the server's host and port)
        #[arg(long)]
        context: Option<String>,
        /// The SHA-256 of the cluster CA to pin (`hivemind cluster certificate` on a node);
        /// without it (or --ca-cert) the server's is shown and asked about
        #[arg(long)]
        ca_sha256: Option<String>,
    },
    /// Cluster health summary
    Health,
    /// Print the OpenAPI document of the REST API (what GET /api/openapi.json serves)
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The key gossip is sealed and replication signed with
    #[command(subcommand)]
    GossipKey(GossipKeyCommand),
    /// Tokens that admit new nodes (`hivemind daemon --join ADDR --join-token T`)
    #[command(subcommand)]
    JoinToken(JoinTokenCommand),
    /// The answering node's certificate and the cluster CA's fingerprint
    Certificate,
}

#[derive(Debug, Subcommand)]
pub enum ObservabilityCommand {
    /// Open the dashboard of --server in a browser (or print its URL where there is none)
    OpenDashboard,
    /// Every node also serves its metrics on --port at --path (plain HTTP, no token, for
    /// Prometheus); --disable closes it. The API's own /metrics stays either way
    ConfigureMetrics {
        #[arg(long, required_unless_present = "disable")]
        port: Option<u16>,
        #[arg(long, default_value = "/metrics")]
        path: String,
        #[arg(long, conflicts_with = "port")]
        disable: bool,
    },
    /// Every node exports its spans (API requests, the steps of each deploy) over OTLP/HTTP to
    /// --endpoint (a collector's base URL, or a full URL with a path); --disable stops it
    ConfigureTracing {
        /// The service.name of the spans
        #[arg(long, default_value = "hivemind")]
        service_name: String,
        #[arg(long, required_unless_present = "disable")]
        endpoint: Option<String>,
        #[arg(long, conflicts_with = "endpoint")]
        disable: bool,
    },
    /// Every node ships its containers' log lines and its own to an Elasticsearch-compatible
    /// --endpoint (its /_bulk API) into --index; --disable stops it
    ConfigureLogging {
        #[arg(long, required_unless_present = "disable")]
        endpoint: Option<String>,
        #[arg(long, default_value = "hivemind-logs")]
        index: String,
        #[arg(long, conflicts_with = "endpoint")]
        disable: bool,
    },
    /// The dashboard's traffic charts read history beyond the daemons' 15 minutes (1 h to 7 d)
    /// from the Prometheus at --prometheus that scrapes the nodes; --disable forgets it
    ConfigureDashboard {
        #[arg(long, required_unless_present = "disable")]
        prometheus: Option<String>,
        #[arg(long, conflicts_with = "prometheus")]
        disable: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// A data-plane table decoded with names: endpoints, ipcache, tunnels, services,
    /// backends, conntrack, nat or policy, with how full its maps are
    Bpf {
        #[arg(value_parser = ["endpoints", "ipcache", "tunnels", "services", "backends", "conntrack", "nat", "policy"])]
        table: String,
        /// Only rows that mention this container (id, id prefix or address)
        #[arg(long)]
        container: Option<String>,
        /// The node whose maps to read, or `all` (default: the node --server reaches)
        #[arg(long)]
        node: Option<String>,
    },
    /// The packets the node's programs decide on, live (traced only while this runs, only
    /// what the filter asks for), until interrupted
    Monitor {
        /// Packets from containers of this app
        #[arg(long)]
        from_app: Option<String>,
        /// Packets to containers of this app
        #[arg(long)]
        to_app: Option<String>,
        /// dropped: drops only
        #[arg(long, value_parser = ["dropped"])]
        verdict: Option<String>,
        /// trace: every decision; drop: drops; policy: drops by policy
        #[arg(long = "type", default_value = "trace", value_parser = ["trace", "drop", "policy"])]
        kind: String,
    },
    /// Would traffic from an app (or address) to an app (or address) pass, and which map entry
    /// (or the lack of one) decides, from the kernel's maps of the nodes involved
    PolicyTrace {
        #[arg(long, required_unless_present = "from_ip", conflicts_with = "from_ip")]
        from_app: Option<String>,
        #[arg(long)]
        from_ip: Option<std::net::Ipv4Addr>,
        #[arg(long, required_unless_present = "to_ip", conflicts_with = "to_ip")]
        to_app: Option<String>,
        #[arg(long)]
        to_ip: Option<std::net::Ipv4Addr>,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp", "icmp"])]
        protocol: String,
    },
    /// Checks the cluster's network end to end: deploys a client probe on this node and a server
    /// probe on another, tests container to container, to the service address, DNS, node to
    /// container, egress and a published port (where asked), removes the probes; exits non-zero
    /// when a check fails
    Connectivity {
        /// The probes' image, serving HTTP on --port (default: busybox's httpd, built from this
        /// node's busybox and imported where the probes run)
        #[arg(long)]
        image: Option<String>,
        /// The port the image serves HTTP on
        #[arg(long)]
        port: Option<u16>,
        /// The node of the server probe (default: another live node)
        #[arg(long)]
        server_node: Option<String>,
        /// A TCP service outside the cluster, IP:PORT, for the egress check
        #[arg(long)]
        egress: Option<String>,
        /// Publish the server probe on this port, for the published-port check
        #[arg(long)]
        publish_port: Option<u16>,
        /// Seconds each check may take (1 to 60)
        #[arg(long, default_value_t = 5)]
        check_timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// Show flow events, filtered; with --follow, as they happen
    Observe(FlowFilter),
}

/// Which flow events to show; every filter given must match.
#[derive(Debug, Clone, Default, Args)]
pub struct FlowFilter {
    /// Flows from containers of this app
    #[arg(long)]
    pub from_app: Option<String>,
    /// Flows to containers of this app
    #[arg(long)]
    pub to_app: Option<String>,
    /// allowed or denied
    #[arg(long, value_parser = ["allowed", "denied", "dropped"])]
    pub verdict: Option<String>,
    /// Flows from or to this address or CIDR block
    #[arg(long)]
    pub ip: Option<String>,
    /// Flows from or to this port
    #[arg(long)]
    pub port: Option<u16>,
    /// tcp, udp or icmp
    #[arg(long, value_parser = ["tcp", "udp", "icmp"])]
    pub protocol: Option<String>,
    /// Keep showing new events until interrupted
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum JoinTokenCommand {
    /// Make a join token; it is shown once, with the command that uses it
    Create {
        /// How long it admits nodes: 30m, 24h, 7d (at most 30d)
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
    /// List join tokens (never their secrets)
    Ls,
    /// Revoke a join token
    Revoke {
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GossipKeyCommand {
    /// The fingerprints of the answering node's keys, the primary first
    Ls,
    /// Make a new key and move every live member to it (install, use, drop)
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// API tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Custom policies a token can carry instead of a role
    #[command(subcommand)]
    Policy(AclPolicyCommand),
    /// The changes made through the answering node, newest first
    Audit {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once
    Create {
        #[arg(long)]
        name: String,
        /// admin, deployer or viewer
        #[arg(long, conflicts_with = "policy", required_unless_present = "policy")]
        role: Option<String>,
        /// The name of a custom policy (`acl policy create`)
        #[arg(long)]
        policy: Option<String>,
        /// Lifetime, e.g. 30m, 24h, 90d (default: no expiry)
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens (never their secrets)
    Ls,
    /// Revoke a token
    Revoke {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AclPolicyCommand {
    /// Create or replace a policy from a JSON or YAML file: {name, rules: [{effect, verbs, kinds, names}]}
    Create {
        #[arg(long)]
        file: PathBuf,
    },
    /// List policies
    Ls,
    /// Delete a policy
    Delete {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// List network policies
    ListNetworkPolicies,
    /// Create or replace a network policy from a JSON or YAML file (the body of POST /api/security/network-policies)
    CreateNetworkPolicy {
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete a network policy
    DeleteNetworkPolicy {
        #[arg(long)]
        name: String,
    },
    /// Create a secret from a file or a value (stored encrypted; never shown again)
    CreateSecret {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        value: SecretValueArgs,
    },
    /// List secrets: names, versions, sizes, the apps using them (never values)
    #[command(name = "list-secrets", alias = "ls")]
    ListSecrets,
    /// Give a secret a new value; running containers' secret files follow without a restart
    #[command(name = "rotate-secret", alias = "rotate")]
    RotateSecret {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        value: SecretValueArgs,
    },
    /// Delete a secret no app uses
    #[command(name = "delete-secret", alias = "delete")]
    DeleteSecret {
        #[arg(long)]
        name: String,
    },
    /// Certificates the HTTPS ingress serves, chosen by the client's SNI
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Scan an image for known vulnerabilities, offline, against the imported database
    /// (the image is pulled first when the node does not have it)
    #[command(name = "scan-image")]
    ScanImage {
        #[arg(long)]
        image: String,
        /// Scan again rather than show the result kept for the image and database
        #[arg(long)]
        refresh: bool,
    },
    /// The vulnerability database scans read (OSV data, imported once, replicated)
    #[command(subcommand)]
    Vulndb(VulnDbCommand),
    /// The cluster's scan policy for deploys (a deploy's --scan-policy overrides it)
    #[command(subcommand, name = "scan-policy")]
    ScanPolicy(ScanPolicyCommand),
    /// Keys whose cosign signatures admit images (--require-signature)
    #[command(subcommand)]
    Trust(TrustCommand),
}

#[derive(Debug, Subcommand)]
pub enum ScanPolicyCommand {
    /// Set it: warn scans each deploy's image and records the findings on the app; block also
    /// refuses findings of --max-severity or worse; off scans nothing
    Set {
        #[arg(long, value_enum)]
        mode: crate::vuln::ScanMode,
        /// The least severity that breaks it (low, medium, high, critical; default high)
        #[arg(long)]
        max_severity: Option<String>,
        /// Only findings a fix exists for break it
        #[arg(long)]
        only_fixed: bool,
        /// Every deploy needs a cosign signature a trusted key verifies
        #[arg(long)]
        require_signature: bool,
    },
    /// Show it
    Show,
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust a public key's cosign signatures (ECDSA P-256, PEM: cosign.pub)
    AddKey {
        #[arg(long)]
        name: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// List the trusted keys
    #[command(alias = "list")]
    Ls,
    /// Stop trusting a key
    #[command(alias = "delete")]
    Rm {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VulnDbCommand {
    /// Import OSV data: a zip of OSV records as osv.dev publishes each ecosystem (Debian,
    /// Alpine, crates.io, npm, PyPI, Go), one record, or a JSON array; the ecosystems in the
    /// file replace what the database held of them
    Import {
        file: PathBuf,
        /// Days after this import when scans warn that the database is old (default 7)
        #[arg(long)]
        max_age_days: Option<u32>,
    },
    /// What the database holds per ecosystem, and how old it is
    Status,
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Add (or renew) the certificate of a domain: every node's ingress serves it on :443
    Add {
        /// The domain (an app's --service), or *.example.com
        #[arg(long)]
        domain: String,
        /// The certificate chain, PEM, leaf first
        #[arg(long)]
        cert: PathBuf,
        /// Its private key, PEM (stored encrypted like a secret)
        #[arg(long)]
        key: PathBuf,
    },
    /// List certificates: domains, names, expiry and the apps they serve
    #[command(alias = "list")]
    Ls,
    /// Remove the certificate of a domain
    #[command(alias = "delete")]
    Rm {
        #[arg(long)]
        domain: String,
    },
}

/// Where a secret's value comes from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SecretValueArgs {
    /// Read the value from this file (`-` for stdin)
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The value itself (it stays in your shell history: prefer --file)
    #[arg(long)]
    pub value: Option<String>,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Format of the daemon's log lines: text, or json (one object per line, for log shippers)
    #[arg(long, value_enum, default_value_t = crate::telemetry::LogFormat::Text)]
    pub log_format: crate::telemetry::LogFormat,
    /// Directory for state, volumes, logs (and containerd's state when the daemon starts its own)
    #[arg(long, default_value = "/var/lib/hivemind")]
    pub data_dir: PathBuf,
    /// containerd socket; when nothing answers there, the daemon starts containerd itself
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub containerd: PathBuf,
    /// This node's container subnet (default: a free /24 of --cluster-cidr)
    #[arg(long)]
    pub subnet: Option<String>,
    /// Range the nodes' container subnets come from
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// Range of service virtual IPs (every node of a cluster must use the same; it must not
    /// overlap --cluster-cidr)
    #[arg(long, default_value = "10.96.0.0/16")]
    pub service_cidr: String,
    /// MTU of the containers, the bridge and the overlay device, 576 to 9000 (default: the
    /// largest MTU of this node's own links less the 50 bytes of VXLAN): lower it when a link
    /// between the nodes carries less than this node's links (every node of a cluster should
    /// use the same)
    #[arg(long, value_parser = clap::value_parser!(u32).range(576..=9000))]
    pub mtu: Option<u32>,
    /// Name of this node (default: the hostname)
    #[arg(long)]
    pub node_name: Option<String>,
    /// k=v, repeatable: labels apps can require with --constraint
    #[arg(long = "node-label")]
    pub node_labels: Vec<String>,
    /// UDP port of the membership protocol
    #[arg(long, default_value_t = 7946)]
    pub gossip_port: u16,
    /// Address other nodes reach this one at (default: the --bind address, else the first global IPv4)
    #[arg(long)]
    pub advertise: Option<std::net::Ipv4Addr>,
    /// Gossip address (IP:PORT, port 7946 if omitted) of a node to join, repeatable
    #[arg(long = "join", value_parser = parse_join)]
    pub join: Vec<SocketAddr>,
    /// Name of the node bridge
    #[arg(long, default_value = "hm0")]
    pub bridge: String,
    /// Registry host[:port] to reach over plain HTTP (loopback registries always are)
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Where the underlay's VXLAN validation runs: auto (TC on a veth, whose peer would lose
    /// GSO under XDP; XDP elsewhere), xdp or tc
    #[arg(long, value_enum, default_value_t = crate::dataplane::UnderlayProgram::Auto)]
    pub underlay_program: crate::dataplane::UnderlayProgram,
    /// Host routing in eBPF: packets between containers are delivered (bpf_redirect_peer) and
    /// encapsulated (bpf_redirect to the VXLAN device) by the data plane itself; off hands them
    /// to the kernel's bridge and IP forwarding
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub host_routing: OnOff,
    /// Service load balancing at the socket: a connect (or datagram) to a VIP goes to a
    /// backend once, in cgroup programs on a cgroup2 hierarchy (mounted at
    /// /run/hivemind/cgroup2 if the machine has none), and the connection's packets need no
    /// translation; off, or where the kernel refuses, services are translated per packet
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub socket_lb: OnOff,
    /// Egress NAT in eBPF: containers' traffic to addresses outside the cluster leaves with
    /// this node's advertise address as its source (TCP, UDP, ICMP echo); off leaves container
    /// addresses on the wire
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub masquerade: OnOff,
    /// A destination CIDR containers reach with their own address, repeatable; the cluster
    /// and service CIDRs always are
    #[arg(long = "no-masquerade", value_name = "CIDR")]
    pub no_masquerade: Vec<String>,
    /// Pin the data plane's maps and programs on bpffs, so that policy and load balancing stay
    /// enforced while the daemon restarts (or after it crashed), and the next daemon takes the
    /// same state over; off ties them to this process
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub bpf_pins: OnOff,
    /// Directory of the pins (on bpffs; mounted at /sys/fs/bpf when nothing is)
    /// [default: /sys/fs/bpf/hivemind/<node id>]
    #[arg(long)]
    pub bpf_pin_dir: Option<PathBuf>,
    /// Port of the HTTP ingress, which routes requests by Host header to the app whose
    /// --service domain it names (0: off)
    #[arg(long, default_value_t = 80)]
    pub ingress_http_port: u16,
    /// Port of the HTTPS ingress, with the certificates of `security tls add` chosen by SNI
    /// (0: off)
    #[arg(long, default_value_t = 443)]
    pub ingress_https_port: u16,
    /// A name clients reach the API by besides this node's names and addresses (a DNS
    /// name, a load balancer); repeatable. Other Host headers are answered 421
    #[arg(long = "api-host")]
    pub api_hosts: Vec<String>,
    /// The cluster key: a member's <data-dir>/gossip.key, needed to join (gossip is sealed
    /// and replication signed with it); the first node makes one
    #[arg(long)]
    pub gossip_key_file: Option<PathBuf>,
    /// The first node of a cluster registers this admin token (hm_<id>_<secret>) instead of
    /// generating one; either way it is written to <data-dir>/admin.token
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Seconds a deletion marker is kept at least; it goes once every live node has seen it
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub tombstone_grace: u64,
    /// Join token from `hivemind cluster join-token create` on a member (with --join): the
    /// node gets the cluster's CA, key and secrets key over TLS pinned to the token's CA
    #[arg(long, env = "HIVEMIND_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// The API's certificate chain (PEM), instead of the node certificate the cluster CA signs
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM)
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Test seam: seconds this node's certificates are valid (renewed with a third left)
    #[arg(long, hide = true, default_value_t = 90 * 24 * 3600, value_parser = clap::value_parser!(u64).range(30..))]
    pub node_cert_lifetime: u64,
    /// Directory for containers' secret files; a tmpfs is mounted there unless it is one
    /// [default: /dev/shm/hivemind/<node id>]
    #[arg(long)]
    pub secrets_dir: Option<PathBuf>,
    /// Test seam: shifts this node's wall clock by this many milliseconds (negative: behind)
    #[arg(long, hide = true, default_value_t = 0, allow_hyphen_values = true)]
    pub clock_offset_ms: i64,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Port of the API and dashboard
    #[arg(long, default_value_t = 3000)]
    pub web_port: u16,
    /// Address to listen on
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: std::net::IpAddr,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Args)]
pub struct WebArgs {
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: std::net::IpAddr,
    /// In-memory runtime and no kernel features, for UI development
    #[arg(long)]
    pub mock: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

impl DaemonArgs {
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.web_port)
    }
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The image (an A/B test may leave it out: its first --variant's image is the app's)
    #[arg(long, required_unless_present = "variants")]
    pub image: Option<String>,
    #[arg(long)]
    pub name: String,
    /// Service domain for routing and discovery
    #[arg(long)]
    pub service: Option<String>,
    #[arg(long)]
    pub replicas: Option<u32>,
    /// CPUs per replica (CFS quota), e.g. 0.5
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory limit per replica, e.g. 512M
    #[arg(long)]
    pub memory: Option<String>,
    /// name:/path, repeatable
    #[arg(long = "volume")]
    pub volumes: Vec<String>,
    /// KEY=VALUE, repeatable
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// name:/path, repeatable: the secret as a read-only file (mode 0400, on a tmpfs);
    /// rotations reach running containers
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// VAR=NAME, repeatable: the secret as an environment variable (read at start, shown
    /// by `ctr` and /proc; prefer --secret)
    #[arg(long = "secret-env")]
    pub secret_env: Vec<String>,
    /// Container port, repeatable
    #[arg(long = "port")]
    pub ports: Vec<u16>,
    /// PUBLISHED:TARGET, repeatable: every node's address answers on PUBLISHED for the app's
    /// port TARGET (balanced over all ready backends, the client's address kept)
    #[arg(long = "publish", value_parser = clap::value_parser!(crate::model::PublishedPort))]
    pub publish: Vec<crate::model::PublishedPort>,
    /// How published ports answer: dsr (the default: the backend sees the client's address
    /// and replies from its own node) or snat (the backend sees the address of the node the
    /// client reached and replies through it; for underlays that refuse DSR)
    #[arg(long)]
    pub publish_mode: Option<String>,
    /// k=v, repeatable
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Run only on this node (id or name)
    #[arg(long)]
    pub node: Option<String>,
    /// Placement over nodes: spread (default) or binpack
    #[arg(long)]
    pub placement: Option<String>,
    /// k=v, repeatable: run only on nodes started with --node-label k=v
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    #[command(flatten)]
    pub health: HealthArgs,
    #[command(flatten)]
    pub strategy: StrategyArgs,
    /// Scan the image before deploying: warn (deploy, record the findings on the app) or
    /// block (refuse findings of --max-severity or worse); overrides the cluster's policy
    #[arg(long, value_enum)]
    pub scan_policy: Option<crate::vuln::ScanMode>,
    /// With --scan-policy: the least severity that breaks it (low, medium, high, critical;
    /// default high)
    #[arg(long, requires = "scan_policy")]
    pub max_severity: Option<String>,
    /// With --scan-policy: only findings a fix exists for break it
    #[arg(long, requires = "scan_policy")]
    pub only_fixed: bool,
    /// Deploy only if the image carries a cosign signature a trusted key verifies
    #[arg(long)]
    pub require_signature: bool,
}

/// How a redeploy replaces the containers.
#[derive(Debug, Args)]
pub struct StrategyArgs {
    /// simple (default: each node replaces its replicas once their successors are ready there)
    /// or rolling-update (batches across the cluster, gated on readiness)
    #[arg(long)]
    pub strategy: Option<String>,
    /// Rolling update: replicas that may be unavailable, N or P% (default 25%)
    #[arg(long)]
    pub max_unavailable: Option<String>,
    /// Rolling update: replicas that may run above the count, N or P% (default 25%)
    #[arg(long)]
    pub max_surge: Option<String>,
    /// Seconds a new container must stay ready before it counts as available (default 0)
    #[arg(long)]
    pub min_ready_time: Option<u32>,
    /// Seconds the rollout may go without progress before it fails (default 600)
    #[arg(long)]
    pub progress_deadline: Option<u32>,
    /// Go back to the replaced version by itself when the rollout fails
    #[arg(long)]
    pub auto_rollback: bool,
    /// Canary: the new version's first share of the traffic, in percent (to 0.1)
    #[arg(long)]
    pub percentage: Option<f64>,
    /// Canary: the shares that follow, in percent, e.g. 20,50,100
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<f64>,
    /// Canary: seconds each step holds before the analysis lets it go on (default 60)
    #[arg(long)]
    pub interval: Option<u32>,
    /// Blue-green: seconds every new replica must serve the preview before the switch
    /// (default 30)
    #[arg(long)]
    pub verification_timeout: Option<u32>,
    /// Blue-green: seconds the old version is kept after the switch (default 30)
    #[arg(long)]
    pub scale_down_delay: Option<u32>,
    /// Blue-green: switch only on `app rollout promote`
    #[arg(long)]
    pub manual_promotion: bool,
    /// A/B testing: one variant, "name=v1,image=web:1,percentage=50" (repeat for each; the
    /// percentages add up to 100)
    #[arg(long = "variant", id = "variants")]
    pub variants: Vec<crate::contract::VariantRequest>,
    /// A/B testing: seconds the test runs before it waits for `app rollout promote --variant`
    #[arg(long)]
    pub duration: Option<u32>,
}

/// Liveness (`--health-*`) and readiness (`--ready-*`) checks.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Liveness: command run with /bin/sh -c inside the container
    #[arg(long, conflicts_with_all = ["health_http", "health_tcp"])]
    pub health_cmd: Option<String>,
    /// Liveness: HTTP GET of this path on the first --port (else 80)
    #[arg(long, conflicts_with = "health_tcp")]
    pub health_http: Option<String>,
    /// Liveness: TCP connect to this port
    #[arg(long)]
    pub health_tcp: Option<u16>,
    #[arg(long)]
    pub health_interval: Option<String>,
    #[arg(long)]
    pub health_timeout: Option<String>,
    #[arg(long)]
    pub health_retries: Option<u32>,
    #[arg(long)]
    pub health_start_period: Option<String>,
    /// Readiness: command run with /bin/sh -c inside the container
    #[arg(long, conflicts_with_all = ["ready_http", "ready_tcp"])]
    pub ready_cmd: Option<String>,
    /// Readiness: HTTP GET of this path on the first --port (else 80)
    #[arg(long, conflicts_with = "ready_tcp")]
    pub ready_http: Option<String>,
    /// Readiness: TCP connect to this port
    #[arg(long)]
    pub ready_tcp: Option<u16>,
    #[arg(long)]
    pub ready_interval: Option<String>,
    #[arg(long)]
    pub ready_timeout: Option<String>,
    #[arg(long)]
    pub ready_retries: Option<u32>,
    #[arg(long)]
    pub ready_start_period: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Deploy an image as an app (or update an existing app)
    Deploy(Box<DeployArgs>),
    /// List apps
    Ls,
    /// List containers
    Containers,
    /// Show one container
    ContainerInfo {
        #[arg(long)]
        container_id: String,
    },
    /// Replace every container of an app (volumes keep their data)
    Restart {
        #[arg(long)]
        name: String,
    },
    /// Change the number of replicas
    Scale {
        #[arg(long)]
        name: String,
        #[arg(long)]
        replicas: u32,
    },
    /// Show an app's logs
    Logs {
        #[arg(long)]
        name: String,
        #[arg(long, short = 'f')]
        follow: bool,
        #[arg(long)]
        tail: Option<usize>,
        /// Only lines written since: an RFC 3339 time or a duration back from now (10m, 1h)
        #[arg(long)]
        since: Option<String>,
        /// Start each line with the time it was written
        #[arg(long, short = 't')]
        timestamps: bool,
    },
    /// List services: virtual IPs, DNS names, ports, endpoints
    Services,
    /// Delete an app and its containers
    Delete {
        #[arg(long)]
        name: String,
    },
    /// An app's revisions: what each deploy ran, and going back to one
    #[command(subcommand)]
    Rollout(RolloutCommand),
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Where the app's update stands: containers of the current generation (ready or not)
    /// against older ones still there, and why each waiting one is not ready
    Status {
        #[arg(long)]
        name: String,
        /// Wait up to this many seconds for the rollout to complete (exit code 1 if it does not)
        #[arg(long)]
        wait: Option<u64>,
    },
    /// The kept revisions (the last 10), oldest first, with what each changed
    History {
        #[arg(long)]
        name: String,
    },
    /// Hold a rollout in progress where it is
    Pause {
        #[arg(long)]
        name: String,
    },
    /// Go on with a paused rollout, or try a failed one again (its deadline starts again)
    Resume {
        #[arg(long)]
        name: String,
    },
    /// Stop a rollout in progress and go back to the version it replaces
    Abort {
        #[arg(long)]
        name: String,
    },
    /// Skip a canary's remaining steps (the new version takes all the traffic), switch a
    /// blue-green rollout, or deploy one variant of an A/B test as the app's one version
    Promote {
        #[arg(long)]
        name: String,
        /// The A/B test's variant to keep
        #[arg(long)]
        variant: Option<String>,
    },
    /// Deploy an earlier revision again (default: the one before the current); the replica
    /// count stays. During a rollout, undo to the version it replaces goes back at once
    Undo {
        #[arg(long)]
        name: String,
        #[arg(long)]
        to_revision: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    Create {
        #[arg(long)]
        name: String,
    },
    Ls,
    Delete {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry, showing progress
    Pull {
        #[arg(long)]
        image: String,
    },
    /// Import an OCI image archive (tar)
    Import { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the cluster's nodes
    Ls,
    /// Ask the node at --server to join the cluster of the node at ADDR (gossip IP[:PORT])
    Join {
        #[arg(value_parser = parse_join)]
        address: SocketAddr,
    },
}

/// `IP` or `IP:PORT` of a gossip endpoint; the port defaults to 7946.
pub fn parse_join(text: &str) -> Result<SocketAddr, String> {
    crate::command::parse_gossip_address(text)
}
