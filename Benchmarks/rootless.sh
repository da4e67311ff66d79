#!/usr/bin/env bash
# Rootless benchmark: an ordinary user's containers through Gantry's
# library (gantry-bench) against crun and podman run by the same user, in
# the same run.
#
#   sudo Benchmarks/rootless.sh [--runs N]
#
#   GANTRY_BENCH_USER names the user (default gantry-bench; made, with
#   subordinate IDs, when missing). GANTRY_BENCH_BIN=DIR measures the
#   gantry-bench in DIR. GANTRY_BENCH_KEEP=1 leaves the work directory
#   (/tmp/gantry-rootless-bench) for a look afterwards.
#
# - start: create + start + wait + delete of `true` in a user namespace
#   with the user's subordinate IDs. Gantry: in-process, from an image.
#   crun: `crun run` of a bundle whose configuration asks for a user
#   namespace. podman: `podman run --rm --network none`.
# - port: time until a GET on the published 127.0.0.1 port answers, from
#   the start of the run: Gantry in-process (pasta), podman `run -d -p`
#   (its rootless port forwarding).
#
# crun refuses a hybrid cgroup host (v1 controllers beside an empty cgroup2
# tree). There each crun (podman's too) runs through a wrapper that covers
# the empty cgroup2 mount in a mount namespace of its own, and the wrapper's
# own cost (measured alone) is taken off crun's figures; podman runs with
# --cgroups=disabled, as an ordinary user without a delegated cgroup must.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=100
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root (it runs everything as an ordinary user it makes)" >&2; exit 1; }
for tool in crun podman pasta newuidmap hyperfine python3 unshare runuser; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/setup.sh" >&2; exit 1; }
done
source Benchmarks/lib/busybox.sh
source Benchmarks/lib/bench-binary.sh

