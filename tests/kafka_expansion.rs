//! Growing the input partition count online, against the real broker (design:
//! `docs/partition-expansion.md`): `partitions expand --to N` while more than 10,000 timers
//! are pending and traffic keeps coming, with a connector SIGKILLed in the middle.
//!
//! ```text
//!  phase 1: before           phase 2: the settle period             gap   phase 3: after the cut
//!  triggers, purchases ─► expand ─► stale + refreshed producers ─┤cut_at├─► refreshed only ─► due times pass
//!  (M partitions)         (layout, grows)   SIGKILL, restart             (every partition gets records)
//! ```
//!
//! Upstream producers are modelled explicitly: the test chooses every record's partition,
//! `murmur2(user) mod M` for a producer with stale metadata and `mod N` for one that has
//! refreshed it, so that during the settle period one user's records land in both the old
//! and the new partition (a trigger through one, the purchase that cancels it through the
//! other). Event times are the wall clock at production; Kafka timestamps are the producer's
//! default (create time). Stale producers stop before `cut_at` (a producer stale for longer
//! than the settle period is another case), refreshed ones write from shortly after it.
//!
//! Once every due time has passed, the send-commands read `read_committed` to the end
//! offsets must be exactly what `simulate` decides on the same events in production order —
//! the same (user, command_id, due_at), no command_id twice — and `simulate` must agree with
//! the test's own naive model of the two rules; the timers pending when the expansion
//! started fire at their original `due_at`.

mod broker;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use broker::*;
use campaign_connector::codec::{Codec, EncodingSettings};
use campaign_connector::expansion::{layout_topic, Layout, LAYOUT_KEY};
use campaign_connector::model::InteractionKind::*;
use campaign_connector::model::{
    Decision, DecisionOutcome, InputEvent, Interaction, SendCommand, UserEventType,
};
use campaign_connector::runtime::http::partition_for_key;

/// The cart reminder waits 60 s for a purchase; the promo step is sent at once. Both
/// at most once per user (re-eligibility `NEVER`), so a receipt that is not handed over
/// shows as a second command.
const CAMPAIGNS: &str = r#"
campaigns:
  - campaign_id: abandoned-cart
    name: Abandoned cart push
    status: ACTIVE
  - campaign_id: cart-email
    name: Cart reminder email
    status: ACTIVE
    published_at: 2020-01-01T00:00:00Z
    follow_on:
      trigger: {campaign_id: abandoned-cart, kinds: [PUSH_RECEIVED]}
      delay: 60s
      exceptions:
        - purchase: {}
      message: {channel: EMAIL, template_id: cart-15-off}
  - campaign_id: free-shipping
    name: Free shipping
    status: ACTIVE
  - campaign_id: promo-2
    name: Promo step 2
    status: ACTIVE
    published_at: 2020-01-01T00:00:00Z
    follow_on:
      trigger: {campaign_id: free-shipping, kinds: [PUSH_DIRECT_OPEN]}
      delay: immediate
      message: {channel: PUSH, template_id: promo-2}
"#;
/// Users whose one record (an immediate promo send) a producer still stale after the
/// settle period writes to their old partition, past its cut.
const LATE_STALE_USERS: usize = 40;
/// `cart-email`'s delay.
const DELAY_MS: i64 = 60_000;

/// The operation's settle period and propagation wait (`--settle`, `--propagation`).
const SETTLE: &str = "15s";
const SETTLE_MS: i64 = 15_000;
const PROPAGATION: &str = "2s";

/// Phase 1: cart triggers, half of them cancelled by a purchase a few seconds later, so
/// that 12,000 timers are pending when the expansion starts.
const PHASE1_USERS: usize = 24_000;
const PHASE1_BATCHES: usize = 8;
const PHASE1_BATCH_EVERY: Duration = Duration::from_millis(1_250);
/// Users who get the promo step at once in phase 1 (a receipt each) and open its push
/// again later: not re-eligible, wherever their record lands.
const PROMO_USERS: usize = 2_000;

/// Live traffic in phases 2 and 3, per tick: about 700 records a second.
const TICK: Duration = Duration::from_millis(100);
const NEW_USERS_PER_TICK: usize = 15;
/// Phase-1 users with a pending timer looked at per tick; every other one gets a purchase.
const PENDING_LOOKED_AT_PER_TICK: usize = 40;
/// Phase 3: users whose timer a purchase cancelled, triggered again.
const RETRIGGERS_PER_TICK: usize = 10;
const PROMO_REPEATS_PER_TICK: usize = 10;

/// Stale producers stop this long before `cut_at`; refreshed-only traffic starts this long
/// after it and goes on for `AFTER_CUT_FOR_MS`.
const STALE_STOP_BEFORE_CUT_MS: i64 = 500;
const AFTER_CUT_START_MS: i64 = 2_000;
const AFTER_CUT_FOR_MS: i64 = 8_000;
/// A purchase meant to cancel a pending timer is produced at least this long before the
/// timer's due time: a caught-up task fires by the wall clock, so an exception produced
/// moments before the due time may rightly lose the race with it. Either side of the
/// margin the outcome is unambiguous.
const EXCEPTION_MARGIN_MS: i64 = 20_000;
/// The timers pending when the expansion started are emitted at most this long after their
/// `due_at` (they come due half a minute after the cut, after the hand-off).
const LATENESS_BOUND_MS: i64 = 20_000;

