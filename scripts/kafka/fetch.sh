#!/usr/bin/env bash
# Usage: scripts/kafka/fetch.sh
#
# Fetches the pinned Apache Kafka broker + CLI tool jars (org.apache.kafka:kafka_2.13 and
# org.apache.kafka:kafka-tools, plus their runtime dependencies and a log4j2 slf4j binding)
# from Maven Central via `mvn`, into a git-ignored cache directory.
# Idempotent: returns immediately when the cache is already complete (marker file).
#
# Env:
#   KAFKA_VERSION    Kafka version to fetch (default: pinned in lib.sh)
#   KAFKA_CACHE_DIR  output dir for the jars (default .cache/kafka/<version>/libs)
#   KAFKA_MVN_ARGS   extra args for mvn (e.g. "-Dmaven.repo.local=/tmp/m2")
#
# Prints the cache dir on stdout.
set -euo pipefail
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

LOG4J_VERSION="2.24.3"              # the log4j2 version kafka-server 4.1.x itself depends on
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

if [[ -f "$KAFKA_MARKER" ]]; then
  printf '%s\n' "$KAFKA_CACHE_DIR"
  exit 0
fi

command -v mvn >/dev/null 2>&1 || kafka_die "mvn (Apache Maven) not found on PATH; it is needed to fetch Kafka from Maven Central"
kafka_require_java

kafka_log "fetching Kafka $KAFKA_VERSION (Scala $KAFKA_SCALA_VERSION) jars from Maven Central into $KAFKA_CACHE_DIR ..."
parent="$(dirname "$KAFKA_CACHE_DIR")"
mkdir -p "$parent"
work="$(mktemp -d "$parent/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Connect runtime (Jetty, Jersey, ...) is a dependency of kafka-tools that only the Connect
# tools need; excluded to keep the download small.
cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kafka-fetch</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$KAFKA_SCALA_VERSION</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
      <exclusions>
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
        <exclusion><groupId>com.fasterxml.jackson.jakarta.rs</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF

# shellcheck disable=SC2086
if ! mvn -B -q ${KAFKA_MVN_ARGS:-} -f "$work/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1; then
  tail -n 40 "$work/mvn.log" >&2
  kafka_die "mvn failed to fetch Kafka $KAFKA_VERSION (see output above)"
fi

[[ -f "$work/libs/kafka_$KAFKA_SCALA_VERSION-$KAFKA_VERSION.jar" ]] \
  || kafka_die "fetched jars do not contain kafka_$KAFKA_SCALA_VERSION-$KAFKA_VERSION.jar"

cp "$work/pom.xml" "$work/libs/fetch-pom.xml"
printf 'kafka_%s %s\n' "$KAFKA_SCALA_VERSION" "$KAFKA_VERSION" >"$work/libs/.complete"
rm -rf "$KAFKA_CACHE_DIR"
mv "$work/libs" "$KAFKA_CACHE_DIR"
kafka_log "done: $(find "$KAFKA_CACHE_DIR" -maxdepth 1 -name '*.jar' | wc -l) jars, $(du -sh "$KAFKA_CACHE_DIR" | cut -f1)"
printf '%s\n' "$KAFKA_CACHE_DIR"
