//! Carrying out user commands: the one place where a [`Command`] changes
//! the cluster's desired state.

use tracing::Instrument as _;

use super::{Node, NodeError, remove_dir_if_exists};
use crate::command::{Command, Outcome};
use crate::model::{AppSpec, ValidationError};
use crate::state::Row as _;
use crate::state::{
    APPS, AppRecord, CLUSTER_SETTING, PLACEMENTS, Placement, REVISION_LIMIT, REVISIONS,
    RevisionRecord, SCAN_POLICY, TRUSTED_KEYS, TrustedKey, VOLUMES, VolumeRecord, now_secs,
};

impl Node {
    /// Carries out one command.
    pub async fn execute(&self, command: Command) -> Result<Outcome, NodeError> {
        let outcome = self.execute_inner(command).await;
        self.wake.notify_one();
        outcome
    }

    async fn execute_inner(&self, command: Command) -> Result<Outcome, NodeError> {
        match command {
            Command::Deploy(spec, admission) => self.deploy(*spec, None, admission).await,
            Command::PutTrustedKey { name, pem } => self.put_trusted_key(&name, &pem).await,
            Command::DeleteTrustedKey { name } => {
                if self
                    .store
                    .value::<TrustedKey>(TRUSTED_KEYS, &name)?
                    .is_none()
                {
                    return Err(NodeError::NotFound {
                        kind: "trusted key",
                        name,
                    });
                }
                self.write::<TrustedKey>(TRUSTED_KEYS, &name, None).await?;
                Ok(Outcome::Deleted {
                    kind: "trusted key",
                    name,
                })
            }
            Command::PutPipeline { spec, create } => self.put_pipeline(*spec, create).await,
            Command::ConfigureCloud { config, secret_key } => {
                self.configure_cloud(*config, secret_key).await
            }
            Command::DeletePipeline { name } => self.delete_pipeline(name).await,
            Command::TriggerPipeline {
                name,
                trigger,
                commit,
            } => self.trigger_pipeline(name, trigger, commit).await,
            Command::SetScanPolicy(policy) => {
                self.write(SCAN_POLICY, CLUSTER_SETTING, Some(&policy))
                    .await?;
                Ok(Outcome::ScanPolicySet(policy))
            }
            Command::Scale { name, replicas } => {
                let mut app = self.require_app(&name)?;
                app.spec.replicas = replicas;
                app.updated_at = now_secs();
                app.check(&name)?;
                let placement = self.placement_if_owner(&app.spec)?;
                self.write(APPS, &name, Some(&app)).await?;
                if let Some(placement) = placement {
                    self.write(PLACEMENTS, &name, Some(&placement)).await?;
                }
                self.reconcile_app(&name).await?;
                Ok(Outcome::Scaled {
                    app: name,
                    replicas,
                })
            }
            Command::Restart { name } => {
                let before = self.require_app(&name)?;
                let mut app = before.clone();
                app.generation = before.next_generation();
                app.updated_at = now_secs();
                self.begin_rollout(&mut app, &before)?;
                self.write(APPS, &name, Some(&app)).await?;
                self.reconcile_app_now(&name).await?;
                Ok(Outcome::Restarted {
                    containers: self.container_ids(&name)?,
                    app: name,
                })
            }
            Command::DeleteApp { name } => {
                self.require_app(&name)?;
                self.write::<AppRecord>(APPS, &name, None).await?;
                self.write::<Placement>(PLACEMENTS, &name, None).await?;
                for revision in self.revisions(&name)? {
                    let key = RevisionRecord::key(&name, revision.revision);
                    self.write::<RevisionRecord>(REVISIONS, &key, None).await?;
                }
                self.reconcile_app(&name).await?;
                Ok(Outcome::Deleted { kind: "app", name })
            }
            Command::Undo { name, to_revision } => {
                let app = self.require_app(&name)?;
                let revisions = self.revisions(&name)?;
                let target =
                    match to_revision {
                        Some(wanted) => revisions
                            .iter()
                            .find(|r| r.revision == wanted)
                            .ok_or_else(|| NodeError::NotFound {
                                kind: "revision",
                                name: format!(
                                    "{wanted} of app {name} (kept: {})",
                                    kept(&revisions)
                                ),
                            })?,
                        None => revisions.iter().rev().nth(1).ok_or_else(|| {
                            NodeError::Conflict(format!(
                                "app {name} has no earlier revision to go back to (kept: {})",
                                kept(&revisions)
                            ))
                        })?,
                    };
                let spec = target.spec.going_back_from(&app.spec);
                if same_revision(&spec, &app.spec) {
                    return Err(NodeError::Conflict(format!(
                        "app {name} runs revision {} already",
                        target.revision
                    )));
                }
                // Back to what a rollout in progress replaces: its containers still run.
                if app
                    .active_rollout()
                    .is_some_and(|r| same_revision(&r.from_spec, &spec))
                {
                    let message = format!("undone to revision {}", target.revision);
                    self.roll_back(&app, message, false).await?;
                    self.reconcile_app_now(&name).await?;
                    return Ok(Outcome::Deployed {
                        containers: self.container_ids(&name)?,
                        app: name,
                        created: false,
                    });
                }
                self.deploy(spec, Some(target.revision), Default::default())
                    .await
            }
            Command::Rollout { name, action } => self.control_rollout(&name, action).await,
            Command::PromoteVariant { name, variant } => {
                let app = self.require_app(&name)?;
                let spec = promoted_variant(&app.spec, &variant)?;
                self.deploy(spec, None, Default::default()).await
            }
            Command::CreateVolume { name } => {
                if self.store.volume(&name)?.is_some() {
                    return Err(NodeError::Conflict(format!("volume {name} already exists")));
                }
                let volume = self.ensure_volume(&name).await?;
                Ok(Outcome::VolumeCreated {
                    name,
                    path: volume.path,
                })
            }
            Command::PutPolicy(policy) => {
                self.check_policy_limits(&policy)?;
                let name = policy.name.clone();
                let created = self.store.value(crate::state::POLICIES, &name)?.is_none();
                self.write(crate::state::POLICIES, &name, Some(&*policy))
                    .await?;
                Ok(Outcome::PolicySet { name, created })
            }
            Command::DeletePolicy { name } => {
                if self
                    .store
                    .value::<crate::policy::NetworkPolicy>(crate::state::POLICIES, &name)?
                    .is_none()
                {
                    return Err(NodeError::NotFound {
                        kind: "network policy",
                        name,
                    });
                }
                self.write::<crate::policy::NetworkPolicy>(crate::state::POLICIES, &name, None)
                    .await?;
                Ok(Outcome::Deleted {
                    kind: "network policy",
                    name,
                })
            }
            Command::DeleteVolume { name } => {
                if self.store.volume(&name)?.is_none() {
                    return Err(NodeError::NotFound {
                        kind: "volume",
                        name,
                    });
                }
                let users: Vec<String> = self
                    .store
                    .apps()?
                    .into_iter()
                    .filter(|app| app.spec.volumes.iter().any(|v| v.name == name))
                    .map(|app| app.spec.name)
                    .collect();
                if !users.is_empty() {
                    return Err(NodeError::Conflict(format!(
                        "volume {name} is used by app(s) {}; delete them first",
                        users.join(", ")
                    )));
                }
                let dir = self.data_dir.join("volumes").join(&name);
                remove_dir_if_exists(&dir)?;
                self.write::<VolumeRecord>(VOLUMES, &name, None).await?;
                Ok(Outcome::Deleted {
                    kind: "volume",
                    name,
                })
            }
            Command::PullImage {
                reference,
                force,
                progress,
            } => {
                let report = move |p: crate::image::Progress| progress.report(p);
                let span = tracing::info_span!("image.pull", image = %reference, force);
                let image = if force {
                    self.runtime
                        .pull_image(&reference, &report)
                        .instrument(span)
                        .await?
                } else {
                    self.runtime
                        .ensure_image(&reference, &report)
                        .instrument(span)
                        .await?
                };
                self.remember_image(&reference, &image);
                Ok(Outcome::ImagePulled(image))
            }
            Command::ImportVulnDb { data, max_age_days } => Ok(Outcome::VulnDbImported(Box::new(
                self.import_vulndb(data, max_age_days).await?,
            ))),
            Command::ScanImage { reference, refresh } => Ok(Outcome::ImageScanned(Box::new(
                self.scan_image(&reference, refresh).await?,
            ))),
            Command::ImportImages { archive } => {
                let images = self.runtime.import_image(&archive, &|_| {}).await?;
                for image in &images {
                    self.remember_image(&image.name, image);
                }
                Ok(Outcome::ImagesImported(images))
            }
            Command::JoinCluster { address } => {
                let Some(cluster) = &self.cluster else {
                    return Err(NodeError::Conflict(
                        "this node runs without a cluster (--mock)".to_string(),
                    ));
                };
                cluster.join(address).await?;
                Ok(Outcome::Joining { address })
            }
            Command::CreateSecret { name, value } => self.put_secret(name, value, true).await,
            Command::RotateSecret { name, value } => self.put_secret(name, value, false).await,
            Command::DeleteSecret { name } => self.delete_secret(name).await,
            Command::PutTlsCert {
                domain,
                chain_pem,
                key,
                info,
            } => self.put_tls_cert(domain, chain_pem, key, info).await,
            Command::DeleteTlsCert { domain } => self.delete_tls_cert(domain).await,
            Command::ConfigureMetrics(listener) => {
                let key = crate::state::CLUSTER_SETTING;
                self.write(crate::state::METRICS_LISTENER, key, listener.as_ref())
                    .await?;
                Ok(Outcome::MetricsConfigured(listener))
            }
            Command::ConfigureTracing(export) => {
                let key = crate::state::CLUSTER_SETTING;
                self.write(crate::state::TRACING_EXPORT, key, export.as_ref())
                    .await?;
                // The other nodes follow within a second; a refusal here is logged.
                let _ = self.follow_tracing(export.clone()).await;
                Ok(Outcome::TracingConfigured(export))
            }
            Command::ConfigureLogging(shipping) => {
                let key = crate::state::CLUSTER_SETTING;
                self.write(crate::state::LOG_SHIPPING, key, shipping.as_ref())
                    .await?;
                Ok(Outcome::LoggingConfigured(shipping))
            }
            Command::ConfigureDashboard(history) => {
                let key = crate::state::CLUSTER_SETTING;
                self.write(crate::state::DASHBOARD_HISTORY, key, history.as_ref())
                    .await?;
                Ok(Outcome::DashboardConfigured(history))
            }
        }
    }

