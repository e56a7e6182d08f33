#!/usr/bin/env bash
# End-to-end throughput against a local broker: builds in release mode, starts a broker
# (port KAFKA_BENCH_PORT, default 19192), runs benches/e2e.rs and stops the broker.
# Usage: scripts/bench-e2e.sh   (E2E_EVENTS=200000 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export KAFKA_PORT="${KAFKA_BENCH_PORT:-19192}"
export KAFKA_CONTROLLER_PORT="$((KAFKA_PORT + 1))"
export KAFKA_DATA_DIR=".cache/kafka-data/bench-$KAFKA_PORT"
cleanup() { scripts/kafka/stop.sh --clean >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
scripts/kafka/start.sh
scripts/kafka/wait-ready.sh
cargo build --release --locked --bin campaign-connector
export KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
export E2E_CONNECTOR_BIN="$PWD/target/release/campaign-connector"
cargo bench --locked --bench e2e
