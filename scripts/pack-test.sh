#!/usr/bin/env bash
# npm run test:pack: the published package, as a user gets it. Packs the tarball (prepack builds
# the prebuilt addons, prepare both TypeScript builds), installs it into a fresh project where no
# compiler can run (cc/gcc/g++/make/python3/node-gyp on PATH are stubs that log and fail, and
# CC=CXX=false), and checks that nothing was compiled; then, against node_modules/shmbus:
#   - import (ESM) and require (CommonJS) of shmbus and shmbus/solana, each in the main thread
#     and in a worker thread, each passing a frame through a Channel (test/pack/esm.mjs, cjs.cjs),
#     loading the prebuilt addon for this platform;
#   - a cross-process round trip: an ES module producer and a CommonJS consumer (test/pack/);
#   - `npx shmbus ls` from the installed package, listing a channel that another process holds;
#   - a TypeScript consumer type-checks against the installed declarations: CommonJS and ESM
#     under node16 resolution, and CommonJS under node10 without esModuleInterop;
#   - publint and @arethetypeswrong/cli on the tarball.
# SHMBUS_PACK_TEST_ARM64_NODE="qemu-aarch64 -L SYSROOT SYSROOT/usr/bin/node" adds the CommonJS and
# cross-process checks under an arm64 node (see README, "How the prebuilt binaries are made").
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
export SHMBUS_DIR
SHMBUS_DIR=$(mktemp -d -p /dev/shm shmbus-pack-test.XXXXXX)
holder=
cleanup() {
  if [[ -n $holder ]]; then kill "$holder" 2>/dev/null || true; fi
  rm -rf "$work" "$SHMBUS_DIR"
}
trap cleanup EXIT
started=$SECONDS
step() { printf '\n== %s (%ss)\n' "$*" $((SECONDS - started)); }
fail() {
  echo "pack-test: FAIL: $*" >&2
  exit 1
}
# show <file>: a log, indented, for the record and for failures.
show() { sed 's/^/   | /' "$1"; }

step "npm pack"
npm pack --pack-destination "$work" >"$work/pack.log" 2>&1 || {
  show "$work/pack.log"
  fail "npm pack"
}
tarball=$(ls "$work"/shmbus-*.tgz)
grep -E '^prebuilds: ' "$work/pack.log" | sed 's/^/   /'
grep -E 'npm notice (package size|unpacked size|total files)' "$work/pack.log" | sed 's/^/   /'
tar tzf "$tarball" >"$work/files.txt"
grep -q '^package/dist/cjs/package.json$' "$work/files.txt" || fail "dist/cjs/package.json is not in the tarball"

step "npm install the tarball into a fresh project, no compiler usable"
app=$work/app
mkdir -p "$app/no-compiler"
for tool in cc gcc g++ c++ clang make python3 node-gyp; do
  printf '#!/bin/sh\necho "%s $*" >> "%s/compiler-calls.log"\nexit 1\n' "$tool" "$app" >"$app/no-compiler/$tool"
  chmod +x "$app/no-compiler/$tool"
done
echo '{ "name": "shmbus-pack-test", "version": "1.0.0", "private": true }' >"$app/package.json"
(cd "$app" && PATH="$app/no-compiler:$PATH" CC=false CXX=false \
  npm install "$tarball" --foreground-scripts --no-audit --no-fund >install.log 2>&1) || {
  show "$app/install.log"
  fail "npm install of the tarball"
}
show "$app/install.log"
grep -q '^> node-gyp-build$' "$app/install.log" || fail "shmbus's install script (node-gyp-build) did not run"
[[ ! -e $app/compiler-calls.log ]] || fail "something tried to compile: $(cat "$app/compiler-calls.log")"
[[ ! -e $app/node_modules/shmbus/build ]] || fail "node_modules/shmbus/build exists: the addon was compiled"
echo "   the install script ran, found the prebuilt addon loadable and compiled nothing"