#[test]
fn six_to_twelve_with_a_kill_during_the_migration_and_idle_user_events_after_the_cut() {
    let kill = Kill {
        victim: 0,
        at: KillAt::SideFeeds,
        down_for: Duration::from_secs(4),
    };
    // And no user event after the cut: the user-events partitions are cut at their ends.
    expansion_with("expand-6-12-one", 6, 12, 1, kill, true);
}

#[test]
fn six_to_twelve_with_three_instances() {
    let kill = Kill {
        victim: 1,
        at: KillAt::SideFeeds,
        down_for: Duration::from_secs(1),
    };
    expansion("expand-6-12-three", 6, 12, 3, kill);
}

#[test]
fn six_to_nine_with_three_instances() {
    let kill = Kill {
        victim: 2,
        at: KillAt::HandOff,
        down_for: Duration::from_secs(1),
    };
    expansion("expand-6-9-three", 6, 9, 3, kill);
}

/// When the SIGKILL comes.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// In the middle of the settle period: old tasks read the new partitions as side feeds.
    SideFeeds,
    /// Moments after the first records past the cut: old tasks hand their users over.
    HandOff,
}

#[derive(Debug, Clone, Copy)]
struct Kill {
    /// Which instance (by number) is killed and started again.
    victim: usize,
    at: KillAt,
    /// How long it stays down.
    down_for: Duration,
}

fn expansion(name: &str, from: usize, to: usize, instances: usize, kill: Kill) {
    expansion_with(name, from, to, instances, kill, false)
}

fn expansion_with(
    name: &str,
    from: usize,
    to: usize,
    instances: usize,
    kill: Kill,
    quiet_user_events_after_cut: bool,
) {
    let mut w = World::new(name, from as i32);
    w.create_topics();
    w.publish(CAMPAIGNS);
    let names: Vec<String> = (0..instances).map(|i| format!("i{i}")).collect();
    let running: Vec<Option<Instance>> = names.iter().map(|n| Some(w.start(n))).collect();
    for i in running.iter().flatten() {
        i.wait_log("catalog loaded", Duration::from_secs(60));
    }
    let group = w.stable_group(instances, Duration::from_secs(90));
    assert_tasks_whole(&w, &group, "before the expansion");
    let started = Instant::now();

    let mut run = Run {
        w: &w,
        from,
        to,
        up: Upstream {
            quiet_user_events_after_cut,
            ..Upstream::new(&w, from, to)
        },
        traffic: Traffic::default(),
        chaos: Chaos::new(kill, &names[kill.victim]),
        running,
    };
    run.before();
    let pending_at_start = Model::of(&run.up.events).cart_pending();
    assert!(
        pending_at_start.len() >= 10_000,
        "only {} timers pending before the expansion",
        pending_at_start.len()
    );
    // They are pending in the changelog: the decisions are committed in the same
    // transactions.
    wait_committed(
        &w,
        &[
            ("cart-email", DecisionOutcome::Scheduled, PHASE1_USERS),
            ("cart-email", DecisionOutcome::Cancelled, PHASE1_USERS / 2),
            ("promo-2", DecisionOutcome::Sent, PROMO_USERS),
        ],
    );
    println!(
        "{name}: phase 1 in {:?}: {} events, {} timers pending",
        started.elapsed(),
        run.up.events.len(),
        pending_at_start.len()
    );
    run.dry_run();
    let before_expansion = run.up.events.len();
    let cut_at = run.settle_period();
    run.after_the_cut(cut_at);
    let Run {
        up: Upstream { events, placed, .. },
        running,
        ..
    } = run;
    println!(
        "{name}: {} events in {:?}; in the settle period {} stale and {} refreshed records",
        events.len(),
        started.elapsed(),
        placed[before_expansion..]
            .iter()
            .filter(|p| p.at < cut_at && p.route == Route::Stale)
            .count(),
        placed[before_expansion..]
            .iter()
            .filter(|p| p.at < cut_at && p.route == Route::Refreshed)
            .count(),
    );
    w.partitions = to as i32;
    let group = w.stable_group(instances, Duration::from_secs(120));
    assert_tasks_whole(&w, &group, "after the expansion");

    // What should be sent: the simulator on the same events in production order, which
    // agrees with the test's own model.
    let simulated = w.simulate(CAMPAIGNS, &events);
    let modelled = Model::of(&events).finish();
    let simulated_sends: BTreeSet<Send> = simulated
        .iter()
        .map(|s| {
            let (user, campaign) = (s.user_id.clone(), s.campaign_id.clone());
            (user, campaign, s.trigger_event_id.clone(), s.due_at)
        })
        .collect();
    if simulated_sends != modelled || simulated_sends.len() != simulated.len() {
        let differ: Vec<_> = simulated_sends
            .symmetric_difference(&modelled)
            .take(10)
            .collect();
        panic!(
            "simulate ({} sends, {} distinct) and the test's model ({}) differ, e.g. {differ:?}",
            simulated.len(),
            simulated_sends.len(),
            modelled.len()
        );
    }

    // Every due time passes and the connector has committed as many commands; then the
    // writers stop and the topic is read to its end offsets.
    let last_due = simulated.iter().map(|s| s.due_at).max().unwrap();
    let mut commands = w.send_commands();
    let wait = Duration::from_millis((last_due - now_ms()).max(0) as u64 + 120_000);
    wait_until("every send-command to be committed", wait, || {
        commands.drain(Duration::from_millis(500));
        let (read, now) = (commands.records.len(), now_ms());
        if read >= simulated.len() && now > last_due + 5_000 {
            return Ok(());
        }
        Err(format!(
            "{read} of {} commands read, {} ms to the last due time",
            simulated.len(),
            last_due - now
        ))
    });
    for (i, instance) in running.into_iter().enumerate() {
        let instance = instance.expect("every instance runs at the end");
        assert_eq!(
            instance.stop(Duration::from_secs(60)),
            Some(0),
            "exit of i{i}"
        );
    }
    commands.read_to_end(Duration::from_secs(60));
    let sent = commands.commands();
    compare(&w, &events, &placed, cut_at, &simulated, &sent);
    pending_timers_fired_on_time(name, from, to, cut_at, &pending_at_start, &modelled, &sent);
    println!("{name}: passed in {:?}", started.elapsed());
}

