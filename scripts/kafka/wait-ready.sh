#!/usr/bin/env bash
# Usage: scripts/kafka/wait-ready.sh
#
# Waits until the broker started by start.sh on KAFKA_PORT is ready for requests:
# its process is alive, the port accepts connections, and a real admin request
# (Kafka's TopicCommand --list against 127.0.0.1:KAFKA_PORT) succeeds.
# Exits non-zero, printing the tail of the broker log, if the process dies or the
# deadline passes.
#
# Env:
#   KAFKA_PORT          client port of the broker (default 9092)
#   KAFKA_DATA_DIR      data dir used by start.sh (default .cache/kafka-data/<port>)
#   KAFKA_WAIT_SECONDS  deadline in seconds (default 60)
set -euo pipefail
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

WAIT_SECONDS="${KAFKA_WAIT_SECONDS:-60}"
[[ "$WAIT_SECONDS" =~ ^[0-9]+$ ]] || kafka_die "KAFKA_WAIT_SECONDS must be a whole number of seconds"
start=$SECONDS
deadline=$((SECONDS + WAIT_SECONDS))

fail() {
  kafka_log "$1"
  if [[ -f "$KAFKA_LOG_FILE" ]]; then
    kafka_log "---- last 40 lines of $KAFKA_LOG_FILE ----"
    tail -n 40 "$KAFKA_LOG_FILE" >&2
  fi
  exit 1
}

alive() {
  kafka_running_pid >/dev/null && return 0
  if [[ -s "$KAFKA_PID_FILE" ]]; then
    fail "broker on port $KAFKA_PORT (pid $(cat "$KAFKA_PID_FILE")) has exited"
  fi
  fail "broker on port $KAFKA_PORT is not running (no pid file $KAFKA_PID_FILE); start it with scripts/kafka/start.sh"
}

alive
# 1) cheap: wait for the TCP port.
until kafka_port_open "$KAFKA_PORT"; do
  alive
  ((SECONDS < deadline)) || fail "timed out after ${WAIT_SECONDS}s waiting for $KAFKA_BOOTSTRAP to accept connections"
  sleep 0.2
done

# 2) real: an admin request must succeed.
client_conf="$KAFKA_DATA_DIR/wait-ready-client.properties"
kafka_tool_cmd org.apache.kafka.tools.TopicCommand
printf 'request.timeout.ms=5000\ndefault.api.timeout.ms=10000\n' >"$client_conf"
while :; do
  alive
  left=$((deadline - SECONDS))
  ((left > 0)) || fail "timed out after ${WAIT_SECONDS}s: $KAFKA_BOOTSTRAP accepts connections but admin requests fail"
  if out="$(timeout "$((left < 20 ? left : 20))" "${KAFKA_CMD[@]}" \
             --bootstrap-server "$KAFKA_BOOTSTRAP" --command-config "$client_conf" --list 2>&1)"; then
    kafka_log "broker ready on $KAFKA_BOOTSTRAP after $((SECONDS - start))s"
    exit 0
  fi
  last_err="$out"
  sleep 0.5
  ((SECONDS < deadline)) || { kafka_log "last admin error: ${last_err:-}"; fail "timed out after ${WAIT_SECONDS}s waiting for $KAFKA_BOOTSTRAP to answer admin requests"; }
done
