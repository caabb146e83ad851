#!/usr/bin/env python3
"""mpdetd on a small box with many cameras (issue 12), black-box: the real
daemon on a real socket with darknet's photos, as tests/test_daemon.py.
So far: per-layer timing sampled one pass in layer_timing_every."""
import os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_daemon as td
from test_daemon import MPDETD, Daemon, http, test, write_config
from test_daemon_faults import metric, photo

RUNS0 = 'mpdetd_layer_runs_total{layer="0",precision="fp32"}'


def detections(d, n):
    for _ in range(n):
        code, body = http(d.sock, "POST", "/v1/detect", photo())
        assert code == 200, body


def test_layer_timing_sampled():
    """One worker times the layers of passes 0, N, 2N...: after 7
    detections at layer_timing_every = 3, three timed runs per layer
    (the series' seconds grow with them); 0 turns timing off (no run
    counted); 1 times every pass. Both changes by reload."""
    d = Daemon("timing", layer_timing_every=3)
    try:
        d.wait_ready()
        assert metric(d, RUNS0) is None  # nothing timed before the first pass
        detections(d, 7)
        assert metric(d, RUNS0) == 3, metric(d, RUNS0)
        secs = metric(d, 'mpdetd_layer_seconds_total{layer="0",precision="fp32"}')
        assert secs is not None and secs > 0
        # the per-layer view covers every layer, each timed as often
        text = http(d.sock, "GET", "/metrics")[1].decode()
        runs = [l for l in text.splitlines() if l.startswith("mpdetd_layer_runs_total{")]
        assert len(runs) == 24 and all(l.endswith(" 3") for l in runs), runs
        write_config("timing", layer_timing_every=0)
        assert http(d.sock, "POST", "/v1/reload")[0] == 200
        detections(d, 3)
        assert metric(d, RUNS0) == 3, metric(d, RUNS0)
        write_config("timing", layer_timing_every=1)
        assert http(d.sock, "POST", "/v1/reload")[0] == 200
        detections(d, 2)
        assert metric(d, RUNS0) == 5, metric(d, RUNS0)
        assert metric(d, 'mpdetd_inference_duration_seconds_count') == 12
    finally:
        assert d.stop() == 0
    r = td.run(MPDETD, "--help-config")
    assert "layer_timing_every" in r.stdout and "100" in r.stdout, r.stdout


if __name__ == "__main__":
    if not os.path.exists(MPDETD):
        print("[ RUN      ] daemon_scale_tests\n[  SKIPPED ] daemon_scale_tests: %s not built" % MPDETD)
        sys.exit(0)
    for t in (test_layer_timing_sampled,):
        test(t)
    print("[==========] daemon scale tests done, %d failed" % td.failed)
    sys.exit(1 if td.failed else 0)
