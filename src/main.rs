//! The `campaign-connector` command line. Thin: parse, then call the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use campaign_connector::campaigns_file::load_campaigns_file;
use campaign_connector::simulate::{render_jsonl, render_table, simulate, summary};
use campaign_connector::time::{parse_duration, parse_timestamp};
use campaign_connector::validate::Limits;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "campaign-connector",
    version,
    about = "Follow-on campaign connector"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run campaigns over a JSONL file of events offline and print sends and decisions.
    Simulate(SimulateArgs),
    /// Campaigns-as-code: check campaign files.
    #[command(subcommand)]
    Campaigns(CampaignsCommand),
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Campaign definitions (YAML).
    #[arg(long)]
    campaigns: PathBuf,
    /// Events, one JSON object per line: {"interaction": {...}} or {"user_event": {...}}.
    #[arg(long)]
    events: PathBuf,
    /// Advance time to here at the end (RFC 3339 or epoch ms). Default: the last event plus
    /// the longest delay.
    #[arg(long)]
    until: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// The longest delay a campaign may have (e.g. 30d; at most 2 years).
    #[arg(long, env = "CONNECTOR_MAX_DELAY", default_value = "30d")]
    max_delay: String,
}

#[derive(Subcommand)]
enum CampaignsCommand {
    /// Validate campaign files and print what they define.
    Validate {
        files: Vec<PathBuf>,
        /// The longest delay a campaign may have (e.g. 30d; at most 2 years).
        #[arg(long, env = "CONNECTOR_MAX_DELAY", default_value = "30d")]
        max_delay: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Jsonl,
    Table,
}

fn limits(max_delay: &str) -> Result<Limits> {
    let seconds = parse_duration(max_delay).context("--max-delay")?;
    Limits::with_max_delay(seconds).map_err(|e| anyhow::anyhow!("--max-delay: {e}"))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Simulate(args) => {
            let limits = limits(&args.max_delay)?;
            let campaigns = load_campaigns_file(&args.campaigns, &limits)?;
            let text = std::fs::read_to_string(&args.events)
                .with_context(|| format!("reading events file {}", args.events.display()))?;
            let until = args
                .until
                .as_deref()
                .map(parse_timestamp)
                .transpose()
                .context("--until")?;
            let name = args.events.display().to_string();
            let report = simulate(&campaigns, &text, &name, until, limits)
                .map_err(|e| anyhow::anyhow!("{}: {e}", args.campaigns.display()))?;
            print!(
                "{}",
                match args.format {
                    Format::Jsonl => render_jsonl(&report),
                    Format::Table => render_table(&report),
                }
            );
            for e in &report.line_errors {
                eprintln!("{name}:{}: {}", e.line, e.message);
            }
            eprintln!("{}", summary(&report));
            Ok(if report.line_errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Campaigns(CampaignsCommand::Validate { files, max_delay }) => {
            let limits = limits(&max_delay)?;
            let mut failed = false;
            for file in files {
                match load_campaigns_file(&file, &limits) {
                    Ok(campaigns) => {
                        for c in campaigns {
                            let kind = if c.follow_on.is_some() {
                                "follow-on"
                            } else {
                                "campaign"
                            };
                            println!(
                                "{}: {kind} {} v{} {:?}",
                                file.display(),
                                c.campaign_id,
                                c.version,
                                c.status
                            );
                        }
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
