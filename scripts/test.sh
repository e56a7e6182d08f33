#!/usr/bin/env bash
# The whole test suite: unit, property, schema, simulator and CLI tests, and the
# integration tests against a real Apache Kafka broker that this script fetches (Maven
# Central), starts on 127.0.0.1 and always stops again, also on failure.
#
# Usage: scripts/test.sh [extra cargo test args]
# Env:   KAFKA_TEST_PORT (default 19092): the port of the test broker.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

export KAFKA_PORT="${KAFKA_TEST_PORT:-19092}"
export KAFKA_CONTROLLER_PORT="$((KAFKA_PORT + 1))"
export KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-.cache/kafka-data/test-$KAFKA_PORT}"
cleanup() { scripts/kafka/stop.sh --clean >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
scripts/kafka/fetch.sh
scripts/kafka/start.sh
scripts/kafka/wait-ready.sh

export KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
cargo test --locked "$@"
