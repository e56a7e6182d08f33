//! One run: cluster clients and proxies, topics and catalog, the input segment by segment,
//! instances, faults, barriers, the drain, the verification, the checks and the report.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use campaign_connector::campaigns_file::parse_campaigns;
use campaign_connector::validate::Limits;

use crate::barrier::{write_segment, Barrier};
use crate::faults::{schedule, FaultKind, Injector, Outcome};
use crate::fleet::{Fleet, FleetConfig};
use crate::profile::{profile, Args};
use crate::progress::{lock, wait_until, Progress};
use crate::registry::FakeRegistry;
use crate::registry_outage::{ConfluentInteractions, Gate};
use crate::report::Report;
use crate::rng::Rng;
use crate::timeline::Timeline;
use crate::workload::Generator;
use crate::{
    background, catalog, checks, cli, encode, give_up, kafka, machine, now_ms, oracle, proxy, say,
    verify, PARTITIONS, STARTED,
};

/// Where everything of one run lives.
struct Names {
    id: String,
    app_id: String,
    interactions: String,
    user_events: String,
    campaigns: String,
    send_commands: String,
    changelog: String,
    decisions: String,
    dlq: String,
}

impl Names {
    fn new(seed: u64, start: i64) -> Self {
        let id = format!("s{seed}-{:x}", (start / 1000) % 0x100000);
        let t = |role: &str| format!("chaos-{role}-{id}");
        Self {
            app_id: format!("chaos-{id}"),
            interactions: t("interactions"),
            user_events: t("user-events"),
            campaigns: t("campaigns"),
            send_commands: t("send-commands"),
            changelog: t("changelog"),
            decisions: t("decisions"),
            dlq: t("dlq"),
            id,
        }
    }

    /// The part of the connector configuration every instance (and the admin CLI) shares.
    fn config(&self, bootstrap: &str, schema_dir: &Path, registry: Option<&str>) -> String {
        let mut yaml = format!(
            r#"bootstrap_servers: {bootstrap}
application_id: {app}
processing_guarantee: exactly_once
commit_interval: 100ms
transaction_timeout: 10s
# Longer than any stall or broker outage the run injects: within this bound the merge never
# goes on without a partition that is only slow, so the topic interleaving is the event-time
# order the oracle uses.
merge_max_wait: 60s
# Dynamic membership: a killed instance's tasks move after the session timeout.
static_membership: false
partitions: {PARTITIONS}
replication_factor: 3
topics:
  interactions: {interactions}
  user_events: {user_events}
  campaigns: {campaigns}
  send_commands: {send_commands}
  changelog: {changelog}
  decisions: {decisions}
  dlq: {dlq}
encoding:
  schema_dirs: [{schema_dir}]
kafka:
  session.timeout.ms: "6000"
  heartbeat.interval.ms: "500"
  # Small fetches: the run paces Fetch responses through the proxies (a slow network), and
  # a small response holds up the requests behind it on the same connection only briefly.
  # (librdkafka wants fetch.max.bytes >= message.max.bytes.)
  max.partition.fetch.bytes: "32768"
  fetch.max.bytes: "65536"
  message.max.bytes: "65536"
"#,
            app = self.app_id,
            interactions = self.interactions,
            user_events = self.user_events,
            campaigns = self.campaigns,
            send_commands = self.send_commands,
            changelog = self.changelog,
            decisions = self.decisions,
            dlq = self.dlq,
            schema_dir = schema_dir.display(),
        );
        if let Some(url) = registry {
            // The interactions in the Confluent wire format; the other topics stay Avro
            // single-object. A short timeout: a registry that does not answer holds the
            // task either way; it should not hold it longer than the outage.
            yaml.push_str(&format!(
                r#"encodings:
  interactions:
    format: confluent
    registry_url: {url}
    registry_timeout_ms: 1000
"#
            ));
        }
        yaml
    }
}

