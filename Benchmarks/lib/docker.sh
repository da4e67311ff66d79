# Shared by the benchmarks: a private Docker daemon to compare Gantry with.
#
#   source Benchmarks/lib/docker.sh
#   docker_start DIR; trap 'docker_stop DIR' EXIT
#   docker_load_oci LAYOUT_DIR REF NAME
#
# docker_start runs Debian's dockerd (apt-get install docker.io) with all its
# state under DIR and exports DOCKER_HOST; docker_stop ends it and takes back
# what it changed on the host (bridge, iptables rules, mounts, shims), so the
# host is as before. It keeps Docker's defaults (iptables rules, userland
# proxy) so that what is measured is Docker as people run it.
#
# The bridge is made here, with its own name and subnet, because dockerd only
# makes a bridge called docker0: ours cannot clash with a system Docker's.
DOCKER_BENCH_BRIDGE="${DOCKER_BENCH_BRIDGE:-gbench-docker0}"
DOCKER_BENCH_CIDR="${DOCKER_BENCH_CIDR:-172.30.254.1/24}"
# Debian's CLI, of the daemon's version (another docker may come first in PATH).
DOCKER_CLI="${DOCKER_CLI:-/usr/bin/docker}"

docker_start() {
    local dir
    dir="$(realpath -m "$1")"
    local sock="unix://$dir/docker.sock"
    command -v dockerd >/dev/null || { echo "missing dockerd: apt-get install docker.io" >&2; return 1; }
    [ -x "$DOCKER_CLI" ] || { echo "missing $DOCKER_CLI: apt-get install docker.io" >&2; return 1; }
    if [ -f "$dir/dockerd.pid" ] && _docker_alive "$(cat "$dir/dockerd.pid")"; then
        echo "a dockerd already runs for $dir" >&2
        return 1
    fi
    mkdir -p "$dir"
    # What docker_stop compares with to take back only what dockerd added.
    nft list tables >"$dir/nft-tables.before"
    iptables-save >"$dir/iptables.before"
    sysctl -n net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables >"$dir/sysctl.before" 2>/dev/null || true
    [ -d /run/containerd ] && touch "$dir/run-containerd.before"
    [ -d /run/docker ] && touch "$dir/run-docker.before"

    if ! ip link show "$DOCKER_BENCH_BRIDGE" >/dev/null 2>&1; then
        ip link add "$DOCKER_BENCH_BRIDGE" type bridge
        ip addr add "$DOCKER_BENCH_CIDR" dev "$DOCKER_BENCH_BRIDGE"
        ip link set "$DOCKER_BENCH_BRIDGE" up
    fi

    # A config file of its own: /etc/docker/daemon.json is not read, and its
    # trust key does not go to /etc/docker/key.json.
    printf '{"deprecated-key-path": "%s"}\n' "$dir/key.json" >"$dir/daemon.json"
    dockerd --config-file "$dir/daemon.json" --data-root "$dir/data" --exec-root "$dir/exec" \
        --pidfile "$dir/dockerd.pid" -H "$sock" --bridge "$DOCKER_BENCH_BRIDGE" --log-level warn \
        </dev/null >"$dir/dockerd.log" 2>&1 &
    local pid=$! tries=0
    until "$DOCKER_CLI" -H "$sock" info >/dev/null 2>&1; do
        if ! _docker_alive "$pid" || [ $((tries += 1)) -gt 600 ]; then
            echo "dockerd did not answer within 60 s; its log:" >&2
            tail -20 "$dir/dockerd.log" >&2
            kill -KILL "$pid" 2>/dev/null || true
            docker_stop "$dir"
            return 1
        fi
        sleep 0.1
    done
    export DOCKER_HOST="$sock"
}

