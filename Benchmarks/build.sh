#!/usr/bin/env bash
# Build benchmark: one Dockerfile and context built by `gantry build` and by
# `buildah bud` (with runc, and with its chroot isolation, which can only
# use the host's network) from the same
# busybox base image, measured in the same run with hyperfine.
#
#   sudo Benchmarks/build.sh [--runs N]
#
# - cold: every step runs (`--no-cache` for both), the base image present.
# - cached: nothing changed since the last build; every step is taken from
#   the cache (Gantry's build cache, buildah's `--layers`).
# The Dockerfile copies a context of 200 small files, runs two steps that
# read them and write more, sets its configuration and copies one more file
# in: what a service's image build looks like, without a package manager.
# - two-stage: a Dockerfile over Debian bookworm (minbase, debootstrapped
#   once and kept in $GANTRY_BENCH_CACHE, /var/tmp/gantry-bench by default)
#   whose first stage makes and packs files with Debian's tools and whose
#   second copies the archive from it and unpacks it; cold. Twice: with 300
#   files made by 300 processes (the steps' own work weighs most), and with
#   one file (the builders' own work weighs most).
#
# GANTRY_BENCH_KEEP=1 leaves the work directory (/tmp/gantry-build-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root (buildah's storage, overlay mounts)" >&2; exit 1; }
for tool in buildah runc hyperfine python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/setup.sh" >&2; exit 1; }
done
source Benchmarks/lib/busybox.sh
source Benchmarks/lib/bookworm.sh

work="/tmp/gantry-build-bench"
buildah=(buildah --root "$work/buildah" --runroot "$work/buildah-run" --storage-driver overlay)
cleanup() {
    "${buildah[@]}" rm -a >/dev/null 2>&1 || true
    "${buildah[@]}" rmi -af >/dev/null 2>&1 || true
    umount -R "$work/buildah" 2>/dev/null || true
    rm -rf "$work"
}
rm -rf "$work" && mkdir -p "$work"
trap cleanup EXIT
[ -z "${GANTRY_BENCH_KEEP:-}" ] || trap - EXIT

echo "== building gantry (release)"
gantry="$(gantry_release)"

echo "== base image, context and Dockerfile"
busybox_rootfs "$work/rootfs" sh cat mkdir basename echo ls
mkdir -p "$work/rootfs/root" && chmod 1777 "$work/rootfs/tmp"
"$gantry" --root "$work/state" image import-rootfs "$work/rootfs" --name bench-base:1 >/dev/null
"$gantry" --root "$work/state" image export-layout bench-base:1 "$work/base-layout:1" >/dev/null
"${buildah[@]}" pull -q "oci:$work/base-layout:1" >/dev/null
"${buildah[@]}" tag "$("${buildah[@]}" images -q | head -1)" localhost/bench-base:1
context="$work/context"
mkdir -p "$context/src"
python3 - "$context/src" <<'PY'
import os, sys
for i in range(200):
    with open(os.path.join(sys.argv[1], f"file-{i:03}.txt"), "w") as f:
        f.write((f"line {i}\n") * 400)
PY
echo "setting=1" >"$context/config.txt"
printf 'tmp/\n*.log\n' >"$context/.dockerignore"
for base in bench-base:1 localhost/bench-base:1; do
    file="$work/Dockerfile.$( [ "$base" = bench-base:1 ] && echo gantry || echo buildah)"
    cat >"$file" <<EOF
