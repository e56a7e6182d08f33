//! The `campaign-connector` command line. Thin: parse, then call the library.

mod schemas_command;

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use campaign_connector::campaigns_file::load_campaigns_file;
use campaign_connector::runtime::{self, admin::Published, config, config::Settings};
use campaign_connector::simulate::render_table;
use campaign_connector::time::{check_event_range, parse_duration, parse_rfc3339};
use campaign_connector::validate::Limits;
use clap::{Parser, Subcommand, ValueEnum};
use schemas_command::{describe_schemas, render_schema, schema_json, TopicOf};
use signal_hook::consts::{SIGINT, SIGTERM};

/// mimalloc: the connector allocates and frees many small values per record (decoded
/// events, decisions, changelog entries); measured side by side in the benchmark suite it
/// takes about a fifth less CPU per event than the C library's allocator
/// (the allocator table of `docs/runtime.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the connector: consume interactions and user events, emit send-commands.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run campaigns over a JSONL file of events offline and print sends and decisions.
    Simulate(SimulateArgs),
    /// Campaigns-as-code: validate, publish and list campaigns.
    #[command(subcommand)]
    Campaigns(CampaignsCommand),
    /// Topic administration.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Partition count of the inputs (growing it with the state moved: docs/operations.md).
    #[command(subcommand)]
    Partitions(PartitionsCommand),
    /// Produce input events from a JSONL file (the simulator's format) to the input topics.
    Send {
        events: PathBuf,
        /// Shift every timestamp so that the first event happens now (keeps the gaps).
        #[arg(long)]
        now: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Dead-letter topic tools.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Print each Avro schema's name, fingerprint (CRC-64-AVRO of the Parsing Canonical
    /// Form, as Java prints it and in hex), single-object header and canonical form: this
    /// build's schemas, or the given .avsc files. For a topic in the confluent encoding,
    /// also the registry ids and versions of the schema under the topic's subject.
    Schemas {
        /// Schema files to describe instead of this build's schemas.
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Preview a campaigns file on a window of the real input topics, read-only: what its
    /// follow-ons would have sent, and why not.
    Preview(PreviewArgs),
    /// Show the committed send-commands and decisions as a table (reads for a while).
    Outputs {
        /// How long to read, e.g. 3s.
        #[arg(long, default_value = "3s")]
        read_for: String,
        /// Show the shadow topic instead: what shadow follow-ons would have sent, and their
        /// decisions.
        #[arg(long)]
        shadow: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Configuration file (YAML). Every key can also be set as CONNECTOR_<KEY> in the
    /// environment (nested keys joined by __), which wins over the file.
    #[arg(long, env = "CONNECTOR_CONFIG")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn settings(&self) -> Result<Settings> {
        Ok(config::load(self.config.as_deref(), std::env::vars())?)
    }
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Produce dead letters back to their source topics (after fixing what was wrong).
    Replay {
        /// Only records of this error class (the error.class header).
        #[arg(long)]
        class: Option<String>,
        /// Count what would be replayed without producing anything.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create every topic the connector uses (existing ones are left as they are).
    Create {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Check that the topics exist and the inputs are co-partitioned.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum PartitionsCommand {
    /// Grow the inputs and the changelog to N partitions while the connector runs: writes
    /// the layout record, waits for the instances to read it, grows the changelog, then
    /// interactions, then user events. Run again with the same --to to resume.
    Expand(ExpandArgs),
}

#[derive(clap::Args)]
struct ExpandArgs {
    /// The new partition count (above the current one).
    #[arg(long)]
    to: u32,
    /// From now to the cut: how long upstream producers may still write with the old
    /// partition count (their metadata.max.age.ms, 5m by default in the Java client).
    #[arg(long, default_value = runtime::partitions::DEFAULT_SETTLE)]
    settle: String,
    /// How long to wait after writing the layout before growing the first topic.
    #[arg(long, default_value = runtime::partitions::DEFAULT_PROPAGATION)]
    propagation: String,
    /// Print the plan and the users that move (the changelog is read); change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    config: ConfigArg,
}

impl ExpandArgs {
    fn options(&self) -> Result<runtime::partitions::ExpandOptions> {
        let period = |option: &str, text: &str| -> Result<std::time::Duration> {
            let seconds = parse_duration(text).with_context(|| format!("--{option}"))?;
            Ok(std::time::Duration::from_secs(seconds.unsigned_abs()))
        };
        Ok(runtime::partitions::ExpandOptions {
            to: self.to,
            settle: period("settle", &self.settle)?,
            propagation: period("propagation", &self.propagation)?,
            dry_run: self.dry_run,
        })
    }
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Campaign definitions (YAML).
    #[arg(long)]
    campaigns: PathBuf,
    /// Events, one JSON object per line: {"interaction": {...}} or {"user_event": {...}}.
    #[arg(long)]
    events: PathBuf,
    /// Advance time to here at the end, as RFC 3339 (2026-11-28T09:00:00Z; a bare number is
    /// refused, it could mean seconds or milliseconds). Default: the last event plus the
    /// longest delay.
    #[arg(long)]
    until: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// The longest delay a campaign may have (e.g. 30d; at most 2 years).
    #[arg(long, env = "CONNECTOR_MAX_DELAY", default_value = "30d")]
    max_delay: String,
    /// How far before published_at a backfill start may be (e.g. 7d).
    #[arg(long, env = "CONNECTOR_MAX_BACKFILL", default_value = "7d")]
    max_backfill: String,
    /// How many events may be out of event-time order in the file: events are put in
    /// order within this many; an event out of order by more is a bad line.
    #[arg(long, default_value_t = campaign_connector::simulate::DEFAULT_REORDER_WINDOW)]
    reorder_window: usize,
}

#[derive(clap::Args)]
struct PreviewArgs {
    /// Campaign definitions (YAML): new follow-ons, or edits of live ones.
    #[arg(long)]
    campaigns: PathBuf,
    /// Start of the window, by record time: a duration ago (7d, 12h) or RFC 3339.
    #[arg(long)]
    since: String,
    /// End of the window, by record time, as RFC 3339; pending sends due by then fire.
    /// Default: the end of the topics when the preview starts, and now.
    #[arg(long)]
    until: Option<String>,
    /// How many users to show every decision of.
    #[arg(long, default_value_t = 10)]
    users: usize,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Subcommand)]
enum CampaignsCommand {
    /// Validate campaign files and publish them to the campaigns topic.
    Publish {
        files: Vec<PathBuf>,
        /// Backfill: every follow-on published counts triggers from this time on, even
        /// before its publish time — for records the connector has not processed yet (it
        /// never reads input again). A duration ago (2d) or RFC 3339; at most max_backfill
        /// before the publish time.
        #[arg(long)]
        backfill_since: Option<String>,
        /// Shadow mode: publish each follow-on of the files as `<id>@shadow`, which the
        /// running connector evaluates like any follow-on but whose send-commands and
        /// decisions go to the shadow topic only. Plain campaigns are not published.
        #[arg(long, conflicts_with = "backfill_since")]
        shadow: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Promote a shadow follow-on: publish its rule as a new live version of `<id>`, counting
    /// triggers from now on, and stop the shadow.
    Promote {
        /// The shadow's id, `<id>@shadow`.
        shadow_id: String,
        /// Refused: the promoted version counts triggers from the promotion on, so that it
        /// never sends for a trigger its shadow already handled.
        #[arg(long, hide = true)]
        backfill_since: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the live catalog.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the campaigns in the file format.
        #[arg(long)]
        yaml: bool,
    },
    /// Validate campaign files and print what they define.
    Validate {
        files: Vec<PathBuf>,
        /// The longest delay a campaign may have (e.g. 30d; at most 2 years).
        #[arg(long, env = "CONNECTOR_MAX_DELAY", default_value = "30d")]
        max_delay: String,
        /// How far before published_at a backfill start may be (e.g. 7d).
        #[arg(long, env = "CONNECTOR_MAX_BACKFILL", default_value = "7d")]
        max_backfill: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Jsonl,
    Table,
}

fn limits(max_delay: &str, max_backfill: &str) -> Result<Limits> {
    let seconds = parse_duration(max_delay).context("--max-delay")?;
    let limits =
        Limits::with_max_delay(seconds).map_err(|e| anyhow::anyhow!("--max-delay: {e}"))?;
    let backfill = campaign_connector::time::parse_duration_ms(max_backfill)
        .context("--max-backfill")?
        / 1_000;
    limits
        .with_max_backfill(backfill)
        .map_err(|e| anyhow::anyhow!("--max-backfill: {e}"))
}

/// A point in time given on the command line: RFC 3339, or a duration ago (`7d`, `12h`).
fn time_or_ago(option: &str, text: &str, now: i64) -> Result<i64> {
    if let Ok(t) = parse_rfc3339(text) {
        return Ok(t);
    }
    let ago = campaign_connector::time::parse_duration_ms(text).map_err(|e| {
        anyhow::anyhow!(
            "{option} {text:?}: expected a duration ago (7d, 12h) or an RFC 3339 time: {e}"
        )
    })?;
    Ok(now.saturating_sub(ago))
}

fn main() -> ExitCode {
    runtime::memory::keep_heap_pages_small();
    init_tracing();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr, level by `RUST_LOG` (default `info`), JSON when
/// `CONNECTOR_LOG_FORMAT=json`.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Each processing thread is a group member of its own (`member-<k>`): name it.
        .with_thread_names(true)
        .with_writer(std::io::stderr);
    if std::env::var("CONNECTOR_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            let settings = config.settings()?;
            let shutdown = Arc::new(AtomicBool::new(false));
            for signal in [SIGTERM, SIGINT] {
                signal_hook::flag::register(signal, shutdown.clone())
                    .context("installing signal handlers")?;
            }
            runtime::run(settings, shutdown)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Send {
            events,
            now,
            config,
        } => send_command(&events, now, &config),
        Command::Dlq(DlqCommand::Replay {
            class,
            dry_run,
            config,
        }) => {
            let settings = config.settings()?;
            let done = runtime::admin::replay_dlq(&settings, class.as_deref(), dry_run)?;
            let verb = if dry_run { "would replay" } else { "replayed" };
            println!("read {} dead letters, {verb} {}", done.read, done.replayed);
            Ok(ExitCode::SUCCESS)
        }
        Command::Schemas {
            files,
            format,
            config,
        } => {
            let settings = config.settings()?;
            let described = describe_schemas(&files, &settings)?;
            for d in &described {
                match format {
                    Format::Table => print!("{}", render_schema(d)),
                    Format::Jsonl => println!("{}", schema_json(d)),
                }
            }
            // A registry that could not be asked is a failure of the command (it is in the
            // output too); a missing subject or version is an answer.
            let mut failed = false;
            for d in &described {
                if let Some(TopicOf {
                    registry: Some(Err(e)),
                    ..
                }) = &d.topic
                {
                    eprintln!("error: {e}");
                    failed = true;
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Outputs {
            read_for,
            shadow,
            config,
        } => {
            let settings = config.settings()?;
            let ms =
                campaign_connector::time::parse_duration_ms(&read_for).context("--read-for")?;
            let outputs = runtime::admin::read_outputs(
                &settings,
                std::time::Duration::from_millis(ms as u64),
                shadow,
            )?;
            let report = campaign_connector::simulate::Report {
                outputs,
                ..Default::default()
            };
            print!("{}", render_table(&report));
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics(TopicsCommand::Create { config }) => {
            let settings = config.settings()?;
            let created = runtime::kafka::create_topics(&settings)?;
            for t in &created {
                println!("created {t}");
            }
            println!("{} topics created; the others existed", created.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics(TopicsCommand::Check { config }) => {
            let settings = config.settings()?;
            let partitions = runtime::kafka::check_co_partitioning(&settings)?;
            match runtime::layout::read_layout(&settings)? {
                Some(l) => println!(
                    "topics ok: inputs and changelog in a state of layout epoch {} ({} → {} partitions); a user's task is found with {partitions} partitions",
                    l.epoch, l.from, l.to
                ),
                None => println!(
                    "topics ok: inputs and changelog co-partitioned with {partitions} partitions"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Partitions(PartitionsCommand::Expand(args)) => {
            let options = args.options()?;
            let settings = args.config.settings()?;
            runtime::partitions::expand(&settings, &options, &mut |line| println!("{line}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Campaigns(CampaignsCommand::Promote {
            shadow_id,
            backfill_since,
            config,
        }) => {
            if backfill_since.is_some() {
                anyhow::bail!(
                    "{}",
                    campaign_connector::shadow::ShadowError::PromoteWithBackfill
                );
            }
            let settings = config.settings()?;
            let (live, stopped) = runtime::admin::promote(&settings, &shadow_id)?;
            println!(
                "promoted {shadow_id} to {} v{}: triggers from {} on count",
                live.campaign_id,
                live.version,
                campaign_connector::time::format_timestamp(live.published_at.unwrap_or(0))
            );
            println!("stopped {} v{}", stopped.campaign_id, stopped.version);
            Ok(ExitCode::SUCCESS)
        }
        Command::Campaigns(CampaignsCommand::Publish {
            files,
            backfill_since,
            shadow,
            config,
        }) => {
            let settings = config.settings()?;
            let mut campaigns = Vec::new();
            for file in &files {
                campaigns.extend(load_campaigns_file(file, &settings.limits)?);
            }
            if shadow {
                campaigns = campaign_connector::shadow::shadow_versions(&campaigns)?;
                if !runtime::kafka::shadow_topic_exists(&settings)? {
                    anyhow::bail!(
                        "the shadow topic {:?} does not exist: create it with `campaign-connector topics create` (the connector needs it for shadow follow-ons); nothing was published",
                        settings.topics.shadow
                    );
                }
            }
            let backfill_since = backfill_since
                .map(|t| time_or_ago("--backfill-since", &t, now_ms()?))
                .transpose()?;
            let options = runtime::admin::PublishOptions { backfill_since };
            let backfill = |id: &str| {
                let follow_on = campaigns
                    .iter()
                    .any(|c| c.campaign_id == id && c.follow_on.is_some());
                match backfill_since {
                    Some(t) if follow_on => format!(
                        ", triggers from {} count (backfill)",
                        campaign_connector::time::format_timestamp(t)
                    ),
                    _ => String::new(),
                }
            };
            let mode = |id: &str| {
                if campaign_connector::model::Campaign::live_id_of(id).is_some() {
                    ", shadow: its output goes to the shadow topic only"
                } else {
                    ""
                }
            };
            for p in runtime::admin::publish_with(&settings, &campaigns, options)? {
                match p {
                    Published::New(id, v) => {
                        println!("published {id} v{v} (new){}{}", backfill(&id), mode(&id))
                    }
                    Published::Updated(id, v) => {
                        println!(
                            "published {id} v{v} (updated){}{}",
                            backfill(&id),
                            mode(&id)
                        )
                    }
                    Published::Unchanged(id, v) => println!("unchanged {id} v{v}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Campaigns(CampaignsCommand::List { config, yaml }) => {
            let settings = config.settings()?;
            let live = runtime::admin::live_catalog(&settings)?;
            if yaml {
                let all: Vec<_> = live.into_values().collect();
                print!("{}", campaign_connector::campaigns_file::to_yaml(&all));
            } else {
                for c in live.values() {
                    let kind = match &c.follow_on {
                        Some(f) => format!(
                            "follow-on of {} {:?}{}",
                            f.trigger.campaign_id,
                            f.trigger.kinds,
                            c.backfill_since
                                .map(|t| format!(
                                    ", backfill from {}",
                                    campaign_connector::time::format_timestamp(t)
                                ))
                                .unwrap_or_default()
                        ),
                        None => "campaign".into(),
                    };
                    let kind = match c.mode {
                        campaign_connector::model::CampaignMode::Shadow => format!("shadow {kind}"),
                        campaign_connector::model::CampaignMode::Live => kind,
                    };
                    println!(
                        "{:<32} v{:<4} {:<9?} {kind}",
                        c.campaign_id, c.version, c.status
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => simulate_command(args),
        Command::Preview(args) => preview_command(args),
        Command::Campaigns(CampaignsCommand::Validate {
            files,
            max_delay,
            max_backfill,
        }) => {
            let limits = limits(&max_delay, &max_backfill)?;
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

/// `simulate`: streams the events file through the engine, the output to stdout as it is
/// produced, bad lines to stderr as they are found.
fn simulate_command(args: SimulateArgs) -> Result<ExitCode> {
    use campaign_connector::events_file::EventLines;
    use campaign_connector::simulate::{
        run, summary as render_summary, JsonlWriter, Options, OutputWriter, SimulateError,
        TableWriter,
    };
    use std::io::{BufReader, BufWriter};

    let limits = limits(&args.max_delay, &args.max_backfill)?;
    let campaigns = load_campaigns_file(&args.campaigns, &limits)?;
    let until = args
        .until
        .as_deref()
        .map(parse_rfc3339)
        .transpose()
        .context("--until")?;
    let file = std::fs::File::open(&args.events)
        .with_context(|| format!("reading events file {}", args.events.display()))?;
    let name = args.events.display().to_string();
    let stdout = BufWriter::with_capacity(1 << 16, std::io::stdout());
    let mut writer = match args.format {
        Format::Jsonl => OutputWriter::Jsonl(JsonlWriter::new(stdout)),
        Format::Table => OutputWriter::Table(Box::new(TableWriter::new(stdout))),
    };
    let options = Options {
        until,
        reorder_window: args.reorder_window,
    };
    let result = run(
        &campaigns,
        EventLines::new(BufReader::with_capacity(1 << 16, file)),
        &name,
        options,
        limits,
        &mut |o| writer.write(&o),
        &mut |e| eprintln!("{name}:{}: {}", e.line, e.message),
    );
    let summary = match result {
        Ok(summary) => summary,
        // The reader of the output went away (`| head`): stop quietly.
        Err(SimulateError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            return Ok(ExitCode::SUCCESS)
        }
        Err(SimulateError::Campaign(e)) => {
            anyhow::bail!("{}: {e}", args.campaigns.display())
        }
        Err(SimulateError::Read(e)) => {
            anyhow::bail!("reading events file {}: {e}", args.events.display())
        }
        Err(e) => return Err(e.into()),
    };
    match writer.finish() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        other => {
            other.context("writing the output")?;
        }
    }
    eprintln!("{}", render_summary(&summary));
    Ok(if summary.bad_lines == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The wall clock in epoch milliseconds.
fn now_ms() -> Result<i64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64)
}

/// `preview`: reads the window, prints the report; progress on stderr while it reads.
fn preview_command(args: PreviewArgs) -> Result<ExitCode> {
    use campaign_connector::preview::report::{render_jsonl, render_table, PreviewReport};
    use campaign_connector::preview::source::{Progress, Window};
    use campaign_connector::time::format_timestamp;
    use std::io::IsTerminal;

    let settings = args.config.settings()?;
    let file = load_campaigns_file(&args.campaigns, &settings.limits)?;
    let now = now_ms()?;
    let since = time_or_ago("--since", &args.since, now)?;
    let until = args
        .until
        .as_deref()
        .map(parse_rfc3339)
        .transpose()
        .context("--until")?;
    if let Some(until) = until.filter(|&u| u <= since) {
        anyhow::bail!(
            "--until {} is not after --since {}: the window is empty",
            format_timestamp(until),
            format_timestamp(since)
        );
    }
    let window = Window { since, until };
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    let mut progress = |p: &Progress| {
        let seconds = p.elapsed.as_secs_f64().max(1e-3);
        let line = format!(
            "read {} of about {} records ({:.0} %), {:.0} records/s, event time {}",
            p.records,
            p.expected,
            100.0 * p.records as f64 / p.expected.max(1) as f64,
            p.records as f64 / seconds,
            p.event_time
                .map(format_timestamp)
                .unwrap_or_else(|| "-".into())
        );
        if terminal {
            eprint!("\r{line}   ");
        } else if last_line.elapsed() >= std::time::Duration::from_secs(5) {
            last_line = std::time::Instant::now();
            eprintln!("{line}");
        }
    };
    let outcome =
        campaign_connector::preview::run(&settings, &file, window, now, args.users, &mut progress)?;
    if terminal {
        eprintln!();
    }
    let name = args.campaigns.display().to_string();
    let report = PreviewReport {
        campaigns_file: &name,
        catalog: &outcome.catalog,
        window: outcome.window,
        stats: &outcome.stats,
        tally: &outcome.tally,
    };
    print!(
        "{}",
        match args.format {
            Format::Table => render_table(&report),
            Format::Jsonl => render_jsonl(&report),
        }
    );
    eprintln!(
        "read {} records in {:.1} s; {} events",
        outcome.stats.records.iter().sum::<u64>(),
        outcome.stats.elapsed.as_secs_f64(),
        outcome.tally.engine.events
    );
    Ok(ExitCode::SUCCESS)
}

/// `send`: streams the events file to the input topics (bad lines to stderr as found).
/// With `--now`, a first pass finds the earliest event time the connector would accept.
fn send_command(events: &std::path::Path, now: bool, config: &ConfigArg) -> Result<ExitCode> {
    use campaign_connector::events_file::EventLines;
    use campaign_connector::model::InputEvent;
    use std::io::BufReader;

    let settings = config.settings()?;
    let open = || -> Result<EventLines<BufReader<std::fs::File>>> {
        let file = std::fs::File::open(events)
            .with_context(|| format!("reading events file {}", events.display()))?;
        Ok(EventLines::new(BufReader::with_capacity(1 << 16, file)))
    };
    let read_error = |e: std::io::Error| {
        campaign_connector::runtime::RuntimeError::Setup(format!(
            "reading events file {}: {e}",
            events.display()
        ))
    };
    let shift = if now {
        // The first event the connector would accept sets the shift; times out of range
        // stay out of range (or are refused when they cannot be shifted).
        let mut lines = open()?;
        let mut first: Option<i64> = None;
        while let Some((_, parsed)) = lines.next_event().map_err(read_error)? {
            if let Ok(e) = parsed {
                let t = e.occurred_at();
                if check_event_range(t).is_ok() {
                    first = Some(first.map_or(t, |f| f.min(t)));
                }
            }
        }
        now_ms()? - first.unwrap_or(0)
    } else {
        0
    };
    let mut lines = open()?;
    let mut bad = 0usize;
    let name = events.display().to_string();
    let stream = std::iter::from_fn(|| loop {
        match lines.next_event() {
            Err(e) => return Some(Err(read_error(e))),
            Ok(None) => return None,
            Ok(Some((line, Err(message)))) => {
                bad += 1;
                eprintln!("{name}:{line}: {message}");
            }
            Ok(Some((line, Ok(mut e)))) => {
                let t = match &mut e {
                    InputEvent::Interaction(i) => &mut i.occurred_at,
                    InputEvent::UserEvent(u) => &mut u.occurred_at,
                };
                match t.checked_add(shift) {
                    Some(shifted) => {
                        *t = shifted;
                        return Some(Ok(e));
                    }
                    None => {
                        bad += 1;
                        eprintln!("{name}:{line}: occurred_at {t} cannot be shifted by {shift} ms");
                    }
                }
            }
        }
    });
    let n = runtime::admin::send_event_stream(&settings, stream)?;
    println!("sent {n} events");
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_options(args: &[&str]) -> Result<runtime::partitions::ExpandOptions> {
        let cli = Cli::try_parse_from(
            ["campaign-connector", "partitions", "expand"]
                .iter()
                .chain(args),
        )?;
        match cli.command {
            Command::Partitions(PartitionsCommand::Expand(a)) => a.options(),
            _ => anyhow::bail!("not partitions expand"),
        }
    }

    #[test]
    fn partitions_expand_takes_the_count_and_periods_with_defaults() {
        let o = expand_options(&["--to", "12"]).unwrap();
        assert_eq!((o.to, o.dry_run), (12, false));
        assert_eq!(o.settle, std::time::Duration::from_secs(600));
        assert_eq!(o.propagation, std::time::Duration::from_secs(5));
        let o = expand_options(&[
            "--to",
            "9",
            "--settle",
            "15m",
            "--propagation",
            "30s",
            "--dry-run",
        ])
        .unwrap();
        assert_eq!(o.settle, std::time::Duration::from_secs(900));
        assert_eq!(o.propagation, std::time::Duration::from_secs(30));
        assert!(o.dry_run);
        let e = expand_options(&["--to", "9", "--settle", "ten minutes"]).unwrap_err();
        assert!(format!("{e:#}").contains("--settle"), "{e:#}");
        assert!(
            expand_options(&["--settle", "10m"]).is_err(),
            "--to is required"
        );
        assert!(expand_options(&["--to", "-3"]).is_err());
    }
}
