//! Helm releases (see `crate::helm`): repositories, and install, upgrade, rollback and
//! uninstall as revisions in replicated state.
//!
//! Each operation renders the chart, maps the objects (`helm::kube`), checks everything
//! (unsupported kinds, names another release or the user owns, every app's spec) before it
//! changes anything, then applies: secrets, volumes, policies, apps (only those whose spec
//! changed), and last removes what the previous revision had and this one does not.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use serde_json::Value;

use super::{Node, NodeError};
use crate::command::{Admission, Command};
use crate::contract::{InstallRequest, RepoAddRequest};
use crate::helm::chart::Chart;
use crate::helm::render::ReleaseInfo;
use crate::helm::repo::{Index, check_digest, package_url};
use crate::helm::{
    MAX_HISTORY, MAX_RELEASE_CHART_BYTES, ReleaseObjects, ReleaseRecord, ReleaseStatus, RepoRecord,
    release_key,
};
use crate::kube::Plan;
use crate::model::{AppSpec, ValidationError, validate_name};
use crate::policy::NetworkPolicy;
use crate::state::{HELM_RELEASES, HELM_REPOS, POLICIES, now_secs};

/// Largest `index.yaml` read from a repository.
const MAX_INDEX_BYTES: usize = 32 << 20;

/// A chart ready to render, with where it came from and its package.
struct Fetched {
    chart: Chart,
    source: String,
    package: Vec<u8>,
}

/// What an operation renders and applies.
struct Target<'a> {
    namespace: &'a str,
    name: &'a str,
    revision: u64,
    is_upgrade: bool,
    description: String,
}

