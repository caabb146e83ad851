#!/usr/bin/env python3
"""Black-box tests of mpdetd: the real daemon process on a temporary Unix
socket, driven by curl, the mpdet client and raw sockets. Prints
cmocka-style lines ([ RUN ], [ OK ], [ FAILED ]) so tests/run counts them."""
import json, os, random, signal, socket, subprocess, sys, tempfile, threading, time, traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
MPDETD = os.path.join(BUILD, "mpdetd")
MPDET = os.path.join(BUILD, "mpdet")
MODELS = os.environ.get("MPDET_MODEL_DIR", os.path.join(ROOT, "models"))
DATA = "/usr/share/darknet/data"
PHOTOS = ["dog.jpg", "person.jpg", "horses.jpg", "eagle.jpg", "giraffe.jpg", "kite.jpg", "scream.jpg"]
TMP = tempfile.mkdtemp(prefix="mpdetd-test-")
failed = 0


def write_config(name, **extra):
    settings = {
        "socket": os.path.join(TMP, name + ".sock"),
        "cfg": os.path.join(MODELS, "yolov3-tiny.cfg"),
        "weights": os.path.join(MODELS, "yolov3-tiny.weights"),
        "names": os.path.join(MODELS, "coco.names"),
        "timeout": "3",
        "max_body": "4M",
    }
    if os.geteuid() == 0:  # CI runs as root; mpdetd refuses that unless told
        settings["allow_root"] = "yes"
    settings.update({k: str(v) for k, v in extra.items()})
    path = os.path.join(TMP, name + ".conf")
    with open(path, "w") as f:
        for k, v in settings.items():
            f.write("%s = %s\n" % (k, v))
    return path, settings["socket"]


