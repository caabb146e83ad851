#!/usr/bin/env python3
"""peers - ONNX Runtime and OpenVINO on the ONNX export of mpdet's cfg and
weights, the peers bench/run times beside mpdet's presets.

    build/peers-venv/bin/python bench/peers.py prepare --dump DIR [options]
    build/peers-venv/bin/python bench/peers.py time --engine ort|openvino
        --precision fp32|int8|bf16 --model FILE --dump DIR [--threads N] [--iters N]

prepare: exports the cfg + weights with bench/onnx_export.py, checks the
    export against mpdet (the input tensor bench_forward --dump fed mpdet's
    fp32 forward pass goes through the export under ONNX Runtime fp32; each
    output must be within TOLERANCE x max|mpdet's| of mpdet's), then makes
    the int8 model: onnxruntime.quantization.quantize_static, QDQ format,
    per-channel symmetric int8 weights, asymmetric uint8 activations,
    MinMax ranges over the first --calib-images images of the calibration
    list, letterboxed as mpdet does. Both models are cached under --cache,
    keyed by the checksums of what made them, so reruns are quick. Exits 1
    when the export check fails.
time: 3 warm-up runs, then --iters timed forward passes on the dump's
    input tensor (letterboxed dog.jpg); median and min. Precisions: fp32 and
    int8 on both engines (the same QDQ model for both int8 rows), bf16 on
    OpenVINO only (INFERENCE_PRECISION_HINT bf16) and only where the CPU
    has AVX512-BF16 or AMX-BF16; otherwise the row prints why it is skipped.

Both print key=value lines, as bench_forward does, for bench/run.
"""
import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

WARMUP = 3
# The export check's bound on max |ORT fp32 - mpdet fp32| per output,
# relative to max |mpdet|: the same bound test_darknet_parity puts on mpdet
# against darknet. Both compute in fp32 and differ only in summation order
# (measured here: under 1e-6); an export mistake - a wrong pad, weight
# layout or batch-norm fold - moves outputs by far more (folding with
# sqrt(var + 1e-5), cuDNN's form, instead of darknet's sqrt(var) + 1e-6
# already gives 4e-5, and any layout error O(1)).
TOLERANCE = 1e-4
HERE = os.path.dirname(os.path.abspath(__file__))
# mpdet's int8_all preset (config/int8_all.plan) keeps the first
# convolution and the two detection heads in fp32; the int8 peers do the
# same, so the rows compare the same assignment of precisions.
INT8_FP32_LAYERS = "0,15,22"


def cpu_flags():
    """The flags of the first processor in /proc/cpuinfo (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_reason():
    """None when the CPU computes in bf16, else why the bf16 row is skipped."""
    f = cpu_flags()
    if "avx512_bf16" in f or "amx_bf16" in f:
        return None
    return "the CPU has neither AVX512-BF16 nor AMX-BF16 (/proc/cpuinfo)"


def sha256_file(path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h


def letterbox(path, net_w=416, net_h=416):
    """A 1x3xHxW float32 tensor of the image at path, letterboxed as mpdet's
    mpd__letterbox (host/image.c) does it, which is darknet's
    letterbox_image: the image scaled to fit with its aspect kept by a
    two-pass bilinear resize (corners aligned: source x = c * (w-1)/(new_w-1)),
    centred on 0.5 grey, RGB, pixel / 255. The same float32 operations in
    the same order, so the result is mpdet's bit for bit given the same
    pixels; where it differs from mpdet is the decoder: PIL (libjpeg-turbo)
    here, stb_image in mpdet, whose JPEG pixels differ by a few levels (on
    dog.jpg: bench/run prints the difference of the resulting tensors)."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    h, w = rgb.shape[:2]
    f32 = np.float32
    if f32(net_w) / f32(w) < f32(net_h) / f32(h):
        nw, nh = net_w, (h * net_w) // w
    else:
        nw, nh = (w * net_h) // h, net_h
    nw, nh = max(nw, 1), max(nh, 1)
    src = rgb.astype(f32) / f32(255)
    # Horizontal pass over every source row.
    ws = f32(w - 1) / f32(nw - 1) if nw > 1 else f32(0)
    c = np.arange(nw)
    sx = c.astype(f32) * ws
    ix = np.minimum(sx.astype(np.int64), w - 1)
    dx = sx - ix.astype(f32)
    ix1 = np.minimum(ix + 1, w - 1)
    rows = (f32(1) - dx)[None, :, None] * src[:, ix, :] + dx[None, :, None] * src[:, ix1, :]
    last = (c == nw - 1) | (w == 1)
    rows[:, last, :] = src[:, w - 1:w, :]
    # Vertical pass: (1 - dy) * row iy, plus dy * row iy + 1 except on the
    # last output row.
    hs = f32(h - 1) / f32(nh - 1) if nh > 1 else f32(0)
    r = np.arange(nh)
    sy = r.astype(f32) * hs
    iy = np.minimum(sy.astype(np.int64), h - 1)
    dy = sy - iy.astype(f32)
    two = (r != nh - 1) & (iy + 1 < h)
    out = (f32(1) - dy)[:, None, None] * rows[iy]
    b = dy[:, None, None] * rows[np.minimum(iy + 1, h - 1)]
    out[two] += b[two]
    dst = np.full((3, net_h, net_w), 0.5, dtype=f32)
    ox, oy = (net_w - nw) // 2, (net_h - nh) // 2
    dst[:, oy:oy + nh, ox:ox + nw] = out.transpose(2, 0, 1)
    return dst[None]


