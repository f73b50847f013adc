//! `hivemind helm ...`: chart repositories, releases, and charts on disk (`create-chart`,
//! `package`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use clap::{Args, Subcommand};

use super::OutputFormat;
use super::client::{Client, ClientError};
use super::output::{joined, or_dash, print_list, print_object};
use crate::contract::{
    InstallRequest, Message, ReleaseView, RepoAddRequest, RepoView, RollbackRequest,
    UninstallAnswer,
};
use crate::helm::chart::{Chart, pack, read_dir};

#[derive(Debug, Subcommand)]
pub enum HelmCommand {
    /// Chart repositories
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Write a new chart as `helm create` does
    #[command(name = "create-chart")]
    CreateChart {
        #[arg(long)]
        name: String,
        /// Chart.yaml's description
        #[arg(long)]
        description: Option<String>,
        /// The directory the chart's directory is made in
        #[arg(long, default_value = ".")]
        path: PathBuf,
    },
    /// Pack a chart directory into `<name>-<version>.tgz` (and print its SHA-256 digest)
    Package {
        /// The chart's directory
        #[arg(long)]
        chart: PathBuf,
        /// Where the package is written
        #[arg(long, default_value = ".")]
        destination: PathBuf,
    },
    /// Install a chart as a release
    Install(ReleaseArgs),
    /// Upgrade a release to a chart and values
    Upgrade {
        #[command(flatten)]
        args: ReleaseArgs,
        /// Keep the last revision's values under the new ones
        #[arg(long)]
        reuse_values: bool,
    },
    /// Remove what a release made, and its history
    Uninstall {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Return a release to an earlier revision (default: the one before)
    Rollback {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        revision: Option<u64>,
    },
    /// The releases
    Ls,
    /// A release's revisions
    History {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// A release's newest revision, its objects and notes
    Status {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Add a chart repository (its index.yaml must load)
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        url: String,
    },
    /// The chart repositories
    Ls,
    /// Remove a chart repository
    Remove {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The release's name
    #[arg(long)]
    name: String,
    /// `<repository>/<chart>`, a chart directory or a `.tgz` package
    #[arg(long)]
    chart: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    /// A version or constraint (`1.2.3`, `^1.2`); the newest stable version without
    #[arg(long)]
    version: Option<String>,
    /// A value: `image.tag=2`, `a=1,b=2`, `list={x,y}` (repeatable, after the files)
    #[arg(long)]
    set: Vec<String>,
    /// A values file (repeatable, merged in order)
    #[arg(short = 'f', long = "values")]
    values: Vec<PathBuf>,
    /// Leave out the objects Hivemind cannot run instead of refusing the chart
    #[arg(long)]
    skip_unsupported: bool,
    /// Render and check only
    #[arg(long)]
    dry_run: bool,
}

impl ReleaseArgs {
    /// The request: a local chart (directory or package) is sent as a package.
    fn request(&self, reuse_values: bool) -> Result<InstallRequest, ClientError> {
        let local = Path::new(&self.chart);
        let (chart, package) = if local.exists() {
            let bytes = if local.is_dir() {
                let files = read_dir(local).map_err(|e| ClientError::Usage(e.0))?;
                let chart = Chart::from_files(files.clone())
                    .map_err(|e| ClientError::Usage(format!("{}: {e}", local.display())))?;
                pack(&chart.metadata.name, &files)
                    .map_err(|e| ClientError::Other(format!("packing the chart: {e}")))?
            } else {
                std::fs::read(local)
                    .map_err(|e| ClientError::Usage(format!("{}: {e}", local.display())))?
            };
            (
                String::new(),
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            )
        } else {
            (self.chart.clone(), None)
        };
        let values = self
            .values
            .iter()
            .map(|path| {
                std::fs::read_to_string(path)
                    .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(InstallRequest {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            chart,
            package,
            version: self.version.clone(),
            values,
            set: self.set.clone(),
            skip_unsupported: self.skip_unsupported,
            dry_run: self.dry_run,
            reuse_values,
        })
    }
}

fn release_path(namespace: &str, name: &str) -> Result<String, ClientError> {
    let segment = super::commands::path_segment;
    Ok(format!(
        "/api/helm/releases/{}/{}",
        segment(namespace)?,
        segment(name)?
    ))
}

/// Seconds since the epoch as `2026-12-01 11:40:00 UTC`.
fn when(secs: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs as i64) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => secs.to_string(),
    }
}

fn print_release(format: OutputFormat, verb: &str, view: &ReleaseView) {
    if format == OutputFormat::Json {
        print_object(format, view);
        return;
    }
    let dry = if view.dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    println!(
        "{verb} {} in namespace {}: revision {}, chart {}{dry}",
        view.name, view.namespace, view.revision, view.chart
    );
    println!("STATUS: {:?}", view.status);
    let objects = &view.objects;
    for (what, list) in [
        ("apps", &objects.apps),
        ("secrets", &objects.secrets),
        ("policies", &objects.policies),
        ("volumes", &objects.volumes),
    ] {
        if !list.is_empty() {
            println!("{what}: {}", joined(list));
        }
    }
    for (what, list) in [
        ("accepted, nothing to run", &view.accepted),
        ("left out (unsupported)", &view.skipped),
        ("hooks left out", &view.hooks),
        ("warning", &view.warnings),
    ] {
        for item in list {
            println!("{what}: {item}");
        }
    }
    if !view.notes.trim().is_empty() {
        println!("NOTES:\n{}", view.notes.trim_end());
    }
}

pub async fn helm(
    client: &Client,
    format: OutputFormat,
    command: &HelmCommand,
) -> Result<(), ClientError> {
    let segment = super::commands::path_segment;
    match command {
        HelmCommand::Repo(RepoCommand::Add { name, url }) => {
            let body = RepoAddRequest {
                name: name.clone(),
                url: url.clone(),
            };
            let repo: RepoView = client.post("/api/helm/repositories", &body).await?;
            if format == OutputFormat::Json {
                print_object(format, &repo);
            } else {
                println!(
                    "\"{}\" has been added to your repositories ({} charts)",
                    repo.name, repo.charts
                );
            }
        }
        HelmCommand::Repo(RepoCommand::Ls) => {
            let repos: Vec<RepoView> = client.get("/api/helm/repositories").await?;
            print_list(
                format,
                &repos,
                &[
                    ("NAME", |r| r.name.clone()),
                    ("URL", |r| r.url.clone()),
                    ("CHARTS", |r| r.charts.to_string()),
                ],
            );
        }
        HelmCommand::Repo(RepoCommand::Remove { name }) => {
            let answer: Message = client
                .delete(&format!("/api/helm/repositories/{}", segment(name)?))
                .await?;
            super::output::print_message(format, &answer);
        }
        HelmCommand::CreateChart {
            name,
            description,
            path,
        } => {
            let dir = crate::helm::create::write_chart(path, name, description.as_deref())
                .map_err(|e| ClientError::Usage(format!("create-chart: {e}")))?;
            println!("Creating {}", dir.display());
        }
        HelmCommand::Package { chart, destination } => {
            let files = read_dir(chart).map_err(|e| ClientError::Usage(e.0))?;
            let loaded = Chart::from_files(files.clone())
                .map_err(|e| ClientError::Usage(format!("{}: {e}", chart.display())))?;
            let bytes = pack(&loaded.metadata.name, &files)
                .map_err(|e| ClientError::Other(format!("packing the chart: {e}")))?;
            let out = destination.join(format!(
                "{}-{}.tgz",
                loaded.metadata.name, loaded.metadata.version
            ));
            std::fs::write(&out, &bytes)
                .map_err(|e| ClientError::Usage(format!("{}: {e}", out.display())))?;
            use sha2::Digest as _;
            println!(
                "Successfully packaged chart and saved it to: {} (sha256 {})",
                out.display(),
                hex::encode(sha2::Sha256::digest(&bytes))
            );
        }
        HelmCommand::Install(args) => {
            let view: ReleaseView = client
                .post("/api/helm/releases", &args.request(false)?)
                .await?;
            print_release(format, "Installed", &view);
        }
        HelmCommand::Upgrade { args, reuse_values } => {
            let view: ReleaseView = client
                .post(
                    &release_path(&args.namespace, &args.name)?,
                    &args.request(*reuse_values)?,
                )
                .await?;
            print_release(format, "Upgraded", &view);
        }
        HelmCommand::Uninstall { name, namespace } => {
            let answer: UninstallAnswer = client.delete(&release_path(namespace, name)?).await?;
            if format == OutputFormat::Json {
                print_object(format, &answer);
            } else {
                let r = &answer.removed;
                println!(
                    "release \"{}\" uninstalled: apps {}, secrets {}, policies {}",
                    answer.name,
                    or_dash((!r.apps.is_empty()).then(|| joined(&r.apps))),
                    or_dash((!r.secrets.is_empty()).then(|| joined(&r.secrets))),
                    or_dash((!r.policies.is_empty()).then(|| joined(&r.policies))),
                );
            }
        }
        HelmCommand::Rollback {
            name,
            namespace,
            revision,
        } => {
            let view: ReleaseView = client
                .post(
                    &format!("{}/rollback", release_path(namespace, name)?),
                    &RollbackRequest {
                        revision: *revision,
                    },
                )
                .await?;
            if format == OutputFormat::Json {
                print_object(format, &view);
            } else {
                println!(
                    "Rollback was a success: {} is at revision {} ({})",
                    view.name, view.revision, view.description
                );
            }
        }
        HelmCommand::Ls => {
            let releases: Vec<ReleaseView> = client.get("/api/helm/releases").await?;
            print_list(
                format,
                &releases,
                &[
                    ("NAME", |r| r.name.clone()),
                    ("NAMESPACE", |r| r.namespace.clone()),
                    ("REVISION", |r| r.revision.to_string()),
                    ("UPDATED", |r| when(r.updated)),
                    ("STATUS", |r| status(r)),
                    ("CHART", |r| r.chart.clone()),
                    ("APP VERSION", |r| or_dash(r.app_version.as_ref())),
                ],
            );
        }
        HelmCommand::History { name, namespace } => {
            let revisions: Vec<ReleaseView> = client
                .get(&format!("{}/history", release_path(namespace, name)?))
                .await?;
            print_list(
                format,
                &revisions,
                &[
                    ("REVISION", |r| r.revision.to_string()),
                    ("UPDATED", |r| when(r.updated)),
                    ("STATUS", |r| status(r)),
                    ("CHART", |r| r.chart.clone()),
                    ("APP VERSION", |r| or_dash(r.app_version.as_ref())),
                    ("DESCRIPTION", |r| r.description.clone()),
                ],
            );
        }
        HelmCommand::Status { name, namespace } => {
            let view: ReleaseView = client.get(&release_path(namespace, name)?).await?;
            print_release(format, "Release", &view);
        }
    }
    Ok(())
}

fn status(view: &ReleaseView) -> String {
    serde_json::to_value(view.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