/// The timers pending when the expansion started fired at their original due time, with
/// their original trigger — by their old task or, for users that moved, by their new one —
/// unless a live purchase cancelled them.
fn pending_timers_fired_on_time(
    name: &str,
    from: usize,
    to: usize,
    cut_at: i64,
    pending: &BTreeMap<String, (String, i64)>,
    modelled: &BTreeSet<Send>,
    sent: &[SendCommand],
) {
    let by_user: HashMap<(&str, &str), &SendCommand> = sent
        .iter()
        .map(|c| ((c.user_id.as_str(), c.campaign_id.as_str()), c))
        .collect();
    let (mut fired, mut handed_over, mut cancelled, mut lateness) = (0, 0, 0, Vec::new());
    for (user, (trigger, due)) in pending {
        let send = (
            user.clone(),
            "cart-email".to_string(),
            trigger.clone(),
            *due,
        );
        if !modelled.contains(&send) {
            cancelled += 1;
            continue;
        }
        let c = by_user
            .get(&(user.as_str(), "cart-email"))
            .unwrap_or_else(|| {
                panic!(
                    "{user}'s timer pending at the expansion ({trigger}, due {due}) was not sent"
                )
            });
        assert_eq!(
            (c.trigger.event_id.as_str(), c.due_at),
            (trigger.as_str(), *due),
            "{user}'s timer pending at the expansion fired with another trigger or due time"
        );
        fired += 1;
        let key = user.as_bytes();
        if partition_for_key(key, from) != partition_for_key(key, to) && *due > cut_at {
            handed_over += 1;
        }
        lateness.push(c.emitted_at - c.due_at);
    }
    lateness.sort_unstable();
    let at = |q: usize| lateness.get(lateness.len() * q / 100).copied().unwrap_or(0);
    let worst = lateness.last().copied().unwrap_or(0);
    println!(
        "{name}: of {} timers pending at the expansion {fired} fired ({handed_over} of them \
         after the cut, for users that moved to a new task), {cancelled} were cancelled by \
         live purchases; emitted after due_at: p50 {} ms, p99 {} ms, max {worst} ms",
        pending.len(),
        at(50),
        at(99)
    );
    // About half (6 to 12) or two thirds (6 to 9) of the users move; their timers come due
    // half a minute after the cut unless phase 1 took far longer than planned.
    assert!(
        handed_over >= 1_000 && cancelled >= 1_000,
        "the run does not prove the hand-off: {handed_over} timers pending at the expansion \
         fired after the cut for users that moved, {cancelled} were cancelled live"
    );
    assert!(
        worst <= LATENESS_BOUND_MS,
        "a timer pending at the expansion was emitted {worst} ms after its due time"
    );
}

/// The phase of the run, which decides the producers' partition counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Every producer knows `M` partitions.
    Before,
    /// Some producers have refreshed their metadata (once the inputs grew), others not.
    Settle,
    /// Every producer knows `N` partitions.
    After,
}

/// The run in progress: the world, its producers, its instances.
struct Run<'w> {
    w: &'w World,
    from: usize,
    to: usize,
    up: Upstream<'w>,
    traffic: Traffic,
    chaos: Chaos,
    running: Vec<Option<Instance>>,
}