impl Node {
    /// GETs `url`, at most `limit` bytes.
    async fn fetch(&self, url: &str, limit: usize) -> Result<Vec<u8>, NodeError> {
        let unreachable = |e: reqwest::Error| NodeError::Upstream(format!("{url}: {e}"));
        let mut response = self
            .http_client()
            .get(url)
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(NodeError::Chart(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            body.extend_from_slice(&chunk);
            if body.len() > limit {
                return Err(NodeError::Chart(format!(
                    "{url} is larger than {} MiB",
                    limit >> 20
                )));
            }
        }
        Ok(body)
    }

    async fn fetch_index(&self, url: &str) -> Result<Index, NodeError> {
        let index_url = format!("{}/index.yaml", url.trim_end_matches('/'));
        let body = self.fetch(&index_url, MAX_INDEX_BYTES).await?;
        let text = String::from_utf8(body)
            .map_err(|_| NodeError::Chart(format!("{index_url} is not UTF-8 text")))?;
        Index::parse(&text).map_err(|e| NodeError::Chart(format!("{index_url}: {e}")))
    }

    pub fn helm_repos(&self) -> Result<Vec<RepoRecord>, NodeError> {
        Ok(self.store.values(HELM_REPOS)?)
    }

    /// `helm repo add`: the repository's index must load before it is kept.
    pub async fn helm_repo_add(&self, request: RepoAddRequest) -> Result<RepoRecord, NodeError> {
        let mut record = RepoRecord {
            name: request.name,
            url: request.url.trim_end_matches('/').to_string(),
            charts: 0,
            added: now_secs(),
        };
        record.validate()?;
        if let Some(existing) = self.store.value(HELM_REPOS, &record.name)?
            && existing.url != record.url
        {
            return Err(NodeError::Conflict(format!(
                "repository {} exists with URL {}: remove it first",
                record.name, existing.url
            )));
        }
        record.charts = self.fetch_index(&record.url).await?.entries.len();
        self.write(HELM_REPOS, &record.name, Some(&record)).await?;
        Ok(record)
    }

    pub async fn helm_repo_remove(&self, name: &str) -> Result<(), NodeError> {
        if self.store.value(HELM_REPOS, name)?.is_none() {
            return Err(NodeError::NotFound {
                kind: "repository",
                name: name.to_string(),
            });
        }
        self.write::<RepoRecord>(HELM_REPOS, name, None).await?;
        Ok(())
    }

    /// Every revision of a release, oldest first.
    pub fn helm_history(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<ReleaseRecord>, NodeError> {
        let mut revisions: Vec<ReleaseRecord> = self
            .store
            .values(HELM_RELEASES)?
            .into_iter()
            .filter(|r| r.namespace == namespace && r.name == name)
            .collect();
        revisions.sort_by_key(|r| r.revision);
        Ok(revisions)
    }

    /// Each release's newest revision.
    pub fn helm_releases(&self) -> Result<Vec<ReleaseRecord>, NodeError> {
        let mut latest: BTreeMap<(String, String), ReleaseRecord> = BTreeMap::new();
        for record in self.store.values(HELM_RELEASES)? {
            let key = (record.namespace.clone(), record.name.clone());
            if latest
                .get(&key)
                .is_none_or(|r| r.revision < record.revision)
            {
                latest.insert(key, record);
            }
        }
        Ok(latest.into_values().collect())
    }

    /// The release's newest revision.
    pub fn helm_release(&self, namespace: &str, name: &str) -> Result<ReleaseRecord, NodeError> {
        self.helm_history(namespace, name)?
            .pop()
            .ok_or_else(|| NodeError::NotFound {
                kind: "release",
                name: format!("{namespace}/{name}"),
            })
    }

    /// The chart a request names: an uploaded package, or `<repo>/<chart>` at the newest
    /// version `--version` allows, its package checked against the index's digest.
    async fn chart_of(&self, request: &InstallRequest) -> Result<Fetched, NodeError> {
        let bad =
            |field: &str, message: String| NodeError::Invalid(ValidationError::new(field, message));
        let (package, source) = match &request.package {
            Some(encoded) => {
                let package = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| bad("package", format!("not base64: {e}")))?;
                (package, "upload".to_string())
            }
            None => {
                let (repo, chart) = request.chart.split_once('/').ok_or_else(|| {
                    bad(
                        "chart",
                        format!(
                            "{:?} is neither <repository>/<chart> nor a chart directory or package",
                            request.chart
                        ),
                    )
                })?;
                let record = self.store.value(HELM_REPOS, repo)?.ok_or_else(|| {
                    bad(
                        "chart",
                        format!("no repository {repo}: add it with `helm repo add`"),
                    )
                })?;
                let index = self.fetch_index(&record.url).await?;
                let entry = index
                    .find(chart, request.version.as_deref())
                    .map_err(|e| NodeError::Chart(format!("{repo}: {e}")))?;
                let url = package_url(&record.url, entry).map_err(NodeError::Chart)?;
                let package = self
                    .fetch(&url, crate::helm::chart::MAX_CHART_BYTES as usize)
                    .await?;
                check_digest(entry, &package).map_err(NodeError::Chart)?;
                (package, format!("{repo}/{chart}"))
            }
        };
        if package.len() > MAX_RELEASE_CHART_BYTES {
            return Err(bad(
                "package",
                format!(
                    "the chart package is {} KiB; a release keeps at most {} KiB",
                    package.len() >> 10,
                    MAX_RELEASE_CHART_BYTES >> 10
                ),
            ));
        }
        let chart = Chart::load_archive(&package).map_err(|e| NodeError::Chart(e.0))?;
        if let Some(wanted) = &request.version {
            let constraint =
                crate::helm::repo::Constraint::parse(wanted).map_err(|e| bad("version", e))?;
            let version = crate::helm::repo::Version::parse(&chart.metadata.version);
            if !version.is_some_and(|v| constraint.matches(&v)) {
                return Err(bad(
                    "version",
                    format!(
                        "the chart is {} {}, not {wanted}",
                        chart.metadata.name, chart.metadata.version
                    ),
                ));
            }
        }
        Ok(Fetched {
            chart,
            source,
            package,
        })
    }

    /// The user's values: `-f` files in order, then each `--set`.
    fn user_values(request: &InstallRequest, base: Value) -> Result<Value, NodeError> {
        let mut values = base;
        for (index, text) in request.values.iter().enumerate() {
            let file = crate::helm::values::parse_yaml(text).map_err(|e| {
                NodeError::Invalid(ValidationError::new(format!("values[{index}]"), e))
            })?;
            values = crate::helm::values::coalesce(&values, &file);
        }
        for (index, expr) in request.set.iter().enumerate() {
            crate::helm::values::apply_set(&mut values, expr).map_err(|e| {
                NodeError::Invalid(ValidationError::new(format!("set[{index}]"), e))
            })?;
        }
        Ok(values)
    }

    /// `helm install`.
    pub async fn helm_install(&self, request: InstallRequest) -> Result<ReleaseRecord, NodeError> {
        request.validate()?;
        let _guard = self.helm_lock.lock().await;
        if !self
            .helm_history(&request.namespace, &request.name)?
            .is_empty()
        {
            return Err(NodeError::Conflict(format!(
                "release {} exists in namespace {}: use `helm upgrade`",
                request.name, request.namespace
            )));
        }
        let fetched = self.chart_of(&request).await?;
        let values = Self::user_values(&request, Value::Object(Default::default()))?;
        let target = Target {
            namespace: &request.namespace,
            name: &request.name,
            revision: 1,
            is_upgrade: false,
            description: "Install complete".into(),
        };
        self.release(target, fetched, values, &request, None).await
    }

    /// `helm upgrade`: the release's objects become the new chart's, with the new values (the
    /// last revision's values under them with `reuse_values`).
    pub async fn helm_upgrade(
        &self,
        namespace: &str,
        name: &str,
        request: InstallRequest,
    ) -> Result<ReleaseRecord, NodeError> {
        request.validate()?;
        let _guard = self.helm_lock.lock().await;
        let current = self.helm_release(namespace, name)?;
        let fetched = self.chart_of(&request).await?;
        let base = if request.reuse_values {
            current.values.clone()
        } else {
            Value::Object(Default::default())
        };
        let values = Self::user_values(&request, base)?;
        let target = Target {
            namespace,
            name,
            revision: current.revision + 1,
            is_upgrade: true,
            description: "Upgrade complete".into(),
        };
        self.release(target, fetched, values, &request, Some(current))
            .await
    }

    /// `helm rollback`: renders revision `to` (the one before the newest without) again as a
    /// new revision.
    pub async fn helm_rollback(
        &self,
        namespace: &str,
        name: &str,
        to: Option<u64>,
    ) -> Result<ReleaseRecord, NodeError> {
        let _guard = self.helm_lock.lock().await;
        let history = self.helm_history(namespace, name)?;
        let current = history.last().cloned().ok_or_else(|| NodeError::NotFound {
            kind: "release",
            name: format!("{namespace}/{name}"),
        })?;
        let to = to.unwrap_or(current.revision.saturating_sub(1));
        let old = history
            .iter()
            .find(|r| r.revision == to)
            .cloned()
            .ok_or_else(|| {
                NodeError::Invalid(ValidationError::new(
                    "revision",
                    format!(
                        "release {name} has no revision {to} (it keeps {})",
                        history
                            .iter()
                            .map(|r| r.revision.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            })?;
        let package = base64::engine::general_purpose::STANDARD
            .decode(&old.package)
            .map_err(|_| NodeError::Io(format!("revision {to}'s chart package is damaged")))?;
        let chart = Chart::load_archive(&package).map_err(|e| NodeError::Chart(e.0))?;
        let fetched = Fetched {
            chart,
            source: old.source.clone(),
            package,
        };
        let request = InstallRequest {
            name: name.to_string(),
            namespace: namespace.to_string(),
            skip_unsupported: !old.skipped.is_empty(),
            ..Default::default()
        };
        let target = Target {
            namespace,
            name,
            revision: current.revision + 1,
            is_upgrade: true,
            description: format!("Rollback to {to}"),
        };
        self.release(target, fetched, old.values, &request, Some(current))
            .await
    }

    /// `helm uninstall`: removes what the release's newest revision made, and its history.
    pub async fn helm_uninstall(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<ReleaseObjects, NodeError> {
        let _guard = self.helm_lock.lock().await;
        let history = self.helm_history(namespace, name)?;
        let current = history.last().cloned().ok_or_else(|| NodeError::NotFound {
            kind: "release",
            name: format!("{namespace}/{name}"),
        })?;
        let gone = ReleaseObjects::default();
        self.remove_objects(&current.objects, &gone).await?;
        for record in history {
            self.write::<ReleaseRecord>(HELM_RELEASES, &record.key(), None)
                .await?;
        }
        Ok(current.objects)
    }

    /// Renders, checks and applies one revision.
    async fn release(
        &self,
        target: Target<'_>,
        fetched: Fetched,
        values: Value,
        request: &InstallRequest,
        current: Option<ReleaseRecord>,
    ) -> Result<ReleaseRecord, NodeError> {
        let info = ReleaseInfo {
            name: target.name.to_string(),
            namespace: target.namespace.to_string(),
            revision: target.revision,
            is_upgrade: target.is_upgrade,
        };
        let rendered = crate::helm::render::render(&fetched.chart, &info, &values)
            .map_err(|e| NodeError::Chart(e.0))?;
        let plan = crate::kube::plan(&rendered.manifests);
        if !plan.unsupported.is_empty() && !request.skip_unsupported {
            return Err(NodeError::Chart(format!(
                "the chart has objects Hivemind cannot run (install without them with \
                 --skip-unsupported):\n  {}",
                plan.unsupported.join("\n  ")
            )));
        }
        let specs = self.check_plan(&plan, current.as_ref())?;
        let objects = ReleaseObjects {
            apps: specs.iter().map(|s| s.name.clone()).collect(),
            secrets: plan.secrets.keys().cloned().collect(),
            policies: plan.policies.iter().map(|p| p.name.clone()).collect(),
            volumes: specs
                .iter()
                .flat_map(|s| s.volumes.iter().map(|v| v.name.clone()))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        let mut record = ReleaseRecord {
            name: target.name.to_string(),
            namespace: target.namespace.to_string(),
            revision: target.revision,
            status: ReleaseStatus::Deployed,
            description: target.description,
            updated: now_secs(),
            chart: fetched.chart.metadata.name.clone(),
            chart_version: fetched.chart.metadata.version.clone(),
            app_version: fetched.chart.metadata.app_version.clone(),
            source: fetched.source,
            values,
            package: base64::engine::general_purpose::STANDARD.encode(&fetched.package),
            objects,
            accepted: plan.accepted.clone(),
            skipped: plan.unsupported.clone(),
            hooks: rendered.hooks,
            warnings: plan.warnings.clone(),
            notes: rendered.notes,
        };
        record.validate()?;
        if request.dry_run {
            return Ok(record);
        }
        if let Err(e) = self.apply_plan(&plan, specs, current.as_ref()).await {
            // What was applied stays; the failed revision records it so that an uninstall
            // or a later upgrade finds it.
            record.status = ReleaseStatus::Failed;
            record.description = format!("failed: {e}");
            if let Some(current) = &current {
                let mut objects = record.objects.clone();
                for (mine, theirs) in [
                    (&mut objects.apps, &current.objects.apps),
                    (&mut objects.secrets, &current.objects.secrets),
                    (&mut objects.policies, &current.objects.policies),
                ] {
                    mine.extend(
                        theirs
                            .iter()
                            .filter(|n| !mine.contains(n))
                            .cloned()
                            .collect::<Vec<_>>(),
                    );
                }
                record.objects = objects;
            }
            self.write(HELM_RELEASES, &record.key(), Some(&record))
                .await?;
            return Err(e);
        }
        if let Some(mut current) = current {
            current.status = ReleaseStatus::Superseded;
            self.write(HELM_RELEASES, &current.key(), Some(&current))
                .await?;
        }
        self.write(HELM_RELEASES, &record.key(), Some(&record))
            .await?;
        self.trim_history(target.namespace, target.name).await?;
        Ok(record)
    }

    /// Every app's spec, validated; and no name the plan uses belongs to anything but this
    /// release.
    fn check_plan(
        &self,
        plan: &Plan,
        current: Option<&ReleaseRecord>,
    ) -> Result<Vec<AppSpec>, NodeError> {
        let mine = current.map(|c| &c.objects);
        let owned = |list: fn(&ReleaseObjects) -> &Vec<String>, name: &str| {
            mine.is_some_and(|m| list(m).iter().any(|n| n == name))
        };
        let mut taken = Vec::new();
        let mut specs = Vec::new();
        for (index, request) in plan.apps.iter().enumerate() {
            let Command::Deploy(spec, _) = Command::deploy(request).map_err(|e| {
                NodeError::Invalid(ValidationError::new(
                    format!("apps[{index}] ({}).{}", request.name, e.field),
                    e.message,
                ))
            })?
            else {
                unreachable!("Command::deploy makes a deploy");
            };
            if self.store.app(&spec.name)?.is_some() && !owned(|o| &o.apps, &spec.name) {
                taken.push(format!("app {}", spec.name));
            }
            specs.push(*spec);
        }
        for name in plan.secrets.keys() {
            validate_name("secrets", name)?;
            if self.secret_record(name).is_ok() && !owned(|o| &o.secrets, name) {
                taken.push(format!("secret {name}"));
            }
        }
        for policy in &plan.policies {
            if self
                .store
                .value::<NetworkPolicy>(POLICIES, &policy.name)?
                .is_some()
                && !owned(|o| &o.policies, &policy.name)
            {
                taken.push(format!("policy {}", policy.name));
            }
        }
        if !taken.is_empty() {
            return Err(NodeError::Conflict(format!(
                "the release would take over what it did not create: {}",
                taken.join(", ")
            )));
        }
        Ok(specs)
    }

    /// Applies a checked plan, then removes what `current` had that the plan does not.
    async fn apply_plan(
        &self,
        plan: &Plan,
        specs: Vec<AppSpec>,
        current: Option<&ReleaseRecord>,
    ) -> Result<(), NodeError> {
        for (name, value) in &plan.secrets {
            let changed = match self.secret_value(name).await {
                Ok((old, _)) => Some(old.as_bytes() != value.as_slice()),
                Err(NodeError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            if changed != Some(false) {
                let create = changed.is_none();
                self.execute(Command::put_secret(name, value.clone(), create)?)
                    .await?;
            }
        }
        for spec in &specs {
            for volume in &spec.volumes {
                if self.store.volume(&volume.name)?.is_none() {
                    self.execute(Command::CreateVolume {
                        name: volume.name.clone(),
                    })
                    .await?;
                }
            }
        }
        for policy in &plan.policies {
            self.execute(Command::put_policy(policy.clone())?).await?;
        }
        for spec in specs {
            let unchanged = self
                .store
                .app(&spec.name)?
                .is_some_and(|record| record.spec == spec);
            if !unchanged {
                self.execute(Command::Deploy(Box::new(spec), Admission::default()))
                    .await?;
            }
        }
        if let Some(current) = current {
            let kept = ReleaseObjects {
                apps: plan.apps.iter().map(|a| a.name.clone()).collect(),
                secrets: plan.secrets.keys().cloned().collect(),
                policies: plan.policies.iter().map(|p| p.name.clone()).collect(),
                volumes: Vec::new(),
            };
            self.remove_objects(&current.objects, &kept).await?;
        }
        Ok(())
    }

    /// Deletes the apps, policies and secrets of `objects` that `kept` does not name (apps
    /// first: a secret in use cannot go). Volumes stay.
    async fn remove_objects(
        &self,
        objects: &ReleaseObjects,
        kept: &ReleaseObjects,
    ) -> Result<(), NodeError> {
        for name in objects.apps.iter().filter(|n| !kept.apps.contains(n)) {
            if self.store.app(name)?.is_some() {
                self.execute(Command::DeleteApp { name: name.clone() })
                    .await?;
            }
        }
        for name in objects
            .policies
            .iter()
            .filter(|n| !kept.policies.contains(n))
        {
            if self.store.value::<NetworkPolicy>(POLICIES, name)?.is_some() {
                self.execute(Command::DeletePolicy { name: name.clone() })
                    .await?;
            }
        }
        for name in objects.secrets.iter().filter(|n| !kept.secrets.contains(n)) {
            if self.secret_record(name).is_ok() {
                self.execute(Command::DeleteSecret { name: name.clone() })
                    .await?;
            }
        }
        Ok(())
    }

    /// Keeps the newest [`MAX_HISTORY`] revisions.
    async fn trim_history(&self, namespace: &str, name: &str) -> Result<(), NodeError> {
        let history = self.helm_history(namespace, name)?;
        let excess = history.len().saturating_sub(MAX_HISTORY);
        for record in &history[..excess] {
            self.write::<ReleaseRecord>(
                HELM_RELEASES,
                &release_key(namespace, name, record.revision),
                None,
            )
            .await?;
        }
        Ok(())
    }
}