pub fn run(args: Args) -> Result<Report, String> {
    let started = *STARTED.get_or_init(Instant::now);
    let mut prof = profile(&args.profile).ok_or(format!("unknown profile {}", args.profile))?;
    if let Some(e) = args.events {
        prof.shape.events = e;
    }
    if let Some(n) = args.instances {
        prof.baseline = n;
    }
    if let Some(kb) = args.fetch_limit {
        prof.fetch_kb_per_s = kb;
    }
    if let Some(only) = &args.faults {
        prof.faults.retain(|(k, _)| only.contains(k));
        for k in only {
            if !prof.faults.iter().any(|(x, _)| x == k) {
                prof.faults.push((*k, 1));
            }
        }
    }
    let repo = std::fs::canonicalize(&args.repo).map_err(|e| format!("--repo: {e}"))?;
    let bin = std::fs::canonicalize(&args.bin)
        .map_err(|e| format!("--bin {}: {e}", args.bin.display()))?;
    let run_start = now_ms();
    let timeline = Timeline::new(run_start, prof.chunks);
    if !catalog::assumptions_hold(&timeline) {
        return Err("the workload's time window does not fit the run (see timeline.rs)".into());
    }
    let names = Names::new(args.seed, run_start);
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| repo.join(".cache/chaos").join(&names.id));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let base = args.port_base;
    let port = |node: u16, off: u16| base + 5 * (node - 1) + off;
    let direct: Vec<String> = (1..=3)
        .map(|n| format!("127.0.0.1:{}", port(n, 0)))
        .collect();
    let direct = direct.join(",");
    let proxied: Vec<String> = (1..=3)
        .map(|n| format!("127.0.0.1:{}", port(n, 4)))
        .collect();
    let schema_dir = repo.join("tests/fixtures/writer_schemas");
    // With a registry outage among the faults, the interactions are written in the Confluent
    // wire format: a registry the run starts, and a gate in front of it for the connector.
    let confluent = prof
        .faults
        .iter()
        .any(|(k, n)| *k == FaultKind::RegistryOutage && *n > 0);
    let (registry, gate) = if confluent {
        let registry = Arc::new(FakeRegistry::start());
        let upstream = registry
            .url
            .trim_start_matches("http://")
            .parse()
            .map_err(|e| format!("registry address: {e}"))?;
        let listen = format!("127.0.0.1:{}", base + 19).parse().expect("addr");
        let gate = Gate::start(listen, upstream)
            .map_err(|e| format!("registry gate :{}: {e}", base + 19))?;
        (Some(registry), Some(gate))
    } else {
        (None, None)
    };
    let gate_url = gate.as_ref().map(Gate::url);
    say(&format!(
        "profile {}, seed {}, run {}; work dir {}",
        prof.name,
        args.seed,
        names.id,
        work.display()
    ));

    // ---- proxies in front of every broker's CLIENT listener
    let mut proxies = Vec::new();
    for n in 1..=3u16 {
        let listen = format!("127.0.0.1:{}", port(n, 4)).parse().expect("addr");
        let upstream = format!("127.0.0.1:{}", port(n, 3)).parse().expect("addr");
        proxies.push(
            proxy::Proxy::start(listen, upstream)
                .map_err(|e| format!("proxy :{}: {e}", port(n, 4)))?,
        );
    }

    // Only the group members' fetches (their client id is the instance id): restores and
    // the catalog read at full speed.
    let members: Vec<String> = (0..4).map(|i| format!("i{i}")).collect();
    for p in &proxies {
        p.limit_fetch(prof.fetch_kb_per_s * 1024, &members);
    }
    say(&format!(
        "proxies: {}",
        proxies
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{} → node {}", p.listen, i + 1))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // ---- topics and the catalog, through the direct listener
    let admin_config = work.join("admin.yaml");
    std::fs::write(
        &admin_config,
        format!(
            "instance_id: chaos-admin\nhttp_listen: \"\"\n{}",
            names.config(&direct, &schema_dir, gate_url.as_deref())
        ),
    )
    .map_err(|e| e.to_string())?;
    cli(&bin, &["topics", "create"], &admin_config)?;
    let initial_yaml = catalog::initial(&timeline);
    let initial_file = work.join("campaigns.yaml");
    std::fs::write(&initial_file, &initial_yaml).map_err(|e| e.to_string())?;
    let limits = Limits::default();
    let campaigns =
        parse_campaigns(&initial_yaml, "campaigns.yaml", &limits).map_err(|e| e.to_string())?;
    cli(
        &bin,
        &["campaigns", "publish", &initial_file.display().to_string()],
        &admin_config,
    )?;
    let edits = catalog::edits(&timeline);

    // ---- shared state, producer
    let segment_ends: Vec<usize> = edits
        .iter()
        .map(|e| e.at_chunk)
        .chain([prof.chunks])
        .collect();
    let progress = Arc::new(Mutex::new(Progress {
        inputs: (0..PARTITIONS)
            .map(|p| (names.interactions.clone(), p))
            .chain((0..PARTITIONS).map(|p| (names.user_events.clone(), p)))
            .collect(),
        ends: vec![0; 2 * PARTITIONS as usize],
        committed: vec![0; 2 * PARTITIONS as usize],
        target_chunk: segment_ends[0],
        ..Progress::default()
    }));
    let oracle = oracle::Oracle::new(
        PARTITIONS as usize,
        limits,
        [names.interactions.clone(), names.user_events.clone()],
        &schema_dir,
        registry.as_ref().map(|r| r.url.as_str()),
        &campaigns,
        run_start,
    )?;
    let v3_schema = repo.join("tools/chaos/schemas/interaction_v3.avsc");
    let mut encoders = encode::Encoders::new(&schema_dir, &v3_schema)?;
    if let Some(registry) = &registry {
        encoders = encoders.with_confluent_interactions(ConfluentInteractions::new(
            registry.clone(),
            &names.interactions,
            &repo.join("schemas/interaction.avsc"),
            &schema_dir.join("interaction_v2.avsc"),
            &v3_schema,
        )?);
    }
    let generator = Generator::new(
        args.seed,
        timeline,
        prof.shape,
        encoders,
        &edits,
        args.poison.clone(),
        PARTITIONS,
    );
    let stop = Arc::new(AtomicBool::new(false));
    // Ends the input early (the run gives up); `stop` ends the background threads.
    let stop_input = Arc::new(AtomicBool::new(false));
    let producer = background::spawn_producer(
        background::ProducerJob {
            generator,
            producer: kafka::WorkloadProducer::new(
                &direct,
                args.transactional_input
                    .then(|| format!("{}-workload", names.app_id))
                    .as_deref(),
            )?,
            oracle,
            topics: [names.interactions.clone(), names.user_events.clone()],
            partitions: PARTITIONS,
            edits: edits
                .iter()
                .map(|e| {
                    (
                        e.at_chunk,
                        e.name.to_string(),
                        e.yaml.clone(),
                        e.evidence.to_string(),
                    )
                })
                .collect(),
            limits,
            now: run_start,
        },
        progress.clone(),
        stop_input.clone(),
    );
    write_segment(&progress, segment_ends[0])?;

    // ---- connector instances, monitor
    // The baseline, and spares up to three instances (storms go to three).
    let ids: Vec<String> = (0..(prof.baseline + 1).max(3))
        .map(|i| format!("i{i}"))
        .collect();
    let fleet = Arc::new(Mutex::new(Fleet::new(FleetConfig {
        bin: bin.clone(),
        dir: work.clone(),
        common_yaml: names.config(&proxied.join(","), &schema_dir, gate_url.as_deref()),
        http_base: base + 15,
    })));
    for id in &ids[..prof.baseline] {
        fleet.lock().expect("fleet").start(id)?;
    }
    let monitor = background::spawn_monitor(
        kafka::GroupOffsets::new(&direct, &names.app_id)?,
        kafka::Watermarks::new(&direct, &names.changelog, PARTITIONS)?,
        progress.clone(),
        fleet.clone(),
        stop.clone(),
        work.clone(),
    );
    let mut barrier = Barrier {
        progress: progress.clone(),
        fleet: fleet.clone(),
        changelog: kafka::Tail::new(&direct, &names.changelog, PARTITIONS)?,
        decisions: kafka::Tail::new(&direct, &names.decisions, PARTITIONS)?,
        stream_time: vec![i64::MIN; PARTITIONS as usize],
        drops: Default::default(),
        evidence: String::new(),
        run_start,
        deadline: prof.recover_deadline,
        give_up_after: prof.give_up_after,
        publish: Box::new({
            let (bin, config, dir) = (bin.clone(), admin_config.clone(), work.clone());
            move |name: &str, yaml: &str| {
                let file = dir.join(format!("edit-{name}.yaml"));
                std::fs::write(&file, yaml).map_err(|e| e.to_string())?;
                cli(
                    &bin,
                    &["campaigns", "publish", &file.display().to_string()],
                    &config,
                )
                .map(|_| ())
            }
        }),
        baseline: ids[..prof.baseline].to_vec(),
        log: Vec::new(),
    };

    // ---- faults, and the barriers between segments
    let mut rng = Rng::new(args.seed).fork("faults");
    let plan = schedule(&mut rng, &prof.faults, prof.chunks);
    let mut injector = Injector {
        fleet: fleet.clone(),
        progress: progress.clone(),
        proxies,
        cluster: kafka::Cluster::new(&direct)?,
        cluster_script: repo.join("scripts/kafka/cluster.sh"),
        app_id: names.app_id.clone(),
        interactions_topic: names.interactions.clone(),
        baseline: ids[..prof.baseline].to_vec(),
        spares: ids[prof.baseline..].to_vec(),
        stall: prof.stall,
        recover_deadline: prof.recover_deadline,
        rng: rng.fork("targets"),
        broker_faults: 0,
        registry_gate: gate,
        registry_outage: prof.registry_outage,
    };
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut late_faults = 0;
    let mut segment = 0;
    for (i, (chunk, kind)) in plan.iter().enumerate() {
        while *chunk >= segment_ends[segment] && segment + 1 < segment_ends.len() {
            injector.ensure_baseline();
            barrier.pass(&edits[segment], segment_ends[segment + 1], &stop_input)?;
            segment += 1;
        }
        // The moment: the group has committed the input up to that chunk.
        wait_until(&progress, Duration::from_secs(3600), |p| {
            p.chunk_starts
                .get(*chunk)
                .is_some_and(|s| p.committed.iter().sum::<i64>() >= s.iter().sum::<i64>())
                || p.stalled_for() > prof.give_up_after
        });
        if give_up(&progress, &stop_input, prof.give_up_after) {
            break;
        }
        if lock(&progress).fraction_done() >= 1.0 {
            late_faults += 1;
        }
        for r in injector.ensure_baseline() {
            say(&format!("before fault {}: {r}", i + 1));
        }
        std::thread::sleep(Duration::from_millis(rng.range(0, 2_000) as u64));
        let (lag, span) = {
            let p = lock(&progress);
            (p.total_lag(), p.chunk_span())
        };
        say(&format!(
            "fault {}/{} at chunk {chunk} (partitions in chunks {}..{}, lag {lag}): {}",
            i + 1,
            plan.len(),
            span.0,
            span.1,
            kind.title()
        ));
        outcomes.push(injector.inject(*kind));
    }
    while segment + 1 < segment_ends.len() && lock(&progress).gave_up.is_none() {
        injector.ensure_baseline();
        barrier.pass(&edits[segment], segment_ends[segment + 1], &stop_input)?;
        segment += 1;
    }
    for r in injector.ensure_baseline() {
        say(&format!("after the faults: {r}"));
    }

    // ---- the end of the input, then the drain
    stop_input.store(true, Ordering::Relaxed);
    wait_until(&progress, Duration::from_secs(600), |p| p.producer_done);
    let (mut oracle, generator) = producer
        .join()
        .map_err(|_| "the producer thread panicked".to_string())?;
    oracle.finish(run_start);
    say(&format!(
        "waiting for the group to process all input and send {} commands",
        oracle.sends.len()
    ));
    let ends = lock(&progress).ends.clone();
    let drained = wait_until(&progress, prof.recover_deadline * 2, |p| {
        p.reached(&ends) || p.stalled_for() > prof.give_up_after
    }) && lock(&progress).reached(&ends);
    let mut sends = kafka::Tail::new(&direct, &names.send_commands, PARTITIONS)?;
    let mut visible = 0;
    let tail_started = Instant::now();
    while visible < oracle.sends.len() && tail_started.elapsed() < Duration::from_secs(180) {
        sends.poll_for(Duration::from_millis(500), |_, _, _| visible += 1);
    }
    say(&format!(
        "drained: {drained}; {visible} of {} commands visible; stopping the instances",
        oracle.sends.len()
    ));
    stop.store(true, Ordering::Relaxed);
    let _ = monitor.join();
    let changelog_cut = lock(&progress).changelog_cut.clone();
    {
        let mut f = fleet.lock().expect("fleet");
        for id in f.running() {
            f.stop(&id, Duration::from_secs(60));
        }
    }

    // ---- verification
    say("reading every output with read_committed to its end offsets");
    let verification = verify::verify(
        &direct,
        &verify::Topics {
            send_commands: names.send_commands.clone(),
            dlq: names.dlq.clone(),
            decisions: names.decisions.clone(),
            changelog: names.changelog.clone(),
        },
        &oracle,
        &changelog_cut,
        run_start,
    )?;

    // ---- checks
    let p = lock(&progress);
    let f = fleet.lock().expect("fleet");
    let checks = checks::checks(&checks::Evidence {
        verification: &verification,
        progress: &p,
        fleet: &f,
        oracle: &oracle,
        outcomes: &outcomes,
        recover_deadline: prof.recover_deadline,
        drained,
        started,
        barriers: &barrier.log,
        edits: edits.len(),
    });
    let accepted: u64 = injector.proxies.iter().map(proxy::Proxy::accepted).sum();
    let fetched: u64 = injector.proxies.iter().map(proxy::Proxy::fetch_bytes).sum();
    let refused: u64 = injector.proxies.iter().map(proxy::Proxy::refused).sum();
    let poison: usize = generator.poison_counts.values().sum();
    let mut extra_rows = vec![(
        "poison records (undecodable, out-of-range times, 2099, v3, key, empty user)".to_string(),
        poison,
        format!(
            "1 in {} records, each kind at least once",
            prof.shape.poison_every
        ),
    )];
    for (writer, n) in &generator.writer_counts {
        extra_rows.push((format!("records by {writer}"), *n, String::new()));
    }
    extra_rows.push((
        "catalog edits mid-run (stop, restart, new versions, archive)".into(),
        barrier.log.len(),
        String::new(),
    ));
    let faults_arg = match &args.faults {
        None => String::new(),
        Some(list) => format!(
            " --faults {}",
            if list.is_empty() {
                "none".to_string()
            } else {
                list.iter().map(|k| k.key()).collect::<Vec<_>>().join(",")
            }
        ),
    };
    let report = Report {
        profile: prof.name.into(),
        seed: args.seed,
        machine: machine(),
        setup: vec![
            format!(
                "cluster: 3 Kafka brokers (KRaft, each also a controller), RF 3, min ISR 2, connector traffic through 3 TCP proxies"
            ),
            format!(
                "workload: {} input records ({} events processed by the engine), {} users, {} chunks, {PARTITIONS} partitions; event time {} .. {}",
                p.input_records,
                oracle.events,
                prof.shape.users,
                prof.chunks,
                campaign_connector::time::format_timestamp(timeline.t0),
                campaign_connector::time::format_timestamp(timeline.t1)
            ),
            format!(
                "connector: {} instances between faults (dynamic membership, exactly_once, commit 100 ms), a spare for storms; {} faults{}",
                prof.baseline,
                outcomes.len(),
                if late_faults > 0 { format!(" ({late_faults} after the input ended)") } else { String::new() }
            ),
            format!(
                "expected: {} send-commands, {} decisions, {} dead letters, {} pending sends at the end",
                oracle.sends.len(),
                oracle.decisions.len(),
                oracle.dead_letters.len(),
                oracle.pending()
            ),
            format!(
                "proxies: {accepted} connections accepted, {refused} refused by a broker that was down; {} MB of fetch responses{}",
                fetched / (1 << 20),
                if prof.fetch_kb_per_s > 0 {
                    format!(", at most {} KB/s per consumer connection", prof.fetch_kb_per_s)
                } else {
                    String::new()
                }
            ),
            format!(
                "input written by an idempotent producer{}",
                if args.transactional_input {
                    ", one transaction per chunk"
                } else {
                    ""
                }
            ),
            match &injector.registry_gate {
                Some(gate) => format!(
                    "schema registry: interactions in the Confluent wire format ({} writer schema ids: a new producer build every chunk, v2, v3); the connector fetched through the gate {} times, {} requests answered HTTP 503 during outages",
                    generator.confluent_ids().unwrap_or(0),
                    gate.forwarded(),
                    gate.failed()
                ),
                None => "schema registry: none (every input in Avro single-object encoding)".into(),
            },
            format!("logs and configs: {}", work.display()),
        ],
        outcomes,
        extra_rows,
        verification: Some(verification),
        checks,
        notes: p.notes.clone(),
        elapsed: started.elapsed(),
        reproduce: std::env::var("CHAOS_REPRODUCE").unwrap_or_else(|_| {
            format!(
                "scripts/chaos.sh --profile {} --seed {}{faults_arg}",
                prof.name, args.seed
            )
        }),
    };
    drop(p);
    drop(f);
    print!("{}", report.text());
    let md = report.markdown();
    let md_path = args
        .report
        .clone()
        .unwrap_or_else(|| work.join("report.md"));
    std::fs::write(&md_path, md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    say(&format!("report: {}", md_path.display()));
    Ok(report)
}
