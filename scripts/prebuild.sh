#!/usr/bin/env bash
# Builds the prebuilt addon binaries that ship inside the npm tarball (`npm run prebuild`; runs
# as `prepack`, so `npm pack` and `npm publish` always carry fresh ones):
#
#   prebuilds/linux-x64/shmbus.glibc.node     host gcc                          (always)
#   prebuilds/linux-x64/shmbus.musl.node      musl-gcc (apt: musl-tools)        (if installed)
#   prebuilds/linux-arm64/shmbus.glibc.node   aarch64-linux-gnu-gcc             (if installed)
#                                             (apt: gcc-aarch64-linux-gnu g++-aarch64-linux-gnu)
#
# Node-API (NAPI_VERSION in binding.gyp), so one binary per platform serves every Node >= 20.
# prebuildify runs node-gyp in a scratch copy of binding.gyp + native/, so the source build in
# build/ (which the loader prefers) is left alone. A target whose toolchain is missing is
# skipped and named at the end; SHMBUS_PREBUILD_ALL=1 makes that an error (for releases).
# linux-arm64-musl needs an aarch64 musl toolchain (none in Debian): build it on an arm64
# Alpine host with `npx prebuildify --napi --strip --tag-libc` and copy the file into
# prebuilds/linux-arm64/ before packing: binaries not built here are kept (and listed).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
prebuildify="$root/node_modules/.bin/prebuildify"
target=$(node -p process.versions.node)
if ! command -v node-gyp >/dev/null; then
  echo "prebuild.sh: node-gyp is not on PATH; run it as \`npm run prebuild\` (npm provides node-gyp)" >&2
  exit 1
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r binding.gyp native package.json "$scratch/"

built=()
skipped=()

# prebuild <label> <prebuildify args...>, with CC/CXX/LINK and friends from the environment.
prebuild() {
  local label=$1
  shift
  rm -rf "$scratch/build"
  "$prebuildify" --cwd "$scratch" --napi --strip --tag-libc --target "$target" --quiet "$@"
  built+=("$label")
}

prebuild linux-x64-glibc

if command -v musl-gcc >/dev/null; then
  # musl-gcc sees only musl's headers; the Linux uapi headers (linux/futex.h, linux/io_uring.h)
  # are libc-independent, so let it fall back to the system's after its own.
  musl_cflags="-idirafter /usr/include -idirafter /usr/include/$(gcc -dumpmachine)"
  CC=musl-gcc CXX=musl-gcc LINK=musl-gcc CFLAGS="$musl_cflags" \
    prebuild linux-x64-musl --libc musl
else
  skipped+=("linux-x64-musl (no musl-gcc: apt-get install musl-tools)")
fi

if command -v aarch64-linux-gnu-gcc >/dev/null && command -v aarch64-linux-gnu-g++ >/dev/null; then
  CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ \
    prebuild linux-arm64-glibc --arch arm64 --libc glibc --strip-bin aarch64-linux-gnu-strip
else
  skipped+=("linux-arm64-glibc (no aarch64-linux-gnu-gcc/g++: apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu)")
fi

# Replace what was built here; keep binaries made elsewhere (e.g. linux-arm64 musl, copied into
# prebuilds/ before `npm pack`), and list them so a stale one is seen.
mkdir -p prebuilds
cp -r "$scratch/prebuilds/." prebuilds/
echo "prebuilds: built ${built[*]}"
while IFS= read -r kept; do
  [[ -e "$scratch/$kept" ]] || echo "prebuilds: kept, not built here: $kept"
done < <(find prebuilds -name '*.node' | sort)
for s in "${skipped[@]}"; do echo "prebuilds: skipped $s"; done
echo "prebuilds: not made here: linux-arm64-musl (no aarch64 musl toolchain in Debian)"
find prebuilds -name '*.node' -exec file {} +
# A glibc binary loads only where glibc is at least the newest symbol version it references.
for f in prebuilds/*/*.glibc.node; do
  need=$(readelf -V --wide "$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  echo "prebuilds: $f needs ${need/GLIBC_/glibc >= }"
done
# The musl binary cannot be loaded here (no musl node), but musl's dynamic linker can list what it
# leaves unresolved: only node's own napi_*/uv_* symbols may remain (node provides them at load).
musl_ldso=/lib/ld-musl-x86_64.so.1
if [[ -f prebuilds/linux-x64/shmbus.musl.node && -x $musl_ldso ]]; then
  unresolved=$("$musl_ldso" --list prebuilds/linux-x64/shmbus.musl.node 2>&1 |
    sed -n 's/^Error relocating [^:]*: \([^:]*\): symbol not found$/\1/p' | grep -v -E '^(napi_|uv_)' || true)
  if [[ -n $unresolved ]]; then
    echo "prebuilds: linux-x64 musl binary needs symbols musl lacks: $unresolved" >&2
    exit 1
  fi
  echo "prebuilds: linux-x64 musl binary: every libc symbol resolves in musl ($musl_ldso)"
fi
if [[ "${SHMBUS_PREBUILD_ALL:-0}" == 1 && ${#skipped[@]} -gt 0 ]]; then
  echo "prebuilds: SHMBUS_PREBUILD_ALL=1 and a toolchain is missing" >&2
  exit 1
fi
