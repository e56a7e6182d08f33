#!/usr/bin/env bash
# Usage: scripts/chaos-mutant.sh MUTANT [scripts/chaos.sh arguments...]
#        scripts/chaos-mutant.sh --list
#
# Does the fault matrix catch bugs? Builds the connector with a deliberate defect and runs
# the matrix on that build: it must go red, with the checks that name the defect. The
# defects are patches in tools/chaos/mutants/ (MUTANT is a file name without `.patch`):
#
#   rewind-without-seek    after an aborted transaction the tasks are restored from the
#                          changelog but the inputs are not sought back to the committed
#                          offsets (neither by the rewind nor when the tasks become
#                          active): the records of the aborted transaction are skipped
#                          (missing commands). Try: --faults stall,commit-stall
#   offsets-skipped        the input offsets never join the transaction (nothing commits
#                          them): after any restart or rebalance the inputs are read again
#                          from older offsets and sent again (duplicated commands).
#                          Try: --faults kill,kill-rebalance
#   offsets-after-commit   the input offsets are committed through the consumer, after
#                          the transaction, when the next commit lands, instead of inside
#                          it: after a crash the inputs since the last committed offsets
#                          are read again. Try: --faults kill-commit (caught 2026-12-03:
#                          unexpected send-commands, decision log unequal). Random kills
#                          (--faults kill,kill-rebalance; --faults kill) stayed green: the
#                          re-read inputs land on state restored from the changelog.
#
# The patch is applied to a copy of the checked-out tree (the files git knows, as they are
# now) in .cache/mutants/MUTANT/tree, never to the tree itself; the copy is built with the
# same target directory (only the connector package compiles again), its binary is kept as
# .cache/mutants/MUTANT/campaign-connector, and scripts/chaos.sh runs it with --bin. The
# chaos program itself is the unpatched one. Exits with the matrix's status: non-zero is
# the expected outcome here.
#
# Env: as scripts/chaos.sh (CHAOS_PORT_BASE, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

mutants=tools/chaos/mutants
if [[ "${1:-}" == --list ]]; then
  ls "$mutants" | sed 's/\.patch$//'
  exit 0
fi
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi
name="$1"
shift
patch="$mutants/$name.patch"
[[ -f "$patch" ]] || { echo "no mutant $name (see --list)" >&2; exit 2; }

dir=".cache/mutants/$name"
tree="$dir/tree"
rm -rf "$tree"
mkdir -p "$tree"
git ls-files -z | xargs -0 cp --parents -t "$tree"
patch_abs="$PWD/$patch"
if ! (cd "$tree" && patch -p1 --dry-run -s <"$patch_abs" >/dev/null); then
  echo "[mutant] $patch no longer applies to this tree: update it" >&2
  exit 2
fi
(cd "$tree" && patch -p1 -s <"$patch_abs")
echo "[mutant] $name applied to $tree:"
diff -ru src "$tree/src" | sed 's/^/[mutant]   /' | head -40 || true

echo "[mutant] building the mutant connector (release)"
CARGO_TARGET_DIR="$PWD/target" cargo build --release --locked --quiet \
  --manifest-path "$tree/Cargo.toml" --bin campaign-connector
cp target/release/campaign-connector "$dir/campaign-connector"
# Put this tree's own build back where scripts/chaos.sh and everything else expects it.
cargo build --release --locked --quiet --bin campaign-connector

echo "[mutant] running the matrix on $dir/campaign-connector"
exec scripts/chaos.sh --bin "$dir/campaign-connector" "$@"
