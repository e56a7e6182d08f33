#!/usr/bin/env bash
# A long restore, measured: builds in release mode, starts a local broker (port
# KAFKA_CHECK_PORT, default 19292), has the connector schedule RESTORE_TIMERS pending timers
# (default 2,000,000), then restarts it and checks, while the new process restores them all,
# that /healthz stays 200 with a live loop and /readyz turns 200 only when every timer is
# back. Prints the ingest and restore times. This is tests/kafka_restore.rs at scale.
# Usage: scripts/restore-check.sh   (RESTORE_TIMERS=… to change the size)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export KAFKA_PORT="${KAFKA_CHECK_PORT:-19292}"
export KAFKA_CONTROLLER_PORT="$((KAFKA_PORT + 1))"
export KAFKA_DATA_DIR=".cache/kafka-data/restore-check-$KAFKA_PORT"
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}"
cleanup() { scripts/kafka/stop.sh --clean >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
scripts/kafka/start.sh
scripts/kafka/wait-ready.sh
export KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
export RESTORE_TIMERS="${RESTORE_TIMERS:-2000000}"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $RESTORE_TIMERS timers"
cargo test --release --locked --test kafka_restore -- --nocapture
