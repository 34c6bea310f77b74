#!/usr/bin/env bash
# The stress run of the reliability issue: every fuzz target (test/fuzz/run.ts) for a number
# of cases or seconds each, then SIGKILL/restart cycles of every primitive.
#   npm run test:stress                     1,000,000 cases per fuzz target, 100 restart cycles
#   npm run test:stress -- --seconds 60     60 s per fuzz target instead
#   npm run test:stress -- --target control-codec --cases 200000
# npm test runs the bounded versions (test/unit/fuzz.test.ts, test/process/fuzz-segments.test.ts,
# 10 restart cycles). Exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then set -- --cases 1000000; fi
node dist/test/fuzz/run.js "$@"
SHMBUS_RESTART_CYCLES="${SHMBUS_RESTART_CYCLES:-100}" node --test dist/test/process/restart-cycles.test.js
