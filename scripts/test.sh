#!/usr/bin/env bash
# The whole test suite: unit, property, schema, simulator and CLI tests, and the
# integration tests against real Apache Kafka brokers that this script fetches (Maven
# Central), starts on 127.0.0.1 and always stops again, also on failure:
#   - the test broker (PLAINTEXT) on KAFKA_TEST_PORT, for most integration tests;
#   - a secured broker for tests/kafka_security.rs: PLAINTEXT on KAFKA_SASL_TEST_PORT (admin,
#     readiness) plus a SASL_SSL listener (TLS + SCRAM-SHA-512) two ports up, with a CA,
#     certificate and SCRAM user generated for this run by scripts/kafka/sasl-ssl.sh.
# Both are started before either is waited for. The script also fetches the Apache Avro Java
# library and the Kafka Java client (Maven Central) for the Java interoperability tests
# (tests/java_interop.rs), and builds the benchmark suite's Kafka Streams application
# (scripts/java/streams-peer.sh) for tests/streams_peer.rs; both fail without them. Then,
# with those brokers stopped again, the fault matrix in its ci profile (scripts/chaos.sh,
# docs/reliability.md): a three-broker cluster of its own on CHAOS_TEST_PORT_BASE..+19,
# connector instances killed, partitioned and rebalanced while they work, every output
# compared with the engine. A red run prints its seed and the command that reproduces it.
#
# Usage: scripts/test.sh [extra cargo test args]   (e.g. --test kafka_security: that target only)
# Env:   KAFKA_TEST_PORT (default 19092): the port of the test broker (+1: its controller).
#        KAFKA_SASL_TEST_PORT (default 19492): PLAINTEXT port of the secured broker
#        (+1: its controller, +2: its SASL_SSL listener).
#        CHAOS_TEST_PORT_BASE (default 19350): the fault matrix's ports (20 from there).
#        CHAOS_ARGS: extra arguments of scripts/chaos.sh (e.g. "--seed 42").
#        CHAOS=0 skips the fault matrix; CHAOS=1 runs it even when arguments select targets.
# Exports to the tests: KAFKA_BOOTSTRAP; KAFKA_CLUSTER_TEST_PORT_BASE; KAFKA_SASL_BOOTSTRAP, KAFKA_SASL_CA,
#        KAFKA_SASL_USER, KAFKA_SASL_PASSWORD, KAFKA_SASL_PLAINTEXT_BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

export KAFKA_PORT="${KAFKA_TEST_PORT:-19092}"
export KAFKA_CONTROLLER_PORT="$((KAFKA_PORT + 1))"
export KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-.cache/kafka-data/test-$KAFKA_PORT}"

SASL_PORT_BASE="${KAFKA_SASL_TEST_PORT:-19492}"
SASL_DATA_DIR=".cache/kafka-data/test-sasl-$SASL_PORT_BASE"
SASL_TLS_DIR=".cache/kafka-data/test-sasl-$SASL_PORT_BASE-tls"
# Runs a scripts/kafka command against the secured broker.
sasl_broker() {
  KAFKA_PORT="$SASL_PORT_BASE" KAFKA_CONTROLLER_PORT="$((SASL_PORT_BASE + 1))" \
    KAFKA_SASL_PORT="$((SASL_PORT_BASE + 2))" KAFKA_DATA_DIR="$SASL_DATA_DIR" "$@"
}

# Waits for every pid given; fails if any of them failed.
wait_all() {
  local pid rc=0
  for pid in "$@"; do wait "$pid" || rc=$?; done
  return "$rc"
}
cleanup() {
  local main secured
  scripts/kafka/stop.sh --clean >/dev/null 2>&1 & main=$!
  sasl_broker scripts/kafka/stop.sh --clean >/dev/null 2>&1 & secured=$!
  wait_all "$main" "$secured" || true
  rm -rf "$SASL_TLS_DIR"
}
trap cleanup EXIT
cleanup
scripts/kafka/fetch.sh
scripts/java/fetch.sh >/dev/null
# The Kafka Streams application of the benchmark suite (tests/streams_peer.rs).
scripts/java/streams-peer.sh >/dev/null

# Fresh CA, certificate and SCRAM password for every run; the SCRAM user is created when
# the (fresh) storage is formatted.
sasl_broker scripts/kafka/sasl-ssl.sh "$SASL_TLS_DIR"
# shellcheck source=/dev/null
source "$SASL_TLS_DIR/sasl.env"

# Both brokers start (format + launch) and come up side by side.
scripts/kafka/start.sh & main=$!
sasl_broker env KAFKA_EXTRA_CONFIG="$SASL_TLS_DIR/server-extra.properties" \
  KAFKA_FORMAT_EXTRA_ARGS="$KAFKA_SASL_FORMAT_ARGS" scripts/kafka/start.sh & secured=$!
wait_all "$main" "$secured"
scripts/kafka/wait-ready.sh & main=$!
sasl_broker scripts/kafka/wait-ready.sh & secured=$!
wait_all "$main" "$secured"

export KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
# tests/kafka_cluster_restart.rs starts (and stops) a three-node cluster of its own on the
# fault matrix's ports, which are free until the matrix runs after the tests.
export KAFKA_CLUSTER_TEST_PORT_BASE="${CHAOS_TEST_PORT_BASE:-19350}"
export KAFKA_SASL_PLAINTEXT_BOOTSTRAP="127.0.0.1:$SASL_PORT_BASE"
export KAFKA_SASL_BOOTSTRAP KAFKA_SASL_CA KAFKA_SASL_USER KAFKA_SASL_PASSWORD
unset KAFKA_SASL_FORMAT_ARGS
# Unit, integration and doc tests (benchmarks are built by clippy and run by hand); the
# arguments may select targets (`scripts/test.sh --test kafka_security`).
cargo test --locked "$@"

# The fault matrix, on the dev-profile binaries `cargo test` just built. Skipped when the
# arguments select test targets (unless CHAOS=1), or with CHAOS=0.
if [[ "${CHAOS:-}" == 1 || ( $# -eq 0 && "${CHAOS:-}" != 0 ) ]]; then
  cleanup
  # shellcheck disable=SC2086  # CHAOS_ARGS is a list of arguments
  CHAOS_PORT_BASE="${CHAOS_TEST_PORT_BASE:-19350}" scripts/chaos.sh --profile ci --debug ${CHAOS_ARGS:-}
fi
