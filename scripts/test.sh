#!/usr/bin/env bash
# Sets up if needed, builds, and runs every test (fast and slow tiers).
#   scripts/test.sh            # everything, as CI runs it
#   scripts/test.sh -L fast    # extra arguments go to ctest
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root/build"
ctest --output-on-failure -j "$(nproc)" --timeout 900 "$@"
