#!/usr/bin/env bash
# The benchmark suite: the connector beside a bare rdkafka copy and a Kafka Streams
# application of the same rule, in one run, on one local broker, over the same topics.
# Builds everything in release mode (the connector, benches/copy.rs, benches/suite/, the
# engine benchmark, and bench/streams-peer/ with javac), starts a broker on 127.0.0.1
# (port KAFKA_BENCH_PORT, default 19600; +1 is its controller) and always stops it again,
# runs the suite, prints its tables and writes docs/benchmarks.md and docs/benchmarks.svg.
#
# Usage: scripts/bench.sh [--quick]     (--quick: small sizes, a smoke run of a few minutes)
#
# Sizes and options (environment; defaults fit a 2-core machine in about 15 minutes):
#   BENCH_EVENTS (2000000)  BENCH_USERS (events/8)  BENCH_PARTITIONS (6)  BENCH_DELAY_S (86400)
#   BENCH_LATENESS_RATE (5000 events/s)  BENCH_LATENESS_SECONDS (60)  BENCH_LATENESS_DELAY_S (10)
#   BENCH_LATENESS_WARMUP_S (20 s of load before the measured seconds)
#   BENCH_BURST_TIMERS (1000000)  BENCH_RESTORE_TIMERS (1000000): the connector's
#   BENCH_STREAMS_TIMERS (200000): burst and restore of the Kafka Streams application
#   BENCH_STREAMS_THREADS (1)  BENCH_STREAMS_JVM_OPTS ("-Xms256m -Xmx1g")
#   BENCH_PARTS (throughput,lateness,restore,burst,engine): a subset to run
#   BENCH_RUNS ("connector: exactly-once, 100 ms|Streams"): only the runs (of every part)
#     whose "system: mode" contains one of the |-separated parts (default: all)
#   BENCH_ROUNDS (5): rounds of the main comparison (each mode's copy and connector,
#     decisions on, side by side); its ratios are the median of the rounds
#   BENCH_WARMUP (1): 0 skips the unmeasured runs that warm the broker up before the
#     throughput part
#   BENCH_CONNECTOR_LOG (warn): RUST_LOG of the connectors the suite starts
#   BENCH_DOC (docs/benchmarks.md): where to write the page; empty: do not write it
#   BENCH_HTTP_PORTS (19650-19699): ports of the connectors' HTTP servers
#   BENCH_KEEP_WORK (unset): 1 keeps the work directory (the processes' logs, the broker's
#     log copied in) also after a run that succeeded
set -euo pipefail
cd "$(dirname "$0")/.."
# The command as given, with the sizes and options set in the environment.
command_line="$({ env | grep -E '^(BENCH|KAFKA_BENCH)_' || true; } | sort | tr '\n' ' ')scripts/bench.sh${*:+ $*}"
for arg in "$@"; do
  case "$arg" in
    --quick) ;;
    *) echo "usage: scripts/bench.sh [--quick]" >&2; exit 2 ;;
  esac
done

scripts/setup.sh
export KAFKA_PORT="${KAFKA_BENCH_PORT:-19600}"
export KAFKA_CONTROLLER_PORT="$((KAFKA_PORT + 1))"
export KAFKA_DATA_DIR=".cache/kafka-data/bench-$KAFKA_PORT"
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}"
work="$(mktemp -d "${TMPDIR:-/tmp}/campaign-bench.XXXXXX")"
extra="$work/broker-extra.properties"
# Event time of the workload spans days into the past: keep every record for the run.
printf 'log.retention.ms=-1\n' >"$extra"
cleanup() {
  local rc=$? pid
  # The suite's own processes, should it have been killed before stopping them.
  if [[ -f "$work/pids" ]]; then
    while read -r pid; do
      # Only a process that still is one of ours (pids are reused).
      if [[ -n "$pid" ]] && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null \
           | grep -qE 'campaign-connector|/deps/copy-|CampaignStreams'; then
        kill "$pid" 2>/dev/null || true
      fi
    done <"$work/pids"
  fi
  if [[ $rc -ne 0 || "${BENCH_KEEP_WORK:-}" == 1 ]]; then
    cp "$KAFKA_DATA_DIR/kafka.log" "$work/broker.log" 2>/dev/null || true
  fi
  scripts/kafka/stop.sh --clean >/dev/null 2>&1 || true
  if [[ $rc -ne 0 ]]; then
    echo "bench.sh: failed; the processes' logs are kept in $work" >&2
  elif [[ "${BENCH_KEEP_WORK:-}" == 1 ]]; then
    echo "bench.sh: the processes' logs and the broker's are kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
scripts/kafka/stop.sh --clean >/dev/null 2>&1 || true

cargo build --release --locked --bin campaign-connector
bins="$(cargo bench --locked --no-run --bench copy --bench suite --bench engine --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')"
bin_of() { grep "/deps/$1-" <<<"$bins" | head -n 1; }
streams_cp="$(scripts/java/streams-peer.sh)"
# The engine alone before the broker starts: a fresh broker's JIT compiler takes much of the
# machine in its first minute (measured beside it, the warm engine lost about a tenth).
if [[ ",${BENCH_PARTS:-engine}," == *",engine,"* ]]; then
  echo "[bench] engine alone, before the broker starts"
  "$(bin_of engine)" "$@" >"$work/engine.txt"
  export BENCH_ENGINE_RESULT="$work/engine.txt"
fi
KAFKA_EXTRA_CONFIG="$extra" scripts/kafka/start.sh
scripts/kafka/wait-ready.sh

# shellcheck source=kafka/lib.sh
source scripts/kafka/lib.sh
broker_pid="$(kafka_running_pid)"

export KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
export BENCH_CONNECTOR_BIN="${BENCH_CONNECTOR_BIN:-$PWD/target/release/campaign-connector}"
BENCH_COPY_BIN="$(bin_of copy)"
BENCH_ENGINE_BIN="$(bin_of engine)"
suite="$(bin_of suite)"
[[ -x "$BENCH_COPY_BIN" && -x "$BENCH_ENGINE_BIN" && -x "$suite" ]] || { echo "bench.sh: benchmark programs not found after the build" >&2; exit 1; }
export BENCH_COPY_BIN BENCH_ENGINE_BIN
export BENCH_STREAMS_CP="$streams_cp"
export BENCH_SCHEMAS_DIR="$PWD/schemas"
export BENCH_BROKER_PID="$broker_pid"
export BENCH_WORK_DIR="$work"
export BENCH_DOC="${BENCH_DOC-$PWD/docs/benchmarks.md}"
export BENCH_COMMAND="$command_line"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
"$suite" "$@"
