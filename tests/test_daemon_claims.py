#!/usr/bin/env python3
"""The daemon's README claims, each checked black-box (issue 11, item 5):
the real mpdetd on a real socket, real photos, no mocks, no speed
assertions. Helpers come from tests/test_daemon.py and
tests/test_daemon_faults.py; lines are cmocka-style, as there.

Claims already covered elsewhere (not repeated here):
- queue full -> 503 with Retry-After: 1: test_daemon_faults.py
  test_queue_full_gets_503;
- the TCP listener with api_key (401 without the key, 200 with it in a
  header, the query or the form; health needs none; no reload without a
  key): test_daemon_faults.py test_tcp_listener_key; loopback-only
  addresses: tests/test_daemon_config.c test_tcp_listen_forms."""
import json, os, random, re, signal, struct, sys, threading, time, zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_daemon as td
from test_daemon import DATA, MPDET, MPDETD, MODELS, TMP, Daemon, http, test, write_config
from test_daemon_faults import free_port, keepalive_health, metric, photo, tcp_request

D = None  # the shared daemon: one worker, a TCP listener, nothing else touches it
D_PORT = None


# ---- helpers ------------------------------------------------------------

def reply(sock, method, path, body=b"", headers=None):
    """One request; returns (status, headers as a lower-case dict, body)."""
    head = "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n" % (
        method, path, len(body))
    for k, v in (headers or {}).items():
        head += "%s: %s\r\n" % (k, v)
    data = td.raw(sock, head.encode() + b"\r\n" + body)
    top, rest = data.split(b"\r\n\r\n", 1)
    lines = top.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    return int(lines[0].split(" ", 2)[1]), hdrs, rest


def scrape(d):
    """Every metric series of /metrics: {'name{labels}': value}."""
    code, body = http(d.sock, "GET", "/metrics")
    assert code == 200, code
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def delta(before, after, key):
    return after.get(key, 0.0) - before.get(key, 0.0)


def histograms(m):
    """{(name, labels without le): [(le, cumulative count), ...]} in text order."""
    out = {}
    for key, v in m.items():
        g = re.match(r'^(\w+)_bucket\{(.*?),?le="([^"]+)"\}$', key)
        if g:
            out.setdefault((g.group(1), g.group(2)), []).append((g.group(3), v))
    return out


def series(name, labels):
    return "%s{%s}" % (name, labels) if labels else name


def check_histograms(m):
    """Buckets ascend in le and never decrease; +Inf equals _count."""
    hs = histograms(m)
    assert hs, "no histograms in /metrics"
    for (name, labels), buckets in hs.items():
        les = [float(le) for le, _ in buckets]
        assert les == sorted(les) and les[-1] == float("inf"), (name, labels, les)
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), (name, labels, buckets)
        assert counts[-1] == m[series(name + "_count", labels)], (name, labels)
    return hs


