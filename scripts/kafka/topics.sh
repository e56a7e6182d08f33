#!/usr/bin/env bash
# Usage: scripts/kafka/topics.sh [--tool NAME|--class MAIN_CLASS] [tool args...]
#
# Runs one of Kafka's own CLI tools from the jars fetched by fetch.sh, against the local
# broker: `--bootstrap-server 127.0.0.1:$KAFKA_PORT` is added unless you pass one.
# Default tool is `topics` (org.apache.kafka.tools.TopicCommand). Examples:
#   scripts/kafka/topics.sh --list
#   scripts/kafka/topics.sh --create --topic t1 --partitions 3
#   scripts/kafka/topics.sh --describe --topic t1
#   echo hello | scripts/kafka/topics.sh --tool producer --topic t1
#   scripts/kafka/topics.sh --tool consumer --topic t1 --from-beginning --max-messages 1
#   scripts/kafka/topics.sh --tool groups --list
#   scripts/kafka/topics.sh --tool transactions list
# Tools (Kafka 4.1 class names):
#   topics        org.apache.kafka.tools.TopicCommand
#   producer      org.apache.kafka.tools.ConsoleProducer
#   consumer      org.apache.kafka.tools.consumer.ConsoleConsumer
#   groups        org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
#   configs       kafka.admin.ConfigCommand
#   transactions  org.apache.kafka.tools.TransactionsCommand
#   offsets       org.apache.kafka.tools.GetOffsetShell
#   records       org.apache.kafka.tools.DeleteRecordsCommand
#   features      org.apache.kafka.tools.FeatureCommand
#   metadata-quorum org.apache.kafka.tools.MetadataQuorumCommand
#   storage       kafka.tools.StorageTool        (no --bootstrap-server added)
# --class runs any other main class on the same classpath (bootstrap flag still added
# unless --bootstrap-server/--bootstrap-controller/--broker-list is given).
#
# Env:
#   KAFKA_PORT            broker client port (default 9092)
#   KAFKA_TOOLS_JVM_OPTS  JVM options for the tool (default "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1")
set -euo pipefail
# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

tool="topics"
cls=""
case "${1:-}" in
  --tool)  [[ $# -ge 2 ]] || kafka_die "--tool needs a name"; tool="$2"; shift 2 ;;
  --class) [[ $# -ge 2 ]] || kafka_die "--class needs a main class"; cls="$2"; tool=""; shift 2 ;;
esac

add_bootstrap=true
if [[ -n "$tool" ]]; then
  case "$tool" in
    topics)          cls=org.apache.kafka.tools.TopicCommand ;;
    producer)        cls=org.apache.kafka.tools.ConsoleProducer ;;
    consumer)        cls=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    groups)          cls=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    configs)         cls=kafka.admin.ConfigCommand ;;
    transactions)    cls=org.apache.kafka.tools.TransactionsCommand ;;
    offsets)         cls=org.apache.kafka.tools.GetOffsetShell ;;
    records)         cls=org.apache.kafka.tools.DeleteRecordsCommand ;;
    features)        cls=org.apache.kafka.tools.FeatureCommand ;;
    metadata-quorum) cls=org.apache.kafka.tools.MetadataQuorumCommand ;;
    storage)         cls=kafka.tools.StorageTool; add_bootstrap=false ;;
    *) kafka_die "unknown --tool '$tool' (see the usage comment at the top of $0)" ;;
  esac
fi

for a in "$@"; do
  case "$a" in --bootstrap-server|--bootstrap-server=*|--bootstrap-controller|--bootstrap-controller=*|--broker-list|--broker-list=*) add_bootstrap=false ;; esac
done

kafka_tool_cmd "$cls"
if $add_bootstrap; then
  exec "${KAFKA_CMD[@]}" --bootstrap-server "$KAFKA_BOOTSTRAP" "$@"
else
  exec "${KAFKA_CMD[@]}" "$@"
fi
