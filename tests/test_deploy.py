#!/usr/bin/env python3
"""deploy/haproxy.cfg for real: HAProxy in front of two mpdetd instances on
loopback TCP. 200 detection requests from 4 clients; one instance is killed
(SIGKILL) after the first 50 answers; every request must still be answered
with the same detections, and the survivor must have served the rest.
Skips (and says why) where haproxy is not installed."""
import http.client, json, os, shutil, signal, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_daemon as td
from test_daemon import DATA, ROOT, TMP, Daemon, test
from test_daemon_faults import free_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def post(port, body, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", "/v1/detect", body, {"Content-Type": "image/jpeg"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def labels(reply):
    return td.dets(json.loads(reply))


def test_haproxy_pair_survives_a_killed_instance():
    pa, pb, plb = free_port(), free_port(), free_port()
    a = Daemon("deploy-a", tcp_listen="127.0.0.1:%d" % pa, timeout="30")
    b = Daemon("deploy-b", tcp_listen="127.0.0.1:%d" % pb, timeout="30")
    env = dict(os.environ, MPDET_LB="127.0.0.1:%d" % plb, MPDET_A="127.0.0.1:%d" % pa,
               MPDET_B="127.0.0.1:%d" % pb)
    log = open(os.path.join(TMP, "haproxy.log"), "w+")
    lb = None
    try:
        a.wait_ready()
        b.wait_ready()
        lb = subprocess.Popen([HAPROXY, "-db", "-f", os.path.join(ROOT, "deploy", "haproxy.cfg")],
                              env=env, stdout=log, stderr=log)
        with open(os.path.join(DATA, "dog.jpg"), "rb") as f:
            body = f.read()
        want = None
        end = time.time() + 20
        while time.time() < end:  # HAProxy up and both servers checked
            try:
                code, reply = post(plb, body)
                if code == 200:
                    want = labels(reply)
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert want, "no answer through HAProxy"
        results, lock, answered = [], threading.Lock(), threading.Event()

        def client(n):
            for _ in range(n):
                try:
                    code, reply = post(plb, body)
                    got = labels(reply) if code == 200 else reply[:200]
                except (OSError, http.client.HTTPException) as e:
                    code, got = -1, repr(e)
                with lock:
                    results.append((code, got))
                    if len(results) >= 50:
                        answered.set()

        threads = [threading.Thread(target=client, args=(50,)) for _ in range(4)]
        for t in threads:
            t.start()
        assert answered.wait(120), "50 answers did not come"
        a.proc.send_signal(signal.SIGKILL)  # mid-run: requests are in flight on both
        a.proc.wait()
        for t in threads:
            t.join(300)
        bad = [r for r in results if r[0] != 200 or r[1] != want]
        served_b = int(float(td_metric(b, 'mpdetd_requests_total{endpoint="detect",code="200"}')))
        print("    200 requests: %d answered as expected, %d not; instance b served %d"
              % (len(results) - len(bad), len(bad), served_b))
        assert len(results) == 200, len(results)
        assert not bad, bad[:3]
        assert served_b >= 150 - 2, served_b  # everything after the kill, at least
    finally:
        if lb and lb.poll() is None:
            lb.terminate()
            lb.wait(10)
        log.flush()
        if lb and lb.returncode not in (0, -15, 143):
            print(open(log.name).read()[-2000:])
        b.stop()
        if a.proc.poll() is None:
            a.stop()


def td_metric(d, name):
    text = td.http(d.sock, "GET", "/metrics")[1].decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return line.split()[-1]
    raise AssertionError("no metric %s in:\n%s" % (name, text[:1500]))


if __name__ == "__main__":
    if not os.access(HAPROXY, os.X_OK):
        print("[ RUN      ] haproxy_pair_survives_a_killed_instance\n"
              "[  SKIPPED ] haproxy_pair_survives_a_killed_instance: haproxy is not installed "
              "(apt-get install haproxy)")
        sys.exit(0)
    test(test_haproxy_pair_survives_a_killed_instance)
    print("[==========] deploy tests done, %d failed" % td.failed)
    sys.exit(1 if td.failed else 0)