impl Run<'_> {
    /// Phase 1: batches of triggers (every other user buys 3 to 5 s later) and promo opens.
    fn before(&mut self) {
        let started = Instant::now();
        for batch in 0..PHASE1_BATCHES {
            self.ticks_until(started + PHASE1_BATCH_EVERY * batch as u32, Phase::Before);
            let per_batch = PHASE1_USERS / PHASE1_BATCHES;
            for k in batch * per_batch..(batch + 1) * per_batch {
                let user = format!("u-{k:06}");
                let t = self.up.trigger(&user, Phase::Before);
                if k % 2 == 0 {
                    self.traffic.purchase_later(&user, t, k);
                    self.traffic.eligible_again.push_back(user);
                } else {
                    self.traffic.pending.push_back((user, t + DELAY_MS));
                }
            }
            let per_batch = PROMO_USERS / PHASE1_BATCHES;
            for k in batch * per_batch..(batch + 1) * per_batch {
                let user = format!("promo-{k:05}");
                self.up.promo_open(&user, Phase::Before);
                self.traffic.promo.push_back(user);
            }
        }
        self.last_purchases(Phase::Before);
    }

    /// Produces the purchases that are due until none is left (the last is due at most
    /// 5 s after the last trigger), then flushes.
    fn last_purchases(&mut self, phase: Phase) {
        while !self.traffic.purchases.is_empty() {
            self.traffic.due_purchases(&mut self.up, phase);
            self.up.poll();
            self.chaos.step(self.w, &mut self.running);
            std::thread::sleep(TICK);
        }
        self.up.flush();
    }

    /// Ticks until `until`: live traffic in phases 2 and 3, only the purchases already
    /// planned in phase 1, none in the gap around the cut (`None`).
    fn ticks_until(&mut self, until: Instant, phase: impl Into<Option<Phase>>) {
        let phase = phase.into();
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            match phase {
                Some(Phase::Before) => self.traffic.due_purchases(&mut self.up, Phase::Before),
                Some(p) => self.traffic.live_tick(&mut self.up, p),
                None => {}
            }
            self.up.poll();
            self.chaos.step(self.w, &mut self.running);
            std::thread::sleep(TICK.saturating_sub(now.elapsed()).min(until - now));
        }
    }

    /// `partitions expand` to this run's count, with its settle and propagation periods.
    fn expand_args(&self, dry_run: bool) -> Vec<String> {
        let mut args: Vec<String> = ["partitions", "expand", "--to", &self.to.to_string()]
            .into_iter()
            .map(String::from)
            .collect();
        args.extend(["--settle", SETTLE, "--propagation", PROPAGATION].map(String::from));
        if dry_run {
            args.push("--dry-run".into());
        }
        let config = self.w.config_file();
        args.extend(["--config".into(), config.to_str().unwrap().to_string()]);
        args
    }

    /// `partitions expand --dry-run` prints the plan and changes nothing.
    fn dry_run(&self) {
        let args = self.expand_args(true);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = self.w.cli(&args);
        assert!(ok, "partitions expand --dry-run failed: {out}{err}");
        println!("{}: the plan:\n{out}", self.w.id);
        assert_partitions(self.w, self.from, "after the dry run");
        assert_eq!(
            read_layout(self.w),
            None,
            "a layout record after the dry run"
        );
    }

    /// Phase 2: the operation runs while stale producers write; once it has grown the
    /// inputs, refreshed producers write too, and an instance is killed in the middle of the
    /// settle period (or just after the cut). Returns `cut_at`.
    fn settle_period(&mut self) -> i64 {
        let args = self.expand_args(false);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let expand_started = now_ms();
        let mut expand = self.w.spawn_cli(&args);
        // Stale producers write while it runs: cut_at is at least the settle period after
        // the command started.
        let stale_until_at_least = expand_started + SETTLE_MS - STALE_STOP_BEFORE_CUT_MS;
        let done = loop {
            if let Some(done) = expand.try_finish() {
                break done;
            }
            if now_ms() >= stale_until_at_least {
                break expand.wait(Duration::from_secs(60));
            }
            let next = Instant::now() + TICK;
            self.ticks_until(next, Phase::Settle);
        };
        assert!(
            done.ok,
            "partitions expand --to {} failed after {:?}:\n{}{}",
            self.to, done.took, done.stdout, done.stderr
        );
        println!(
            "{}: expand took {:?}:\n{}",
            self.w.id, done.took, done.stdout
        );
        let cut_at = check_expanded(self.w, self.from, self.to, expand_started);
        self.chaos.plan(cut_at);
        // The inputs have grown: refreshed producers join, until the stale ones stop just
        // before the cut.
        self.up.refresh();
        self.ticks_until(instant_at(cut_at - STALE_STOP_BEFORE_CUT_MS), Phase::Settle);
        self.up.flush();
        cut_at
    }

    /// The gap, then phase 3: refreshed producers only. First one record to every partition
    /// of both inputs (every partition gets its cut at once), then live traffic.
    fn after_the_cut(&mut self, cut_at: i64) {
        self.ticks_until(instant_at(cut_at + AFTER_CUT_START_MS), None);
        for p in 0..self.to as i32 {
            let user = (0..)
                .map(|i| format!("edge-{p}-{i}"))
                .find(|u| partition_for_key(u.as_bytes(), self.to) == p)
                .unwrap();
            self.up.trigger(&user, Phase::After);
            self.up.session_start(&user, Phase::After);
        }
        // A producer still stale after the settle period: its records for users that moved
        // land in their old partitions past the cut; the old task forwards them.
        let (from, to) = (self.from, self.to);
        let late: Vec<String> = (0..)
            .map(|i| format!("late-{i}"))
            .filter(|u| {
                partition_for_key(u.as_bytes(), from) != partition_for_key(u.as_bytes(), to)
            })
            .take(LATE_STALE_USERS)
            .collect();
        for user in &late {
            self.up.promo_open(user, Phase::After);
        }
        let end = cut_at + AFTER_CUT_START_MS + AFTER_CUT_FOR_MS;
        self.ticks_until(instant_at(end), Phase::After);
        self.last_purchases(Phase::After);
        self.chaos.assert_done();
        let after_cut: BTreeSet<(bool, i32)> = self
            .up
            .placed
            .iter()
            .filter(|p| p.at >= cut_at)
            .map(|p| (p.interactions, p.partition))
            .collect();
        let topics = if self.up.quiet_user_events_after_cut {
            1
        } else {
            2
        };
        assert_eq!(
            after_cut.len(),
            topics * self.to,
            "not every input partition got a record after the cut: (interactions?, partition) {after_cut:?}"
        );
    }
}