    pub(super) fn require_app(&self, name: &str) -> Result<AppRecord, NodeError> {
        self.store.app(name)?.ok_or_else(|| NodeError::NotFound {
            kind: "app",
            name: name.to_string(),
        })
    }

    fn container_ids(&self, app: &str) -> Result<Vec<String>, NodeError> {
        Ok(self
            .store
            .containers_of(app)?
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// Creates the volume's record unless it exists, and its directory on
    /// this node.
    pub(crate) async fn ensure_volume(&self, name: &str) -> Result<VolumeRecord, NodeError> {
        let path = self.volume_dir(name);
        std::fs::create_dir_all(&path)
            .map_err(|e| NodeError::Io(format!("create volume dir {}: {e}", path.display())))?;
        if let Some(volume) = self.store.volume(name)? {
            return Ok(volume);
        }
        let volume = VolumeRecord {
            name: name.to_string(),
            path: path.display().to_string(),
            created_at: now_secs(),
        };
        self.write(VOLUMES, name, Some(&volume)).await?;
        Ok(volume)
    }
}

impl Node {
    /// Makes this process export its spans as `export` says (`None`: stop); logs the outcome.
    pub async fn follow_tracing(
        &self,
        export: Option<crate::model::TracingExport>,
    ) -> Result<(), String> {
        let name = self.name().to_string();
        let wanted = export.clone();
        // The exporter's client is a blocking one: built and flushed off the workers.
        let set = tokio::task::spawn_blocking(move || {
            let pair = wanted
                .as_ref()
                .map(|e| (e.service_name.as_str(), e.endpoint.as_str()));
            crate::telemetry::set_export(pair, &name)
        })
        .await
        .unwrap_or_else(|e| Err(format!("the span export task failed: {e}")));
        match (&export, &set) {
            (Some(e), Ok(())) => {
                tracing::info!(service = %e.service_name, endpoint = %e.endpoint, "exporting spans")
            }
            (None, Ok(())) => tracing::info!("span export off"),
            (_, Err(e)) => tracing::warn!(error = %e, "the span export cannot start"),
        }
        set
    }
}

impl Node {
    /// Creates the app, or replaces its containers with `spec`; a spec that differs from the
    /// app's last revision (replicas aside) becomes its next revision.
    async fn deploy(
        &self,
        spec: AppSpec,
        from_revision: Option<u64>,
        admission: crate::command::Admission,
    ) -> Result<Outcome, NodeError> {
        self.check_service_limits(&spec)?;
        // Pull before anything is recorded: a bad image changes nothing.
        let image = self
            .runtime
            .ensure_image(&spec.image, &|_| {})
            .instrument(tracing::info_span!("image.pull", image = %spec.image))
            .await?;
        // Its starts below use this resolution rather than asking again.
        self.remember_image(&spec.image, &image);
        let mut spec = spec;
        spec.image = image.name;
        for variant in &mut spec.strategy.variants {
            let image = self
                .runtime
                .ensure_image(&variant.image, &|_| {})
                .instrument(tracing::info_span!("image.pull", image = %variant.image))
                .await?;
            self.remember_image(&variant.image, &image);
            variant.image = image.name;
        }
        // Admission: signatures, then the image's scan against the deploy's policy, else the
        // cluster's.
        self.require_signatures(&spec, &image.digest, admission)
            .await?;
        let scan = self.admit(&spec, admission.scan_policy).await?;
        let existing = self.store.app(&spec.name)?;
        let created = existing.is_none();
        let record = match existing {
            Some(before) => {
                let mut record = before.clone();
                let replace = !same_containers(&before.spec, &spec);
                record.spec = spec;
                record.updated_at = now_secs();
                if replace {
                    record.generation = before.next_generation();
                    self.begin_rollout(&mut record, &before)?;
                }
                record
            }
            None => AppRecord::new(spec),
        };
        let mut record = record;
        record.scan = scan;
        let name = record.spec.name.clone();
        // The row's rules, then placement, before anything is written.
        record.check(&name)?;
        self.require_secrets(&record.spec)?;
        self.require_free_published_ports(&record.spec)?;
        let placement = self.placement_if_owner(&record.spec)?;
        for volume in &record.spec.volumes {
            self.ensure_volume(&volume.name).await?;
        }
        self.write(APPS, &name, Some(&record)).await?;
        if let Some(placement) = placement {
            self.write(PLACEMENTS, &name, Some(&placement)).await?;
        }
        self.record_revision(&record.spec, from_revision).await?;
        self.reconcile_app_now(&name).await?;
        Ok(Outcome::Deployed {
            containers: self.container_ids(&name)?,
            app: name,
            created,
        })
    }

    /// The kept revisions of `app`, oldest first.
    pub fn revisions(&self, app: &str) -> Result<Vec<RevisionRecord>, NodeError> {
        let mut revisions: Vec<RevisionRecord> = self
            .store
            .values::<RevisionRecord>(REVISIONS)?
            .into_iter()
            .filter(|r| r.app == app)
            .collect();
        revisions.sort_by_key(|r| r.revision);
        Ok(revisions)
    }

    /// Writes `spec` as the app's next revision unless it is the last one (replicas aside),
    /// and forgets the oldest beyond [`REVISION_LIMIT`].
    pub(super) async fn record_revision(
        &self,
        spec: &AppSpec,
        from_revision: Option<u64>,
    ) -> Result<(), NodeError> {
        let mut revisions = self.revisions(&spec.name)?;
        if revisions
            .last()
            .is_some_and(|last| same_revision(&last.spec, spec))
        {
            return Ok(());
        }
        let row = RevisionRecord {
            app: spec.name.clone(),
            revision: revisions.last().map_or(1, |last| last.revision + 1),
            spec: spec.clone(),
            created_at: now_secs(),
            from_revision,
        };
        self.write(
            REVISIONS,
            &RevisionRecord::key(&row.app, row.revision),
            Some(&row),
        )
        .await?;
        revisions.push(row);
        let excess = revisions.len().saturating_sub(REVISION_LIMIT);
        for old in &revisions[..excess] {
            let key = RevisionRecord::key(&old.app, old.revision);
            self.write::<RevisionRecord>(REVISIONS, &key, None).await?;
        }
        Ok(())
    }
}

/// `spec` with the A/B test's `variant` as its one version: the variant's image, the strategy
/// `simple` (each node replaces its variant containers once the promoted version's are ready
/// there) with the rollout settings the test had.
fn promoted_variant(spec: &AppSpec, variant: &str) -> Result<AppSpec, NodeError> {
    let variants = spec.variants();
    if variants.is_empty() {
        return Err(NodeError::Conflict(format!(
            "app {} runs no A/B test: there is no variant to promote",
            spec.name
        )));
    }
    let Some(chosen) = variants.iter().find(|v| v.name == variant) else {
        let names: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
        return Err(NodeError::Invalid(ValidationError::new(
            "variant",
            format!(
                "app {} has no variant {variant:?}: its variants are {}",
                spec.name,
                names.join(", ")
            ),
        )));
    };
    Ok(AppSpec {
        image: chosen.image.clone(),
        strategy: crate::model::StrategySpec {
            name: "simple".to_string(),
            variants: Vec::new(),
            duration_secs: None,
            ..spec.strategy.clone()
        },
        ..spec.clone()
    })
}

/// Whether two specs are one revision: the same but for the replica count and the strategy
/// (scaling is not a new revision, and an undo keeps the current count and strategy).
pub fn same_revision(a: &AppSpec, b: &AppSpec) -> bool {
    AppSpec {
        replicas: b.replicas,
        strategy: strategy_but_variants(b, a),
        ..a.clone()
    } == *b
}

/// `b`'s strategy with `a`'s variants: an A/B test's variants are what runs, not how it is
/// replaced.
fn strategy_but_variants(b: &AppSpec, a: &AppSpec) -> crate::model::StrategySpec {
    let mut strategy = b.strategy.clone();
    strategy.variants = a.strategy.variants.clone();
    if a.variants().is_empty() != b.variants().is_empty() {
        // Into or out of an A/B test: the name decides whether the variants run.
        strategy.name = a.strategy.name.clone();
    }
    strategy
}

/// Whether a change from `a` to `b` keeps the containers: only the strategy differs. (A new
/// replica count replaces them too, as it always has: a redeploy is a fresh start.)
fn same_containers(a: &AppSpec, b: &AppSpec) -> bool {
    AppSpec {
        strategy: strategy_but_variants(b, a),
        ..a.clone()
    } == *b
}

fn kept(revisions: &[RevisionRecord]) -> String {
    if revisions.is_empty() {
        return "none".into();
    }
    revisions
        .iter()
        .map(|r| r.revision.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