docker_stop() {
    local dir
    dir="$(realpath -m "$1")"
    local sock="unix://$dir/docker.sock" pid=""
    [ -f "$dir/dockerd.pid" ] && pid="$(cat "$dir/dockerd.pid")"
    if [ -n "$pid" ] && _docker_alive "$pid"; then
        # Containers removed through the daemon take their mounts, network
        # namespaces, veths and shims with them.
        local ids
        ids="$("$DOCKER_CLI" -H "$sock" ps -aq 2>/dev/null || true)"
        [ -z "$ids" ] || "$DOCKER_CLI" -H "$sock" rm -f $ids >/dev/null 2>&1 || true
        kill -TERM "$pid" 2>/dev/null || true
        local tries=0
        while _docker_alive "$pid" && [ $((tries += 1)) -le 300 ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        while _docker_alive "$pid"; do sleep 0.1; done
    fi
    rm -f "$dir/dockerd.pid"

    # Where dockerd had to be killed, its containers, containerd, shims and
    # proxies live on: runc ends the first, the others are found by name.
    local runc_root="$dir/exec/runtime-runc/moby" id proc comm cmdline others=""
    if [ -d "$runc_root" ]; then
        for id in $(runc --root "$runc_root" list -q 2>/dev/null); do
            runc --root "$runc_root" delete --force "$id" 2>/dev/null || true
        done
    fi
    for proc in /proc/[0-9]*; do
        read -r comm 2>/dev/null <"$proc/comm" || continue
        case "$comm" in
        containerd | containerd-shim* | docker-proxy) ;;
        *) continue ;;
        esac
        cmdline="$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline")" || continue
        case "$cmdline" in
        *" $dir/"* | *"-container-ip ${DOCKER_BENCH_CIDR%.*}."*) others+=" ${proc#/proc/}" ;;
        esac
    done
    [ -z "$others" ] || kill -KILL $others 2>/dev/null || true

    # Deepest first, so that each is unmounted before the one it is under.
    local target
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r target; do
        umount -l "$target" 2>/dev/null || true
    done

    # The host as docker_start found it, where docker_start ran.
    [ -f "$dir/nft-tables.before" ] || return 0
    if ip link show "$DOCKER_BENCH_BRIDGE" >/dev/null 2>&1; then ip link delete "$DOCKER_BENCH_BRIDGE"; fi
    _docker_iptables_restore "$dir"
    local forward bridge_nf
    { read -r forward; read -r bridge_nf; } <"$dir/sysctl.before" || true
    [ -z "${forward:-}" ] || sysctl -qw net.ipv4.ip_forward="$forward" || true
    [ -z "${bridge_nf:-}" ] || sysctl -qw net.bridge.bridge-nf-call-iptables="$bridge_nf" || true
    # containerd puts its shims' sockets in /run/containerd/s and dockerd
    # makes /run/docker/plugins whatever their state directories: they go
    # where they were not there before.
    [ -f "$dir/run-containerd.before" ] || rm -rf /run/containerd
    [ -f "$dir/run-docker.before" ] || rm -rf /run/docker
    rm -f "$dir"/*.before
}

# Whether PID runs; a zombie does not (dockerd is the caller's child, which
# the caller's shell may not have reaped yet).
_docker_alive() {
    local state
    state="$(ps -o stat= -p "$1" 2>/dev/null)" && [ "${state:0:1}" != Z ]
}

# Takes back the iptables rules, chains and policies dockerd added (those not
# in DIR/iptables.before), and the tables it made if nothing else is in them.
_docker_iptables_restore() {
    local dir="$1" table rule chain policy
    for table in nat filter; do
        local before after
        before="$(awk -v t="*$table" '/^\*/ { in_t = ($0 == t); next } in_t' "$dir/iptables.before")"
        after="$(iptables -t "$table" -S 2>/dev/null)" || continue
        # Rules first, newest first, then the chains they jumped to.
        { grep '^-A ' <<<"$after" | grep -vxF -f <(grep '^-A ' <<<"$before"; echo '#') || true; } | tac |
            while read -r rule; do eval "iptables -t $table -D ${rule#-A }" || true; done
        { grep '^-N ' <<<"$after" | grep -vxF -f <(grep '^:' <<<"$before" | awk '{ print "-N " substr($1, 2) }'; echo '#') || true; } |
            while read -r _ chain; do iptables -t "$table" -F "$chain" && iptables -t "$table" -X "$chain" || true; done
        # A built-in chain's policy, as it was (ACCEPT where the table was not).
        { grep '^-P ' <<<"$after" || true; } | while read -r _ chain policy; do
            local was
            was="$(awk -v c=":$chain" '$1 == c { print $2 }' <<<"$before")"
            [ "$policy" = "${was:-ACCEPT}" ] || iptables -t "$table" -P "$chain" "${was:-ACCEPT}" || true
        done
        # (grep reads whole outputs here: with pipefail, grep -q on a pipe can
        # fail its writer.)
        local tables rest
        tables="$(nft list tables)"
        rest="$(iptables -t "$table" -S | grep -v '^-P .* ACCEPT$' || true)"
        if ! grep -qx "table ip $table" "$dir/nft-tables.before" && grep -qx "table ip $table" <<<"$tables" &&
            [ -z "$rest" ]; then
            nft delete table ip "$table"
        fi
    done
}

docker_load_oci() {
    local layout="$1" ref="$2" name="$3" archive
    archive="$(mktemp --suffix=.tar)"
    # docker-archive refuses to write over a file, even an empty one.
    rm -f "$archive"
    skopeo copy --quiet "oci:$layout:$ref" "docker-archive:$archive:$name" &&
        "$DOCKER_CLI" load -i "$archive" >/dev/null
    local status=$?
    rm -f "$archive"
    return $status
}