class Daemon:
    def __init__(self, name, env=None, pass_fds=(), args=(), **extra):
        self.conf, self.sock = write_config(name, **extra)
        if "--socket" in args:  # the command line's socket wins
            self.sock = args[list(args).index("--socket") + 1]
        self.log = open(os.path.join(TMP, name + ".log"), "w+")
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.update(env or {})
        self.proc = subprocess.Popen([MPDETD, "-c", self.conf] + list(args), stdout=self.log,
                                     stderr=self.log, env=e, pass_fds=pass_fds)

    def wait_ready(self, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise AssertionError("mpdetd exited early:\n" + self.logtext())
            try:
                code, _ = http(self.sock, "GET", "/v1/health")
                if code == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("mpdetd not ready:\n" + self.logtext())

    def logtext(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("mpdetd did not stop on SIGTERM")
        self.show_sanitizer_report()
        return self.proc.returncode

    def show_sanitizer_report(self):
        """A sanitizer's report goes to the daemon's log, which the tests
        otherwise never print: CI would show only the exit status."""
        text = self.logtext()
        at = text.find("==ERROR: ")
        if at < 0:
            at = text.find("WARNING: ThreadSanitizer")
        if at >= 0:
            print("mpdetd's log (%s), from its sanitizer report:\n%s" % (self.log.name, text[at:][:20000]),
                  flush=True)


def raw(sock_path, data, timeout=60):
    """Sends data over the Unix socket and returns every byte the daemon
    sends back until it closes the connection."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    s.sendall(data)
    out = read_all(s)
    s.close()
    return out


def read_all(s):
    """Every byte from socket s until the peer closes."""
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk


def http(sock_path, method, path, body=b"", headers=None, timeout=60):
    """One request over the Unix socket; returns (status, body bytes)."""
    head = "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n" % (
        method, path, len(body))
    for k, v in (headers or {}).items():
        head += "%s: %s\r\n" % (k, v)
    data = raw(sock_path, head.encode() + b"\r\n" + body, timeout)
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)


def test(fn):
    global failed
    print("[ RUN      ] " + fn.__name__, flush=True)
    try:
        fn()
        print("[       OK ] " + fn.__name__, flush=True)
    except Exception:
        traceback.print_exc(limit=4, file=sys.stdout)
        print("[  FAILED  ] " + fn.__name__, flush=True)
        failed += 1


D = None  # the shared daemon


def dets(obj):
    return sorted((d["label"], round(d["confidence"], 4), tuple(round(d["box"][k], 1) for k in ("x0", "y0", "x1", "y1")))
                  for d in obj["detections"])


def test_detections_equal_the_engine():
    paths = [os.path.join(DATA, p) for p in PHOTOS]
    local = json.loads(run(MPDET, "detect", "--json", *paths).stdout)
    for p, loc in zip(paths, local):
        with open(p, "rb") as f:
            code, body = http(D.sock, "POST", "/v1/detect", f.read())
        assert code == 200, body
        remote = json.loads(body)
        assert dets(remote) == dets(loc), (p, dets(remote), dets(loc))
        assert remote["image"] == {"width": loc["width"], "height": loc["height"]}
        # backend auto: the CPU here; make test-gpu expects the GPU.
        expect = os.environ.get("MPDET_EXPECT_BACKEND", "cpu")
        assert remote["backend"] == expect and remote["plan"]["generation"] >= 1
        for k in ("decode", "preprocess", "inference", "postprocess", "total"):
            assert k in remote["timings_ms"]
    # curl and the mpdet client agree too
    out = run("curl", "-s", "--unix-socket", D.sock, "--data-binary", "@" + paths[0],
              "http://localhost/v1/detect?thresh=0.5").stdout
    labels = sorted(d["label"] for d in json.loads(out)["detections"])
    # darknet's own `detect` threshold: dog (57%) and the second car (52%) stay
    assert labels == ["bicycle", "car", "car", "dog", "truck"], labels
    cli = run(MPDET, "detect", "--socket", D.sock, paths[0])
    assert cli.returncode == 0 and "dog: 57%" in cli.stdout, cli.stdout + cli.stderr


def test_deepstack_endpoint_with_curl_form():
    out = run("curl", "-s", "--unix-socket", D.sock, "-F", "image=@" + os.path.join(DATA, "dog.jpg"),
              "-F", "min_confidence=0.5", "http://localhost/v1/vision/detection").stdout
    r = json.loads(out)
    assert r["success"] is True
    confs = [p["confidence"] for p in r["predictions"]]
    assert confs == sorted(confs, reverse=True) and min(confs) >= 0.5
    assert {"bicycle", "car", "truck"} <= {p["label"] for p in r["predictions"]}
    for p in r["predictions"]:
        assert all(isinstance(p[k], int) for k in ("x_min", "y_min", "x_max", "y_max"))
    out = run("curl", "-s", "--unix-socket", D.sock, "-F", "picture=@" + os.path.join(DATA, "dog.jpg"),
              "http://localhost/v1/vision/detection").stdout
    r = json.loads(out)
    assert r["success"] is False and r["code"] == 400 and "image" in r["error"]


def good_request_still_works():
    with open(os.path.join(DATA, "eagle.jpg"), "rb") as f:
        code, body = http(D.sock, "POST", "/v1/detect", f.read())
    assert code == 200 and b"bird" in body, (code, body)


def png_header(w, h):
    import struct, zlib
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_bad_inputs_get_errors_and_the_daemon_keeps_serving():
    with open(os.path.join(DATA, "dog.jpg"), "rb") as f:
        jpeg = f.read()
    cases = [
        ("empty body", "POST", "/v1/detect", b"", 400),
        ("random bytes", "POST", "/v1/detect", bytes(random.Random(1).randrange(256) for _ in range(5000)), 400),
        ("truncated jpeg", "POST", "/v1/detect", jpeg[:1000], 400),
        ("100000x100000 png", "POST", "/v1/detect", png_header(100000, 100000), 413),
        ("bad thresh", "POST", "/v1/detect?thresh=2", jpeg, 400),
        ("unknown path", "GET", "/v2/nothing", b"", 404),
        ("wrong method", "GET", "/v1/detect", b"", 405),
        ("wrong method 2", "DELETE", "/v1/plan", b"", 405),
    ]
    for name, method, path, body, want in cases:
        code, reply = http(D.sock, method, path, body)
        assert code == want, (name, code, reply)
        assert "error" in json.loads(reply), (name, reply)
        good_request_still_works()
    # over the body limit (4M here): refused, connection dropped or 413
    big = b"\xff" * (5 << 20)
    try:
        code, _ = http(D.sock, "POST", "/v1/detect", big)
        assert code == 413, code
    except OSError:
        pass
    good_request_still_works()


def test_malformed_slow_and_vanishing_clients():
    # malformed HTTP
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(D.sock)
    s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
    data = s.recv(1000)
    s.close()
    assert data == b"" or b" 400 " in data.split(b"\r\n")[0], data
    good_request_still_works()
    # slow client: promises a body and never sends it -> dropped after the timeout (3 s)
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(15)
    s.connect(D.sock)
    s.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
    t0 = time.time()
    data = s.recv(1000)
    assert time.time() - t0 < 12 and (data == b"" or b" 408 " in data or b" 400 " in data), data
    s.close()
    good_request_still_works()
    # disconnects mid-request, and right after sending a full request
    with open(os.path.join(DATA, "dog.jpg"), "rb") as f:
        jpeg = f.read()
    for cut in (len(jpeg) // 2, len(jpeg)):
        s = socket.socket(socket.AF_UNIX)
        s.connect(D.sock)
        s.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg[:cut])
        s.close()
    time.sleep(0.5)
    good_request_still_works()
    assert D.proc.poll() is None


def test_reload_under_load():
    plan = os.path.join(TMP, "reload.plan")
    with open(plan, "w") as f:
        f.write("[plan]\ndefault = fp32\n")
    d = Daemon("reload", plan=plan)
    stop = threading.Event()
    try:
        d.wait_ready()
        with open(os.path.join(DATA, "dog.jpg"), "rb") as f:
            jpeg = f.read()
        results = []

        def client():
            while not stop.is_set():
                sent = time.time()  # a reply names the plan that ran: when it was sent counts
                try:
                    code, body = http(d.sock, "POST", "/v1/detect", jpeg)
                    results.append((sent, code, json.loads(body)))
                except (OSError, ValueError) as e:
                    results.append((sent, -1, {"error": str(e)}))

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(1)
        with open(plan, "w") as f:
            f.write("[plan]\ndefault = int8\ncalibration = %s/config/yolov3-tiny.calib\n" % ROOT)
        d.proc.send_signal(signal.SIGHUP)
        end = time.time() + 30
        while time.time() < end:
            code, body = http(d.sock, "GET", "/v1/plan")
            if json.loads(body)["generation"] >= 2:
                break
            time.sleep(0.1)
        t_new = time.time()
        time.sleep(1.5)
        # a bad plan keeps the old one
        with open(plan, "w") as f:
            f.write("[plan]\ndefault = int9\n")
        code, body = http(d.sock, "POST", "/v1/reload")
        r = json.loads(body)
        assert code == 422 and r["reloaded"] is False and "int9" in r["error"], (code, r)
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
        assert results and all(code == 200 for _, code, _ in results), [r for _, c, r in results if c != 200][:3]
        gens = [r["plan"]["generation"] for _, _, r in results]
        assert max(gens) == 2 and min(gens) == 1, set(gens)
        assert all(r["plan"]["generation"] == 2 for t, _, r in results if t > t_new + 0.5)
        code, body = http(d.sock, "GET", "/v1/plan")
        p = json.loads(body)
        assert p["generation"] == 2 and p["convolutions"]["int8"] == 13, p
        m = http(d.sock, "GET", "/metrics")[1].decode()
        assert 'mpdetd_reloads_total{result="ok"} 1' in m and 'mpdetd_reloads_total{result="error"} 1' in m, m
        assert "reload failed, the old plan keeps serving" in d.logtext()
    finally:
        stop.set()
        assert d.stop() == 0


def test_check_config():
    good, _ = write_config("check-good", plan=os.path.join(ROOT, "config/int8_all.plan"))
    r = run(MPDETD, "--check-config", "-c", good)
    assert r.returncode == 0, r.stderr
    bad = os.path.join(TMP, "bad.conf")
    with open(bad, "w") as f:
        f.write("socket = /tmp/x.sock\nthreds = 4\n")
    r = run(MPDETD, "--check-config", "-c", bad)
    assert r.returncode != 0 and bad + ":2:" in r.stderr, r.stderr
    badplan = os.path.join(TMP, "bad.plan")
    with open(badplan, "w") as f:
        f.write("[layers]\n1 = int8\n")
    conf, _ = write_config("check-badplan", plan=badplan)
    r = run(MPDETD, "--check-config", "-c", conf)
    assert r.returncode != 0 and badplan + ":2:" in r.stderr, r.stderr


def test_sigterm_drains_queued_requests():
    d = Daemon("drain", queue_depth=32)
    d.wait_ready()
    with open(os.path.join(DATA, "kite.jpg"), "rb") as f:
        jpeg = f.read()
    codes = []

    def one():
        codes.append(http(d.sock, "POST", "/v1/detect", jpeg)[0])

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    d.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    assert d.proc.wait(30) == 0
    assert codes == [200] * 6, codes
    assert not os.path.exists(d.sock)


def test_live_socket_is_not_stolen_and_stale_is_replaced():
    d2 = subprocess.run([MPDETD, "-c", D.conf], capture_output=True, text=True, timeout=60)
    assert d2.returncode != 0 and "another mpdetd" in d2.stderr, d2.stderr
    stale = os.path.join(TMP, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()  # the file stays, nobody listens
    d = Daemon("stale", socket=stale)
    try:
        d.wait_ready()
        assert "replacing stale socket" in d.logtext()
    finally:
        assert d.stop() == 0


def test_socket_activation_and_notify():
    notify = os.path.join(TMP, "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(notify)
    ns.settimeout(30)
    path = os.path.join(TMP, "activated.sock")
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(16)
    conf, _ = write_config("activated", socket=os.path.join(TMP, "unused.sock"))
    log = open(os.path.join(TMP, "activated.log"), "w")
    # LISTEN_PID must be the daemon's own pid: set it in the child before
    # exec, and the socket moved to fd 3 there (in this process fd 3 may be
    # the shared daemon's log).
    script = ('import os,sys; fd=int(sys.argv[1]); os.dup2(fd, 3); fd != 3 and os.close(fd); '
              'os.environ["LISTEN_PID"]=str(os.getpid()); os.execv(sys.argv[2], sys.argv[2:])')
    env = dict(os.environ, LISTEN_FDS="1", NOTIFY_SOCKET=notify)
    p = subprocess.Popen([sys.executable, "-c", script, str(ls.fileno()), MPDETD, "-c", conf], env=env,
                         pass_fds=(ls.fileno(),), stdout=log, stderr=log)
    try:
        msgs = []
        while not any("READY=1" in m for m in msgs):
            msgs.append(ns.recv(4096).decode())
        code, body = http(path, "GET", "/v1/health")
        assert code == 200, body
        assert not os.path.exists(os.path.join(TMP, "unused.sock"))
        p.send_signal(signal.SIGHUP)
        got = []
        while not (any("RELOADING=1" in m for m in got) and any("READY=1" in m for m in got)):
            got.append(ns.recv(4096).decode())
        assert any("MONOTONIC_USEC=" in m for m in got if "RELOADING=1" in m), got
        p.send_signal(signal.SIGTERM)
        stopping = ns.recv(4096).decode()
        assert "STOPPING=1" in stopping, stopping
        assert p.wait(20) == 0
        assert os.path.exists(path)  # a passed socket belongs to systemd
    finally:
        if p.poll() is None:
            p.kill()
        ls.close()
        ns.close()


def test_max_clients():
    d = Daemon("clients", max_clients=3)
    try:
        d.wait_ready()
        # closed connections are forgotten: many in a row all succeed
        for _ in range(10):
            assert http(d.sock, "GET", "/v1/health")[0] == 200
        # at the limit an idle kept-alive client makes room for a new one;
        # tests/test_daemon_faults.py checks who is closed and when 503 comes
        held = []
        for _ in range(3):
            c = socket.socket(socket.AF_UNIX)
            c.settimeout(10)
            c.connect(d.sock)
            c.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b" 200 " in c.recv(4096).split(b"\r\n")[0]
            held.append(c)
        assert http(d.sock, "GET", "/v1/health")[0] == 200
        for c in held:
            c.close()
    finally:
        assert d.stop() == 0


def test_health_plan_metrics_and_client():
    r = run(MPDET, "health", "--socket", D.sock)
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "ok"
    r = run(MPDET, "plan", "--socket", D.sock)
    p = json.loads(r.stdout)
    assert len(p["layers"]) == 24 and p["layers"][12]["precision"] == "fp32"
    r = run(MPDET, "metrics", "--socket", D.sock)
    for name in ("mpdetd_requests_total", "mpdetd_request_duration_seconds_bucket",
                 "mpdetd_inference_duration_seconds_count", "mpdetd_layer_seconds_total",
                 "mpdetd_queue_depth", "mpdetd_build_info"):
        assert name in r.stdout, name
    r = run(MPDET, "health", "--socket", os.path.join(TMP, "nobody.sock"))
    assert r.returncode != 0 and "is mpdetd running" in r.stderr


if __name__ == "__main__":
    if not os.path.exists(MPDETD):
        print("[ RUN      ] daemon_tests\n[  SKIPPED ] daemon_tests: %s not built" % MPDETD)
        sys.exit(0)
    D = Daemon("shared")
    try:
        D.wait_ready()
        for t in (test_detections_equal_the_engine, test_deepstack_endpoint_with_curl_form,
                  test_bad_inputs_get_errors_and_the_daemon_keeps_serving,
                  test_malformed_slow_and_vanishing_clients, test_health_plan_metrics_and_client,
                  test_live_socket_is_not_stolen_and_stale_is_replaced, test_check_config,
                  test_max_clients,
                  test_reload_under_load, test_sigterm_drains_queued_requests,
                  test_socket_activation_and_notify):
            test(t)
    finally:
        rc = D.stop()
        if rc != 0:
            print("[  FAILED  ] shared_daemon_exit_status (%s)" % rc)
            failed += 1
    print("[==========] daemon tests done, %d failed" % failed)
    sys.exit(1 if failed else 0)