/// The moment of the wall clock `at` (epoch ms), as an `Instant`.
fn instant_at(at: i64) -> Instant {
    Instant::now() + Duration::from_millis((at - now_ms()).max(0) as u64)
}

fn assert_partitions(w: &World, count: usize, when: &str) {
    for role in ["interactions", "user-events", "changelog"] {
        let topic = w.topic(role);
        assert_eq!(w.partition_count(&topic), Some(count), "{topic} {when}");
    }
}

/// The operation grew the changelog and both inputs and wrote the layout record; returns
/// its `cut_at`.
fn check_expanded(w: &World, from: usize, to: usize, started: i64) -> i64 {
    let returned = now_ms();
    assert_partitions(w, to, "after partitions expand");
    let layout = read_layout(w).unwrap_or_else(|| {
        panic!(
            "no layout record (key {LAYOUT_KEY:?}) in {} after partitions expand",
            layout_topic(&w.topic("changelog"))
        )
    });
    assert_eq!(
        (layout.epoch, layout.from, layout.to),
        (1, from as u32, to as u32),
        "{layout:?}"
    );
    assert!(
        layout.cut_at >= started + SETTLE_MS - 1_000 && layout.cut_at <= returned + SETTLE_MS,
        "cut_at {} is not the settle period after the command ran ({started} to {returned})",
        layout.cut_at
    );
    layout.cut_at
}

/// The layout record the operation wrote, if any.
fn read_layout(w: &World) -> Option<Layout> {
    let topic = layout_topic(&w.topic("changelog"));
    w.partition_count(&topic)?;
    let mut reader = w.reader_of_topic(&topic);
    reader.read_to_end(Duration::from_secs(30));
    let record = reader
        .records
        .iter()
        .rev()
        .find(|r| r.key.as_deref() == Some(LAYOUT_KEY))?;
    let payload = record.payload.as_deref()?;
    Some(Layout::from_json(payload).unwrap_or_else(|e| panic!("in {topic}: {e}")))
}

/// Through which partition count a record was routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Stale,
    Refreshed,
}

/// Where one produced event went.
#[derive(Debug, Clone, Copy)]
struct Placed {
    route: Route,
    interactions: bool,
    partition: i32,
    /// The wall clock right after the produce call (the record's create time is at most this).
    at: i64,
}

/// The upstream producers as the test models them: every record's partition chosen here,
/// every event kept in production order.
struct Upstream<'w> {
    w: &'w World,
    from: usize,
    to: usize,
    stale: EventProducer,
    /// Created once the inputs have grown.
    refreshed: Option<EventProducer>,
    /// Every event produced, in production order: the simulator's input.
    events: Vec<InputEvent>,
    /// Where each of `events` went.
    placed: Vec<Placed>,
    /// Records produced per user so far: event ids, and the settle period's choice of route.
    records_of: HashMap<String, u32>,
    /// No user event after the cut: every user-events partition stays idle past the cut
    /// time (its cut is its end, taken some time after the cut time).
    quiet_user_events_after_cut: bool,
}

impl<'w> Upstream<'w> {
    fn new(w: &'w World, from: usize, to: usize) -> Self {
        Self {
            w,
            from,
            to,
            stale: w.event_producer(),
            refreshed: None,
            events: Vec::new(),
            placed: Vec::new(),
            records_of: HashMap::new(),
            quiet_user_events_after_cut: false,
        }
    }

    fn refresh(&mut self) {
        self.refreshed = Some(self.w.event_producer());
    }

    /// In the settle period a user's records alternate between the routes (which one first
    /// depends on the user), so that a trigger and the purchase after it travel through
    /// different partitions.
    fn route(&self, user: &str, phase: Phase) -> Route {
        if user.starts_with("late-") {
            // A producer still stale after the settle period.
            return Route::Stale;
        }
        match phase {
            Phase::Before => Route::Stale,
            Phase::After => Route::Refreshed,
            Phase::Settle if self.refreshed.is_none() => Route::Stale,
            Phase::Settle => {
                let n = self.records_of.get(user).copied().unwrap_or(0);
                if (partition_for_key(user.as_bytes(), 2) as u32 + n) % 2 == 0 {
                    Route::Stale
                } else {
                    Route::Refreshed
                }
            }
        }
    }