user="${GANTRY_BENCH_USER:-gantry-bench}"
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
grep -q "^$user:" /etc/subuid || usermod --add-subuids 300000-365535 --add-subgids 300000-365535 "$user"
work="/tmp/gantry-rootless-bench"
rm -rf "$work" && mkdir -p "$work"
cleanup() {
    runuser -u "$user" -- env XDG_RUNTIME_DIR="$work/run" HOME="$work/home" podman rm -fa >/dev/null 2>&1 || true
    runuser -u "$user" -- env XDG_RUNTIME_DIR="$work/run" HOME="$work/home" podman system reset -f >/dev/null 2>&1 || true
    pkill -u "$user" -f "pasta --config-net" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
[ -n "${GANTRY_BENCH_KEEP:-}" ] && trap - EXIT

echo "== busybox root file system, bundle and podman image (as $user)"
busybox_rootfs "$work/rootfs" sh true sleep httpd
mkdir -p "$work/www" "$work/run" "$work/home" && echo ok >"$work/rootfs/index.html"
chown -R "$user:" "$work"
chmod 700 "$work/run"

hybrid=false
grep -q ' /sys/fs/cgroup/unified ' /proc/self/mountinfo && hybrid=true
crun="crun"
if $hybrid; then
    mkdir -p "$work/wrapper"
    # podman's (it runs crun as root of its own user namespace already).
    cat >"$work/wrapper/crun" <<'SH'
#!/bin/sh
exec unshare --mount /bin/sh -c 'mount -t tmpfs none /sys/fs/cgroup/unified 2>/dev/null; exec /usr/bin/crun "$@"' crun "$@"
SH
    # The user's, who needs a user namespace to mount.
    cat >"$work/wrapper/crun-user" <<'SH'
#!/bin/sh
exec unshare --user --map-root-user --mount /bin/sh -c 'mount -t tmpfs none /sys/fs/cgroup/unified 2>/dev/null; exec /usr/bin/crun "$@"' crun "$@"
SH
    # The wrapper alone, to take its cost off crun's.
    cat >"$work/wrapper/alone" <<'SH'
#!/bin/sh
exec unshare --user --map-root-user --mount /bin/sh -c 'mount -t tmpfs none /sys/fs/cgroup/unified 2>/dev/null; exec /bin/true'
SH
    chmod 755 "$work/wrapper/crun" "$work/wrapper/crun-user" "$work/wrapper/alone"
    chown -R "$user:" "$work/wrapper"
fi

as_user() {
    runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work/home" XDG_RUNTIME_DIR="$work/run" \
        XDG_DATA_HOME="$work/data" bash -c "$1"
}

# crun's bundle: the rootless configuration crun writes (a user namespace
# mapping the user as root), running true without a terminal. Through the
# wrapper crun is root in a user namespace of the user's, so the mapping
# names that namespace's root.
as_user "mkdir -p $work/bundle && cd $work/bundle && ln -s ../rootfs rootfs && crun spec --rootless"
python3 - "$work/bundle/config.json" "$hybrid" <<'PY'
import json, sys
path, hybrid = sys.argv[1], sys.argv[2] == "true"
config = json.load(open(path))
config["process"]["args"] = ["/bin/true"]
config["process"]["terminal"] = False
if hybrid:
    for key in ("uidMappings", "gidMappings"):
        for mapping in config["linux"].get(key, []):
            mapping["hostID"] = 0
json.dump(config, open(path, "w"), indent=1)
PY
as_user "tar -C $work/rootfs -c . | podman import - localhost/gantry-bench >/dev/null"

value() { awk -v key="$1:" '$1 == key { print $2 }'; }
median_of() { python3 -c "import json,sys; print('%.3f' % (json.load(open('$1'))['results'][$2]['median'] * 1000))"; }

echo "== start: create + start + wait + delete of true, $runs runs each"
gantry_start="$(as_user "$bench start --rootfs $work/rootfs --runs $runs --root $work/state")"
echo "$gantry_start" | sed 's/^/   gantry: /'
if $hybrid; then
    crun_command="$work/wrapper/crun-user --cgroup-manager=disabled --root $work/run/crun run --bundle $work/bundle gb-crun"
    wrapper_command="$work/wrapper/alone"
else
    crun_command="crun --root $work/run/crun run --bundle $work/bundle gb-crun"
    wrapper_command="true"
fi
if $hybrid; then
    podman_command="podman --runtime $work/wrapper/crun run --cgroups=disabled --rm --network none localhost/gantry-bench /bin/true"
else
    podman_command="podman run --rm --network none localhost/gantry-bench /bin/true"
fi
as_user "hyperfine -N --warmup 5 --runs $runs --export-json $work/crun.json '$crun_command' '$wrapper_command'" >/dev/null
as_user "hyperfine -N --warmup 3 --runs $(( runs / 5 + 5 )) --export-json $work/podman.json '$podman_command'" >/dev/null
crun_median="$(median_of "$work/crun.json" 0)"
wrapper_median="$(median_of "$work/crun.json" 1)"
crun_net="$(python3 -c "print('%.3f' % ($crun_median - ($wrapper_median if '$hybrid' == 'true' else 0)))")"
podman_median="$(median_of "$work/podman.json" 0)"
echo "   crun run: median $crun_median ms (the wrapper alone $wrapper_median ms: $crun_net ms net); podman run --rm: median $podman_median ms"

echo "== port: a published port answers, from the start of the run"
gantry_port="$(as_user "$bench port --rootfs $work/rootfs --runs $(( runs / 5 + 5 )) --root $work/state")"
echo "$gantry_port" | sed 's/^/   gantry: /'
podman_port="$(as_user "
    runtime=\"\"; flags=\"\"; $hybrid && runtime=\"--runtime $work/wrapper/crun\" && flags=\"--cgroups=disabled\"
    samples=()
    for i in \$(seq $(( runs / 5 + 5 ))); do
        start=\$(date +%s%N)
        podman \$runtime run \$flags -d --name gb-port -p 127.0.0.1:18999:80 localhost/gantry-bench /bin/httpd -f -p 80 -h / >/dev/null
        for try in \$(seq 2000); do timeout 1 busybox wget -q -O /dev/null http://127.0.0.1:18999/index.html 2>/dev/null && break; done
        samples+=(\$(( (\$(date +%s%N) - start) / 1000 )))
        podman rm -f -t 0 gb-port >/dev/null
    done
    printf '%s\n' \"\${samples[@]}\" | sort -n | awk '{ a[NR] = \$1 } END { printf \"%.3f\n\", a[int((NR + 1) / 2)] / 1000 }'
")"
echo "   podman run -d -p: median $podman_port ms until a GET answers"

ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
start_median="$(echo "$gantry_start" | value start_median)"
port_median="$(echo "$gantry_port" | value port_reachable_median)"
echo
echo "== summary (ratios against peers measured in this run as the same user; lower is better)"
echo "rootless_start_median: $start_median ms ($(ratio "$start_median" "$crun_net")x crun, $(ratio "$start_median" "$podman_median")x podman)"
echo "rootless_port_ready_median: $port_median ms ($(ratio "$port_median" "$podman_port")x podman)"
