//! Between two segments of input (see timeline.rs and docs/reliability.md): drain, the
//! wall clock's firing, the live catalog edit proven applied, a pause to write the next
//! segment.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fleet::Fleet;
use crate::progress::{lock, wait_until, SharedProgress};
use crate::{catalog, give_up, kafka, say};

/// Has the producer write chunks up to `target` and waits until it did.
pub fn write_segment(progress: &SharedProgress, target: usize) -> Result<(), String> {
    let started = Instant::now();
    {
        let mut p = lock(progress);
        p.target_chunk = target;
        p.segment_written = false;
    }
    if !wait_until(progress, Duration::from_secs(3600), |p| p.segment_written) {
        return Err("a segment of input was not written within an hour".into());
    }
    if let Some(e) = lock(progress).producer_error.clone() {
        return Err(format!("producing the input: {e}"));
    }
    let p = lock(progress);
    say(&format!(
        "input up to chunk {target} written ({} records in all, {:.0} s)",
        p.input_records,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Publishes a campaigns file (name, YAML) through the CLI.
pub type Publish = Box<dyn Fn(&str, &str) -> Result<(), String>>;

/// Between two segments of input: the group processes everything, each task fires what is
/// due by the wall clock, the edit is published and applied by every task, the instances
/// stop, the next segment is written, the instances start again.
pub struct Barrier {
    pub progress: SharedProgress,
    pub fleet: Arc<Mutex<Fleet>>,
    pub changelog: kafka::Tail,
    pub decisions: kafka::Tail,
    /// Largest stream time of each task's committed progress records.
    pub stream_time: Vec<i64>,
    /// (partition, follow-on) → committed DROPPED decisions of the follow-on of `evidence`.
    pub drops: BTreeMap<(i32, String), usize>,
    /// The follow-on whose drops show that the edit under way was applied.
    pub evidence: String,
    /// No event time of the input is that late: a task whose committed progress shows a
    /// stream time past it has fired by the wall clock.
    pub run_start: i64,
    pub deadline: Duration,
    pub give_up_after: Duration,
    pub publish: Publish,
    pub baseline: Vec<String>,
    /// What happened at each barrier, and whether it went as it must.
    pub log: Vec<(String, bool)>,
}

impl Barrier {
    fn read(&mut self) {
        use campaign_connector::codec::{Codec, EncodingSettings};
        use campaign_connector::model::{Decision, DecisionOutcome, TaskStateRecord, PROGRESS_KEY};
        let avro = EncodingSettings::avro();
        let codec: Codec<TaskStateRecord> = Codec::new("changelog", &avro).expect("state codec");
        let st = &mut self.stream_time;
        self.changelog
            .poll_for(Duration::from_millis(500), |p, key, value| {
                if key == Some(PROGRESS_KEY.as_bytes()) {
                    if let Some(t) = value
                        .and_then(|v| codec.decode(v).ok())
                        .and_then(|r| r.progress)
                    {
                        st[p as usize] = st[p as usize].max(t.stream_time);
                    }
                }
            });
        let codec: Codec<Decision> = Codec::new("decisions", &avro).expect("decision codec");
        let drops = &mut self.drops;
        let evidence = self.evidence.as_bytes();
        self.decisions
            .poll_for(Duration::from_millis(500), |p, _, value| {
                // Only decisions that name the edit's follow-on are decoded.
                let Some(v) = value.filter(|v| {
                    !evidence.is_empty() && v.windows(evidence.len()).any(|w| w == evidence)
                }) else {
                    return;
                };
                if let Ok(d) = codec.decode(v) {
                    if d.outcome == DecisionOutcome::Dropped {
                        *drops.entry((p, d.follow_on_id)).or_default() += 1;
                    }
                }
            });
    }

    /// Waits (reading the tails) until `done` or the deadline.
    fn wait(&mut self, deadline: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let started = Instant::now();
        loop {
            self.read();
            if done(self) {
                return true;
            }
            if started.elapsed() > deadline {
                return false;
            }
        }
    }

    pub fn pass(
        &mut self,
        edit: &catalog::Edit,
        next_end: usize,
        stop_input: &AtomicBool,
    ) -> Result<(), String> {
        say(&format!("barrier before the {} edit", edit.name));
        self.evidence = edit.evidence.to_string();
        let ends = lock(&self.progress).ends.clone();
        let limit = self.give_up_after;
        let drained = wait_until(&self.progress, self.deadline * 2, |p| {
            p.reached(&ends) || p.stalled_for() > limit
        }) && lock(&self.progress).reached(&ends);
        if give_up(&self.progress, stop_input, limit) {
            return Ok(());
        }
        // Every task's clock must be past all event time before the next segment: at the
        // first barrier each task holds a probe timer that is due and fires by the wall
        // clock, and its committed progress then shows a stream time at the wall clock.
        let since = self.run_start;
        let fired = self.wait(self.deadline, |b| b.stream_time.iter().all(|t| *t >= since));
        let late: Vec<usize> = (0..self.stream_time.len())
            .filter(|t| self.stream_time[*t] < since)
            .collect();
        // The oracle applies the edit at the same point (and says what it drops), then the
        // connector gets it.
        lock(&self.progress).edit_requested = Some(edit.at_chunk);
        let name = edit.name;
        wait_until(&self.progress, Duration::from_secs(60), |p| {
            p.edit_drops.iter().any(|(n, _, _)| n == name) || p.producer_error.is_some()
        });
        let expected = lock(&self.progress)
            .edit_drops
            .iter()
            .find(|(n, _, _)| n == edit.name)
            .map(|(_, _, d)| d.clone())
            .ok_or_else(|| format!("the oracle did not apply the {} edit", edit.name))?;
        (self.publish)(edit.name, &edit.yaml)?;
        let evidence = edit.evidence.to_string();
        let applied = self.wait(self.deadline, |b| {
            expected.iter().enumerate().all(|(p, n)| {
                b.drops
                    .get(&(p as i32, evidence.clone()))
                    .copied()
                    .unwrap_or(0)
                    >= *n
            })
        });
        // The instances stop while the next segment is written (see background.rs).
        let stopped: Vec<(String, Option<i32>)> = {
            let mut f = self.fleet.lock().expect("fleet");
            f.running()
                .into_iter()
                .map(|id| {
                    let code = f.stop(&id, Duration::from_secs(60));
                    (id, code)
                })
                .collect()
        };
        write_segment(&self.progress, next_end)?;
        {
            let mut f = self.fleet.lock().expect("fleet");
            for id in &self.baseline {
                f.start(id)?;
            }
        }
        // The pause was the harness's: no progress was to be expected meanwhile.
        lock(&self.progress).last_progress = Some(Instant::now());
        let ok = drained && fired && applied;
        let what = format!(
            "{} edit: input drained {drained}; every task's clock past all event time {fired}{}; edit applied by every task {applied} ({} drops of {evidence} expected); instances stopped {stopped:?} and restarted",
            edit.name,
            if late.is_empty() { String::new() } else { format!(" (not tasks {late:?})") },
            expected.iter().sum::<usize>()
        );
        say(&what);
        self.log.push((what, ok));
        Ok(())
    }
}
