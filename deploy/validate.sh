#!/usr/bin/env bash
# Offline validation of deploy/: the Helm chart, the Grafana dashboard and the alert rules.
#
#   deploy/validate.sh
#
# Needs Go (1.26 or newer) and the Go module proxy, nothing else: helm and kubeconform are
# built with `go install` at pinned versions into .cache/tools/ (git-ignored) on the first
# run and reused after that (first run with empty Go caches ~7.5 min on 2 cores, ~130 MB of
# module downloads, mostly helm; fresh clone with warm Go caches ~20 s; later runs ~2 s). Kubernetes and CRD JSON schemas are vendored in deploy/schemas/
# (deploy/tools/gen-schemas.sh regenerates them); no schema is downloaded.
#
# Checks, in order (any failure exits non-zero):
#   1. helm lint --strict, with the default values and with ci/all-features-values.yaml;
#   2. helm template with both, and kubeconform -strict on every rendered object against
#      the vendored schemas (StatefulSet, Service, ConfigMap, Secret, ServiceAccount,
#      PodDisruptionBudget; KEDA ScaledObject; PrometheusRule and ServiceMonitor);
#   3. deploycheck on both renders: the chart's contract with the connector (instance id
#      from the pod name, args, probes, connector.yaml keys, admin token, autoscaling bounds,
#      selectors), the alert expressions (PromQL parser; metrics of deploy/metrics-contract.txt);
#   4. the dashboard: JSON, every panel has targets, every expression parses as PromQL and
#      uses contract metrics, every contract metric has a panel; the chart's copy is identical;
#   5. negative checks: values the chart must refuse, and manifests the schemas must reject
#      (deploy/tools/testdata/invalid/), so that neither check passes vacuously.
#
# Environment: DEPLOY_TOOLS_DIR (default .cache/tools) holds the built tools.
set -euo pipefail

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
K8S_VERSION=1.35.4 # the version deploy/schemas/kubernetes was generated for

cd "$(dirname "$0")/.."
root=$PWD
deploy=$root/deploy
chart=$deploy/helm/campaign-connector
tools=${DEPLOY_TOOLS_DIR:-$root/.cache/tools}
bin=$tools/bin
out=$root/.cache/deploy-validate
mkdir -p "$bin" "$out"
# Keep helm's own state out of $HOME.
export HELM_CACHE_HOME=$tools/helm/cache HELM_CONFIG_HOME=$tools/helm/config HELM_DATA_HOME=$tools/helm/data

start=$(date +%s)
step() { printf '\n== %s\n' "$*"; }
die() { echo "FAIL: $*" >&2; exit 1; }

# ---- tools ------------------------------------------------------------------------------
step "tools (into ${tools#"$root"/})"
command -v go >/dev/null || die "go is not installed"
go version

# go_install NAME MODULE/PKG VERSION LDFLAGS: builds once into $bin/NAME-VERSION.
go_install() {
  local name=$1 pkg=$2 version=$3 ldflags=$4 target=$bin/$1-$3
  if [ ! -x "$target" ]; then
    echo "building $name $version with go install (first run only)"
    local tmp t0=$SECONDS
    tmp=$(mktemp -d)
    if ! GOBIN=$tmp GOFLAGS=-buildvcs=false GOWORK=off go install -trimpath -ldflags "$ldflags" "$pkg@$version" \
      >"$tools/build-$name.log" 2>&1; then
      tail -30 "$tools/build-$name.log" >&2
      die "go install $pkg@$version (log: $tools/build-$name.log)"
    fi
    mv "$tmp/$name" "$target"
    rm -rf "$tmp"
    echo "  built in $((SECONDS - t0))s"
  fi
  ln -sf "$name-$version" "$bin/$name"
}
go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
  "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
go_install kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" \
  "-s -w -X main.version=$KUBECONFORM_VERSION"

