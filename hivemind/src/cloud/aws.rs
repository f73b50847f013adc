//! The AWS calls Hivemind makes: EC2 (instances, regions, default subnets) and Elastic Load
//! Balancing v2 (load balancers, target groups, listeners, targets), over their query APIs
//! signed with SigV4, against AWS or an AWS-compatible endpoint (`--endpoint-url`).

use super::sigv4::{Credentials, form, sign};
use super::xml::{Element, parse};
use super::{CloudError, Instance, LoadBalancer};

const EC2_VERSION: &str = "2016-11-15";
const ELB_VERSION: &str = "2015-12-01";
/// The tag marking what this cluster created, with the cluster's id as its value.
pub const CLUSTER_TAG: &str = "hivemind:cluster";

/// A client of one account in one region.
pub struct Aws {
    http: reqwest::Client,
    credentials: Credentials,
    region: String,
    endpoint: Option<String>,
}

impl Aws {
    pub fn new(
        http: reqwest::Client,
        credentials: Credentials,
        region: &str,
        endpoint: Option<&str>,
    ) -> Self {
        Self {
            http,
            credentials,
            region: region.to_string(),
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
        }
    }

    fn url(&self, service: &str) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("{endpoint}/"),
            None => format!("https://{service}.{}.amazonaws.com/", self.region),
        }
    }

    /// One call: the action and its parameters, signed; the answer's XML, or the error AWS
    /// named.
    async fn call(
        &self,
        service: &str,
        version: &str,
        action: &str,
        params: &[(&str, String)],
    ) -> Result<Element, CloudError> {
        let mut all = vec![
            ("Action".to_string(), action.to_string()),
            ("Version".to_string(), version.to_string()),
        ];
        all.extend(params.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let body = form(&all);
        let url = self.url(service);
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| CloudError::Config(format!("endpoint {url}: {e}")))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(CloudError::Config(format!("endpoint {url} has no host"))),
        };
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let amz_date = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default();
        let authorization = sign(
            &self.credentials,
            "POST",
            &host,
            "/",
            "",
            &[("content-type", content_type)],
            body.as_bytes(),
            &self.region,
            service,
            &amz_date,
        );
        let response = self
            .http
            .post(&url)
            .header("content-type", content_type)
            .header("x-amz-date", &amz_date)
            .header("authorization", authorization)
            .body(body)
            .send()
            .await
            .map_err(|e| CloudError::Unreachable(format!("{service} at {url}: {e}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| CloudError::Unreachable(format!("{service} at {url}: {e}")))?;
        let doc = parse(&text).map_err(|e| CloudError::Aws {
            status: status.as_u16(),
            code: "InvalidResponse".to_string(),
            message: format!(
                "{action}: {e}: {}",
                text.chars().take(200).collect::<String>()
            ),
        })?;
        if !status.is_success() || doc.name.ends_with("ErrorResponse") || doc.name == "Response" {
            let code = doc
                .find("Code")
                .map(|c| c.text.trim().to_string())
                .unwrap_or_else(|| format!("HTTP {status}"));
            let message = doc
                .find("Message")
                .map(|m| m.text.trim().to_string())
                .unwrap_or_default();
            return Err(CloudError::Aws {
                status: status.as_u16(),
                code,
                message: format!("{action}: {message}"),
            });
        }
        Ok(doc)
    }

    async fn ec2(&self, action: &str, params: &[(&str, String)]) -> Result<Element, CloudError> {
        self.call("ec2", EC2_VERSION, action, params).await
    }

    async fn elb(&self, action: &str, params: &[(&str, String)]) -> Result<Element, CloudError> {
        self.call("elasticloadbalancing", ELB_VERSION, action, params)
            .await
    }

    /// The regions the account may use: a check of the credentials and the region together.
    pub async fn regions(&self) -> Result<Vec<String>, CloudError> {
        let doc = self.ec2("DescribeRegions", &[]).await?;
        Ok(doc
            .at("regionInfo")
            .map(|r| {
                r.all("item")
                    .filter_map(|i| i.text_at("regionName"))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Starts one instance tagged with its name and the cluster.
    pub async fn run_instance(
        &self,
        name: &str,
        cluster: &str,
        image_id: &str,
        instance_type: &str,
        zone: Option<&str>,
        user_data: &str,
    ) -> Result<Instance, CloudError> {
        use base64::Engine as _;
        let mut params = vec![
            ("ImageId", image_id.to_string()),
            ("InstanceType", instance_type.to_string()),
            ("MinCount", "1".to_string()),
            ("MaxCount", "1".to_string()),
            (
                "UserData",
                base64::engine::general_purpose::STANDARD.encode(user_data),
            ),
            ("TagSpecification.1.ResourceType", "instance".to_string()),
            ("TagSpecification.1.Tag.1.Key", "Name".to_string()),
            ("TagSpecification.1.Tag.1.Value", name.to_string()),
            ("TagSpecification.1.Tag.2.Key", CLUSTER_TAG.to_string()),
            ("TagSpecification.1.Tag.2.Value", cluster.to_string()),
        ];
        if let Some(zone) = zone {
            params.push(("Placement.AvailabilityZone", zone.to_string()));
        }
        let doc = self.ec2("RunInstances", &params).await?;
        doc.at("instancesSet")
            .and_then(|s| s.child("item"))
            .map(instance)
            .ok_or_else(|| CloudError::Aws {
                status: 200,
                code: "InvalidResponse".to_string(),
                message: "RunInstances answered no instance".to_string(),
            })
    }

    /// The cluster's instances (terminated ones included until AWS forgets them).
    pub async fn instances(&self, cluster: &str) -> Result<Vec<Instance>, CloudError> {
        let doc = self
            .ec2(
                "DescribeInstances",
                &[
                    ("Filter.1.Name", format!("tag:{CLUSTER_TAG}")),
                    ("Filter.1.Value.1", cluster.to_string()),
                ],
            )
            .await?;
        let mut found = Vec::new();
        if let Some(reservations) = doc.at("reservationSet") {
            for reservation in reservations.all("item") {
                if let Some(set) = reservation.child("instancesSet") {
                    found.extend(set.all("item").map(instance));
                }
            }
        }
        Ok(found)
    }

    pub async fn terminate(&self, instance_id: &str) -> Result<(), CloudError> {
        self.ec2(
            "TerminateInstances",
            &[("InstanceId.1", instance_id.to_string())],
        )
        .await
        .map(drop)
    }

    /// The default VPC's subnets, one per zone: (subnet, VPC).
    async fn default_subnets(&self) -> Result<Vec<(String, String)>, CloudError> {
        let doc = self
            .ec2(
                "DescribeSubnets",
                &[
                    ("Filter.1.Name", "default-for-az".to_string()),
                    ("Filter.1.Value.1", "true".to_string()),
                ],
            )
            .await?;
        Ok(doc
            .at("subnetSet")
            .map(|s| {
                s.all("item")
                    .filter_map(|i| Some((i.text_at("subnetId")?, i.text_at("vpcId")?)))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A load balancer in the default VPC's subnets forwarding `port` to the instances of a
    /// target group of its own (TCP for `network`, HTTP for `application`).
    pub async fn create_load_balancer(
        &self,
        name: &str,
        cluster: &str,
        kind: &str,
        scheme: &str,
        port: u16,
    ) -> Result<LoadBalancer, CloudError> {
        let subnets = self.default_subnets().await?;
        let vpc = subnets.first().map(|(_, vpc)| vpc.clone()).ok_or_else(|| {
            CloudError::Config(
                "the region has no default VPC subnets to place the load balancer in".to_string(),
            )
        })?;
        let mut params = vec![
            ("Name", name.to_string()),
            ("Type", kind.to_string()),
            ("Scheme", scheme.to_string()),
            ("Tags.member.1.Key", CLUSTER_TAG.to_string()),
            ("Tags.member.1.Value", cluster.to_string()),
        ];
        let keys: Vec<String> = (1..=subnets.len())
            .map(|i| format!("Subnets.member.{i}"))
            .collect();
        for (key, (subnet, _)) in keys.iter().zip(&subnets) {
            params.push((key.as_str(), subnet.clone()));
        }
        let doc = self.elb("CreateLoadBalancer", &params).await?;
        let created = doc
            .find("LoadBalancers")
            .and_then(|l| l.child("member"))
            .map(load_balancer)
            .ok_or_else(|| CloudError::Aws {
                status: 200,
                code: "InvalidResponse".to_string(),
                message: "CreateLoadBalancer answered no load balancer".to_string(),
            })?;
        let protocol = if kind == "network" { "TCP" } else { "HTTP" };
        let group = self
            .elb(
                "CreateTargetGroup",
                &[
                    ("Name", name.to_string()),
                    ("Protocol", protocol.to_string()),
                    ("Port", port.to_string()),
                    ("VpcId", vpc),
                    ("TargetType", "instance".to_string()),
                ],
            )
            .await?;
        let group_arn = group
            .find("TargetGroupArn")
            .map(|a| a.text.trim().to_string())
            .unwrap_or_default();
        self.elb(
            "CreateListener",
            &[
                ("LoadBalancerArn", created.arn.clone()),
                ("Protocol", protocol.to_string()),
                ("Port", port.to_string()),
                ("DefaultActions.member.1.Type", "forward".to_string()),
                ("DefaultActions.member.1.TargetGroupArn", group_arn),
            ],
        )
        .await?;
        self.load_balancer(name).await
    }

    /// The load balancer named `name`, with its port and registered instances.
    pub async fn load_balancer(&self, name: &str) -> Result<LoadBalancer, CloudError> {
        let doc = self
            .elb(
                "DescribeLoadBalancers",
                &[("Names.member.1", name.to_string())],
            )
            .await?;
        let mut found = doc
            .find("LoadBalancers")
            .and_then(|l| l.child("member"))
            .map(load_balancer)
            .ok_or_else(|| CloudError::NotFound(format!("load balancer {name}")))?;
        if let Some((arn, port)) = self.target_group(&found.arn).await? {
            found.port = port;
            let health = self
                .elb("DescribeTargetHealth", &[("TargetGroupArn", arn)])
                .await?;
            found.instances = health
                .find("TargetHealthDescriptions")
                .map(|t| {
                    t.all("member")
                        .filter_map(|m| m.text_at("Target/Id"))
                        .collect()
                })
                .unwrap_or_default();
        }
        Ok(found)
    }

    /// Every load balancer of the account and region.
    pub async fn load_balancers(&self) -> Result<Vec<LoadBalancer>, CloudError> {
        let doc = self.elb("DescribeLoadBalancers", &[]).await?;
        let names: Vec<String> = doc
            .find("LoadBalancers")
            .map(|l| {
                l.all("member")
                    .filter_map(|m| m.text_at("LoadBalancerName"))
                    .collect()
            })
            .unwrap_or_default();
        let mut found = Vec::new();
        for name in names {
            found.push(self.load_balancer(&name).await?);
        }
        Ok(found)
    }

    /// The load balancer's target group: (ARN, port).
    async fn target_group(&self, lb_arn: &str) -> Result<Option<(String, u16)>, CloudError> {
        let doc = self
            .elb(
                "DescribeTargetGroups",
                &[("LoadBalancerArn", lb_arn.to_string())],
            )
            .await?;
        Ok(doc
            .find("TargetGroups")
            .and_then(|g| g.child("member"))
            .and_then(|m| {
                Some((
                    m.text_at("TargetGroupArn")?,
                    m.text_at("Port").and_then(|p| p.parse().ok()).unwrap_or(0),
                ))
            }))
    }

    /// Adds instances to the load balancer's target group.
    pub async fn register(&self, name: &str, instance_ids: &[String]) -> Result<(), CloudError> {
        let lb = self.load_balancer(name).await?;
        let (arn, _) = self.target_group(&lb.arn).await?.ok_or_else(|| {
            CloudError::NotFound(format!("a target group of load balancer {name}"))
        })?;
        let keys: Vec<String> = (1..=instance_ids.len())
            .map(|i| format!("Targets.member.{i}.Id"))
            .collect();
        let mut params = vec![("TargetGroupArn", arn)];
        for (key, id) in keys.iter().zip(instance_ids) {
            params.push((key.as_str(), id.clone()));
        }
        self.elb("RegisterTargets", &params).await.map(drop)
    }

    /// Deletes the load balancer (its listeners go with it), then its target group.
    pub async fn delete_load_balancer(&self, name: &str) -> Result<(), CloudError> {
        let lb = self.load_balancer(name).await?;
        let group = self.target_group(&lb.arn).await?;
        self.elb("DeleteLoadBalancer", &[("LoadBalancerArn", lb.arn.clone())])
            .await?;
        if let Some((arn, _)) = group {
            self.elb("DeleteTargetGroup", &[("TargetGroupArn", arn)])
                .await?;
        }
        Ok(())
    }
}

fn instance(item: &Element) -> Instance {
    let tag = |key: &str| {
        item.child("tagSet").and_then(|tags| {
            tags.all("item")
                .find(|t| t.text_at("key").as_deref() == Some(key))
                .and_then(|t| t.text_at("value"))
        })
    };
    Instance {
        id: item.text_at("instanceId").unwrap_or_default(),
        name: tag("Name").unwrap_or_default(),
        instance_type: item.text_at("instanceType").unwrap_or_default(),
        state: item.text_at("instanceState/name").unwrap_or_default(),
        zone: item.text_at("placement/availabilityZone"),
        private_ip: item.text_at("privateIpAddress").filter(|s| !s.is_empty()),
        public_ip: item.text_at("ipAddress").filter(|s| !s.is_empty()),
    }
}

fn load_balancer(member: &Element) -> LoadBalancer {
    LoadBalancer {
        name: member.text_at("LoadBalancerName").unwrap_or_default(),
        arn: member.text_at("LoadBalancerArn").unwrap_or_default(),
        dns_name: member.text_at("DNSName").unwrap_or_default(),
        kind: member.text_at("Type").unwrap_or_default(),
        scheme: member.text_at("Scheme").unwrap_or_default(),
        state: member.text_at("State/Code").unwrap_or_default(),
        port: 0,
        instances: Vec::new(),
    }
}