FROM $base
ENV APP=/srv/app
WORKDIR /srv/app
COPY src/ ./src/
RUN mkdir -p out && for f in src/*; do cat "\$f" "\$f" > "out/\$(basename "\$f").twice"; done
RUN echo built > /srv/app/done && ls out | cat > /srv/app/index
COPY config.txt /etc/app.conf
EXPOSE 8080
CMD ["sh", "-c", "cat /srv/app/done"]
EOF
done

# buildah runs RUN steps with runc: crun refuses a hybrid cgroup host.
g="$gantry --root $work/state build -q --network none -f $work/Dockerfile.gantry -t bench-app:1"
b="${buildah[*]} bud -q --runtime runc --network none -f $work/Dockerfile.buildah -t bench-app:1"
bc="${buildah[*]} bud -q --isolation chroot -f $work/Dockerfile.buildah -t bench-app:1"

echo "== check: both images hold the same files"
$g "$context" >/dev/null
$b "$context" >/dev/null
"$gantry" --root "$work/state" run --rm bench-app:1 sh -c 'cat /srv/app/index | wc -l; cat /etc/app.conf'
"${buildah[@]}" from --name check localhost/bench-app:1 >/dev/null
"${buildah[@]}" run --runtime runc check sh -c 'cat /srv/app/index | wc -l; cat /etc/app.conf'
"${buildah[@]}" rm check >/dev/null

echo "== Debian base for the two-stage build"
cache="${GANTRY_BENCH_CACHE:-/var/tmp/gantry-bench}"
bookworm_layout "$cache"
"$gantry" --root "$work/state" image import-layout "$cache/layout:bookworm" --name bench-debian:1 >/dev/null
"${buildah[@]}" tag "$("${buildah[@]}" pull -q "oci:$cache/layout:bookworm")" localhost/bench-debian:1
for files in 300 1; do
for base in bench-debian:1 localhost/bench-debian:1; do
    file="$work/Dockerfile.debian$files.$( [ "$base" = bench-debian:1 ] && echo gantry || echo buildah)"
    cat >"$file" <<EOF
FROM $base AS build
RUN mkdir -p /out && for i in \$(seq 1 $files); do head -c 4096 /dev/urandom > /out/part-\$i; done && tar -czf /bundle.tgz -C /out .

FROM $base
COPY --from=build /bundle.tgz /opt/bundle.tgz
RUN mkdir /opt/app && tar -xzf /opt/bundle.tgz -C /opt/app && rm /opt/bundle.tgz && ls /opt/app | wc -l > /opt/count
CMD ["cat", "/opt/count"]
EOF
done
done
gd="$gantry --root $work/state build -q --network none -f $work/Dockerfile.debian300.gantry -t bench-two:1"
bd="${buildah[*]} bud -q --runtime runc --network none -f $work/Dockerfile.debian300.buildah -t bench-two:1"
bdc="${buildah[*]} bud -q --isolation chroot -f $work/Dockerfile.debian300.buildah -t bench-two:1"
echo "== check: the two-stage images count the same files"
$gd "$context" >/dev/null
"$gantry" --root "$work/state" run --rm bench-two:1
$bd "$context" >/dev/null
"${buildah[@]}" from --name check-two localhost/bench-two:1 >/dev/null
"${buildah[@]}" run --runtime runc check-two cat /opt/count
"${buildah[@]}" rm check-two >/dev/null

echo "== cold: every step runs ($runs runs)"
hyperfine --warmup 1 --runs "$runs" --export-json "$work/cold.json" \
    -n gantry "$g --no-cache $context" -n "buildah (runc)" "$b --no-cache $context" -n "buildah (chroot)" "$bc --no-cache $context"

echo "== cached: nothing changed ($runs runs)"
$g "$context" >/dev/null
$b --layers "$context" >/dev/null
hyperfine --warmup 1 --runs "$runs" --export-json "$work/cached.json" \
    -n gantry "$g $context" -n "buildah (runc)" "$b --layers $context" -n "buildah (chroot)" "$bc --layers $context"

echo "== two-stage over Debian, 300 files, cold ($runs runs)"
hyperfine --warmup 1 --runs "$runs" --export-json "$work/two-stage.json" \
    -n gantry "$gd --no-cache $context" -n "buildah (runc)" "$bd --no-cache $context" -n "buildah (chroot)" "$bdc --no-cache $context"
echo "== two-stage over Debian, 1 file, cold ($runs runs)"
hyperfine --warmup 1 --runs "$runs" --export-json "$work/two-stage-light.json" \
    -n gantry "${gd/debian300/debian1} --no-cache $context" -n "buildah (runc)" "${bd/debian300/debian1} --no-cache $context" \
    -n "buildah (chroot)" "${bdc/debian300/debian1} --no-cache $context"

python3 - "$work" <<'PY'
import json, sys
for phase in ["cold", "cached", "two-stage", "two-stage-light"]:
    results = {r["command"]: r for r in json.load(open(f"{sys.argv[1]}/{phase}.json"))["results"]}
    gantry = results["gantry"]["median"]
    line = f"{phase}: gantry {gantry * 1000:.0f} ms"
    for peer in ["buildah (runc)", "buildah (chroot)"]:
        median = results[peer]["median"]
        line += f"; {peer} {median * 1000:.0f} ms ({gantry / median:.2f}x)"
    print(line)
PY