def read_dump(d):
    """bench_forward --dump's dump.txt: the input tensor and the reference
    outputs, {name: array}."""
    inp, outs, info = None, {}, {}
    with open(os.path.join(d, "dump.txt")) as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            if "=" in words[0]:
                k, v = line.rstrip("\n").split("=", 1)
                info[k] = v
                continue
            kv = dict(w.split("=", 1) for w in words[1:])
            shape = [int(x) for x in kv["shape"].split("x")]
            a = np.fromfile(os.path.join(d, kv["file"]), dtype=np.float32).reshape(shape)
            if words[0] == "input":
                inp = a
            else:
                outs[kv["name"]] = a
    if inp is None or not outs:
        sys.exit("peers: %s/dump.txt names no input or no outputs" % d)
    return inp, outs, info


def compare(got, ref):
    """max |got - ref|, max |ref|, and the relative RMS difference."""
    d = got.astype(np.float64) - ref
    mx = float(np.abs(ref).max())
    rms = float(np.sqrt(np.mean(d * d) / max(np.mean(ref.astype(np.float64) ** 2), 1e-30)))
    return float(np.abs(d).max()), mx, rms


def ort_session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- prepare

def export(a, cache):
    h = sha256_file(a.weights)
    wsum = h.hexdigest()
    h2 = sha256_file(a.cfg)
    sha256_file(os.path.join(HERE, "onnx_export.py"), h2)
    d = os.path.join(cache, "%s-%s" % (wsum[:16], h2.hexdigest()[:8]))
    os.makedirs(d, exist_ok=True)
    fp32 = os.path.join(d, "fp32.onnx")
    cached = os.path.exists(fp32)
    if not cached:
        subprocess.run([sys.executable, os.path.join(HERE, "onnx_export.py"), a.cfg, a.weights,
                        fp32], check=True, stdout=sys.stderr)
    print("weights_sha256=%s" % wsum)
    print("model_fp32=%s" % fp32)
    print("model_fp32_cached=%d" % cached)
    return d, fp32


def check(fp32, dump_dir):
    inp, refs, info = read_dump(dump_dir)
    sess = ort_session(fp32, os.cpu_count() or 1)
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, {"input": inp})))
    worst, ok = 0.0, True
    print("check_input=%s" % info.get("image", "?"))
    for name, ref in sorted(refs.items()):
        if name not in got:
            print("check: the export has no output %s (it has %s)" % (name, ", ".join(names)),
                  file=sys.stderr)
            ok = False
            continue
        if got[name].shape != ref.shape:
            print("check: %s is %s in the export, %s in mpdet"
                  % (name, got[name].shape, ref.shape), file=sys.stderr)
            ok = False
            continue
        diff, mx, rms = compare(got[name], ref)
        rel = diff / mx if mx > 0 else diff
        worst = max(worst, rel)
        print("check_%s=max_abs_diff %.3g max_ref %.4g rel %.2g rel_rms %.2g"
              % (name, diff, mx, rel, rms))
        if not rel <= TOLERANCE:
            ok = False
    print("check_tolerance=%g" % TOLERANCE)
    print("check_worst_rel=%.2g" % worst)
    print("check=%s" % ("passed" if ok else "FAILED"))
    if not ok:
        plan = info.get("plan", "cfg")
        if plan in ("cfg", "config/fp32_all.plan"):
            why = "bench/onnx_export.py is wrong for this cfg"
        else:
            why = "the dump is of plan %s, not of mpdet's fp32 pass" % plan
        print("peers: the ONNX export does not match mpdet's outputs (worst max |diff| = "
              "%.2g x max|mpdet|, bound %g): %s" % (worst, TOLERANCE, why), file=sys.stderr)
    return ok