    /// The next event id of a user: unique, in the user's order.
    fn event_id(&self, user: &str) -> String {
        format!("{user}-{}", self.records_of.get(user).copied().unwrap_or(0))
    }

    /// A cart trigger now; returns its event time.
    fn trigger(&mut self, user: &str, phase: Phase) -> i64 {
        let t = now_ms();
        let e = interaction(
            &self.event_id(user),
            user,
            "abandoned-cart",
            PushReceived,
            t,
        );
        self.produce(e, phase);
        t
    }

    fn purchase(&mut self, user: &str, phase: Phase) {
        let id = self.event_id(user);
        let e = user_event(&id, user, UserEventType::Purchase, None, now_ms());
        self.produce(e, phase);
    }

    fn promo_open(&mut self, user: &str, phase: Phase) {
        let id = self.event_id(user);
        let e = interaction(&id, user, "free-shipping", PushDirectOpen, now_ms());
        self.produce(e, phase);
    }

    /// A user event no rule looks at.
    fn session_start(&mut self, user: &str, phase: Phase) {
        let id = self.event_id(user);
        let e = user_event(&id, user, UserEventType::SessionStart, None, now_ms());
        self.produce(e, phase);
    }

    fn produce(&mut self, event: InputEvent, phase: Phase) {
        if self.quiet_user_events_after_cut
            && phase == Phase::After
            && !matches!(event, InputEvent::Interaction(_))
        {
            return;
        }
        let user = event.user_id().to_string();
        let route = self.route(&user, phase);
        let (count, producer) = match route {
            Route::Stale => (self.from, &self.stale),
            Route::Refreshed => (
                self.to,
                self.refreshed
                    .as_ref()
                    .expect("a refreshed producer only once the inputs grew"),
            ),
        };
        let partition = partition_for_key(user.as_bytes(), count);
        producer.send_to(&event, partition);
        self.placed.push(Placed {
            route,
            interactions: matches!(event, InputEvent::Interaction(_)),
            partition,
            at: now_ms(),
        });
        *self.records_of.entry(user).or_default() += 1;
        self.events.push(event);
    }

    fn poll(&self) {
        self.stale.poll();
        if let Some(p) = &self.refreshed {
            p.poll();
        }
    }

    fn flush(&self) {
        self.stale.flush();
        if let Some(p) = &self.refreshed {
            p.flush();
        }
    }
}

/// The users the live traffic draws on.
#[derive(Default)]
struct Traffic {
    /// Purchases to produce later: (when, user).
    purchases: BTreeSet<(i64, String)>,
    /// Phase-1 users whose timer is pending, with its due time, in trigger order.
    pending: VecDeque<(String, i64)>,
    pending_looked_at: usize,
    /// Users whose timer a purchase cancelled: eligible again.
    eligible_again: VecDeque<String>,
    retriggered: usize,
    /// Users with a promo receipt, in rotation.
    promo: VecDeque<String>,
    new_users: usize,
}

impl Traffic {
    /// A purchase 3 to 5 s after a trigger: well inside the delay.
    fn purchase_later(&mut self, user: &str, triggered_at: i64, k: usize) {
        let at = triggered_at + 3_000 + (k % 3) as i64 * 1_000;
        self.purchases.insert((at, user.to_string()));
    }

    fn due_purchases(&mut self, up: &mut Upstream, phase: Phase) {
        let now = now_ms();
        while self.purchases.first().is_some_and(|(at, _)| *at <= now) {
            let (_, user) = self.purchases.pop_first().unwrap();
            up.purchase(&user, phase);
        }
    }

    /// One tick of live traffic: new users (every other one buys a few seconds later),
    /// purchases for pending phase-1 users (only well before their due time), repeated
    /// promo opens, and in phase 3 new triggers for users whose timer was cancelled.
    fn live_tick(&mut self, up: &mut Upstream, phase: Phase) {
        self.due_purchases(up, phase);
        for _ in 0..NEW_USERS_PER_TICK {
            let k = self.new_users;
            self.new_users += 1;
            let user = format!("n-{k:06}");
            let t = up.trigger(&user, phase);
            if k % 2 == 1 {
                self.purchase_later(&user, t, k);
            }
        }
        // Timers too close to their due time for a purchase are passed over without taking
        // the tick's budget (the queue is in due order), so that a slow phase 1 still leaves
        // purchases for the later ones.
        let now = now_ms();
        while self
            .pending
            .front()
            .is_some_and(|(_, due)| due - now < EXCEPTION_MARGIN_MS)
        {
            self.pending.pop_front();
        }
        for _ in 0..PENDING_LOOKED_AT_PER_TICK {
            let Some((user, _)) = self.pending.pop_front() else {
                break;
            };
            self.pending_looked_at += 1;
            if self.pending_looked_at % 2 == 0 {
                up.purchase(&user, phase);
                self.eligible_again.push_back(user);
            }
        }
        if phase == Phase::After {
            for _ in 0..RETRIGGERS_PER_TICK {
                let Some(user) = self.eligible_again.pop_front() else {
                    break;
                };
                let t = up.trigger(&user, phase);
                self.retriggered += 1;
                if self.retriggered % 2 == 0 {
                    self.purchase_later(&user, t, self.retriggered);
                }
            }
        }
        for _ in 0..PROMO_REPEATS_PER_TICK {
            if let Some(user) = self.promo.pop_front() {
                up.promo_open(&user, phase);
                self.promo.push_back(user);
            }
        }
    }
}

