//! `hivemind cicd ...`: CI/CD pipelines.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::client::{Client, ClientError};
use super::output::{or_dash, print_list, print_object};
use super::{OutputFormat, StrategyArgs};
use crate::cicd::{RunStatus, StepStatus};
use crate::contract::{
    MemoryValue, Message, PipelineSettings, PipelineView, RunView, StrategyRequest,
};

#[derive(Debug, Subcommand)]
pub enum CicdCommand {
    /// Create a pipeline: a branch of a git repository (file:///path, http:// or https://)
    #[command(name = "create-pipeline")]
    CreatePipeline {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Change what a pipeline runs and builds (an empty value clears an optional setting)
    #[command(name = "configure-pipeline")]
    ConfigurePipeline {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// How each run deploys the app (the flags of `app deploy --strategy`)
    #[command(name = "set-deployment-strategy")]
    SetDeploymentStrategy {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        strategy: StrategyArgs,
    },
    /// Queue a run of the pipeline
    #[command(name = "trigger-pipeline", alias = "trigger")]
    TriggerPipeline {
        #[arg(long)]
        name: String,
        /// Follow the run until it ends; a failed run exits with status 1
        #[arg(long)]
        wait: bool,
    },
    /// The pipeline's settings and its newest run, step by step
    #[command(name = "get-pipeline-status", alias = "status")]
    GetPipelineStatus {
        #[arg(long)]
        name: String,
    },
    /// List pipelines with their newest run
    #[command(alias = "list-pipelines")]
    Ls,
    /// A pipeline's runs, the newest first
    Runs {
        #[arg(long)]
        name: String,
    },
    /// The logs of a run's steps (the newest run unless --run)
    Logs {
        #[arg(long)]
        name: String,
        /// The run's number
        #[arg(long)]
        run: Option<u64>,
    },
    /// Delete a pipeline and its runs (the app it deployed stays)
    #[command(name = "delete-pipeline", alias = "delete")]
    DeletePipeline {
        #[arg(long)]
        name: String,
    },
}

/// What a pipeline runs and builds.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// The git repository: file:///path, http:// or https:// (required to create)
    #[arg(long)]
    repository: Option<String>,
    /// The branch each run builds (default main)
    #[arg(long)]
    branch: Option<String>,
    /// Run with /bin/sh -c in the checkout (at /workspace), after the tests
    #[arg(long)]
    build_command: Option<String>,
    /// Run with /bin/sh -c in the checkout first; a failure stops the run
    #[arg(long)]
    test_command: Option<String>,
    /// The image the commands run in (default: the base image)
    #[arg(long)]
    build_image: Option<String>,
    /// The image the output is layered on; each successful run deploys the result
    #[arg(long)]
    base_image: Option<String>,
    /// The checkout's directory that becomes the new layer (default: the whole checkout)
    #[arg(long)]
    output_dir: Option<String>,
    /// Where the output lands in the image (default /app)
    #[arg(long)]
    output_path: Option<String>,
    /// The app each run deploys (default: the pipeline's name)
    #[arg(long)]
    app: Option<String>,
    /// Push the image to this registry repository (tagged with the commit) so that every
    /// node can pull it
    #[arg(long)]
    push_to: Option<String>,
    /// A secret holding the token of a private repository
    #[arg(long)]
    token_secret: Option<String>,
    /// A secret holding the key webhook deliveries are signed with (HMAC-SHA256)
    #[arg(long)]
    webhook_secret: Option<String>,
    /// Seconds between looks at the branch for a new commit (0: off)
    #[arg(long)]
    poll_interval: Option<u32>,
    /// CPUs of the build containers
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory of the build containers, e.g. 2G
    #[arg(long)]
    memory: Option<String>,
    /// Seconds a step may run before it is stopped (default 1800)
    #[arg(long)]
    step_timeout: Option<u32>,
}

impl SettingsArgs {
    fn request(&self) -> PipelineSettings {
        PipelineSettings {
            name: None,
            repository: self.repository.clone(),
            branch: self.branch.clone(),
            build_command: self.build_command.clone(),
            test_command: self.test_command.clone(),
            build_image: self.build_image.clone(),
            base_image: self.base_image.clone(),
            output_dir: self.output_dir.clone(),
            output_path: self.output_path.clone(),
            app: self.app.clone(),
            push_to: self.push_to.clone(),
            token_secret: self.token_secret.clone(),
            webhook_secret: self.webhook_secret.clone(),
            poll_interval: self.poll_interval,
            cpu: self.cpu,
            memory: self.memory.clone().map(MemoryValue::Text),
            step_timeout: self.step_timeout,
        }
    }
}

fn pipeline_path(name: &str) -> Result<String, ClientError> {
    Ok(format!(
        "/api/cicd/pipelines/{}",
        super::commands::path_segment(name)?
    ))
}

pub async fn cicd(
    client: &Client,
    format: OutputFormat,
    command: &CicdCommand,
) -> Result<(), ClientError> {
    match command {
        CicdCommand::CreatePipeline { name, settings } => {
            if settings.repository.is_none() {
                return Err(ClientError::Usage(
                    "create-pipeline needs --repository URL".to_string(),
                ));
            }
            let body = PipelineSettings {
                name: Some(name.clone()),
                ..settings.request()
            };
            let view: PipelineView = client.post("/api/cicd/pipelines", &body).await?;
            show_pipeline(format, &view, &format!("Created pipeline {}", view.name));
        }
        CicdCommand::ConfigurePipeline { name, settings } => {
            let path = format!("{}/config", pipeline_path(name)?);
            let view: PipelineView = client.post(&path, &settings.request()).await?;
            show_pipeline(format, &view, &format!("Configured pipeline {}", view.name));
        }
        CicdCommand::SetDeploymentStrategy { name, strategy } => {
            let path = format!("{}/strategy", pipeline_path(name)?);
            let body = super::commands::strategy_request(strategy).unwrap_or(StrategyRequest {
                name: String::new(),
                ..Default::default()
            });
            let view: PipelineView = client.post(&path, &body).await?;
            show_pipeline(
                format,
                &view,
                &format!(
                    "Pipeline {} deploys with the {} strategy",
                    view.name,
                    strategy_name(&view)
                ),
            );
        }
        CicdCommand::TriggerPipeline { name, wait } => {
            let path = format!("{}/runs", pipeline_path(name)?);
            let run: RunView = client.post(&path, &()).await?;
            if !*wait {
                if format == OutputFormat::Json {
                    print_object(format, &run);
                } else {
                    println!("Queued run #{} of pipeline {}", run.number, run.pipeline);
                }
                return Ok(());
            }
            eprintln!("Queued run #{} of pipeline {}", run.number, run.pipeline);
            let run = follow(client, name, run.number).await?;
            if format == OutputFormat::Json {
                print_object(format, &run);
            } else {
                print_run(&run);
            }
            if run.status == RunStatus::Failed {
                return Err(ClientError::Other(format!(
                    "run #{} failed: {}",
                    run.number,
                    run.error.as_deref().unwrap_or("see its logs")
                )));
            }
        }
        CicdCommand::GetPipelineStatus { name } => {
            let view: PipelineView = client.get(&pipeline_path(name)?).await?;
            if format == OutputFormat::Json {
                print_object(format, &view);
            } else {
                print_status(&view);
            }
        }
        CicdCommand::Ls => {
            let views: Vec<PipelineView> = client.get("/api/cicd/pipelines").await?;
            print_list(
                format,
                &views,
                &[
                    ("NAME", |p| p.name.clone()),
                    ("REPOSITORY", |p| p.repository.clone()),
                    ("BRANCH", |p| p.branch.clone()),
                    ("APP", |p| p.app.clone()),
                    ("STRATEGY", |p| strategy_name(p).to_string()),
                    ("LAST RUN", |p| {
                        p.last_run
                            .as_ref()
                            .map(run_cell)
                            .unwrap_or_else(|| "-".to_string())
                    }),
                ],
            );
        }
        CicdCommand::Runs { name } => {
            let runs: Vec<RunView> = client
                .get(&format!("{}/runs", pipeline_path(name)?))
                .await?;
            print_list(
                format,
                &runs,
                &[
                    ("RUN", |r| format!("#{}", r.number)),
                    ("STATUS", |r| r.status.as_str().to_string()),
                    ("TRIGGER", |r| r.trigger.clone()),
                    ("COMMIT", |r| or_dash(r.commit.as_ref().map(|c| &c[..12]))),
                    ("NODE", |r| or_dash(r.node.as_ref())),
                    ("ERROR", |r| or_dash(r.error.as_ref())),
                ],
            );
        }
        CicdCommand::Logs { name, run } => {
            let run: RunView = match run {
                Some(number) => {
                    client
                        .get(&format!("{}/runs/{number}", pipeline_path(name)?))
                        .await?
                }
                None => {
                    let view: PipelineView = client.get(&pipeline_path(name)?).await?;
                    view.last_run.ok_or_else(|| {
                        ClientError::Other(format!("pipeline {name} has not run yet"))
                    })?
                }
            };
            if format == OutputFormat::Json {
                print_object(format, &run.steps);
            } else {
                for step in &run.steps {
                    println!("==> {} ({})", step.name, step_cell(step));
                    if !step.log.is_empty() {
                        println!("{}", step.log.trim_end());
                    }
                }
            }
        }
        CicdCommand::DeletePipeline { name } => {
            let answer: Message = client.delete(&pipeline_path(name)?).await?;
            super::output::print_message(format, &answer);
        }
    }
    Ok(())
}

/// Polls the run until it ends, telling each step as it ends.
async fn follow(client: &Client, name: &str, number: u64) -> Result<RunView, ClientError> {
    let path = format!("{}/runs/{number}", pipeline_path(name)?);
    let mut told = 0;
    loop {
        let run: RunView = client.get(&path).await?;
        for step in run.steps.iter().skip(told) {
            if step.status == StepStatus::Running {
                break;
            }
            eprintln!("  {:<7} {}", step.name, step_cell(step));
            told += 1;
        }
        if run.status.finished() {
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn strategy_name(view: &PipelineView) -> &str {
    view.strategy
        .as_ref()
        .and_then(|s| s.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("the app's")
}

fn step_cell(step: &crate::cicd::StepRecord) -> String {
    let status = match step.status {
        StepStatus::Running => "running",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
    };
    match step.exit_code {
        Some(code) if step.status == StepStatus::Failed => format!("{status}, exit code {code}"),
        _ => status.to_string(),
    }
}

fn run_cell(run: &RunView) -> String {
    let commit = run.commit.as_deref().map(|c| &c[..12]).unwrap_or("-");
    format!("#{} {} ({commit})", run.number, run.status.as_str())
}

fn show_pipeline(format: OutputFormat, view: &PipelineView, message: &str) {
    if format == OutputFormat::Json {
        print_object(format, view);
    } else {
        println!("{message}");
    }
}

fn print_run(run: &RunView) {
    println!(
        "Run #{} ({}): {}{}",
        run.number,
        run.trigger,
        run.status.as_str(),
        run.commit
            .as_deref()
            .map(|c| format!(", commit {c}"))
            .unwrap_or_default()
    );
    if let Some(image) = &run.image {
        println!("  image: {image}");
    }
    for step in &run.steps {
        println!("  {:<7} {}", step.name, step_cell(step));
    }
    if let Some(error) = &run.error {
        println!("  error: {error}");
        if let Some(step) = run
            .steps
            .iter()
            .rev()
            .find(|s| s.status == StepStatus::Failed)
        {
            let tail: Vec<&str> = step.log.lines().rev().take(10).collect();
            for line in tail.into_iter().rev() {
                println!("    | {line}");
            }
        }
    }
}

fn print_status(view: &PipelineView) {
    println!(
        "Pipeline {}: {} of {} -> app {}",
        view.name, view.branch, view.repository, view.app
    );
    let show = |label: &str, value: &Option<String>| {
        if let Some(value) = value {
            println!("  {label}: {value}");
        }
    };
    show("test", &view.test_command);
    show("build", &view.build_command);
    show("build image", &view.build_image);
    show("base image", &view.base_image);
    if view.base_image.is_some() {
        println!(
            "  output: {} -> {}",
            view.output_dir.as_deref().unwrap_or("the checkout"),
            view.output_path
        );
    }
    println!("  strategy: {}", strategy_name(view));
    if view.poll_interval > 0 {
        println!("  polls the branch every {}s", view.poll_interval);
    }
    if view.queued > 0 {
        println!("  queued runs: {}", view.queued);
    }
    match &view.last_run {
        Some(run) => print_run(run),
        None => println!(
            "No run yet: hivemind cicd trigger-pipeline --name {}",
            view.name
        ),
    }
}