cp "$repo"/test/pack/*.mjs "$repo"/test/pack/*.cjs "$app/"
prebuild="$app/node_modules/shmbus/prebuilds/linux-$(node -p process.arch)"
# expect <file> <format> <entry> <addon>: two JSON lines (main thread, worker) with those values.
expect() {
  node -e '
    const [file, format, entry, addon] = process.argv.slice(1);
    const lines = require("fs").readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const threads = lines.map((l) => l.thread).sort().join(",");
    if (threads !== "main,worker") throw new Error(`${file}: threads ${threads}`);
    for (const l of lines) {
      if (l.format !== format || l.entry !== entry || l.addon !== addon) throw new Error(`${file}: ${JSON.stringify(l)}`);
    }
  ' "$@"
}

step "import from ESM, main thread and worker"
(cd "$app" && node esm.mjs >esm.out)
show "$app/esm.out"
expect "$app/esm.out" esm "$app/node_modules/shmbus/dist/src/index.js" "$prebuild/shmbus.glibc.node"

step "require from CommonJS, main thread and worker"
(cd "$app" && node cjs.cjs >cjs.out)
show "$app/cjs.out"
expect "$app/cjs.out" cjs "$app/node_modules/shmbus/dist/cjs/index.js" "$prebuild/shmbus.glibc.node"

# round_trip <node command...>: producer.mjs and consumer.cjs in two processes.
round_trip() {
  local name="pack-rt-$$-$RANDOM"
  (cd "$app" && timeout 120 "$@" consumer.cjs "$name" >consumer.out 2>&1) &
  local consumer=$!
  (cd "$app" && timeout 120 "$@" producer.mjs "$name" >producer.out 2>&1) || {
    show "$app/producer.out"
    fail "producer"
  }
  wait "$consumer" || {
    show "$app/consumer.out"
    fail "consumer"
  }
  show "$app/producer.out"
  show "$app/consumer.out"
  grep -q '^received 10 messages$' "$app/consumer.out" || fail "the consumer did not receive 10 messages"
}

step "cross-process round trip: ESM producer -> CommonJS consumer"
round_trip node

step "npx shmbus ls, from the installed package"
name="pack-ls-$$"
mkfifo "$work/hold.in"
(cd "$app" && exec node hold.mjs "$name" <"$work/hold.in" >"$app/hold.out" 2>&1) &
holder=$!
exec 3>"$work/hold.in"
for _ in $(seq 200); do
  grep -q '^ready$' "$app/hold.out" 2>/dev/null && break
  sleep 0.05
done
grep -q '^ready$' "$app/hold.out" || fail "hold.mjs did not create its channel: $(cat "$app/hold.out")"
(cd "$app" && npx --no-install shmbus ls >ls.out 2>&1) || {
  show "$app/ls.out"
  fail "npx shmbus ls"
}
exec 3>&-
wait "$holder"
holder=
show "$app/ls.out"
grep -q "$name" "$app/ls.out" || fail "shmbus ls does not list $name"
leftover=$(ls -A "$SHMBUS_DIR")
[[ -z $leftover ]] || fail "files left in $SHMBUS_DIR: $leftover"

if [[ -n ${SHMBUS_PACK_TEST_ARM64_NODE:-} ]]; then
  read -r -a arm64_node <<<"$SHMBUS_PACK_TEST_ARM64_NODE"
  step "arm64: require from CommonJS, main thread and worker ($SHMBUS_PACK_TEST_ARM64_NODE)"
  (cd "$app" && "${arm64_node[@]}" cjs.cjs >cjs-arm64.out)
  show "$app/cjs-arm64.out"
  expect "$app/cjs-arm64.out" cjs "$app/node_modules/shmbus/dist/cjs/index.js" \
    "$app/node_modules/shmbus/prebuilds/linux-arm64/shmbus.glibc.node"
  step "arm64: cross-process round trip"
  round_trip "${arm64_node[@]}"
fi

step "TypeScript consumers type-check against the installed declarations (skipLibCheck off)"
mkdir -p "$app/ts"
cat >"$app/ts/consumer.ts" <<'TS'
import { Channel, ShmError } from 'shmbus';
import { encodeBase58 } from 'shmbus/solana';

export function sendOnce(name: string, bytes: Uint8Array): boolean {
  const tx = Channel.create(name, { capacity: 1 << 12 });
  try {
    return tx.trySend(bytes);
  } finally {
    tx.close();
  }
}
export const isShmError = (err: unknown): err is ShmError => err instanceof ShmError;
export const key: string = encodeBase58(new Uint8Array(32));
TS
cp "$app/ts/consumer.ts" "$app/ts/consumer.cts"
cp "$app/ts/consumer.ts" "$app/ts/consumer.mts"
# tsc_check <name> <compilerOptions (JSON members)> <file...>
tsc_check() {
  local name=$1 options=$2
  shift 2
  local files
  files=$(printf '"%s",' "$@")
  cat >"$app/tsconfig.$name.json" <<JSON
{ "compilerOptions": { $options, "strict": true, "noEmit": true, "skipLibCheck": false,
    "types": ["node"], "typeRoots": ["$repo/node_modules/@types"] },
  "files": [${files%,}] }
JSON
  (cd "$app" && "$repo/node_modules/.bin/tsc" -p "tsconfig.$name.json") || fail "a TypeScript consumer ($name) does not type-check"
  echo "   $name: $* type-check"
}
tsc_check node16 '"module": "node16"' ts/consumer.cts ts/consumer.mts
tsc_check node10 '"module": "commonjs", "moduleResolution": "node10"' ts/consumer.ts

step "publint"
npx publint run "$tarball" --strict
step "@arethetypeswrong/cli"
npx attw "$tarball" --format table-flipped

step "pack test passed"