/// The SIGKILL of one instance and its restart, planned once `cut_at` is known.
struct Chaos {
    kill: Kill,
    instance: String,
    kill_at: Option<i64>,
    restart_at: Option<i64>,
    restarted: bool,
}

impl Chaos {
    fn new(kill: Kill, instance: &str) -> Self {
        Self {
            kill,
            instance: instance.to_string(),
            kill_at: None,
            restart_at: None,
            restarted: false,
        }
    }

    fn plan(&mut self, cut_at: i64) {
        self.kill_at = Some(match self.kill.at {
            KillAt::SideFeeds => (cut_at - SETTLE_MS / 2).max(now_ms() + 500),
            KillAt::HandOff => cut_at + AFTER_CUT_START_MS + 500,
        });
    }

    fn step(&mut self, w: &World, running: &mut [Option<Instance>]) {
        let now = now_ms();
        if let (Some(at), None) = (self.kill_at, self.restart_at) {
            if now >= at {
                let victim = running[self.kill.victim].take();
                victim.expect("the victim runs").kill();
                self.restart_at = Some(now + self.kill.down_for.as_millis() as i64);
            }
        }
        if let (Some(at), false) = (self.restart_at, self.restarted) {
            if now >= at {
                running[self.kill.victim] = Some(w.start(&self.instance));
                self.restarted = true;
            }
        }
    }

    fn assert_done(&self) {
        assert!(
            self.restarted,
            "the {:?} kill of {} did not happen (planned at {:?})",
            self.kill.at, self.instance, self.kill_at
        );
    }
}

/// Waits until the decision log holds at least these counts of (follow-on, outcome).
fn wait_committed(w: &World, want: &[(&str, DecisionOutcome, usize)]) {
    let codec: Codec<Decision> = Codec::new("decisions", &EncodingSettings::avro()).unwrap();
    let mut decisions = w.reader("decisions");
    let mut counts: HashMap<(String, DecisionOutcome), usize> = HashMap::new();
    let mut seen = 0;
    let what = format!("the committed decisions of phase 1: {want:?}");
    wait_until(&what, Duration::from_secs(180), || {
        decisions.drain(Duration::from_millis(500));
        for r in &decisions.records[seen..] {
            let d = codec.decode(r.payload.as_deref().unwrap()).unwrap();
            *counts.entry((d.follow_on_id, d.outcome)).or_default() += 1;
        }
        seen = decisions.records.len();
        let count = |f: &str, o: DecisionOutcome| counts.get(&(f.to_string(), o)).copied();
        if want.iter().all(|(f, o, n)| count(f, *o).unwrap_or(0) >= *n) {
            Ok(())
        } else {
            Err(format!("{counts:?}"))
        }
    });
}

/// A send: (user, follow-on, trigger event id, due_at).
type Send = (String, String, String, i64);

/// The two rules of [`CAMPAIGNS`], naively: per user, in event order.
#[derive(Default)]
struct Model {
    users: HashMap<String, UserModel>,
    sends: BTreeSet<Send>,
}

#[derive(Default)]
struct UserModel {
    /// The pending cart reminder: (trigger event id, triggered at, due at).
    cart_pending: Option<(String, i64, i64)>,
    cart_sent: bool,
    promo_sent: bool,
}

impl Model {
    fn of(events: &[InputEvent]) -> Self {
        let mut model = Self::default();
        events.iter().for_each(|e| model.apply(e));
        model
    }

    fn apply(&mut self, event: &InputEvent) {
        let user = event.user_id().to_string();
        let state = self.users.entry(user.clone()).or_default();
        let t = match event {
            InputEvent::Interaction(i) => i.occurred_at,
            InputEvent::UserEvent(u) => u.occurred_at,
        };
        // Before a record with time t, every timer with due_at <= t fires.
        if let Some((trigger, _, due)) = state.cart_pending.clone() {
            if due <= t {
                let send = (user.clone(), "cart-email".into(), trigger, due);
                self.sends.insert(send);
                state.cart_pending = None;
                state.cart_sent = true;
            }
        }
        let is =
            |i: &Interaction, campaign: &str, kind| i.campaign_id == campaign && i.kind == kind;
        match event {
            InputEvent::UserEvent(u) if u.event_type == UserEventType::Purchase => {
                if let Some((_, triggered, due)) = &state.cart_pending {
                    if *triggered <= t && t < *due {
                        state.cart_pending = None;
                    }
                }
            }
            // Not re-eligible after a send; the first trigger is kept while one is pending.
            InputEvent::Interaction(i)
                if is(i, "abandoned-cart", PushReceived)
                    && !state.cart_sent
                    && state.cart_pending.is_none() =>
            {
                state.cart_pending = Some((i.event_id.clone(), t, t + DELAY_MS));
            }
            InputEvent::Interaction(i)
                if is(i, "free-shipping", PushDirectOpen) && !state.promo_sent =>
            {
                let send = (user, "promo-2".into(), i.event_id.clone(), t);
                self.sends.insert(send);
                state.promo_sent = true;
            }
            _ => {}
        }
    }

