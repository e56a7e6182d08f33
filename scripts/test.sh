#!/usr/bin/env bash
# The whole test suite: unit, property, schema, CLI and simulator tests.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --all-targets "$@"
