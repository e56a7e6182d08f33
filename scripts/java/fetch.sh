#!/usr/bin/env bash
# Usage: scripts/java/fetch.sh
#
# Fetches the Java libraries of the Java interoperability tests (tests/java_interop.rs,
# tests/java/AvroInterop.java) from Maven Central via `mvn`, into a git-ignored cache:
#   - org.apache.avro:avro (the Apache Avro Java library), pinned below;
#   - org.apache.kafka:kafka-clients, the version of the test broker (scripts/kafka/lib.sh);
#   - org.slf4j:slf4j-simple, so that the Kafka client's warnings reach stderr.
# Confluent's serializers (io.confluent:kafka-avro-serializer) are not on Maven Central, so
# they are not fetched; see docs/encodings.md.
# Idempotent: returns at once when the cache is complete (marker file).
#
# Env:
#   AVRO_JAVA_VERSION   Avro Java library version (default below)
#   JAVA_INTEROP_CACHE  output dir for the jars (default .cache/java-interop/<versions>/libs)
#   KAFKA_MVN_ARGS      extra args for mvn (e.g. "-Dmaven.repo.local=/tmp/m2")
#
# Prints the cache dir on stdout.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../kafka/lib.sh
source "$SCRIPT_DIR/../kafka/lib.sh"

AVRO_JAVA_VERSION="${AVRO_JAVA_VERSION:-1.12.1}"
SLF4J_VERSION="2.0.17"              # the slf4j-api version avro 1.12.1 and kafka-clients 4.1 use
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
CACHE="${JAVA_INTEROP_CACHE:-$REPO_ROOT/.cache/java-interop/avro-$AVRO_JAVA_VERSION-kafka-clients-$KAFKA_VERSION/libs}"
MARKER="$CACHE/.complete"

die() { echo "[java-interop] ERROR: $*" >&2; exit 1; }

if [[ -f "$MARKER" ]]; then
  printf '%s\n' "$CACHE"
  exit 0
fi

command -v mvn >/dev/null 2>&1 || die "mvn (Apache Maven) not found on PATH; it fetches the Avro Java library from Maven Central (scripts/setup.sh installs it)"
command -v javac >/dev/null 2>&1 || die "javac (a JDK 17+) not found on PATH; the Java interoperability tests compile tests/java/AvroInterop.java with it (scripts/setup.sh installs openjdk-17-jdk-headless)"

echo "[java-interop] fetching avro $AVRO_JAVA_VERSION and kafka-clients $KAFKA_VERSION from Maven Central into $CACHE ..." >&2
parent="$(dirname "$CACHE")"
mkdir -p "$parent"
work="$(mktemp -d "$parent/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.java-interop-fetch</groupId>
  <artifactId>java-interop-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.avro</groupId>
      <artifactId>avro</artifactId>
      <version>$AVRO_JAVA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-clients</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF

# shellcheck disable=SC2086
if ! mvn -B -q ${KAFKA_MVN_ARGS:-} -f "$work/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1; then
  tail -n 40 "$work/mvn.log" >&2
  die "mvn failed to fetch avro $AVRO_JAVA_VERSION / kafka-clients $KAFKA_VERSION (see output above)"
fi
for jar in "avro-$AVRO_JAVA_VERSION.jar" "kafka-clients-$KAFKA_VERSION.jar"; do
  [[ -f "$work/libs/$jar" ]] || die "fetched jars do not contain $jar"
done

cp "$work/pom.xml" "$work/libs/fetch-pom.xml"
printf 'avro %s kafka-clients %s\n' "$AVRO_JAVA_VERSION" "$KAFKA_VERSION" >"$work/libs/.complete"
rm -rf "$CACHE"
mv "$work/libs" "$CACHE"
echo "[java-interop] done: $(find "$CACHE" -maxdepth 1 -name '*.jar' | wc -l) jars, $(du -sh "$CACHE" | cut -f1)" >&2
printf '%s\n' "$CACHE"
