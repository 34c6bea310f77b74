#!/usr/bin/env bash
# The native addon under AddressSanitizer + UndefinedBehaviorSanitizer: builds it with
# -fsanitize=address,undefined into build-sanitize/ (a copy of binding.gyp and native/, so the
# normal build/ is untouched; the directory is git-ignored and rebuilt from scratch each run),
# then runs the unit and process suites with SHMBUS_ADDON pointing the loader at it and the
# sanitizer runtimes preloaded (node itself is not instrumented).
#   npm run test:sanitize [-- test files]   (default: every unit and process test)
# Fails (non-zero) when a test fails, when a sanitizer reported anything in any process (the
# test process or a child: every report is written to build-sanitize/reports/ and printed at
# the end, so one in a child whose death a test tolerates still fails the run), or when the
# run left anything in /dev/shm. build-sanitize/ stays for re-running a test by hand with the
# same environment; it is git-ignored and outside what biome and npm pack look at.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/build-sanitize"
rm -rf "$out"
mkdir -p "$out/reports"
cp binding.gyp "$out/"
cp -r native "$out/"
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
# npm's own node-gyp (npm run sets npm_config_node_gyp; else find it next to npm).
gyp="${npm_config_node_gyp:-$(dirname "$(realpath "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js}"
# The headers of the running node (its install prefix), as npm install found them, offline.
nodedir="${npm_config_nodedir:-$(node -p "require('path').resolve(process.execPath, '../..')")}"
(cd "$out" && CFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined" node "$gyp" rebuild --nodedir="$nodedir" >/dev/null)

# /dev/shm entries that exist now (another user of the machine may have some).
shm_entries() { find /dev/shm -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort; }
# Top-level /dev/shm entries a live process maps, holds open or has a socket bound in (those
# belong to something still running on this machine, not to this run).
shm_in_use() {
  {
    cat /proc/[0-9]*/maps 2>/dev/null | awk '{ print $6 }'
    find /proc/[0-9]*/fd -type l -printf '%l\n' 2>/dev/null
    awk 'NR > 1 { print $8 }' /proc/net/unix 2>/dev/null
  } | sed -n 's|^/dev/shm/\([^/ ]*\).*|\1|p' | sort -u
}
shm_before=$(shm_entries)

gcc -shared -fPIC -O1 -o "$out/report-path.so" scripts/sanitizer-report-path.c -ldl
preload="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so):$out/report-path.so"
export SHMBUS_ADDON="$out/build/Release/shmbus.node"
export LD_PRELOAD="$preload"
# Leak checking would report V8's own allocations at exit; addon leaks are covered by the
# addon tests' fd and mapping counts. Every report goes to reports/asan.<pid> or
# reports/ubsan.<pid> (report-path.so: GCC's UBSan ignores log_path next to ASan).
# malloc_context_size=5: ASan records a stack on every malloc and free, node's included;
# 5 frames (default 30) still reach the addon function and its caller, and the run is ~10%
# faster (child processes start ~25% faster).
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:malloc_context_size=5:log_path=$out/reports/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export SHMBUS_UBSAN_LOG_PATH="$out/reports/ubsan"
# Child processes start in 1-3 s under ASan on a loaded 2-core machine (0.3 s without): tests
# scale the intervals they rely on by this (test/helpers/slow.ts).
export SHMBUS_TEST_SLOW="${SHMBUS_TEST_SLOW:-3}"
node -e "const b = require(process.env.SHMBUS_ADDON); if (typeof b.noop !== 'function') process.exit(1);"
if [ "$#" -eq 0 ]; then set -- dist/test/unit/ dist/test/process/; fi
status=0
node --test --test-concurrency=1 "$@" || status=$?
unset LD_PRELOAD

reports=$(find "$out/reports" -type f | sort)
if [ -n "$reports" ]; then
  echo "sanitizer reports ($(echo "$reports" | wc -l)):" >&2
  while IFS= read -r f; do
    echo "--- $f" >&2
    cat "$f" >&2
  done <<<"$reports"
  status=1
else
  echo "# sanitizer reports: 0 (ASan + UBSan, every process of the run)"
fi

left=$(comm -13 <(echo "$shm_before") <(shm_entries) | comm -23 - <(shm_in_use))
if [ -n "$left" ]; then
  echo "left in /dev/shm by this run:" >&2
  while IFS= read -r f; do ls -ld "/dev/shm/$f" >&2; done <<<"$left"
  status=1
else
  echo "# /dev/shm: nothing left by this run"
fi
exit "$status"
