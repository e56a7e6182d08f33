#!/usr/bin/env bash
# Usage: scripts/kafka/stop.sh [--clean]
#
# Stops the broker started by start.sh on KAFKA_PORT: SIGTERM (controlled shutdown),
# waits up to KAFKA_STOP_SECONDS (default 20), then SIGKILL. Removes the pid file.
# Idempotent: succeeds if the broker is not running.
#   --clean   also delete the broker's data dir (KAFKA_DATA_DIR: topics, logs, config)
#
# Env:
#   KAFKA_PORT          client port of the broker (default 9092)
#   KAFKA_DATA_DIR      data dir used by start.sh (default .cache/kafka-data/<port>)
#   KAFKA_STOP_SECONDS  grace period before SIGKILL (default 20)
set -euo pipefail
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

clean=false
for arg in "$@"; do
  case "$arg" in
    --clean) clean=true ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) kafka_die "unknown argument: $arg (usage: stop.sh [--clean])" ;;
  esac
done
STOP_SECONDS="${KAFKA_STOP_SECONDS:-20}"

if pid="$(kafka_running_pid)"; then
  kafka_log "stopping broker on port $KAFKA_PORT (pid $pid) ..."
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_SECONDS))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    kafka_log "broker did not stop within ${STOP_SECONDS}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kafka_die "could not kill pid $pid"
  fi
  kafka_log "stopped broker on port $KAFKA_PORT"
else
  kafka_log "broker on port $KAFKA_PORT is not running"
fi
rm -f "$KAFKA_PID_FILE"

if $clean && [[ -d "$KAFKA_DATA_DIR" ]]; then
  # Safety: only delete a dir that looks like one start.sh made (or an empty one).
  if [[ ! -e "$KAFKA_DATA_DIR/server.properties" && ! -e "$KAFKA_LOG_DIRS" && ! -e "$KAFKA_LOG_FILE" \
        && -n "$(ls -A "$KAFKA_DATA_DIR")" ]]; then
    kafka_die "refusing to delete $KAFKA_DATA_DIR: it does not look like a Kafka data dir made by start.sh"
  fi
  rm -rf "$KAFKA_DATA_DIR"
  kafka_log "deleted data dir $KAFKA_DATA_DIR"
fi
