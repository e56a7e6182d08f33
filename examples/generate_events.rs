//! Writes a JSONL events file of generated traffic for `examples/generated/campaigns.yaml`,
//! in event-time order, to stdout: the input of the simulator and preview benchmarks.
//!
//! ```sh
//! cargo run --release --example generate_events -- --events 1000000 > events.jsonl
//! campaign-connector simulate --campaigns examples/generated/campaigns.yaml --events events.jsonl --format jsonl > /dev/null
//! ```
//!
//! Options: `--events N` (default 1,000,000), `--users N` (default a tenth of the events),
//! `--start RFC3339` (default 2026-11-02T00:00:00Z), `--span DURATION` (default 7d: the events
//! are spread evenly over it), `--seed N` (default 1). The same options always write the same
//! file. The mix, per event: 25 % cart pushes received, 10 % cart pushes opened, 15 %
//! newsletters received, 10 % newsletters opened, 10 % free-shipping pushes opened, 10 %
//! purchases, 15 % session starts, 5 % custom events.

use std::io::{BufWriter, Write};

use campaign_connector::time::{parse_duration_ms, parse_rfc3339};

/// xorshift64*: small, fast and reproducible; statistical quality is no concern here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Options {
    events: u64,
    users: u64,
    start: i64,
    span_ms: i64,
    seed: u64,
}

fn parse_options() -> Result<Options, String> {
    let mut events = 1_000_000u64;
    let mut users = None;
    let mut start = parse_rfc3339("2026-11-02T00:00:00Z").map_err(|e| e.to_string())?;
    let mut span_ms = 7 * 86_400_000;
    let mut seed = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("option {flag} needs a value"))?;
        let number = |v: &str| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("option {flag}: {v:?} is not a number: {e}"))
        };
        match flag.as_str() {
            "--events" => events = number(&value)?,
            "--users" => users = Some(number(&value)?),
            "--start" => start = parse_rfc3339(&value).map_err(|e| format!("--start: {e}"))?,
            "--span" => span_ms = parse_duration_ms(&value).map_err(|e| format!("--span: {e}"))?,
            "--seed" => seed = number(&value)?,
            other => {
                return Err(format!(
                    "unknown option {other}: expected --events, --users, --start, --span or --seed"
                ))
            }
        }
    }
    let users = users.unwrap_or((events / 10).max(1));
    if users == 0 {
        return Err("--users must be at least 1".into());
    }
    Ok(Options {
        events,
        users,
        start,
        span_ms,
        seed: seed.max(1),
    })
}

fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("generate_events: {e}");
            std::process::exit(2);
        }
    };
    let mut rng = Rng(options.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let out = std::io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let step = options.span_ms as f64 / options.events.max(1) as f64;
    for i in 0..options.events {
        // Evenly spread, never decreasing: the file is in event-time order.
        let t = options.start + (i as f64 * step) as i64;
        let user = rng.below(options.users);
        let roll = rng.below(100);
        let interaction = |campaign: &str, kind: &str| {
            format!(
                r#"{{"interaction":{{"event_id":"g{i}","user_id":"user-{user:07}","campaign_id":"{campaign}","kind":"{kind}","occurred_at":{t}}}}}"#
            )
        };
        let user_event = |kind: &str, name: Option<&str>| {
            let name = name
                .map(|n| format!(r#","name":"{n}""#))
                .unwrap_or_default();
            format!(
                r#"{{"user_event":{{"event_id":"g{i}","user_id":"user-{user:07}","type":"{kind}"{name},"occurred_at":{t}}}}}"#
            )
        };
        let line = match roll {
            0..=24 => interaction("cart-push", "PUSH_RECEIVED"),
            25..=34 => interaction("cart-push", "PUSH_DIRECT_OPEN"),
            35..=49 => interaction("weekly-newsletter", "EMAIL_RECEIVED"),
            50..=59 => interaction("weekly-newsletter", "EMAIL_OPEN"),
            60..=69 => interaction("free-shipping", "PUSH_DIRECT_OPEN"),
            70..=79 => {
                let product = format!("sku-{}", rng.below(500));
                user_event("PURCHASE", Some(&product))
            }
            80..=94 => user_event("SESSION_START", None),
            _ => user_event("CUSTOM_EVENT", Some("browse")),
        };
        if writeln!(out, "{line}").is_err() {
            // Closed pipe (e.g. `| head`): stop quietly.
            return;
        }
    }
    let _ = out.flush();
}
