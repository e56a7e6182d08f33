//! Fire lateness at steady load: the workload is produced live at a fixed rate with
//! `occurred_at` = now, and a short delay, so timers come due continuously while the system
//! is caught up. For every send-command due during the load: `emitted_at − due_at` (when the
//! system fired it) and `seen − due_at` (when a `read_committed` reader received it, i.e.
//! after the commit that made it visible). The load runs for a warm-up first, whose timers
//! are not counted: a freshly started broker's JIT compiler alone took a quarter of the
//! machine's CPU in its first minute, and the first seconds measured that, not the system.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::kafka::{decode_commands, EventProducer, Inputs, OutputReader, Received};
use crate::process::now_ms;
use crate::systems::{Env, Kind, Setup};
use crate::workload::{campaigns_yaml, Params, Workload};

#[derive(Clone, Debug, Default)]
pub struct Row {
    pub system: String,
    pub mode: String,
    pub rate: u64,
    pub seconds: u64,
    pub warmup: u64,
    pub fired: usize,
    pub emitted: [i64; 3],
    pub visible: [i64; 3],
}

/// p50, p99 and max of a list of milliseconds.
pub fn percentiles(mut v: Vec<i64>) -> [i64; 3] {
    if v.is_empty() {
        return [0; 3];
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.99), *v.last().unwrap()]
}

/// The load: `rate` events/s for `warmup + seconds`; counted are the timers due in the last
/// `seconds`.
pub struct Load {
    pub rate: u64,
    pub seconds: u64,
    pub warmup: u64,
    pub delay_s: i64,
}

pub fn run(env: &Env, kind: Kind, prefix: &str, load: &Load) -> Row {
    let Load {
        rate,
        seconds,
        warmup,
        delay_s,
    } = *load;
    let inputs = Inputs {
        interactions: format!("{prefix}-interactions"),
        user_events: format!("{prefix}-user-events"),
    };
    let campaigns = format!("{prefix}-campaigns");
    let delay_ms = delay_s * 1000;
    let catalog = Setup::new(
        Kind::Connector {
            exactly_once: true,
            commit_ms: 100,
            decisions: false,
            threads: 0,
        },
        &format!("{prefix}-catalog"),
        &inputs,
        &campaigns,
        delay_ms,
    );
    catalog.publish(env, &campaigns_yaml(delay_ms, delay_ms));
    let setup = Setup::new(
        kind,
        &format!("{prefix}-app"),
        &inputs,
        &campaigns,
        delay_ms,
    );
    setup.prepare(env);
    eprintln!(
        "[bench] lateness: {} {}, {rate} events/s for {warmup} s (warm-up) + {seconds} s",
        kind.system(),
        kind.mode()
    );
    let mut running = setup.start(env, "lateness");
    running.wait_ready(Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(1));

    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let reader = {
        let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
        let reader = OutputReader::new(&env.bootstrap, &setup.output);
        std::thread::spawn(move || {
            let mut batch = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                reader.poll(Duration::from_millis(50), &mut batch);
                seen.lock().unwrap().append(&mut batch);
            }
        })
    };

    let events = rate * (warmup + seconds);
    let mut workload = Workload::new(Params {
        seed: 0x1a7e,
        users: (events / 8).max(100),
        start_ms: 0,
        step_ms: 0,
        delay_ms,
        reeligible_ms: delay_ms,
    });
    let mut producer = EventProducer::new(&env.bootstrap, &inputs, 5);
    let start = now_ms();
    for i in 0..events {
        let target = start + (i as i64 * 1000) / rate as i64;
        let now = now_ms();
        if target > now {
            std::thread::sleep(Duration::from_millis((target - now) as u64));
        }
        let (_, event) = workload.next_at(now_ms());
        producer.send(&event);
        producer.poll();
    }
    producer.flush();
    let end = now_ms();
    let counted_from = start + (warmup as i64) * 1000 + delay_ms;
    // Timers due during the load fire at most `delay` after it ended.
    std::thread::sleep(Duration::from_millis(delay_ms as u64 + 3_000));
    running.proc.check_alive();
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader thread");
    running.stop();

    let records = std::mem::take(&mut *seen.lock().unwrap());
    let commands = decode_commands(&records);
    let mut emitted = Vec::new();
    let mut visible = Vec::new();
    for (c, r) in commands.iter().zip(&records) {
        if c.due_at >= counted_from && c.due_at <= end {
            emitted.push(c.emitted_at - c.due_at);
            visible.push(r.at_ms - c.due_at);
        }
    }
    Row {
        system: kind.system().to_string(),
        mode: kind.mode(),
        rate,
        seconds,
        warmup,
        fired: emitted.len(),
        emitted: percentiles(emitted),
        visible: percentiles(visible),
    }
}
