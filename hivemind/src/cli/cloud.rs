//! `hivemind cloud ...`: cloud providers, instances and load balancers.

use clap::{Args, Subcommand};

use super::OutputFormat;
use super::client::{Client, ClientError};
use super::output::{joined, or_dash, print_list, print_message, print_object};
use crate::contract::{
    ConfigureCloud, CreateInstance, CreateLoadBalancer, Instance, InstanceCreated, LoadBalancer,
    Message, ProviderView, RegisterInstances,
};

#[derive(Debug, Subcommand)]
pub enum CloudCommand {
    /// Keep a provider's credentials and default region (checked with the provider first; the
    /// secret key is stored as a secret)
    Configure {
        #[arg(long, default_value = "aws")]
        provider: String,
        #[arg(long)]
        access_key: String,
        /// The secret access key (or $AWS_SECRET_ACCESS_KEY)
        #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
        secret_key: String,
        #[arg(long)]
        region: String,
        /// An AWS-compatible endpoint instead of AWS's own
        #[arg(long)]
        endpoint_url: Option<String>,
    },
    /// Start an instance that joins this cluster at its first boot
    #[command(name = "create-instance")]
    CreateInstance {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        at: Where,
        /// The availability zone (default: the provider's choice)
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        instance_type: String,
        /// The machine image (AMI): a Linux with containerd
        #[arg(long)]
        image_id: String,
        /// Where the instance downloads the hivemind binary from (default: the image has it)
        #[arg(long)]
        install_url: Option<String>,
    },
    /// Create a load balancer forwarding a published port to the instances behind it
    #[command(name = "create-load-balancer")]
    CreateLoadBalancer {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        at: Where,
        /// application (HTTP) or network (TCP)
        #[arg(long = "type", default_value = "application")]
        kind: String,
        /// internet-facing or internal
        #[arg(long, default_value = "internet-facing")]
        scheme: String,
        /// The published port it forwards
        #[arg(long, default_value_t = 80)]
        port: u16,
    },
    /// Register instances behind a load balancer
    #[command(name = "register-instances")]
    RegisterInstances {
        #[arg(long)]
        lb_name: String,
        #[command(flatten)]
        at: Where,
        #[arg(long, value_delimiter = ',', required = true)]
        instance_ids: Vec<String>,
    },
    /// The configured providers, this cluster's instances and the load balancers
    Ls {
        #[command(flatten)]
        at: Where,
    },
    /// Terminate one of this cluster's instances
    #[command(name = "delete-instance")]
    DeleteInstance {
        #[arg(long)]
        instance_id: String,
        #[command(flatten)]
        at: Where,
    },
    /// Delete a load balancer with its listener and target group
    #[command(name = "delete-load-balancer")]
    DeleteLoadBalancer {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        at: Where,
    },
}

/// Which provider and region (the configured region unless given).
#[derive(Debug, Args)]
pub struct Where {
    #[arg(long, default_value = "aws")]
    provider: String,
    #[arg(long)]
    region: Option<String>,
}

impl Where {
    fn query(&self) -> String {
        let mut query = format!("?provider={}", self.provider);
        if let Some(region) = &self.region {
            query.push_str(&format!("&region={region}"));
        }
        query
    }
}

