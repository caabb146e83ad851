#!/usr/bin/python3
"""opencv_forward - times OpenCV DNN (DNN_BACKEND_OPENCV / DNN_TARGET_CPU) on
the same darknet cfg + weights, the peer bench/run sets beside mpdet.

    /usr/bin/python3 bench/opencv_forward.py [--threads N] [--iters N]
        [--e2e-iters N] [--images A,B,...] [--forward-image F] [--model-dir DIR]

(a) forward: median over --iters net.forward() runs on the blob of
    --forward-image (cv2.dnn.blobFromImage(img, 1/255, (416, 416),
    swapRB=True), a plain resize, no letterbox) after 3 warm-up runs.
(b) end to end: every image is read from disk once; then cv2.imdecode ->
    blob -> forward -> boxes above 0.25 -> per-class cv2.dnn.NMSBoxes at
    0.45, --e2e-iters per image, median over images x iters.

Prints key=value lines for bench/run. Must run under Debian's /usr/bin/python3
(that is where python3-opencv lives).
"""
import argparse
import os
import resource
import statistics
import sys
import time

import cv2
import numpy as np

WARMUP = 3
THRESH = 0.25
NMS = 0.45


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=0, help="0 = all cores")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--e2e-iters", type=int, default=3)
    p.add_argument("--images", default="")
    p.add_argument("--forward-image", default=None)
    p.add_argument("--model-dir", default=os.environ.get("MPDET_MODEL_DIR") or "models")
    p.add_argument("paths", nargs="*")
    a = p.parse_args()
    a.image_list = [s for s in a.images.split(",") if s] + a.paths
    if not a.image_list:
        a.image_list = ["/usr/share/darknet/data/dog.jpg"]
    if a.forward_image is None:
        dogs = [s for s in a.image_list if os.path.basename(s) == "dog.jpg"]
        a.forward_image = dogs[0] if dogs else a.image_list[0]
    return a


def detect(net, outnames, buf, size):
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise RuntimeError("cv2.imdecode failed")
    h, w = img.shape[:2]
    blob = cv2.dnn.blobFromImage(img, 1 / 255.0, size, swapRB=True, crop=False)
    net.setInput(blob)
    out = np.vstack(net.forward(outnames))
    # Rows: cx, cy, bw, bh (0..1), objectness, then objectness x class prob.
    rows, cls = np.nonzero(out[:, 5:] > THRESH)
    if rows.size == 0:
        return 0
    conf = out[rows, 5 + cls]
    cx, cy, bw, bh = (out[rows, k] for k in range(4))
    boxes = np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h], axis=1)
    kept = 0
    for c in np.unique(cls):
        sel = np.nonzero(cls == c)[0]
        keep = cv2.dnn.NMSBoxes(boxes[sel].tolist(), conf[sel].tolist(), THRESH, NMS)
        kept += len(keep)
    return kept


def main():
    a = parse_args()
    cv2.setNumThreads(a.threads if a.threads > 0 else (os.cpu_count() or 1))
    cfg = os.path.join(a.model_dir, "yolov3-tiny.cfg")
    weights = os.path.join(a.model_dir, "yolov3-tiny.weights")

    t0 = time.perf_counter()
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    outnames = net.getUnconnectedOutLayersNames()
    load_ms = (time.perf_counter() - t0) * 1e3
    print("engine=opencv")
    print("opencv_version=%s" % cv2.__version__)
    print("cv2_threads=%d" % cv2.getNumThreads())
    print("load_ms=%.1f" % load_ms)

    size = (416, 416)
    img = cv2.imread(a.forward_image, cv2.IMREAD_COLOR)
    if img is None:
        sys.exit("opencv_forward: cannot read %s" % a.forward_image)
    blob = cv2.dnn.blobFromImage(img, 1 / 255.0, size, swapRB=True, crop=False)
    fwd = []
    for i in range(WARMUP + a.iters):
        s = time.perf_counter()
        net.setInput(blob)
        net.forward(outnames)
        if i >= WARMUP:
            fwd.append((time.perf_counter() - s) * 1e3)
    print("forward_iters=%d" % a.iters)
    print("forward_warmup=%d" % WARMUP)
    print("forward_ms_min=%.2f" % min(fwd))
    print("forward_ms_mean=%.2f" % statistics.mean(fwd))
    print("forward_ms_median=%.2f" % statistics.median(fwd))

    if a.e2e_iters > 0:
        bufs = []
        for path in a.image_list:
            with open(path, "rb") as f:
                bufs.append(np.frombuffer(f.read(), dtype=np.uint8))
        detect(net, outnames, bufs[0], size)  # warm the decoder, untimed
        allt = []
        for path, buf in zip(a.image_list, bufs):
            one = []
            for _ in range(a.e2e_iters):
                s = time.perf_counter()
                n = detect(net, outnames, buf, size)
                one.append((time.perf_counter() - s) * 1e3)
            allt += one
            print("image name=%s dets=%d e2e_ms_median=%.2f"
                  % (os.path.basename(path), n, statistics.median(one)))
        print("e2e_images=%d" % len(bufs))
        print("e2e_iters=%d" % a.e2e_iters)
        print("e2e_ms_median=%.2f" % statistics.median(allt))

    ru = resource.getrusage(resource.RUSAGE_SELF)
    print("peak_rss_mb=%.1f" % (ru.ru_maxrss / 1024.0))


if __name__ == "__main__":
    main()
