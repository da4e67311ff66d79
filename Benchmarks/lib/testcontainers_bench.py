"""Testcontainers for Python against Docker, the measure Gantry's test
containers are compared with.

    /opt/gantry-testcontainers/bin/python Benchmarks/lib/testcontainers_bench.py \\
        --image busybox:bench --rounds 10 --sequence 20 --output docker.json
    ... --image busybox:bench --kill-test --output kill.json

The Docker daemon is the one DOCKER_HOST names (Benchmarks/lib/docker.sh's
docker_start exports it); the busybox image must be loaded there already.
Each container runs busybox httpd on port 80, published on a host port.

Per round: from DockerContainer.start() to ready (its port wait passed and one
GET on 127.0.0.1 answered "ok"), then stop(), which removes the container.
Then --sequence throwaway containers one after another. With --kill-test, a
child process starts --kill-count containers and is SIGKILLed: without Ryuk
nothing removes them, and the JSON says how many are left (in `docker ps -a`)
and running, right after the kill and 2 s later.
"""

import argparse
import http.client
import importlib.metadata
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

# Read by testcontainers when it is imported, so set first. Ryuk's image
# cannot be pulled here; without it nothing reaps a killed process's
# containers (which --kill-test shows).
os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
# Where /.dockerenv exists testcontainers takes the default gateway for the
# Docker host; the daemon is local and its ports are published on this host.
os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")

import docker  # noqa: E402
from testcontainers.core.container import DockerContainer  # noqa: E402
from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID  # noqa: E402
from testcontainers.core.wait_strategies import PortWaitStrategy  # noqa: E402

HTTPD = "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -v -p 80 -h /www"


def httpd_container(image, poll_interval):
    return (
        DockerContainer(image)
        .with_exposed_ports(80)
        .with_command(["sh", "-c", HTTPD])
        .waiting_for(PortWaitStrategy(80).with_poll_interval(poll_interval).with_startup_timeout(30))
    )


def get_ok(container, poll_interval, deadline=10.0):
    """One GET on the mapped port; returns how many tries failed first.

    Docker's userland proxy accepts on the host port before httpd listens in
    the container, so a connection that the port wait made may still be
    closed unanswered: such a GET is tried again, and counted.
    """
    url = f"http://127.0.0.1:{container.get_exposed_port(80)}/"
    failed = 0
    start = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode().strip()
            if body != "ok":
                raise RuntimeError(f"GET {url} answered {body!r}")
            return failed
        except (OSError, http.client.HTTPException):
            failed += 1
            if time.monotonic() - start > deadline:
                raise
            time.sleep(poll_interval)


def ms(seconds):
    return round(seconds * 1000, 1)


def tool_name(client):
    return f"testcontainers-python {importlib.metadata.version('testcontainers')} with Docker {client.version()['Version']}"


def measure(args, client):
    ready, removed, retries = [], [], 0
    for _ in range(args.rounds):
        container = httpd_container(args.image, args.poll_interval)
        try:
            start = time.perf_counter()
            container.start()
            retries += get_ok(container, args.poll_interval)
            ready.append(time.perf_counter() - start)
        finally:
            start = time.perf_counter()
            container.stop()
            removed.append(time.perf_counter() - start)

    start = time.perf_counter()
    for _ in range(args.sequence):
        with httpd_container(args.image, args.poll_interval) as container:
            retries += get_ok(container, args.poll_interval)
    sequence = time.perf_counter() - start

    return {
        "tool": tool_name(client),
        "ready_ms": [ms(s) for s in ready],
        "removed_ms": [ms(s) for s in removed],
        "ready_median_ms": ms(statistics.median(ready)),
        "removed_median_ms": ms(statistics.median(removed)),
        "sequence_count": args.sequence,
        "sequence_total_ms": ms(sequence),
        "poll_interval_s": args.poll_interval,
        "get_retries": retries,
    }


def child(args):
    """The process that is killed: starts its containers, says so, waits."""
    for _ in range(args.kill_count):
        get_ok(httpd_container(args.image, args.poll_interval).start(), args.poll_interval)
    print(SESSION_ID, flush=True)
    time.sleep(3600)


def kill_test(args, client):
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--image", args.image, "--child", "--kill-count", str(args.kill_count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    session = process.stdout.readline().strip()
    if not session:
        process.wait()
        raise SystemExit("the child did not start its containers")
    process.send_signal(signal.SIGKILL)
    process.wait()

    # What `docker ps -a` lists, less other sessions' containers.
    def left():
        return client.containers.list(all=True, filters={"label": f"{LABEL_SESSION_ID}={session}"})

    def running(containers):
        return sum(1 for c in containers if c.status == "running")

    after_kill = left()
    time.sleep(2)
    remaining = left()
    for container in remaining:
        container.remove(force=True, v=True)
    return {
        "tool": tool_name(client),
        "started": args.kill_count,
        "left_after_kill": len(after_kill),
        "left_after_2s": len(remaining),
        "running_after_kill": running(after_kill),
        "running_after_2s": running(remaining),
        "ryuk": "disabled",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="a busybox image already in Docker")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sequence", type=int, default=20)
    parser.add_argument("--output", help="JSON file (else stdout)")
    parser.add_argument("--kill-test", action="store_true", help="what a SIGKILLed test process leaves")
    parser.add_argument("--kill-count", type=int, default=2, help="containers the killed process starts")
    # Gantry's port wait polls every 25 ms; testcontainers' default is 1 s.
    parser.add_argument("--poll-interval", type=float, default=0.025, help="seconds between wait checks")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child(args)
        return
    if "DOCKER_HOST" not in os.environ:
        raise SystemExit("DOCKER_HOST is not set (Benchmarks/lib/docker.sh's docker_start sets it)")
    client = docker.from_env()
    try:
        client.images.get(args.image)
    except docker.errors.ImageNotFound:
        raise SystemExit(f"{args.image} is not in Docker (docker_load_oci loads it)") from None

    result = kill_test(args, client) if args.kill_test else measure(args, client)
    text = json.dumps(result, indent=2)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
