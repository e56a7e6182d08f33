#!/usr/bin/env bash
# The quick start, one command on a fresh machine: fetches and starts a local Kafka broker,
# creates the topics, publishes the example campaigns, starts the connector, plays a short
# story of interactions (delays of seconds), shows the send-commands and decisions as a
# table, and cleans up after itself.
#
# Usage: scripts/quickstart.sh      (KAFKA_QUICKSTART_PORT, default 19292)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

export KAFKA_PORT="${KAFKA_QUICKSTART_PORT:-19292}"
export KAFKA_CONTROLLER_PORT="$((KAFKA_PORT + 1))"
export KAFKA_DATA_DIR=".cache/kafka-data/quickstart-$KAFKA_PORT"
export CONNECTOR_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
export CONNECTOR_APPLICATION_ID="quickstart-$(date +%s)"
export CONNECTOR_PARTITIONS=3
export RUST_LOG="${RUST_LOG:-warn}"
bin=target/release/campaign-connector
connector_pid=
log=".cache/quickstart-connector.log"

cleanup() {
  if [ -n "$connector_pid" ]; then kill "$connector_pid" 2>/dev/null || true; wait "$connector_pid" 2>/dev/null || true; fi
  scripts/kafka/stop.sh --clean >/dev/null 2>&1 || true
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "building the connector (release)"
cargo build --release --locked --bin campaign-connector 2>&1 | tail -1

step "starting a local Kafka broker on 127.0.0.1:$KAFKA_PORT"
scripts/kafka/stop.sh --clean >/dev/null 2>&1 || true
scripts/kafka/start.sh
scripts/kafka/wait-ready.sh

step "creating topics"
"$bin" topics create

step "publishing examples/quickstart/campaigns.yaml"
"$bin" campaigns publish examples/quickstart/campaigns.yaml

step "starting the connector (log: $log)"
mkdir -p .cache
"$bin" run >"$log" 2>&1 &
connector_pid=$!
sleep 3

step "playing the story (examples/quickstart/story.jsonl), shifted to now"
cat <<'STORY'
  alice, bob and carol get the abandoned-cart push; bob buys, carol opens the push,
  alice does neither. dave and erin get the newsletter; erin opens it. frank opens the
  free-shipping push. Expect: alice and dave get their follow-ons after a few seconds,
  frank at once; bob, carol and erin are cancelled.
STORY
"$bin" send --now examples/quickstart/story.jsonl

step "waiting for the delays to pass"
sleep 9

step "send-commands and decisions"
"$bin" outputs --read-for 3s

kill -TERM "$connector_pid"; wait "$connector_pid" || true; connector_pid=
step "done (the broker is stopped and its data removed)"
