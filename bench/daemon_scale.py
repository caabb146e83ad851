#!/usr/bin/env python3
"""Memory and throughput of the real mpdetd under concurrent clients
(issue 12): for each configuration, a daemon on a temporary socket, 8
client threads posting dog.jpg for a fixed time after a warm-up; prints
images/s, resident memory (VmRSS after the run, VmHWM the peak) and the
ratios against the first row.

    bench/daemon_scale.py [--seconds S] [--clients N] [CONFIG ...]

CONFIG is workers x threads [x max_batch [x batch_window_us]], e.g.
"1x2" "4x1" "2x1x4x2000"; the default set answers the issue's targets.
Never fails on speed; exits 1 only when a daemon cannot start."""
import argparse, os, sys, threading, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import test_daemon as td  # noqa: E402

DEFAULT = ["1x2", "2x1", "4x1", "4x2"]


def vm(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def run_config(spec, seconds, clients, image, extra):
    parts = [int(x) for x in spec.split("x")]
    workers, threads = parts[0], parts[1]
    settings = dict(workers=workers, threads=threads, queue_depth=64, max_clients=256, timeout=30)
    settings.update(extra)
    if len(parts) > 2:
        settings["max_batch"] = parts[2]
    if len(parts) > 3:
        settings["batch_window_us"] = parts[3]
    name = "bench-" + spec
    d = td.Daemon(name, **settings)
    try:
        d.wait_ready(120)
        stop = time.time() + 2.0  # warm-up: every worker runs a few passes
        count = [0] * clients
        errors = [0]

        def client(k, until, counting):
            while time.time() < until:
                code, _ = td.http(d.sock, "POST", "/v1/detect", image)
                if code != 200:
                    errors[0] += 1
                elif counting:
                    count[k] += 1

        for phase, until in (("warm", stop), ("run", None)):
            if phase == "run":
                t0 = time.time()
                until = t0 + seconds
            ths = [threading.Thread(target=client, args=(k, until, phase == "run"))
                   for k in range(clients)]
            for t in ths:
                t.start()
            for t in ths:
                t.join()
        wall = time.time() - t0
        rss, hwm = vm(d.proc.pid, "VmRSS"), vm(d.proc.pid, "VmHWM")
        return dict(spec=spec, ips=sum(count) / wall, rss=rss, hwm=hwm, errors=errors[0])
    finally:
        d.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--plan", default="", help="plan file for every daemon")
    ap.add_argument("configs", nargs="*", default=DEFAULT)
    a = ap.parse_args()
    with open(os.path.join(td.DATA, "dog.jpg"), "rb") as f:
        image = f.read()
    extra = {"plan": a.plan} if a.plan else {}
    print("daemon scale: %d clients posting dog.jpg, %g s per row after 2 s warm-up%s"
          % (a.clients, a.seconds, ", plan " + a.plan if a.plan else ""))
    print("%-14s %9s %9s %9s %8s %8s %7s" % ("workers x thr", "images/s", "RSS MB", "peak MB",
                                             "ips/1st", "RSS/1st", "errors"))
    rows = []
    for spec in a.configs:
        try:
            r = run_config(spec, a.seconds, a.clients, image, extra)
        except AssertionError as e:
            print("%-14s daemon failed: %s" % (spec, str(e).splitlines()[0]))
            return 1
        rows.append(r)
        print("%-14s %9.2f %9.1f %9.1f %8.2f %8.2f %7d" % (
            r["spec"], r["ips"], r["rss"], r["hwm"], r["ips"] / rows[0]["ips"],
            r["rss"] / rows[0]["rss"], r["errors"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