pub async fn cloud(
    client: &Client,
    format: OutputFormat,
    command: &CloudCommand,
) -> Result<(), ClientError> {
    let segment = super::commands::path_segment;
    match command {
        CloudCommand::Configure {
            provider,
            access_key,
            secret_key,
            region,
            endpoint_url,
        } => {
            let body = ConfigureCloud {
                provider: provider.clone(),
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
                region: region.clone(),
                endpoint_url: endpoint_url.clone(),
            };
            let view: ProviderView = client.post("/api/cloud/providers", &body).await?;
            if format == OutputFormat::Json {
                print_object(format, &view);
            } else {
                println!(
                    "Configured {} in {} (secret key kept as secret {})",
                    view.provider, view.region, view.secret
                );
            }
        }
        CloudCommand::CreateInstance {
            name,
            at,
            zone,
            instance_type,
            image_id,
            install_url,
        } => {
            let body = CreateInstance {
                name: name.clone(),
                provider: Some(at.provider.clone()),
                region: at.region.clone(),
                zone: zone.clone(),
                instance_type: instance_type.clone(),
                image_id: image_id.clone(),
                install_url: install_url.clone(),
            };
            let created: InstanceCreated = client.post("/api/cloud/instances", &body).await?;
            if format == OutputFormat::Json {
                print_object(format, &created);
            } else {
                println!("{}", created.message);
            }
        }
        CloudCommand::CreateLoadBalancer {
            name,
            at,
            kind,
            scheme,
            port,
        } => {
            let body = CreateLoadBalancer {
                name: name.clone(),
                provider: Some(at.provider.clone()),
                region: at.region.clone(),
                kind: Some(kind.clone()),
                scheme: Some(scheme.clone()),
                port: Some(*port),
            };
            let lb: LoadBalancer = client.post("/api/cloud/load-balancers", &body).await?;
            if format == OutputFormat::Json {
                print_object(format, &lb);
            } else {
                println!(
                    "Created load balancer {} ({} {}), port {}: {}",
                    lb.name, lb.scheme, lb.kind, lb.port, lb.dns_name
                );
            }
        }
        CloudCommand::RegisterInstances {
            lb_name,
            at,
            instance_ids,
        } => {
            let body = RegisterInstances {
                lb_name: lb_name.clone(),
                provider: Some(at.provider.clone()),
                region: at.region.clone(),
                instance_ids: instance_ids.clone(),
            };
            let lb: LoadBalancer = client
                .post("/api/cloud/load-balancers/register", &body)
                .await?;
            if format == OutputFormat::Json {
                print_object(format, &lb);
            } else {
                println!(
                    "Load balancer {} forwards port {} to {}",
                    lb.name,
                    lb.port,
                    joined(&lb.instances)
                );
            }
        }
        CloudCommand::Ls { at } => {
            let providers: Vec<ProviderView> = client.get("/api/cloud/providers").await?;
            let query = at.query();
            let instances: Vec<Instance> =
                client.get(&format!("/api/cloud/instances{query}")).await?;
            let lbs: Vec<LoadBalancer> = client
                .get(&format!("/api/cloud/load-balancers{query}"))
                .await?;
            if format == OutputFormat::Json {
                print_object(
                    format,
                    &serde_json::json!({
                        "providers": providers,
                        "instances": instances,
                        "load_balancers": lbs,
                    }),
                );
                return Ok(());
            }
            print_list(
                format,
                &providers,
                &[
                    ("PROVIDER", |p| p.provider.clone()),
                    ("REGION", |p| p.region.clone()),
                    ("ACCESS KEY", |p| p.access_key_id.clone()),
                    ("ENDPOINT", |p| or_dash(p.endpoint_url.as_ref())),
                ],
            );
            println!();
            print_list(
                format,
                &instances,
                &[
                    ("INSTANCE", |i| i.id.clone()),
                    ("NAME", |i| i.name.clone()),
                    ("TYPE", |i| i.instance_type.clone()),
                    ("STATE", |i| i.state.clone()),
                    ("ZONE", |i| or_dash(i.zone.as_ref())),
                    ("PRIVATE IP", |i| or_dash(i.private_ip.as_ref())),
                ],
            );
            println!();
            print_list(
                format,
                &lbs,
                &[
                    ("LOAD BALANCER", |l| l.name.clone()),
                    ("TYPE", |l| l.kind.clone()),
                    ("SCHEME", |l| l.scheme.clone()),
                    ("PORT", |l| l.port.to_string()),
                    ("INSTANCES", |l| joined(&l.instances)),
                    ("DNS NAME", |l| l.dns_name.clone()),
                ],
            );
        }
        CloudCommand::DeleteInstance { instance_id, at } => {
            let path = format!(
                "/api/cloud/instances/{}{}",
                segment(instance_id)?,
                at.query()
            );
            let answer: Message = client.delete(&path).await?;
            print_message(format, &answer);
        }
        CloudCommand::DeleteLoadBalancer { name, at } => {
            let path = format!("/api/cloud/load-balancers/{}{}", segment(name)?, at.query());
            let answer: Message = client.delete(&path).await?;
            print_message(format, &answer);
        }
    }
    Ok(())
}