# deploycheck (deploy/tools): rebuilt when its sources change.
src_hash=$(cd "$deploy/tools" && cat go.mod go.sum deploycheck/*.go | sha256sum | cut -c1-16)
deploycheck=$bin/deploycheck-$src_hash
if [ ! -x "$deploycheck" ]; then
  echo "building deploycheck ($src_hash)"
  t0=$SECONDS
  rm -f "$bin"/deploycheck-*
  if ! (cd "$deploy/tools" && GOFLAGS=-buildvcs=false GOWORK=off go build -trimpath -ldflags "-s -w" -o "$deploycheck" ./deploycheck) \
    >"$tools/build-deploycheck.log" 2>&1; then
    tail -30 "$tools/build-deploycheck.log" >&2
    die "building deploycheck (log: $tools/build-deploycheck.log)"
  fi
  echo "  built in $((SECONDS - t0))s"
fi
helm=$bin/helm
kubeconform=$bin/kubeconform
echo "helm $("$helm" version --template '{{ .Version }}'), kubeconform $("$kubeconform" -v), deploycheck $src_hash"

# ---- 1. lint ----------------------------------------------------------------------------
step "helm lint"
variants=(default all-features)
values_args() { # variant -> helm arguments
  case $1 in
    default) ;;
    all-features) echo "-f $chart/ci/all-features-values.yaml" ;;
  esac
}
for v in "${variants[@]}"; do
  # shellcheck disable=SC2046
  "$helm" lint --strict --kube-version "$K8S_VERSION" --namespace connectors "$chart" $(values_args "$v") \
    | sed "s/^/[$v] /" || die "helm lint ($v)"
done

# ---- 2. render and kubeconform ------------------------------------------------------------
step "helm template + kubeconform -strict (Kubernetes $K8S_VERSION schemas and CRD schemas from deploy/schemas)"
kc() {
  "$kubeconform" -strict -kubernetes-version "$K8S_VERSION" \
    -schema-location "$deploy/schemas/kubernetes/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    -schema-location "$deploy/schemas/crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
    "$@"
}
for v in "${variants[@]}"; do
  # shellcheck disable=SC2046
  "$helm" template cc "$chart" --namespace connectors --kube-version "$K8S_VERSION" $(values_args "$v") \
    >"$out/$v.yaml" || die "helm template ($v)"
  echo "[$v] rendered $(grep -c '^kind:' "$out/$v.yaml") objects into ${out#"$root"/}/$v.yaml"
  kc -summary -verbose "$out/$v.yaml" | sed -e "s|$out/||" -e "s/^/[$v] /" || die "kubeconform ($v)"
done

# ---- 3. contract checks on the renders ----------------------------------------------------
step "deploycheck manifests (chart contract, alert PromQL)"
"$deploycheck" manifests -contract "$deploy/metrics-contract.txt" -dashboard "$deploy/grafana/campaign-connector.json" \
  -expect default "$out/default.yaml" || die "deploycheck (default)"
"$deploycheck" manifests -contract "$deploy/metrics-contract.txt" -dashboard "$deploy/grafana/campaign-connector.json" \
  -expect all "$out/all-features.yaml" || die "deploycheck (all-features)"

# ---- 4. dashboard ---------------------------------------------------------------------------
step "Grafana dashboard"
"$deploycheck" dashboard -contract "$deploy/metrics-contract.txt" "$deploy/grafana/campaign-connector.json" \
  || die "dashboard"
cmp -s "$deploy/grafana/campaign-connector.json" "$chart/dashboards/campaign-connector.json" \
  || die "the chart's dashboards/campaign-connector.json differs from deploy/grafana/campaign-connector.json; copy it: cp deploy/grafana/campaign-connector.json $chart/dashboards/"
echo "  - chart copy dashboards/campaign-connector.json is identical"

# ---- 5. negative checks -----------------------------------------------------------------------
step "negative checks: values the chart refuses"
refuse() { # reason, then helm --set arguments; the render must fail
  local reason=$1
  shift
  if "$helm" template cc "$chart" --kube-version "$K8S_VERSION" "$@" >/dev/null 2>"$out/refuse.err"; then
    die "helm template accepted $* ($reason)"
  fi
  echo "  - refused: $* ($reason)"
}
refuse "scale to zero stops wall-clock timers" --set autoscaling.enabled=true,autoscaling.minReplicaCount=0
refuse "more instances than partitions" --set autoscaling.enabled=true,autoscaling.maxReplicaCount=7
refuse "shutdown needs time to commit" --set terminationGracePeriodSeconds=30
refuse "unknown connector key" --set config.comit_interval=1s
refuse "instance id is per pod" --set config.instance_id=x
refuse "instance id is per pod" --set configEnv.INSTANCE_ID=x
refuse "unknown value" --set autoscalng.enabled=true

step "negative checks: manifests the schemas reject (deploy/tools/testdata/invalid)"
for f in "$deploy"/tools/testdata/invalid/*.yaml; do
  name=$(basename "$f")
  if result=$(kc "$f" 2>&1); then
    die "kubeconform accepted $name"
  fi
  case $name in
    unknown-kind*) want="could not find schema" ;;
    *) want=" is invalid: " ;;
  esac
  [[ $result == *"$want"* ]] || die "$name: expected '$want', got: $result"
  echo "  - rejected $name: ${result##*failed with \'*\' - }"
done

step "all deploy checks passed in $(($(date +%s) - start))s"
