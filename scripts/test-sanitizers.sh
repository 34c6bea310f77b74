#!/usr/bin/env bash
# The native addon under AddressSanitizer + UndefinedBehaviorSanitizer: builds it with
# -fsanitize=address,undefined into build-sanitize/ (a copy of binding.gyp and native/, so the
# normal build/ is untouched), then runs the unit and process suites with SHMBUS_ADDON pointing
# the loader at it and the sanitizer runtimes preloaded (node itself is not instrumented).
# Any sanitizer report aborts the process that hit it, which fails its test.
#   npm run test:sanitize [-- test files]   (default: every unit and process test)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/build-sanitize"
rm -rf "$out"
mkdir -p "$out"
cp binding.gyp "$out/"
cp -r native "$out/"
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
# npm's own node-gyp (npm run sets npm_config_node_gyp; else find it next to npm).
gyp="${npm_config_node_gyp:-$(dirname "$(realpath "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js}"
# The headers of the running node (its install prefix), as npm install found them, offline.
nodedir="${npm_config_nodedir:-$(node -p "require('path').resolve(process.execPath, '../..')")}"
(cd "$out" && CFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined" node "$gyp" rebuild --nodedir="$nodedir" >/dev/null)
preload="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export SHMBUS_ADDON="$out/build/Release/shmbus.node"
export LD_PRELOAD="$preload"
# Leak checking would report V8's own allocations at exit; addon leaks are covered by the
# addon tests' fd and mapping counts.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
node -e "const b = require(process.env.SHMBUS_ADDON); if (typeof b.noop !== 'function') process.exit(1);"
if [ "$#" -eq 0 ]; then set -- dist/test/unit/ dist/test/process/; fi
node --test --test-concurrency=1 "$@"
