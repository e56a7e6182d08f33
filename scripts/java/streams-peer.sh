#!/usr/bin/env bash
# Usage: scripts/java/streams-peer.sh
#
# Builds the Kafka Streams application of the benchmark suite (bench/streams-peer/): fetches
# its libraries from Maven Central via `mvn` into a git-ignored cache, compiles the sources
# with `javac` (no Gradle, no Maven build), and prints the class path to run it with:
#   java -cp "$(scripts/java/streams-peer.sh)" CampaignStreams --help
# Libraries: org.apache.kafka:kafka-streams (the version of the local broker,
# scripts/kafka/lib.sh; it brings kafka-clients and rocksdbjni), org.apache.avro:avro (the
# same version as the Java interoperability tests) and org.slf4j:slf4j-simple (so that
# warnings reach stderr).
# Idempotent: the libraries are fetched once (marker file); the sources are compiled again
# only when they change.
#
# Env:
#   AVRO_JAVA_VERSION   Avro Java library version (default below)
#   STREAMS_PEER_CACHE  cache dir (default .cache/streams-peer)
#   KAFKA_MVN_ARGS      extra args for mvn (e.g. "-Dmaven.repo.local=/tmp/m2")
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../kafka/lib.sh
source "$SCRIPT_DIR/../kafka/lib.sh"

AVRO_JAVA_VERSION="${AVRO_JAVA_VERSION:-1.12.1}"
SLF4J_VERSION="2.0.17"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
CACHE="${STREAMS_PEER_CACHE:-$REPO_ROOT/.cache/streams-peer}"
LIBS="$CACHE/kafka-streams-$KAFKA_VERSION-avro-$AVRO_JAVA_VERSION/libs"
SOURCES="$REPO_ROOT/bench/streams-peer/src"

die() { echo "[streams-peer] ERROR: $*" >&2; exit 1; }

command -v javac >/dev/null 2>&1 || die "javac (a JDK 17+) not found on PATH; the Kafka Streams application is compiled with it (scripts/setup.sh installs openjdk-17-jdk-headless)"

if [[ ! -f "$LIBS/.complete" ]]; then
  command -v mvn >/dev/null 2>&1 || die "mvn (Apache Maven) not found on PATH; it fetches kafka-streams from Maven Central (scripts/setup.sh installs it)"
  echo "[streams-peer] fetching kafka-streams $KAFKA_VERSION and avro $AVRO_JAVA_VERSION from Maven Central into $LIBS ..." >&2
  mkdir -p "$(dirname "$LIBS")"
  work="$(mktemp -d "$(dirname "$LIBS")/.fetch.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.streams-peer-fetch</groupId>
  <artifactId>streams-peer-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-streams</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.avro</groupId>
      <artifactId>avro</artifactId>
      <version>$AVRO_JAVA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
  # shellcheck disable=SC2086
  if ! mvn -B -q ${KAFKA_MVN_ARGS:-} -f "$work/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1; then
    tail -n 40 "$work/mvn.log" >&2
    die "mvn failed to fetch kafka-streams $KAFKA_VERSION / avro $AVRO_JAVA_VERSION (see output above)"
  fi
  for jar in "kafka-streams-$KAFKA_VERSION.jar" "avro-$AVRO_JAVA_VERSION.jar"; do
    [[ -f "$work/libs/$jar" ]] || die "fetched jars do not contain $jar"
  done
  cp "$work/pom.xml" "$work/libs/fetch-pom.xml"
  printf 'kafka-streams %s avro %s\n' "$KAFKA_VERSION" "$AVRO_JAVA_VERSION" >"$work/libs/.complete"
  rm -rf "$LIBS"
  mv "$work/libs" "$LIBS"
  echo "[streams-peer] fetched $(find "$LIBS" -maxdepth 1 -name '*.jar' | wc -l) jars, $(du -sh "$LIBS" | cut -f1)" >&2
fi

cp=""
for jar in "$LIBS"/*.jar; do cp="${cp:+$cp:}$jar"; done

# Compiled classes live in a directory named by a hash of the sources and the libraries,
# so a changed source is compiled again and a concurrent run never sees half a build.
hash="$( (cd "$SOURCES" && cat ./*.java; printf '%s' "$cp") | sha256sum | cut -c1-16)"
classes="$CACHE/classes-$hash"
if [[ ! -f "$classes/.complete" ]]; then
  tmp="$(mktemp -d "$CACHE/.classes.XXXXXX")"
  if ! javac -d "$tmp" -cp "$cp" -Xlint:all,-serial,-processing -Werror "$SOURCES"/*.java >&2; then
    rm -rf "$tmp"
    die "javac failed on $SOURCES"
  fi
  touch "$tmp/.complete"
  rm -rf "$classes"
  mv "$tmp" "$classes"
fi
printf '%s:%s\n' "$classes" "$cp"