    /// The pending cart reminders: user → (trigger event id, due at).
    fn cart_pending(&self) -> BTreeMap<String, (String, i64)> {
        self.users
            .iter()
            .filter_map(|(u, s)| {
                let (trigger, _, due) = s.cart_pending.clone()?;
                Some((u.clone(), (trigger, due)))
            })
            .collect()
    }

    /// Every pending timer fires at the end.
    fn finish(mut self) -> BTreeSet<Send> {
        for (user, (trigger, due)) in self.cart_pending() {
            self.sends.insert((user, "cart-email".into(), trigger, due));
        }
        self.sends
    }
}

/// Fails unless the connector's commands are the simulator's: the same (user, command_id,
/// due_at), no command_id twice, none emitted before its due time. Names a few differing
/// users with their records (route, topic, partition, time against the cut), both sides'
/// sends and the connector's decisions about them.
fn compare(
    w: &World,
    events: &[InputEvent],
    placed: &[Placed],
    cut_at: i64,
    simulated: &[SimulatedSend],
    sent: &[SendCommand],
) {
    let mut ids = BTreeSet::new();
    let twice: Vec<&SendCommand> = sent
        .iter()
        .filter(|c| !ids.insert(c.command_id.as_str()))
        .collect();
    let early: Vec<&SendCommand> = sent.iter().filter(|c| c.emitted_at < c.due_at).collect();
    let got: BTreeSet<(&str, &str, i64)> = sent
        .iter()
        .map(|c| (c.user_id.as_str(), c.command_id.as_str(), c.due_at))
        .collect();
    let want: BTreeSet<(&str, &str, i64)> = simulated
        .iter()
        .map(|s| (s.user_id.as_str(), s.command_id.as_str(), s.due_at))
        .collect();
    if twice.is_empty() && early.is_empty() && got == want {
        return;
    }
    let extra: Vec<_> = got.difference(&want).collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let mut users: Vec<&str> = twice.iter().map(|c| c.user_id.as_str()).collect();
    users.extend(early.iter().map(|c| c.user_id.as_str()));
    users.extend(extra.iter().chain(&missing).map(|(u, _, _)| *u));
    let mut seen = BTreeSet::new();
    users.retain(|u| seen.insert(*u));
    users.truncate(5);
    let mut decisions = w.reader("decisions");
    decisions.read_to_end(Duration::from_secs(120));
    let decisions = decisions.decisions();
    let mut story = String::new();
    for user in &users {
        story.push_str(&format!("--- {user}\n"));
        for (e, p) in events.iter().zip(placed) {
            let (what, t) = match e {
                InputEvent::Interaction(i) if i.user_id == *user => (
                    format!("{} {} {:?}", i.event_id, i.campaign_id, i.kind),
                    i.occurred_at,
                ),
                InputEvent::UserEvent(u) if u.user_id == *user => {
                    (format!("{} {:?}", u.event_id, u.event_type), u.occurred_at)
                }
                _ => continue,
            };
            let topic = if p.interactions {
                "interactions"
            } else {
                "user-events"
            };
            story.push_str(&format!(
                "  event {what} at cut{:+} ms, {:?} route to {topic} partition {}\n",
                t - cut_at,
                p.route,
                p.partition
            ));
        }
        for s in simulated.iter().filter(|s| s.user_id == *user) {
            story.push_str(&format!(
                "  simulate: {} {} due cut{:+} ms\n",
                s.campaign_id,
                s.command_id,
                s.due_at - cut_at
            ));
        }
        for c in sent.iter().filter(|c| c.user_id == *user) {
            story.push_str(&format!(
                "  connector: {} {} due cut{:+} ms, emitted {:+} ms after due\n",
                c.campaign_id,
                c.command_id,
                c.due_at - cut_at,
                c.emitted_at - c.due_at
            ));
        }
        for d in decisions.iter().filter(|d| d.user_id == *user) {
            story.push_str(&format!(
                "  decision: {} {:?} {:?} trigger {:?} cause {:?} at {:?}\n",
                d.follow_on_id, d.outcome, d.reason, d.trigger_event_id, d.cause_event_id, d.source
            ));
        }
    }
    panic!(
        "the connector's {} send-commands are not the simulator's {}: {} command ids twice, \
         {} emitted before their due time, {} extra, {} missing; e.g. extra {:?}, missing \
         {:?}\n{story}",
        sent.len(),
        simulated.len(),
        twice.len(),
        early.len(),
        extra.len(),
        missing.len(),
        extra.iter().take(5).collect::<Vec<_>>(),
        missing.iter().take(5).collect::<Vec<_>>(),
    );
}
