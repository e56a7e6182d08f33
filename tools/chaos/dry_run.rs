//! The workload and the oracle without Kafka.

use campaign_connector::campaigns_file::parse_campaigns;
use campaign_connector::validate::Limits;

use crate::profile::{profile, Args};
use crate::timeline::Timeline;
use crate::workload::Generator;
use crate::{catalog, encode, oracle, workload, PARTITIONS};

/// The workload and the oracle without Kafka: what a run would produce and expect, and
/// which rule shapes it exercises.
pub fn dry_run(args: &Args) -> Result<(), String> {
    let mut prof = profile(&args.profile).ok_or(format!("unknown profile {}", args.profile))?;
    if let Some(e) = args.events {
        prof.shape.events = e;
    }
    let repo = std::fs::canonicalize(&args.repo).map_err(|e| format!("--repo: {e}"))?;
    let run_start = crate::now_ms();
    let timeline = Timeline::new(run_start, prof.chunks);
    if !catalog::assumptions_hold(&timeline) {
        return Err("the workload's time window does not fit the run".into());
    }
    let limits = Limits::default();
    let schema_dir = repo.join("tests/fixtures/writer_schemas");
    let campaigns = parse_campaigns(&catalog::initial(&timeline), "campaigns.yaml", &limits)
        .map_err(|e| e.to_string())?;
    let topics = ["interactions".to_string(), "user-events".to_string()];
    let mut oracle = oracle::Oracle::new(
        PARTITIONS as usize,
        limits,
        topics.clone(),
        &schema_dir,
        None,
        &campaigns,
        run_start,
    )?;
    let edits = catalog::edits(&timeline);
    let encoders = encode::Encoders::new(
        &schema_dir,
        &repo.join("tools/chaos/schemas/interaction_v3.avsc"),
    )?;
    let mut generator = Generator::new(
        args.seed,
        timeline,
        prof.shape,
        encoders,
        &edits,
        args.poison.clone(),
        PARTITIONS,
    );
    let mut offsets = [[0i64; PARTITIONS as usize]; 2];
    let mut records = 0;
    for k in 0..prof.chunks {
        for e in edits.iter().filter(|e| e.at_chunk == k) {
            let c = parse_campaigns(&e.yaml, e.name, &limits).map_err(|x| x.to_string())?;
            oracle.barrier(run_start);
            let drops = oracle.apply_campaigns(&c, run_start, e.evidence)?;
            println!("edit {}: drops of {} by task {drops:?}", e.name, e.evidence);
        }
        let chunk = generator.next_chunk();
        records += chunk.len();
        let landed: Vec<oracle::Landed<'_>> = chunk
            .iter()
            .map(|r| {
                let p = workload::partition_of(r.key.as_bytes(), PARTITIONS);
                let o = &mut offsets[r.role as usize][p as usize];
                *o += 1;
                oracle::Landed {
                    role: r.role,
                    partition: p,
                    offset: *o - 1,
                    content: &r.content,
                    value: &r.value,
                }
            })
            .collect();
        oracle.chunk(&landed, run_start);
    }
    oracle.finish(run_start);
    println!(
        "{records} records, {} events processed, {} send-commands, {} decisions, {} dead letters, {} pending at the end",
        oracle.events,
        oracle.sends.len(),
        oracle.decisions.len(),
        oracle.dead_letters.len(),
        oracle.pending()
    );
    for (what, n) in oracle.coverage() {
        println!("{n:>9}  {what}");
    }
    for (kind, n) in &generator.poison_counts {
        println!("{n:>9}  poison: {}", kind.name());
    }
    for (writer, n) in &generator.writer_counts {
        println!("{n:>9}  records by {writer}");
    }
    for m in oracle.codec_mismatches.iter().take(5) {
        println!("codec mismatch: {m}");
    }
    Ok(())
}
