#!/usr/bin/env bash
# A preview of a large backlog, measured: builds in release mode, starts a local broker
# (port KAFKA_CHECK_PORT, default 19392), creates the topics (PREVIEW_PARTITIONS, default
# 6), publishes the trigger campaigns of examples/generated/campaigns.yaml, produces
# PREVIEW_EVENTS generated events (default 10,000,000) spread over the last 7 days, then
# runs `preview` of the file's follow-ons over them and `simulate` on the same events, each
# under /usr/bin/time (elapsed time, peak RSS), and checks that their counts by follow-on,
# outcome and reason are equal and that the topics' end offsets and the broker's consumer
# groups are what they were before the preview. Everything it writes is under
# .cache/preview-check (removed at the end unless PREVIEW_KEEP=1).
# Usage: scripts/preview-check.sh   (PREVIEW_EVENTS=… PREVIEW_USERS=… to change the size)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export KAFKA_PORT="${KAFKA_CHECK_PORT:-19392}"
export KAFKA_CONTROLLER_PORT="$((KAFKA_PORT + 1))"
export KAFKA_DATA_DIR=".cache/kafka-data/preview-check-$KAFKA_PORT"
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}"
work=".cache/preview-check"
cleanup() {
  scripts/kafka/stop.sh --clean >/dev/null 2>&1 || true
  [ "${PREVIEW_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
cleanup
mkdir -p "$work"
events="${PREVIEW_EVENTS:-10000000}"
users="${PREVIEW_USERS:-$((events / 10))}"
partitions="${PREVIEW_PARTITIONS:-6}"
cargo build --release --locked --bin campaign-connector --example generate_events
bin=target/release/campaign-connector
scripts/kafka/start.sh
scripts/kafka/wait-ready.sh
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $events events of $users users, $partitions partitions"

id="check-$(date +%s)"
export CONNECTOR_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
export CONNECTOR_APPLICATION_ID="cc-$id"
export CONNECTOR_PARTITIONS="$partitions"
for role in INTERACTIONS USER_EVENTS CAMPAIGNS SEND_COMMANDS CHANGELOG DECISIONS DLQ; do
  lower="$(echo "$role" | tr 'A-Z_' 'a-z-')"
  export "CONNECTOR_TOPICS__$role=$lower-$id"
done
"$bin" topics create >/dev/null

# The live catalog: the trigger campaigns. The file previewed: the follow-ons.
python3 - "$work" <<'EOF'
import sys, re
text = open("examples/generated/campaigns.yaml").read()
body = text[text.index("campaigns:"):].split("\n  - ")
head, items = body[0], body[1:]
triggers = [i for i in items if "follow_on:" not in i]
follow_ons = [i for i in items if "follow_on:" in i]
for name, part in (("live", triggers), ("follow-ons", follow_ons)):
    with open(f"{sys.argv[1]}/{name}.yaml", "w") as f:
        f.write("campaigns:\n" + "".join("  - " + i.rstrip() + "\n\n" for i in part))
EOF
"$bin" campaigns publish "$work/live.yaml" >/dev/null

start="$(date -u -d '7 days ago' +%Y-%m-%dT%H:%M:%SZ)"
target/release/examples/generate_events --events "$events" --users "$users" \
  --start "$start" --span 7d > "$work/events.jsonl"
echo "generated $(wc -l < "$work/events.jsonl") events ($(du -h "$work/events.jsonl" | cut -f1))"
sent_at=$(date +%s)
"$bin" send "$work/events.jsonl"
echo "produced in $(( $(date +%s) - sent_at )) s"

# Kafka's own tools, not the connector, to see that the preview changed nothing.
groups() { scripts/kafka/topics.sh --tool groups --list 2>/dev/null | sort; }
offsets() { scripts/kafka/topics.sh --tool offsets 2>/dev/null | grep -- "-$id:" | sort; }
before_offsets="$(offsets)"
before_groups="$(groups)"
[ -n "$before_offsets" ] || { echo "no end offsets read for the topics of $id"; exit 1; }

/usr/bin/time -v "$bin" preview --campaigns "$work/follow-ons.yaml" --since 8d --users 3 \
  --format jsonl > "$work/preview.jsonl" 2> "$work/preview.err" || { cat "$work/preview.err"; exit 1; }
grep -E "^read |Elapsed|Maximum resident" "$work/preview.err" | tail -3
until="$(head -1 "$work/preview.jsonl" | jq -r .preview.timers_advanced_to)"

/usr/bin/time -v "$bin" simulate --campaigns examples/generated/campaigns.yaml \
  --events "$work/events.jsonl" --until "$until" --format jsonl \
  2> "$work/simulate.err" | jq -c 'select(.decision) | .decision | [.follow_on_id, .outcome, .reason]' \
  | sort | uniq -c | awk '{print $2, $1}' > "$work/simulate.counts"
grep -E "events,|Elapsed|Maximum resident" "$work/simulate.err"
jq -c 'select(.count) | .count | [[.follow_on_id, .outcome, .reason], .count] | "\(.[0] | tojson) \(.[1])"' -r \
  "$work/preview.jsonl" | sort > "$work/preview.counts"
sort -o "$work/simulate.counts" "$work/simulate.counts"
if diff "$work/preview.counts" "$work/simulate.counts"; then
  echo "preview and simulate agree: $(wc -l < "$work/preview.counts") (follow-on, outcome, reason) counts"
else
  echo "preview and simulate differ (above)"; exit 1
fi
[ "$(offsets)" = "$before_offsets" ] && echo "end offsets unchanged" || { echo "end offsets changed"; exit 1; }
[ "$(groups)" = "$before_groups" ] && echo "consumer groups unchanged" || { echo "consumer groups changed"; exit 1; }
head -1 "$work/preview.jsonl" | jq -c .preview
