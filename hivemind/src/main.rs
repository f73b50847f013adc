//! `hivemind`: one binary for the node daemon and the CLI.

use clap::Parser;
use hivemind::cli::{Cli, TopCommand, run_client_command};
use hivemind::serve::{ServeOptions, serve};
use hivemind::state::Subnet;

fn main() {
    let cli = Cli::parse();
    if let TopCommand::LogDriver { file } = &cli.command {
        // Run by containerd's shim for each container: no runtime, no logging of its own.
        match hivemind::logfile::run_driver(file) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("hivemind log-driver {}: {e}", file.display());
                std::process::exit(1);
            }
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(cli));
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    let options = match &cli.command {
        TopCommand::Daemon(args) => Some((args.listen(), &args.node, false)),
        TopCommand::Web(args) => Some((
            std::net::SocketAddr::new(args.bind, args.port),
            &args.node,
            args.mock,
        )),
        _ => None,
    };
    if let TopCommand::Openapi = cli.command {
        print!("{}", hivemind::api::openapi::document_json());
        return 0;
    }
    let Some((listen, node, mock)) = options else {
        return match run_client_command(&cli).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                e.exit_code()
            }
        };
    };
    hivemind::telemetry::init(
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "info,hickory_server=warn,hickory_proto=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn",
            )
        }),
        node.log_format,
    );
    let subnet = match node.subnet.as_deref().map(str::parse::<Subnet>).transpose() {
        Ok(subnet) => subnet,
        Err(e) => {
            eprintln!("error: --subnet: {e}");
            return 2;
        }
    };
    let cluster_cidr: Subnet = match node.cluster_cidr.parse() {
        Ok(cidr) => cidr,
        Err(e) => {
            eprintln!("error: --cluster-cidr: {e}");
            return 2;
        }
    };
    let service_cidr: Subnet = match node.service_cidr.parse() {
        Ok(cidr) => cidr,
        Err(e) => {
            eprintln!("error: --service-cidr: {e}");
            return 2;
        }
    };
    let mut no_masquerade = Vec::new();
    for cidr in &node.no_masquerade {
        match hivemind::policy::parse_cidr(cidr) {
            Ok(prefix) => no_masquerade.push(prefix),
            Err(e) => {
                eprintln!("error: --no-masquerade {cidr}: {e}");
                return 2;
            }
        }
    }
    if service_cidr.overlaps(&cluster_cidr) {
        eprintln!(
            "error: --service-cidr {service_cidr} overlaps --cluster-cidr {cluster_cidr}: VIPs \
             and container addresses must not share addresses"
        );
        return 2;
    }

    let mut node_labels = std::collections::BTreeMap::new();
    for pair in &node.node_labels {
        match hivemind::model::parse_key_value("node-label", pair) {
            Ok((key, value)) => {
                node_labels.insert(key, value);
            }
            Err(e) => {
                eprintln!("error: --{e}");
                return 2;
            }
        }
    }
    let options = ServeOptions {
        listen,
        data_dir: node.data_dir.clone(),
        containerd: node.containerd.clone(),
        subnet,
        cluster_cidr,
        service_cidr,
        bridge: node.bridge.clone(),
        mtu: node.mtu,
        insecure_registries: node.insecure_registries.clone(),
        node_name: node.node_name.clone(),
        node_labels,
        gossip_port: node.gossip_port,
        advertise: node.advertise,
        join: node.join.clone(),
        underlay_program: node.underlay_program,
        host_routing: node.host_routing == hivemind::cli::OnOff::On,
        socket_lb: node.socket_lb == hivemind::cli::OnOff::On,
        masquerade: node.masquerade == hivemind::cli::OnOff::On,
        no_masquerade,
        bpf_pins: node.bpf_pins == hivemind::cli::OnOff::On,
        bpf_pin_dir: node.bpf_pin_dir.clone(),
        ingress_http_port: node.ingress_http_port,
        ingress_https_port: node.ingress_https_port,
        admin_token_file: node.admin_token_file.clone(),
        gossip_key_file: node.gossip_key_file.clone(),
        api_hosts: node.api_hosts.clone(),
        tombstone_grace: std::time::Duration::from_secs(node.tombstone_grace),
        clock_offset_ms: node.clock_offset_ms,
        secrets_dir: node.secrets_dir.clone(),
        join_token: node.join_token.clone(),
        tls_cert: node.tls_cert.clone(),
        tls_key: node.tls_key.clone(),
        node_cert_lifetime: std::time::Duration::from_secs(node.node_cert_lifetime),
        mock,
    };
    match serve(options).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
