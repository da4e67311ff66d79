#!/usr/bin/env bash
# Load-balanced service endpoints: requests per second through a service's
# published port against a direct connection to one replica, and the
# requests that fail while the service scales and rolls out under load.
#
#   sudo Benchmarks/balance.sh [--replicas N] [--seconds S] [--clients N] [--rounds N] [--cpus C]
#
#   GANTRY_BENCH_BIN=DIR uses the gantry-bench in DIR instead of building one
#   (built from another commit, for a before/after).
#
# The service runs busybox `httpd -f` (a process per connection) with an
# HTTP readiness probe; the load is N client threads on the host, each
# making HTTP/1.0 requests one after another, a new connection each (every
# connection is balanced anew, and closed with a reset once the server has
# closed, so that the server's TIME_WAIT sockets do not stall the client's
# reused ports for a second, direct or balanced). Direct and balanced
# loads alternate, and
# the medians of the rounds are compared: the ratio of 1 replica behind the
# port to the replica directly is what the balancing costs; the ratios of
# more replicas say how far it scales on this machine's cores, which the
# clients share with the servers; with --cpus C (each replica limited to C
# CPUs, as a service sized for its share of a bigger machine), one replica
# is the limit and the port's rate grows with the replicas. Then, under
# the same load: a scale to
# N+2 and back, and a rolling update of N replicas; every failed request
# (refused, reset, timed out after 2 s, or not a 200) is counted.
#
# Every address contacted is 127.0.0.1 or a replica's address on the
# benchmark's own bridge network; the state root is on tmpfs and removed.
set -euo pipefail
cd "$(dirname "$0")/.."

arguments=()
while [ $# -gt 0 ]; do
    case "$1" in
        --replicas|--seconds|--clients|--rounds|--cpus) arguments+=("$1" "$2"); shift 2 ;;
        *) echo "usage: $0 [--replicas N] [--seconds S] [--clients N] [--rounds N] [--cpus C]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root" >&2; exit 1; }
source Benchmarks/lib/busybox.sh

work="${GANTRY_BENCH_DIR:-/var/tmp/gantry-bench}/balance"
state="/dev/shm/gantry-bench-balance-$$"
rm -rf "$work" && mkdir -p "$work" "$state"
trap 'rm -rf "$work" "$state"' EXIT

busybox_rootfs "$work/rootfs" sh mkdir httpd cat echo
source Benchmarks/lib/bench-binary.sh

echo "== balance"
"$bench" balance --rootfs "$work/rootfs" --root "$state/root" "${arguments[@]}" | sed 's/^/   /'
