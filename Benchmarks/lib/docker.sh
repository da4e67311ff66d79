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
    if [ -f "$dir/dockerd.pid" ] && kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; then
        echo "a dockerd already runs for $dir" >&2
        return 1
    fi
    mkdir -p "$dir"
    # What docker_stop compares with to take back only what dockerd added.
    nft list tables >"$dir/nft-tables.before"
    iptables-save >"$dir/iptables.before"
    sysctl -n net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables >"$dir/sysctl.before" 2>/dev/null || true
    [ -d /run/containerd ] && touch "$dir/run-containerd.before"

    if ! ip link show "$DOCKER_BENCH_BRIDGE" >/dev/null 2>&1; then
        ip link add "$DOCKER_BENCH_BRIDGE" type bridge
        ip addr add "$DOCKER_BENCH_CIDR" dev "$DOCKER_BENCH_BRIDGE"
        ip link set "$DOCKER_BENCH_BRIDGE" up
    fi

    # Not exec'd from a subshell of ours: dockerd must outlive this function.
    dockerd --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
        -H "$sock" --bridge "$DOCKER_BENCH_BRIDGE" --log-level warn \
        </dev/null >"$dir/dockerd.log" 2>&1 &
    local pid=$! tries=0
    until "$DOCKER_CLI" -H "$sock" info >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null || [ $((tries += 1)) -gt 600 ]; then
            echo "dockerd did not answer within 60 s; its log:" >&2
            tail -20 "$dir/dockerd.log" >&2
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
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        # Containers removed through the daemon take their mounts, network
        # namespaces, veths and shims with them.
        local ids
        ids="$("$DOCKER_CLI" -H "$sock" ps -aq 2>/dev/null || true)"
        [ -z "$ids" ] || "$DOCKER_CLI" -H "$sock" rm -f $ids >/dev/null 2>&1 || true
        kill -TERM "$pid" 2>/dev/null || true
        local tries=0
        while kill -0 "$pid" 2>/dev/null && [ $((tries += 1)) -le 300 ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$dir/dockerd.pid"

    # After a SIGKILL its containerd and shims live on: they are the
    # processes whose command line names DIR.
    local proc others
    for proc in /proc/[0-9]*; do
        if tr '\0' ' ' <"$proc/cmdline" 2>/dev/null | grep -qF -- "$dir/"; then
            others+=" ${proc#/proc/}"
        fi
    done
    [ -z "${others:-}" ] || kill -KILL $others 2>/dev/null || true

    # Deepest first, so that each is unmounted before the one it is under.
    local target
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r target; do
        umount -l "$target" 2>/dev/null || true
    done

    ip link show "$DOCKER_BENCH_BRIDGE" >/dev/null 2>&1 && ip link delete "$DOCKER_BENCH_BRIDGE"

    [ -f "$dir/iptables.before" ] && _docker_iptables_restore "$dir"
    if [ -f "$dir/sysctl.before" ]; then
        local forward bridge_nf
        { read -r forward; read -r bridge_nf; } <"$dir/sysctl.before" || true
        [ -z "${forward:-}" ] || sysctl -qw net.ipv4.ip_forward="$forward" || true
        [ -z "${bridge_nf:-}" ] || sysctl -qw net.bridge.bridge-nf-call-iptables="$bridge_nf" || true
    fi
    # containerd puts its shims' sockets in /run/containerd/s whatever its
    # state directory; the directory goes if it was not there before.
    [ -f "$dir/run-containerd.before" ] || rm -rf /run/containerd
    rm -f "$dir/nft-tables.before" "$dir/iptables.before" "$dir/sysctl.before" "$dir/run-containerd.before"
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
        grep '^-A ' <<<"$after" | grep -vxF -f <(grep '^-A ' <<<"$before"; echo '#') | tac |
            while read -r rule; do eval "iptables -t $table -D ${rule#-A }" || true; done
        grep '^-N ' <<<"$after" | grep -vxF -f <(grep '^:' <<<"$before" | awk '{ print "-N " substr($1, 2) }'; echo '#') |
            while read -r _ chain; do iptables -t "$table" -F "$chain"; iptables -t "$table" -X "$chain" || true; done
        # A built-in chain's policy, as it was (ACCEPT where the table was not).
        grep '^-P ' <<<"$after" | while read -r _ chain policy; do
            local was
            was="$(awk -v c=":$chain" '$1 == c { print $2 }' <<<"$before")"
            [ "$policy" = "${was:-ACCEPT}" ] || iptables -t "$table" -P "$chain" "${was:-ACCEPT}"
        done
        if ! grep -qx "table ip $table" "$dir/nft-tables.before" && nft list tables | grep -qx "table ip $table" &&
            ! iptables -t "$table" -S | grep -qv '^-P .* ACCEPT$'; then
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