def quantize(a, d, fp32):
    from onnxruntime import __version__ as ort_version
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    with open(a.calib_list) as f:
        paths = [s.strip() for s in f if s.strip()][:a.calib_images]
    paths = [p if os.path.isabs(p) else os.path.join(a.calib_root, p) for p in paths]
    if not paths:
        sys.exit("peers: %s lists no images" % a.calib_list)
    exclude = ["conv%s" % s.strip() for s in a.int8_fp32_layers.split(",") if s.strip()]
    h = hashlib.sha256(json.dumps({
        "paths": paths, "exclude": exclude, "ort": ort_version, "fp32": sha256_file(
            fp32).hexdigest(), "peers": sha256_file(os.path.abspath(__file__)).hexdigest()},
        sort_keys=True).encode())
    out = os.path.join(d, "int8-%dimg-%s.onnx" % (len(paths), h.hexdigest()[:10]))
    cached = os.path.exists(out)
    if not cached:
        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(paths)

            def get_next(self):
                p = next(self.it, None)
                return None if p is None else {"input": letterbox(p)}

        t0 = time.perf_counter()
        tmp = out + ".part.onnx"
        # Weights: per-channel symmetric int8, as mpdet's. Activations:
        # asymmetric uint8 (QUInt8, a zero point per tensor). U8 x S8 is the
        # combination both runtimes run natively on x86 (VNNI's vpdpbusd
        # multiplies unsigned by signed bytes; ORT calls it its default,
        # fastest x86 format), and the asymmetric range spends no codes on
        # the negative half that LeakyRelu outputs barely use.
        quantize_static(
            fp32, tmp, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        os.replace(tmp, out)
        print("quantize_s=%.1f" % (time.perf_counter() - t0))
    print("model_int8=%s" % out)
    print("model_int8_cached=%d" % cached)
    print("int8_calib_images=%d" % len(paths))
    print("int8_fp32_layers=%s" % a.int8_fp32_layers)


def cmd_prepare(a):
    import onnxruntime
    import openvino

    print("ort_version=%s" % onnxruntime.__version__)
    print("openvino_version=%s" % openvino.__version__.split("-")[0])
    d, fp32 = export(a, a.cache)
    # How far this script's letterbox (PIL's decoder) is from mpdet's
    # tensor for the same image: what the calibration's inputs differ by.
    inp, _, info = read_dump(a.dump)
    if os.path.exists(info.get("image", "")):
        lb = letterbox(info["image"], inp.shape[3], inp.shape[2])
        print("letterbox_vs_mpdet=max_abs_diff %.3g mean_abs_diff %.2g"
              % (float(np.abs(lb - inp).max()), float(np.abs(lb - inp).mean())))
    if not check(fp32, a.dump):
        return 1
    if a.calib_images > 0:
        quantize(a, d, fp32)
    return 0


# ---------------------------------------------------------------- time

def cmd_time(a):
    inp, refs, _ = read_dump(a.dump)
    print("engine=%s" % a.engine)
    print("precision=%s" % a.precision)
    print("threads=%d" % a.threads)
    skip = None
    if a.precision == "bf16":
        skip = ("ONNX Runtime has no bf16 CPU path worth timing" if a.engine == "ort"
                else bf16_reason())
    if skip:
        print("skipped=%s" % skip)
        return 0
    t0 = time.perf_counter()
    if a.engine == "ort":
        import onnxruntime

        print("version=%s" % onnxruntime.__version__)
        sess = ort_session(a.model, a.threads)
        names = [o.name for o in sess.get_outputs()]
        feed = {"input": inp}

        def forward():
            return sess.run(None, feed)
    else:
        import openvino as ov

        print("version=%s" % ov.__version__.split("-")[0])
        core = ov.Core()
        # f32 for fp32 and for int8 (the layers the QDQ model leaves in
        # float stay fp32, as in ORT and mpdet's int8_all): OpenVINO would
        # otherwise pick bf16 by itself on a CPU that has it.
        cfg = {"INFERENCE_NUM_THREADS": a.threads, "PERFORMANCE_HINT": "LATENCY",
               "INFERENCE_PRECISION_HINT": "bf16" if a.precision == "bf16" else "f32"}
        cm = core.compile_model(a.model, "CPU", cfg)
        print("ov_inference_precision=%s"
              % cm.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        print("ov_threads=%s" % cm.get_property("INFERENCE_NUM_THREADS"))
        names = [o.get_any_name() for o in cm.outputs]
        req = cm.create_infer_request()

        def forward():
            req.infer({0: inp})
            return [req.get_output_tensor(i).data for i in range(len(names))]
    print("load_ms=%.1f" % ((time.perf_counter() - t0) * 1e3))
    for _ in range(WARMUP):
        outs = forward()
    ms = []
    for _ in range(a.iters):
        s = time.perf_counter()
        forward()
        ms.append((time.perf_counter() - s) * 1e3)
    print("forward_iters=%d" % a.iters)
    print("forward_warmup=%d" % WARMUP)
    print("forward_ms_min=%.2f" % min(ms))
    print("forward_ms_mean=%.2f" % statistics.mean(ms))
    print("forward_ms_median=%.2f" % statistics.median(ms))
    # How far this precision's outputs are from mpdet's fp32 ones: int8
    # and bf16 differ by their rounding, fp32 by summation order.
    worst = 0.0
    for name, got in zip(names, outs):
        if name in refs:
            _, _, rms = compare(np.asarray(got).reshape(refs[name].shape), refs[name])
            print("rel_rms_%s=%.3g" % (name, rms))
            worst = max(worst, rms)
    print("rel_rms_worst=%.3g" % worst)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print("peak_rss_mb=%.1f" % (ru.ru_maxrss / 1024.0))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="export (cached), check against mpdet, quantize (cached)",
                        description="Export the cfg + weights to ONNX, check the export against "
                                    "bench_forward --dump, make the int8 QDQ model.")
    model_dir = os.environ.get("MPDET_MODEL_DIR") or "models"
    pp.add_argument("--cfg", default=os.path.join(model_dir, "yolov3-tiny.cfg"))
    pp.add_argument("--weights", default=os.path.join(model_dir, "yolov3-tiny.weights"))
    pp.add_argument("--dump", required=True, help="directory written by bench_forward --dump")
    pp.add_argument("--cache", default="build/peers",
                    help="where the models are kept (default build/peers)")
    pp.add_argument("--calib-list", default="build/data/calib.txt",
                    help="calibration images, one path a line (default build/data/calib.txt)")
    pp.add_argument("--calib-root", default=".",
                    help="what relative paths in the list are relative to (default .)")
    pp.add_argument("--calib-images", type=int, default=64,
                    help="use the first N images of the list (default 64; 0: no int8 model)")
    pp.add_argument("--int8-fp32-layers", default=INT8_FP32_LAYERS,
                    help="convolutions the int8 model keeps in fp32 (default %s, as "
                         "config/int8_all.plan; '' for none)" % INT8_FP32_LAYERS)
    tp = sub.add_parser("time", help="time one engine at one precision",
                        description="Time the forward pass of one engine at one precision on "
                                    "the dump's input tensor.")
    tp.add_argument("--engine", choices=["ort", "openvino"], required=True)
    tp.add_argument("--precision", choices=["fp32", "int8", "bf16"], required=True)
    tp.add_argument("--model", required=True,
                    help="the .onnx to run (the fp32 export for fp32 and bf16, the QDQ model "
                         "for int8)")
    tp.add_argument("--dump", required=True, help="directory written by bench_forward --dump")
    tp.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    tp.add_argument("--iters", type=int, default=15)
    a = p.parse_args()
    if a.cmd == "time" and (a.threads < 1 or a.iters < 1):
        p.error("--threads and --iters must be >= 1")
    return cmd_prepare(a) if a.cmd == "prepare" else cmd_time(a)


if __name__ == "__main__":
    sys.exit(main())