def wait_for(cond, what, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def wait_log(d, text, timeout=10):
    wait_for(lambda: text in d.logtext(), repr(text) + " in the log:\n" + d.logtext()[-3000:], timeout)


def detect(sock, jpeg, query=""):
    code, body = http(sock, "POST", "/v1/detect" + query, jpeg)
    assert code == 200, (code, body)
    return json.loads(body)


def cli_dets(path, *args):
    """The mpdet command line's own engine (no daemon) on one photo."""
    r = td.run(MPDET, "detect", "--json", path, *args)
    assert r.returncode == 0, r.stderr
    return td.dets(json.loads(r.stdout)[0])


# ---- 1. loading answers 503 ---------------------------------------------

_loading = {}


def loading_observations():
    """Starts a daemon whose worker blocks while loading: its class names
    file is a FIFO nobody writes yet, so the model cannot finish loading
    while the socket (bound before the workers start) already answers.
    Records the replies seen then, feeds the FIFO, and records what the
    daemon does once ready. Runs once; both loading tests read it."""
    if _loading:
        return _loading
    fifo = os.path.join(TMP, "loading.names")
    os.mkfifo(fifo)
    d = Daemon("loading", names=fifo, workers=1)
    fed = False
    try:
        # the socket answers as soon as it exists: 503 while loading
        end = time.time() + 30
        while True:
            assert d.proc.poll() is None, d.logtext()
            assert time.time() < end, "no answer while loading:\n" + d.logtext()
            try:
                _loading["health"] = reply(d.sock, "GET", "/v1/health")
                break
            except (OSError, IndexError, ValueError):
                time.sleep(0.02)
        _loading["detect"] = reply(d.sock, "POST", "/v1/detect", photo())
        _loading["metrics"] = reply(d.sock, "GET", "/metrics")
        _loading["health_again"] = reply(d.sock, "GET", "/v1/health")
        # the worker opens the FIFO for reading once the weights are in;
        # a non-blocking open for writing succeeds only then
        end = time.time() + 30
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                assert d.proc.poll() is None and time.time() < end, d.logtext()
                time.sleep(0.02)
        with open(os.path.join(MODELS, "coco.names"), "rb") as f:
            names = f.read()
        os.set_blocking(fd, True)
        os.write(fd, names)
        os.close(fd)
        fed = True
        d.wait_ready()
        _loading["ready_metrics"] = scrape(d)
        _loading["ready_health"] = reply(d.sock, "GET", "/v1/health")
        _loading["ready_detect"] = reply(d.sock, "POST", "/v1/detect", photo())
    finally:
        if fed:
            _loading["exit"] = d.stop()
        else:  # its worker is stuck opening the FIFO: SIGTERM would wait for it
            d.proc.kill()
            d.proc.wait()
    return _loading


def test_loading_answers_503_then_serves():
    """README: GET /v1/health is 503 while loading, 200 when serving; a
    detection while the model loads gets 503; the daemon then serves."""
    o = loading_observations()
    for k in ("health", "health_again", "detect"):
        code, _, body = o[k]
        assert code == 503, (k, code, body)
        assert json.loads(body) == {"error": "loading the model", "status": 503}, (k, body)
    code, _, body = o["metrics"]  # /metrics answers while loading
    assert code == 200 and b'mpdetd_build_info{version="' in body and b'backend="loading"' in body, body
    assert b'mpdetd_requests_total{endpoint="health",code="503"} 1' in body, body
    assert b'mpdetd_requests_total{endpoint="detect",code="503"} 1' in body, body
    code, _, body = o["ready_health"]
    assert code == 200 and json.loads(body)["status"] == "ok", body
    code, _, body = o["ready_detect"]
    assert code == 200 and "dog" in {x["label"] for x in json.loads(body)["detections"]}, body
    assert o["exit"] == 0


def test_loading_503_carries_retry_after():
    """README "Errors": every 503 carries Retry-After. Regression: a
    detection refused while the model loaded got 503 without the header
    (only the queue-full 503 had it)."""
    o = loading_observations()
    code, hdrs, body = o["detect"]
    assert code == 503, (code, body)
    assert hdrs.get("retry-after") == "1", \
        "POST /v1/detect while loading -> 503 %s, headers %s (no Retry-After)" % (body, hdrs)


def test_queue_capacity_reported_from_the_start():
    """mpdetd_queue_capacity ("Requests that may wait before new ones get
    503") is the configured queue_depth from the start. Regression: it read
    0 until the first detection was queued (nothing set it at start), so a
    scraper saw depth >= capacity, a full queue, on an idle daemon. Checked
    on the loading test's daemon once ready, before any detection
    (queue_depth is the default, 16)."""
    m = loading_observations()["ready_metrics"]
    assert m["mpdetd_plan_generation"] == 1 and m["mpdetd_queue_depth"] == 0, m
    assert m["mpdetd_queue_capacity"] == 16, \
        "mpdetd_queue_capacity %g on a ready daemon before its first detection" % m[
            "mpdetd_queue_capacity"]


# ---- 2. two workers overlap ---------------------------------------------

def background(sock, jpeg):
    box = {}

    def go():
        try:
            box["reply"] = http(sock, "POST", "/v1/detect", jpeg, timeout=120)
        except Exception as e:  # the daemon is killed at the end of the test
            box["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, box


def stall_worker_0(d, jpeg):
    """Sends requests one at a time until worker 0 takes one and hangs
    in it (MPDETD_FAULT=stall:0); returns that request's thread and the
    number of requests answered before."""
    answered = 0
    for _ in range(16):
        t, box = background(d.sock, jpeg)
        wait_for(lambda: not t.is_alive() or "fault injected: worker 0 hangs" in d.logtext(),
                 "a reply or worker 0's stall", 60)
        if "fault injected: worker 0 hangs" in d.logtext():
            return t, box, answered
        assert box.get("reply", (None,))[0] == 200, box
        answered += 1
    raise AssertionError("worker 0 never took a job in 16 requests:\n" + d.logtext())


def test_two_workers_serve_while_one_is_busy():
    """README/config: `workers` inference threads. With workers = 2 and
    worker 0 hung inside a job (a stuck device call, injected), worker 1
    still answers detections; with workers = 1 the same hang leaves the
    next request waiting in the queue. Nothing here depends on speed."""
    jpeg = photo()
    d = Daemon("two-workers", workers=2, threads=1, env={"MPDETD_FAULT": "stall:0"})
    try:
        d.wait_ready()
        before = scrape(d)
        stuck, box, answered = stall_worker_0(d, jpeg)
        for _ in range(3):
            r = detect(d.sock, jpeg)
            assert "dog" in {x["label"] for x in r["detections"]}, r
        assert stuck.is_alive() and not box, box  # worker 0 still holds its job
        health = json.loads(http(d.sock, "GET", "/v1/health")[1])
        assert health["queue_depth"] == 0, health
        after = scrape(d)
        # every answered detection ran (on worker 1 while worker 0 hung)
        assert delta(before, after, "mpdetd_inference_duration_seconds_count") == answered + 3
        assert delta(before, after, 'mpdetd_requests_total{endpoint="detect",code="200"}') == answered + 3
    finally:
        d.proc.kill()
        d.proc.wait()
    # the control: one worker, the same hang - the next request is queued, not run
    d = Daemon("one-worker", workers=1, threads=1, env={"MPDETD_FAULT": "stall:0"})
    try:
        d.wait_ready()
        stuck, box, answered = stall_worker_0(d, jpeg)
        assert answered == 0  # the only worker is worker 0
        queued, qbox = background(d.sock, jpeg)
        wait_for(lambda: json.loads(http(d.sock, "GET", "/v1/health")[1])["queue_depth"] == 1,
                 "the second request in the queue")
        assert stuck.is_alive() and queued.is_alive() and not box and not qbox
        assert metric(d, "mpdetd_inference_duration_seconds_count") == 0
    finally:
        d.proc.kill()
        d.proc.wait()


# ---- 3. the TCP listener ------------------------------------------------

def test_tcp_listener_serves_detections_and_health():
    """README: an optional loopback TCP listener; without api_key it
    serves detections (the same as the Unix socket's) and health."""
    code, body = tcp_request(D_PORT, "GET", "/v1/health")
    h = json.loads(body)
    assert code == 200 and h["status"] == "ok" and h["plan_generation"] == 1, body
    for name in ("person.jpg", "horses.jpg"):
        jpeg = photo(name)
        code, body = tcp_request(D_PORT, "POST", "/v1/detect?thresh=0.3", jpeg)
        assert code == 200, body
        over_tcp = json.loads(body)
        assert td.dets(over_tcp) == td.dets(detect(D.sock, jpeg, "?thresh=0.3")), name
        assert over_tcp["detections"], name
    code, body = tcp_request(D_PORT, "POST", "/v1/detect", b"not an image")
    assert code == 400 and "error" in json.loads(body), body
    assert re.search(r"GET /v1/health -> 200", D.logtext())


# ---- 4. reload applies thresh, nms and log_level ------------------------

# a line at info, on stderr or with the journal's prefix (under systemd)
INFO = r"(?:mpdetd info: |<6>)"
REQ_LINE = re.compile(INFO + r"POST /v1/detect -> 200 ")
EVICT_LINE = "max_clients reached: closing a connection idle"


def test_reload_applies_thresh_nms_and_log_level():
    """README: a reload (SIGHUP or POST /v1/reload) applies the reloadable
    settings: detections follow the new thresh and nms exactly as a
    request asking for them (and the command line) does, and log lines
    appear or disappear with log_level."""
    dog = os.path.join(DATA, "dog.jpg")
    jpeg = photo("dog.jpg")
    base = dict(workers=1, threads=1, max_clients=1)
    d = Daemon("reload-settings", thresh="0.25", nms="0.45", log_level="info", **base)
    try:
        d.wait_ready()
        before = td.dets(detect(d.sock, jpeg))
        want = td.dets(detect(d.sock, jpeg, "?thresh=0.5&nms=0.8"))
        only_thresh = td.dets(detect(d.sock, jpeg, "?thresh=0.5"))
        only_nms = td.dets(detect(d.sock, jpeg, "?nms=0.8"))
        # each setting changes the answer on its own, so both must apply
        assert len({tuple(before), tuple(want), tuple(only_thresh), tuple(only_nms)}) == 4, \
            (before, want, only_thresh, only_nms)
        assert want == cli_dets(dog, "--thresh", "0.5", "--nms", "0.8")
        assert before == cli_dets(dog)
        # info: each request is logged; debug lines are not
        wait_for(lambda: len(REQ_LINE.findall(d.logtext())) == 4, "4 request lines")
        idle = keepalive_health(d.sock)
        assert http(d.sock, "GET", "/v1/health")[0] == 200  # closes the idle one (max_clients 1)
        idle.close()
        assert EVICT_LINE not in d.logtext()

        # SIGHUP: thresh 0.5, nms 0.8, log_level warning
        write_config("reload-settings", thresh="0.5", nms="0.8", log_level="warning", **base)
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: metric(d, 'mpdetd_reloads_total{result="ok"}') == 1, "the SIGHUP reload")
        mark = len(d.logtext())
        assert td.dets(detect(d.sock, jpeg)) == want
        # a reload refused (workers cannot change) logs an error: that line
        # comes after the detection's would have, and warning shows errors
        write_config("reload-settings", thresh="0.5", nms="0.8", log_level="warning",
                     **dict(base, workers=2))
        code, body = http(d.sock, "POST", "/v1/reload")
        assert code == 422 and "workers cannot change" in json.loads(body)["error"], body
        wait_log(d, "reload failed, the old plan keeps serving")
        since = d.logtext()[mark:]
        assert "reload failed" in since and not REQ_LINE.search(since) and not re.search(INFO, since), since
        assert td.dets(detect(d.sock, jpeg)) == want  # the refused reload changed nothing

        # POST /v1/reload: back to 0.25 / 0.45, log_level debug
        write_config("reload-settings", thresh="0.25", nms="0.45", log_level="debug", **base)
        code, body = http(d.sock, "POST", "/v1/reload")
        assert code == 200 and json.loads(body)["reloaded"] is True, body
        mark = len(d.logtext())
        assert td.dets(detect(d.sock, jpeg)) == before
        wait_for(lambda: REQ_LINE.search(d.logtext()[mark:]), "a request line again")
        idle = keepalive_health(d.sock)
        assert http(d.sock, "GET", "/v1/health")[0] == 200
        idle.close()
        assert EVICT_LINE in d.logtext()[mark:], d.logtext()[mark:]
        m = scrape(d)
        assert m['mpdetd_reloads_total{result="ok"}'] == 2 and m['mpdetd_reloads_total{result="error"}'] == 1
    finally:
        assert d.stop() == 0


# ---- 5. /metrics moves by the right amounts ------------------------------

def test_metrics_move_by_known_amounts():
    """README: /metrics has request and inference latency histograms,
    requests by status, queue depth, reloads. After known requests each
    counter moves by exactly their number; inference buckets hold exactly
    the passes whose reported inference time fits; every histogram is
    cumulative with +Inf == _count."""
    jpeg = photo("eagle.jpg")
    before = scrape(D)
    check_histograms(before)
    n = 3
    inf_s, total_s = [], []
    for _ in range(n):
        r = detect(D.sock, jpeg)
        inf_s.append(r["timings_ms"]["inference"] / 1e3)
        total_s.append(r["timings_ms"]["total"] / 1e3)
    bad = bytes(random.Random(7).randrange(256) for _ in range(3000))
    code, _ = http(D.sock, "POST", "/v1/detect", bad)
    assert code == 400
    assert http(D.sock, "GET", "/v1/health")[0] == 200
    assert http(D.sock, "GET", "/v1/health")[0] == 200
    assert http(D.sock, "GET", "/v2/nothing")[0] == 404
    after = scrape(D)
    hs = check_histograms(after)

    d = lambda k: delta(before, after, k)
    assert d('mpdetd_requests_total{endpoint="detect",code="200"}') == n
    assert d('mpdetd_requests_total{endpoint="detect",code="400"}') == 1
    assert d('mpdetd_requests_total{endpoint="health",code="200"}') == 2
    assert d('mpdetd_requests_total{endpoint="other",code="404"}') == 1
    # the first scrape is counted once it has been answered
    assert d('mpdetd_requests_total{endpoint="metrics",code="200"}') == 1
    changed = {k for k in set(before) | set(after)
               if k.startswith("mpdetd_requests_total") and d(k) != 0}
    assert len(changed) == 5, changed
    # request latency: every detect request, the 400 too
    assert d('mpdetd_request_duration_seconds_count{endpoint="detect"}') == n + 1
    assert d('mpdetd_request_duration_seconds_bucket{endpoint="detect",le="+Inf"}') == n + 1
    assert d('mpdetd_request_duration_seconds_count{endpoint="health"}') == 2
    # arrival to reply contains the worker's own time for each detection
    assert d('mpdetd_request_duration_seconds_sum{endpoint="detect"}') >= sum(total_s)
    # inference: one observation per pass that ran (not the undecodable
    # one), each the inference time its reply reported, in its bucket
    assert d("mpdetd_inference_duration_seconds_count") == n
    assert abs(d("mpdetd_inference_duration_seconds_sum") - sum(inf_s)) <= 1e-9 * max(1.0, sum(inf_s))
    for le, _ in hs[("mpdetd_inference_duration_seconds", "")]:
        fits = sum(1 for s in inf_s if s <= float(le))
        assert d('mpdetd_inference_duration_seconds_bucket{le="%s"}' % le) == fits, (le, inf_s)
    # every layer ran once per pass, under the precision GET /v1/plan names
    plan = json.loads(http(D.sock, "GET", "/v1/plan")[1])
    want = {'mpdetd_layer_runs_total{layer="%d",precision="%s"}' % (l["index"], l["precision"])
            for l in plan["layers"]}
    assert len(want) == 24 and {l["precision"] for l in plan["layers"]} == {"fp32", "-"}, plan
    runs = {k: d(k) for k in after if k.startswith("mpdetd_layer_runs_total")}
    assert set(runs) == want and set(runs.values()) == {n}, runs
    secs = [d(k.replace("_runs_total", "_seconds_total")) for k in runs]
    assert min(secs) >= 0 and sum(secs) > 0, secs
    assert after["mpdetd_queue_depth"] == 0 and d("mpdetd_abandoned_total") == 0
    assert d('mpdetd_reloads_total{result="ok"}') == 0 and after["mpdetd_plan_generation"] == 1


# ---- 6. mpdet detect --socket --draw ------------------------------------

def png_read(path):
    """(width, height, RGB bytes) of an 8-bit RGB PNG, decoded with zlib."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        crc = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        assert zlib.crc32(kind + chunk) == crc, (path, kind)
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and ctype == 2 and interlace == 0, ihdr
    raw = zlib.decompress(idat)
    stride = w * 3
    assert len(raw) == h * (stride + 1), (len(raw), w, h)
    out = bytearray(h * stride)
    prev = bytearray(stride)
    for y in range(h):
        ft = raw[y * (stride + 1)]
        row = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if ft == 1:
            for i in range(3, stride):
                row[i] = (row[i] + row[i - 3]) & 255
        elif ft == 2:
            for i in range(stride):
                row[i] = (row[i] + prev[i]) & 255
        elif ft == 3:
            for i in range(stride):
                row[i] = (row[i] + ((row[i - 3] if i >= 3 else 0) + prev[i]) // 2) & 255
        elif ft == 4:
            for i in range(stride):
                a = row[i - 3] if i >= 3 else 0
                b = prev[i]
                c = prev[i - 3] if i >= 3 else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        else:
            assert ft == 0, ("filter", ft)
        out[y * stride:(y + 1) * stride] = row
        prev = row
    return w, h, bytes(out)


def jpeg_size(data):
    """(width, height) from a JPEG's SOF marker."""
    i = 2
    while i < len(data):
        assert data[i] == 0xFF, i
        marker = data[i + 1]
        n = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + n
    raise AssertionError("no SOF marker")


def test_client_draws_the_daemons_boxes():
    """README: `mpdet detect --socket S photo --draw out.png` writes a PNG
    of the photo with the daemon's boxes drawn: the photo's size; every
    edge of every box changed; the best box's outline in one colour;
    everything far from the boxes and labels exactly the photo."""
    name = "dog.jpg"
    path = os.path.join(DATA, name)
    jpeg = photo(name)
    out = os.path.join(TMP, "drawn.png")
    plain = os.path.join(TMP, "plain.png")
    dets = detect(D.sock, jpeg)["detections"]  # the CLI asks at 0.25 / 0.45 too
    assert len(dets) >= 3, dets
    n200 = metric(D, 'mpdetd_requests_total{endpoint="detect",code="200"}')
    r = td.run(MPDET, "detect", "--socket", D.sock, path, "--draw", out)
    assert r.returncode == 0, r.stderr
    assert "plan 1)" in r.stdout and "dog: 57%" in r.stdout, r.stdout  # the daemon's reply
    assert metric(D, 'mpdetd_requests_total{endpoint="detect",code="200"}') == n200 + 1
    # the photo's own pixels: the same decoder with nothing to draw
    r = td.run(MPDET, "detect", path, "--thresh", "1", "--draw", plain)
    assert r.returncode == 0 and "0 detections" in r.stdout, r.stdout + r.stderr
    w, h, px = png_read(out)
    pw, ph, orig = png_read(plain)
    assert (w, h) == (pw, ph) == jpeg_size(jpeg), ((w, h), (pw, ph), jpeg_size(jpeg))
    assert len(set(orig[i:i + 3] for i in range(0, len(orig), 3 * 97))) > 500  # a photo, not a blank
    at = lambda buf, x, y: buf[(y * w + x) * 3:(y * w + x) * 3 + 3]
    clip = lambda v, hi: max(0, min(int(v), hi - 1))
    near = bytearray(w * h)  # boxes with their labels, and a margin
    for det in dets:
        b = det["box"]
        x0, y0, x1, y1 = clip(b["x0"], w), clip(b["y0"], h), clip(b["x1"], w), clip(b["y1"], h)
        edges = {"top": [(x, y0) for x in range(x0, x1 + 1)],
                 "bottom": [(x, y1) for x in range(x0, x1 + 1)],
                 "left": [(x0, y) for y in range(y0, y1 + 1)],
                 "right": [(x1, y) for y in range(y0, y1 + 1)]}
        for edge, pts in edges.items():
            changed = sum(1 for x, y in pts if at(px, x, y) != at(orig, x, y))
            assert changed >= 0.9 * len(pts), (det["label"], edge, changed, len(pts))
        # label: up to 10 px a character at scale 2, 24 px high, above the box
        label_w = len("%s %.0f%%" % (det["label"], det["confidence"] * 100)) * 20 + 8
        for y in range(max(0, y0 - 30), min(h, y1 + 4)):
            for x in range(max(0, x0 - 4), min(w, max(x1, x0 + label_w) + 4)):
                near[y * w + x] = 1
    # the best box is drawn last: its outline is one colour, not the photo's
    b = dets[0]["box"]
    x0, y0, x1, y1 = clip(b["x0"], w), clip(b["y0"], h), clip(b["x1"], w), clip(b["y1"], h)
    outline = ([at(px, x, y1) for x in range(x0, x1 + 1)] + [at(px, x0, y) for y in range(y0, y1 + 1)]
               + [at(px, x1, y) for y in range(y0, y1 + 1)])
    assert len(set(outline)) == 1, set(outline)
    assert len(set(at(orig, x, y1) for x in range(x0, x1 + 1))) > 1
    far = [i for i in range(w * h) if not near[i]]
    assert len(far) > w * h // 4, len(far)
    diff = [i for i in far if px[i * 3:i * 3 + 3] != orig[i * 3:i * 3 + 3]]
    assert not diff, "%d pixels far from every box changed, e.g. %s" % (
        len(diff), [(i % w, i // w) for i in diff[:5]])


if __name__ == "__main__":
    if not os.path.exists(MPDETD) or not os.path.exists(MPDET):
        print("[ RUN      ] daemon_claim_tests\n[  SKIPPED ] daemon_claim_tests: %s or %s not built"
              % (MPDETD, MPDET))
        sys.exit(0)
    D_PORT = free_port()
    # every pass timed: the metrics test counts per-layer runs
    D = Daemon("claims", workers=1, tcp_listen="127.0.0.1:%d" % D_PORT, layer_timing_every=1)
    try:
        D.wait_ready()
        for t in (test_loading_answers_503_then_serves, test_loading_503_carries_retry_after,
                  test_queue_capacity_reported_from_the_start,
                  test_two_workers_serve_while_one_is_busy,
                  test_tcp_listener_serves_detections_and_health,
                  test_reload_applies_thresh_nms_and_log_level,
                  test_metrics_move_by_known_amounts, test_client_draws_the_daemons_boxes):
            test(t)
    finally:
        rc = D.stop()
        if rc != 0:
            print("[  FAILED  ] shared_daemon_exit_status (%s)" % rc)
            td.failed += 1
    print("[==========] daemon claim tests done, %d failed" % td.failed)
    sys.exit(1 if td.failed else 0)
