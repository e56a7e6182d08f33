#!/usr/bin/env bash
# Usage: scripts/chaos.sh [--profile ci|full] [--seed N] [--faults all|none|KIND,...]
#                         [--poison all|none|KIND,...] [--instances N] [--events N]
#                         [--fetch-limit KB/s] [--transactional-input]
#                         [--debug] [--bin CONNECTOR] [--write-docs]
#
# The fault matrix: starts a local three-broker Kafka cluster (scripts/kafka/cluster.sh)
# whose client listener is advertised at TCP proxies, runs connector instances (the release
# binary) against it through those proxies, produces a large seeded workload, injects faults
# at moments drawn from the seed (connector SIGKILL, broker kill and restart, rebalance
# storms, a zombie, dropped connections and stalls, a schema registry outage, poison records,
# evolved writer schemas),
# then reads every output with read_committed and compares it with the engine run over the
# same input. Prints what it injected and verified; exits 0 only if every check passed.
# Everything it starts is stopped again, also on failure or Ctrl-C.
#
#   --profile ci     a few minutes: a handful of each fault, one broker kill (default)
#   --profile full   the whole matrix: ≥ 30 connector kills, ≥ 5 broker faults, ≥ 10
#                    rebalances, 10^6 events (about half an hour on 2 cores)
#   --seed N         the seed (default: a random one, printed); the same seed gives the
#                    same input and the same fault schedule
#   --faults LIST    only these fault kinds (kill, kill-restore, kill-rebalance, broker-kill,
#                    broker-restart, storm, zombie, drop, stall, commit-stall, kill-commit, registry),
#                    or none. With `registry` in the list the interactions are written in
#                    the Confluent wire format, through a schema registry the run starts
#   --poison LIST    only these poison kinds (garbage, truncated, v3, time-range,
#                    time-negative, 2099, key, empty-user), or none
#   --instances N    instances running between faults (default 2)
#   --transactional-input  write the input in transactions (one per chunk), as an
#                    upstream application with exactly-once output does
#   --events N       override the profile's number of events
#   --fetch-limit K  Fetch responses per broker in KB/s through the proxies (0: unlimited;
#                    default per profile: the group then has a backlog for as long as the
#                    faults take)
#   --debug          use the dev-profile binaries (what `cargo test` builds) instead of
#                    building release ones; slower, so a smaller input lasts as long
#   --bin PATH       run this connector binary instead of the one built here (another
#                    build of the product, e.g. a release candidate)
#   --write-docs     put the run's report into docs/reliability.md ("Last run" section)
#
# Env:
#   CHAOS_PORT_BASE  first of the 20 ports on 127.0.0.1 the run uses (default 19300):
#                    the cluster takes BASE..BASE+14 (see cluster.sh), the connectors' HTTP
#                    servers BASE+15..BASE+18, the schema registry's gate BASE+19
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
for a in "$@"; do [[ "$a" == --write-docs ]] || args+=("$a"); done
profile=ci
seed=""
write_docs=false
build_profile=release
connector=""
pass=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --profile) profile="${2:?--profile needs ci or full}"; shift 2 ;;
    --seed) seed="${2:?--seed needs a number}"; shift 2 ;;
    --faults|--events|--poison|--instances|--fetch-limit) pass+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --write-docs) write_docs=true; shift ;;
    --debug) build_profile=debug; shift ;;
    --transactional-input) pass+=("$1"); shift ;;
    --bin) connector="${2:?--bin needs a path}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$profile" == ci || "$profile" == full ]] || { echo "--profile must be ci or full" >&2; exit 2; }
if [[ -z "$seed" ]]; then
  seed="$(( (RANDOM << 15 | RANDOM) % 1000000 ))"
  args+=(--seed "$seed")
fi
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "--seed must be a number" >&2; exit 2; }
# What reproduces this run (the program prints it with its report).
reproduce="scripts/chaos.sh ${args[*]}"
export CHAOS_REPRODUCE="$reproduce"

base="${CHAOS_PORT_BASE:-19300}"
export KAFKA_CLUSTER_PORT_BASE="$base"
export KAFKA_CLUSTER_PROXY=1
export KAFKA_CLUSTER_DIR="$PWD/.cache/kafka-cluster/chaos-$base"
report_dir=".cache/chaos"
report="$report_dir/report-$profile-$seed.md"

chaos_pid=""
chaos_group=""
cleanup() {
  if [[ -n "$chaos_group" ]]; then
    # The run and the connector instances it started share its process group: end them
    # all, also when the run itself is gone already (interrupted, crashed).
    kill -KILL -- "-$chaos_group" 2>/dev/null || true
    [[ -n "$chaos_pid" ]] && wait "$chaos_pid" 2>/dev/null || true
  fi
  scripts/kafka/cluster.sh stop --clean >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One run per port range at a time: a second one would stop the first one's cluster.
mkdir -p "$report_dir"
exec 9>"$report_dir/.lock-$base"
if ! flock -n 9; then
  echo "[chaos] another chaos run uses ports $base..$((base + 19)) (lock $report_dir/.lock-$base); set CHAOS_PORT_BASE" >&2
  trap - EXIT
  exit 2
fi

scripts/setup.sh
scripts/kafka/fetch.sh >/dev/null
cleanup
echo "[chaos] building the connector and the chaos program ($build_profile)"
if [[ "$build_profile" == release ]]; then
  cargo build --release --locked --bin campaign-connector --example chaos
else
  cargo build --locked --bin campaign-connector --example chaos
fi
# The lock (fd 9) stays with this script: nothing it starts inherits it.
scripts/kafka/cluster.sh start 9>&-
scripts/kafka/cluster.sh wait-ready
mkdir -p "$report_dir"

echo "[chaos] profile $profile, seed $seed (reproduce: $reproduce)"
# Its own process group (job control), so that cleanup can end it and its children.
set -m
"target/$build_profile/examples/chaos" --profile "$profile" --seed "$seed" --port-base "$base" \
  --bin "${connector:-target/$build_profile/campaign-connector}" --repo . --report "$report" \
  ${pass[@]+"${pass[@]}"} 9>&- &
chaos_pid=$!
chaos_group=$chaos_pid
set +m
rc=0
wait "$chaos_pid" || rc=$?
chaos_pid=""

if $write_docs && [[ -f "$report" ]]; then
  doc=docs/reliability.md
  begin='<!-- last-run:begin -->'
  end='<!-- last-run:end -->'
  grep -q "$begin" "$doc" && grep -q "$end" "$doc" || { echo "$doc has no $begin/$end markers" >&2; exit 2; }
  {
    sed "/$begin/q" "$doc"
    printf '\nRun on %s with `%s`:\n\n' "$(date -u +%F)" "$reproduce"
    cat "$report"
    echo
    sed -n "/$end/,\$p" "$doc"
  } >"$doc.new"
  mv "$doc.new" "$doc"
  echo "[chaos] docs/reliability.md updated"
fi

if ((rc != 0)); then
  echo "[chaos] FAILED (exit $rc). Reproduce with: $reproduce" >&2
fi
exit "$rc"
