# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared helpers for the local Kafka scripts in scripts/kafka/.
# Sourced (not executed) by fetch.sh, start.sh, wait-ready.sh, stop.sh, topics.sh.
#
# Environment (all optional):
#   KAFKA_VERSION          pinned broker version (default below; change only deliberately)
#   KAFKA_CACHE_DIR        jar cache dir            (default <repo>/.cache/kafka/<version>/libs)
#   KAFKA_PORT             client (PLAINTEXT) port  (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port    (default 9093)
#   KAFKA_DATA_DIR         data/log dir of a broker (default <repo>/.cache/kafka-data/<port>)

KAFKA_SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$KAFKA_SCRIPT_DIR/../.." && pwd)"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
KAFKA_SCALA_VERSION="2.13"
KAFKA_CACHE_DIR="${KAFKA_CACHE_DIR:-$REPO_ROOT/.cache/kafka/$KAFKA_VERSION/libs}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$REPO_ROOT/.cache/kafka-data/$KAFKA_PORT}"

KAFKA_MARKER="$KAFKA_CACHE_DIR/.complete"
KAFKA_PID_FILE="$KAFKA_DATA_DIR/kafka.pid"
KAFKA_LOG_FILE="$KAFKA_DATA_DIR/kafka.log"
KAFKA_SERVER_PROPS="$KAFKA_DATA_DIR/server.properties"
KAFKA_LOG4J_CONF="$KAFKA_DATA_DIR/log4j2.properties"
KAFKA_LOG_DIRS="$KAFKA_DATA_DIR/kraft-logs"
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

kafka_log() { echo "[kafka] $*" >&2; }
kafka_die() { echo "[kafka] ERROR: $*" >&2; exit 1; }

kafka_require_java() {
  command -v java >/dev/null 2>&1 || kafka_die "java not found on PATH (Java 17+ required)"
}

# Classpath of all fetched jars; dies with a hint if fetch.sh has not run.
kafka_classpath() {
  [[ -f "$KAFKA_MARKER" ]] || kafka_die "Kafka $KAFKA_VERSION jars not found in $KAFKA_CACHE_DIR; run scripts/kafka/fetch.sh"
  local cp="" jar
  for jar in "$KAFKA_CACHE_DIR"/*.jar; do cp="${cp:+$cp:}$jar"; done
  printf '%s' "$cp"
}

# Client-side log4j2 config for CLI tools: warnings only, to stderr.
kafka_tools_log4j() {
  local f="$KAFKA_CACHE_DIR/tools-log4j2.properties"
  if [[ ! -f "$f" ]]; then
    cat >"$f" <<'EOF'
status = error
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = STDERR
EOF
  fi
  printf '%s' "$f"
}

# Sets the array KAFKA_CMD to the java command line running CLI main class $1
# from the fetched jars (append the tool's arguments yourself).
kafka_tool_cmd() {
  kafka_require_java
  local cp log4j
  cp="$(kafka_classpath)"
  log4j="$(kafka_tools_log4j)"
  # shellcheck disable=SC2206
  KAFKA_CMD=(java ${KAFKA_TOOLS_JVM_OPTS:--Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1}
             -Djava.awt.headless=true -Dlog4j2.configurationFile="$log4j"
             -cp "$cp" "$1")
}

# Run a Kafka CLI main class from the fetched jars (in the foreground).
kafka_run_class() {
  local cls="$1"; shift
  kafka_tool_cmd "$cls"
  "${KAFKA_CMD[@]}" "$@"
}

# Prints the pid of this port's broker if it is running (pid file + live kafka.Kafka process).
kafka_running_pid() {
  [[ -f "$KAFKA_PID_FILE" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$KAFKA_PID_FILE")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: the process must be our broker.
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kafka.Kafka" || return 1
  fi
  printf '%s' "$pid"
}

# True if something accepts TCP connections on 127.0.0.1:$1.
kafka_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
