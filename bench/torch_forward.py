#!/usr/bin/env python3
"""torch_forward - the PyTorch peer of bench/run-gpu: YOLOv3-tiny as a plain
torch.nn.Module built from the same darknet cfg + weights that mpdet reads,
timed on the GPU in fp32 and fp16, eager and replayed as CUDA graphs.

    python3 bench/torch_forward.py [--device cuda|cpu] [--iters N]
        [--batches 1,8,32,64] [--precisions fp32,fp16] [--modes eager,graph]
        [--image F | --input-raw F] [--model-dir DIR] [--channels-last] [--tf32]
    python3 bench/torch_forward.py --check [--device cpu] [--image F]
        [--input-raw F] [--mpdet-json F] [--dump PREFIX] [--precisions fp32]

The model: [convolutional] (batch_normalize folded into the weights and
bias exactly as mpdet and darknet fold it: scale / (sqrt(var) + 1e-6)),
leaky 0.1 or linear; [maxpool] with darknet's padding (size - 1, taps
outside the input skipped: here -inf padding), so size=2 stride=1 keeps
13x13; [upsample] nearest; [route] concatenation; [yolo] as the identity
plus the logistic on x, y, objectness and classes (w, h stay raw), so its
outputs are those of mpdet's yolo layers, channel for channel.

Timing (bench mode): the input is the letterboxed --image (dog.jpg; the
letterbox is darknet's, as mpdet does it) replicated batch times, fp32 in
pinned host memory. Each timed call copies it to the device, runs the model
(fp16: the input is converted on the device, inside the model call) and
waits for the device (torch.cuda.synchronize); the outputs stay on the
device, as mpdet's mpd_engine_forward leaves them. graph = the same call
captured once per batch size in a torch.cuda.CUDAGraph (static input
buffer), then replayed. cudnn.benchmark is on; TF32 is off unless --tf32
(fp32 rows are then true fp32, like mpdet's fp32). Each row is the median
of --iters calls after warm-up.

Prints key=value lines, and one line per measurement:
    torch precision=fp16 mode=graph batch=64 iters=.. ms_median=.. ms_min=.. ips=..
When torch cannot be imported, or --device cuda has no CUDA device, it
prints `skipped: <reason>` and exits 0.

--check runs the model once at batch 1 and prints the detections on the
image (thresh 0.25, per-class NMS 0.45, mpdet's decoding); with
--mpdet-json (the output of `mpdet detect IMAGE --json`) it compares them
and exits 1 when they differ; --dump PREFIX writes each yolo output as raw
little-endian float32 (PREFIX.layerN.f32, C x H x W).
"""
import argparse
import array
import copy
import json
import math
import os
import statistics
import struct
import sys
import time

WARMUP = 10
THRESH = 0.25
NMS = 0.45


def parse_args():
    p = argparse.ArgumentParser(description="PyTorch YOLOv3-tiny peer for bench/run-gpu")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--iters", type=int, default=100, help="timed calls per row")
    p.add_argument("--warmup", type=int, default=WARMUP)
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--precisions", default="fp32,fp16")
    p.add_argument("--modes", default="eager,graph")
    p.add_argument("--image", default="/usr/share/darknet/data/dog.jpg")
    p.add_argument("--input-raw", default=None,
                   help="raw float32 3 x 416 x 416 input tensor instead of --image")
    p.add_argument("--model-dir", default=os.environ.get("MPDET_MODEL_DIR") or "models")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 convolutions")
    p.add_argument("--check", action="store_true", help="print detections instead of timing")
    p.add_argument("--mpdet-json", default=None, help="with --check: compare to this")
    p.add_argument("--dump", default=None, help="with --check: write yolo outputs")
    a = p.parse_args()
    try:
        a.batch_list = [int(s) for s in a.batches.split(",") if s]
        if not a.batch_list or min(a.batch_list) < 1:
            raise ValueError
    except ValueError:
        p.error("--batches needs a comma list of integers >= 1")
    a.prec_list = [s for s in a.precisions.split(",") if s]
    a.mode_list = [s for s in a.modes.split(",") if s]
    for s in a.prec_list:
        if s not in ("fp32", "fp16"):
            p.error("--precisions: fp32, fp16")
    for s in a.mode_list:
        if s not in ("eager", "graph"):
            p.error("--modes: eager, graph")
    if a.iters < 1 or a.warmup < 0:
        p.error("--iters >= 1, --warmup >= 0")
    return a


# ---------------------------------------------------------------- cfg + weights

def parse_cfg(path):
    """Darknet cfg -> list of (section name, {key: value}) in file order."""
    sections = []
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                if not line.endswith("]"):
                    raise ValueError("%s: bad section line %r" % (path, line))
                sections.append((line[1:-1].strip(), {}))
            elif "=" in line:
                if not sections:
                    raise ValueError("%s: key before any section" % path)
                k, v = line.split("=", 1)
                sections[-1][1][k.strip()] = v.strip()
            else:
                raise ValueError("%s: cannot parse %r" % (path, line))
    if not sections or sections[0][0] not in ("net", "network"):
        raise ValueError("%s: first section must be [net]" % path)
    return sections


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def read_weights(path):
    """The weights file as (header, float32 tensor of every parameter)."""
    import torch
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 12:
        raise ValueError("%s: too short" % path)
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    off = 12
    if 0 <= major < 1000 and 0 <= minor < 1000 and major * 10 + minor >= 2:
        seen = struct.unpack_from("<q", data, off)[0]
        off += 8
    else:
        seen = struct.unpack_from("<i", data, off)[0]
        off += 4
    body = bytearray(data[off:])
    if len(body) % 4:
        raise ValueError("%s: parameter bytes not a multiple of 4" % path)
    params = torch.frombuffer(body, dtype=torch.float32) if body else torch.zeros(0)
    return (major, minor, revision, seen), params


def build_model(torch, cfg_path, weights_path):
    import torch.nn as nn
    import torch.nn.functional as F

    class Conv(nn.Module):
        def __init__(self, c_in, o, size, stride, pad, leaky):
            super().__init__()
            self.conv = nn.Conv2d(c_in, o, size, stride, pad, bias=True)
            self.leaky = leaky

        def forward(self, x):
            x = self.conv(x)
            return F.leaky_relu(x, 0.1) if self.leaky else x

    class MaxPool(nn.Module):
        """darknet's maxpool: window size, stride, `padding` (default size - 1)
        of which padding // 2 on the top/left; taps outside the input do not
        count (-inf padding)."""

        def __init__(self, size, stride, padding, h, w):
            super().__init__()
            self.size, self.stride = size, stride
            self.out_h = (h + padding - size) // stride + 1
            self.out_w = (w + padding - size) // stride + 1
            left = top = padding // 2
            right = (self.out_w - 1) * stride + size - w - left
            bottom = (self.out_h - 1) * stride + size - h - top
            self.pad = (left, max(right, 0), top, max(bottom, 0))
            self.needs_pad = any(self.pad)

        def forward(self, x):
            if self.needs_pad:
                x = F.pad(x, self.pad, mode="constant", value=float("-inf"))
            return F.max_pool2d(x, self.size, self.stride)

    class Upsample(nn.Module):
        def __init__(self, stride):
            super().__init__()
            self.stride = stride

        def forward(self, x):
            return F.interpolate(x, scale_factor=self.stride, mode="nearest")

    class Yolo(nn.Module):
        def __init__(self, channels, nmask, classes):
            super().__init__()
            per = classes + 5
            if channels != nmask * per:
                raise ValueError("yolo: %d channels for %d anchors x %d" % (channels, nmask, per))
            m = torch.zeros(1, channels, 1, 1, dtype=torch.bool)
            for a in range(nmask):
                m[0, a * per + 0] = m[0, a * per + 1] = True
                m[0, a * per + 4:(a + 1) * per] = True
            self.register_buffer("mask", m, persistent=False)

        def forward(self, x):
            return torch.where(self.mask, torch.sigmoid(x), x)

    class Darknet(nn.Module):
        def __init__(self, sections, params):
            super().__init__()
            net = sections[0][1]
            self.in_c = int(net.get("channels", 3))
            self.in_h = int(net.get("height", 416))
            self.in_w = int(net.get("width", 416))
            self.layers = nn.ModuleList()
            self.kinds, self.routes, self.yolo_info = [], [], []
            shapes = []  # (c, h, w) of every layer's output
            c, h, w = self.in_c, self.in_h, self.in_w
            off = 0
            for i, (kind, kv) in enumerate(sections[1:]):
                route = None
                if kind in ("convolutional", "conv"):
                    o = int(kv.get("filters", 1))
                    size = int(kv.get("size", 1))
                    stride = int(kv.get("stride", 1))
                    pad = int(kv["padding"]) if "padding" in kv else (
                        size // 2 if int(kv.get("pad", 0)) else 0)
                    act = kv.get("activation", "logistic")
                    if act not in ("leaky", "linear"):
                        raise ValueError("layer %d: activation %s not supported" % (i, act))
                    if int(kv.get("groups", 1)) != 1:
                        raise ValueError("layer %d: grouped convolution not supported" % i)
                    bn = int(kv.get("batch_normalize", 0))
                    mod = Conv(c, o, size, stride, pad, act == "leaky")
                    k = c * size * size
                    need = o * (4 if bn else 1) + o * k
                    if off + need > params.numel():
                        raise ValueError("weights file ends inside layer %d" % i)
                    bias = params[off:off + o].clone()
                    off += o
                    wt = None
                    if bn:
                        scales = params[off:off + o]
                        mean = params[off + o:off + 2 * o]
                        var = params[off + 2 * o:off + 3 * o]
                        off += 3 * o
                    wt = params[off:off + o * k].clone().view(o, k)
                    off += o * k
                    if bn:
                        s = scales / (torch.sqrt(var) + 1e-6)
                        wt = wt * s.view(o, 1)
                        bias = bias - mean * s
                    with torch.no_grad():
                        mod.conv.weight.copy_(wt.view(o, c, size, size))
                        mod.conv.bias.copy_(bias)
                    c, h, w = o, (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
                elif kind in ("maxpool", "max"):
                    size = int(kv.get("size", kv.get("stride", 1)))
                    stride = int(kv.get("stride", 1))
                    padding = int(kv.get("padding", size - 1))
                    mod = MaxPool(size, stride, padding, h, w)
                    h, w = mod.out_h, mod.out_w
                elif kind == "upsample":
                    stride = int(kv.get("stride", 2))
                    mod = Upsample(stride)
                    h, w = h * stride, w * stride
                elif kind == "route":
                    route = [r if r >= 0 else i + r for r in ints(kv["layers"])]
                    for r in route:
                        if not 0 <= r < i:
                            raise ValueError("layer %d: route to %d" % (i, r))
                    hs = {shapes[r][1:] for r in route}
                    if len(hs) != 1:
                        raise ValueError("layer %d: route inputs differ in size" % i)
                    c = sum(shapes[r][0] for r in route)
                    h, w = shapes[route[0]][1:]
                    mod = nn.Identity()
                elif kind == "yolo":
                    mask = ints(kv.get("mask", ""))
                    anchors = ints(kv.get("anchors", ""))
                    classes = int(kv.get("classes", 20))
                    if not mask:
                        mask = list(range(int(kv.get("num", 1))))
                    mod = Yolo(c, len(mask), classes)
                    self.yolo_info.append({"layer": i, "mask": mask, "anchors": anchors,
                                           "classes": classes, "h": h, "w": w})
                else:
                    raise ValueError("layer %d: [%s] not supported" % (i, kind))
                self.layers.append(mod)
                self.kinds.append(kind)
                self.routes.append(route)
                shapes.append((c, h, w))
            if off != params.numel():
                raise ValueError("weights file: %d floats, the cfg uses %d" % (params.numel(), off))
            # Outputs later layers read, so forward keeps only those.
            self.keep = set()
            for r in self.routes:
                if r:
                    self.keep.update(r)

        def forward(self, x):
            x = x.to(next(self.parameters()).dtype)
            saved, outs = {}, []
            for i, mod in enumerate(self.layers):
                r = self.routes[i]
                if r is not None:
                    x = saved[r[0]] if len(r) == 1 else torch.cat([saved[j] for j in r], 1)
                else:
                    x = mod(x)
                if i in self.keep:
                    saved[i] = x
                if self.kinds[i] == "yolo":
                    outs.append(x)
            return outs

    sections = parse_cfg(cfg_path)
    header, params = read_weights(weights_path)
    model = Darknet(sections, params)
    model.eval()
    return model, header


# ---------------------------------------------------------------- input

def f32(v):
    return struct.unpack("f", struct.pack("f", v))[0]


def decode_image(path):
    """RGB uint8 tensor H x W x 3, via Pillow or OpenCV; None if neither."""
    import torch
    try:
        from PIL import Image
        im = Image.open(path).convert("RGB")
        t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        return t.view(im.height, im.width, 3), "pillow"
    except ImportError:
        pass
    try:
        import cv2
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("cannot read %s" % path)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return torch.from_numpy(rgb.copy()), "opencv"
    except ImportError:
        return None, None


def letterbox_size(im_w, im_h, net_w, net_h):
    if f32(net_w / im_w) < f32(net_h / im_h):
        nw, nh = net_w, (im_h * net_w) // im_w
    else:
        nh, nw = net_h, (im_w * net_h) // im_h
    return max(nw, 1), max(nh, 1)


def letterbox(torch, rgb, net_w, net_h):
    """darknet's letterbox (two-pass bilinear resize into a 0.5-grey
    canvas), the same float32 operations as mpdet's host/image.c."""
    ih, iw = rgb.shape[0], rgb.shape[1]
    nw, nh = letterbox_size(iw, ih, net_w, net_h)
    one = torch.tensor(1.0, dtype=torch.float32)
    px = rgb.permute(2, 0, 1).to(torch.float32) / torch.tensor(255.0)  # 3 x ih x iw
    # Horizontal pass: 3 x ih x nw.
    w_scale = (torch.tensor(float(iw - 1)) / (nw - 1)) if nw > 1 else torch.tensor(0.0)
    cols = torch.arange(nw, dtype=torch.float32)
    sx = cols * w_scale
    ix = sx.to(torch.int64).clamp(max=iw - 1)
    dx = sx - ix.to(torch.float32)
    ix1 = (ix + 1).clamp(max=iw - 1)
    part = (one - dx) * px[:, :, ix] + dx * px[:, :, ix1]
    last = (cols == nw - 1) if iw > 1 else torch.ones(nw, dtype=torch.bool)
    part = torch.where(last, px[:, :, iw - 1:iw].expand(-1, -1, nw), part)
    # Vertical pass into the centred window.
    h_scale = (torch.tensor(float(ih - 1)) / (nh - 1)) if nh > 1 else torch.tensor(0.0)
    rows = torch.arange(nh, dtype=torch.float32)
    sy = rows * h_scale
    iy = sy.to(torch.int64).clamp(max=ih - 1)
    dy = (sy - iy.to(torch.float32)).view(1, nh, 1)
    iy1 = (iy + 1).clamp(max=ih - 1)
    top = (one - dy) * part[:, iy, :]
    both = top + dy * part[:, iy1, :]
    lastr = ((rows == nh - 1) if ih > 1 else torch.ones(nh, dtype=torch.bool)).view(1, nh, 1)
    win = torch.where(lastr, top, both)
    out = torch.full((3, net_h, net_w), 0.5, dtype=torch.float32)
    ox, oy = (net_w - nw) // 2, (net_h - nh) // 2
    out[:, oy:oy + nh, ox:ox + nw] = win
    return out


def load_input(torch, a, model):
    """(3 x H x W float32 tensor, description, image size or None)."""
    shape = (model.in_c, model.in_h, model.in_w)
    if a.input_raw:
        with open(a.input_raw, "rb") as f:
            data = bytearray(f.read())
        n = shape[0] * shape[1] * shape[2]
        if len(data) != 4 * n:
            raise ValueError("%s: %d bytes, want %d" % (a.input_raw, len(data), 4 * n))
        return torch.frombuffer(data, dtype=torch.float32).view(*shape), "raw " + a.input_raw, None
    rgb, dec = decode_image(a.image)
    if rgb is None:
        if a.check:
            raise RuntimeError("no image decoder (Pillow or OpenCV) for --check; use --input-raw")
        g = torch.Generator().manual_seed(1)
        return torch.rand(shape, generator=g), "synthetic (no Pillow or OpenCV)", None
    t = letterbox(torch, rgb, model.in_w, model.in_h)
    return t, "%s letterboxed (%s)" % (a.image, dec), (rgb.shape[1], rgb.shape[0])


# ---------------------------------------------------------------- check

def detections(model, outs, im_w, im_h):
    """mpdet's decoding (host/yolo.c) of batch image 0: list of dicts."""
    net_w, net_h = model.in_w, model.in_h
    nw, nh = letterbox_size(im_w, im_h, net_w, net_h)
    cands = []
    for info, t in zip(model.yolo_info, outs):
        t = t[0].float().cpu()
        lh, lw, classes = info["h"], info["w"], info["classes"]
        per = classes + 5
        v = t.reshape(len(info["mask"]), per, lh * lw)
        for a, an in enumerate(info["mask"]):
            obj = v[a, 4]
            for i in (obj > THRESH).nonzero().flatten().tolist():
                row, col = divmod(i, lw)
                p = v[a, :, i].tolist()
                bx = (col + p[0]) / lw
                by = (row + p[1]) / lh
                bw = math.exp(p[2]) * info["anchors"][2 * an] / net_w
                bh = math.exp(p[3]) * info["anchors"][2 * an + 1] / net_h
                bx = (bx - (net_w - nw) / 2.0 / net_w) / (nw / net_w)
                by = (by - (net_h - nh) / 2.0 / net_h) / (nh / net_h)
                bw *= net_w / nw
                bh *= net_h / nh
                prob = [obj[i].item() * p[5 + c] for c in range(classes)]
                prob = [x if x > THRESH else 0.0 for x in prob]
                cands.append({"box": (bx, by, bw, bh), "prob": prob})

    def iou(a, b):
        def ov(x1, w1, x2, w2):
            return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)
        w = ov(a[0], a[2], b[0], b[2])
        h = ov(a[1], a[3], b[1], b[3])
        inter = 0 if w < 0 or h < 0 else w * h
        u = a[2] * a[3] + b[2] * b[3] - inter
        return inter / u if u > 0 else 0

    classes = len(cands[0]["prob"]) if cands else 0
    for k in range(classes):
        order = sorted(cands, key=lambda d: -d["prob"][k])
        for i, d in enumerate(order):
            if d["prob"][k] == 0:
                continue
            for e in order[i + 1:]:
                if iou(d["box"], e["box"]) > NMS:
                    e["prob"][k] = 0.0
    out = []
    clamp = lambda v, hi: min(max(v, 0.0), hi)
    for d in cands:
        x, y, w, h = d["box"]
        for k, pr in enumerate(d["prob"]):
            if pr > THRESH:
                out.append({"class_id": k, "confidence": pr,
                            "x0": clamp((x - w / 2) * im_w, im_w - 1),
                            "y0": clamp((y - h / 2) * im_h, im_h - 1),
                            "x1": clamp((x + w / 2) * im_w, im_w - 1),
                            "y1": clamp((y + h / 2) * im_h, im_h - 1)})
    out.sort(key=lambda d: -d["confidence"])
    return out


def box_iou(a, b):
    w = min(a["x1"], b["x1"]) - max(a["x0"], b["x0"])
    h = min(a["y1"], b["y1"]) - max(a["y0"], b["y0"])
    inter = max(w, 0) * max(h, 0)
    u = (a["x1"] - a["x0"]) * (a["y1"] - a["y0"]) + (b["x1"] - b["x0"]) * (b["y1"] - b["y0"]) - inter
    return inter / u if u > 0 else 0


def compare(ours, path):
    """Matches every mpdet detection to one of ours (same class, IoU >= 0.95,
    confidence within 0.01) and back. Returns the number of mismatches."""
    with open(path) as f:
        doc = json.load(f)
    if isinstance(doc, list):
        doc = doc[0]
    theirs = [dict(class_id=d["class_id"], confidence=d["confidence"], **d["box"])
              for d in doc["detections"]]
    bad, used = 0, set()
    for t in theirs:
        best, bi = None, -1
        for j, o in enumerate(ours):
            if j in used or o["class_id"] != t["class_id"]:
                continue
            v = box_iou(o, t)
            if best is None or v > best:
                best, bi = v, j
        if best is None or best < 0.95 or abs(ours[bi]["confidence"] - t["confidence"]) > 0.01:
            bad += 1
            print("mismatch mpdet class=%d conf=%.4f box=%.1f,%.1f,%.1f,%.1f best_iou=%s"
                  % (t["class_id"], t["confidence"], t["x0"], t["y0"], t["x1"], t["y1"],
                     "-" if best is None else "%.4f" % best))
        else:
            used.add(bi)
            o = ours[bi]
            print("match class=%d conf torch=%.5f mpdet=%.5f iou=%.5f"
                  % (t["class_id"], o["confidence"], t["confidence"], best))
    for j, o in enumerate(ours):
        if j not in used:
            bad += 1
            print("mismatch torch-only class=%d conf=%.4f" % (o["class_id"], o["confidence"]))
    print("compare mpdet=%d torch=%d mismatches=%d" % (len(theirs), len(ours), bad))
    return bad


def run_check(torch, a, model, dev, labels):
    x, desc, size = load_input(torch, a, model)
    print("input=%s" % desc)
    if size is None:
        if not os.path.exists(a.image):
            raise RuntimeError("--check needs --image for the box geometry")
        # Raw input: the box geometry still comes from the image's size.
        rgb, _ = decode_image(a.image)
        if rgb is None:
            raise RuntimeError("no image decoder (Pillow or OpenCV) for the size of %s" % a.image)
        size = (rgb.shape[1], rgb.shape[0])
    bad = 0
    for prec in a.prec_list:
        m = copy.deepcopy(model).to(dev).to(torch.float16 if prec == "fp16" else torch.float32)
        with torch.inference_mode():
            outs = m(x.unsqueeze(0).to(dev))
        if a.dump:
            for info, t in zip(model.yolo_info, outs):
                p = "%s.%s.layer%d.f32" % (a.dump, prec, info["layer"])
                array.array("f", t[0].float().cpu().reshape(-1).tolist()).tofile(open(p, "wb"))
                print("dump=%s" % p)
        dets = detections(model, outs, size[0], size[1])
        for d in dets:
            print("det precision=%s class=%d label=%s conf=%.4f box=%.1f,%.1f,%.1f,%.1f"
                  % (prec, d["class_id"], labels[d["class_id"]] if d["class_id"] < len(labels)
                     else "?", d["confidence"], d["x0"], d["y0"], d["x1"], d["y1"]))
        if a.mpdet_json:
            bad += compare(dets, a.mpdet_json)
    return 1 if bad else 0


# ---------------------------------------------------------------- timing

def time_rows(torch, a, model, dev, x1):
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    for prec in a.prec_list:
        dtype = torch.float16 if prec == "fp16" else torch.float32
        m = copy.deepcopy(model).to(dev).to(dtype)
        if a.channels_last:
            m = m.to(memory_format=torch.channels_last)
        for b in a.batch_list:
            host = x1.unsqueeze(0).expand(b, -1, -1, -1).contiguous()
            if cuda:
                host = host.pin_memory()
            din = torch.empty(host.shape, dtype=torch.float32, device=dev)
            if a.channels_last:
                din = din.contiguous(memory_format=torch.channels_last)
            for mode in a.mode_list:
                if mode == "graph" and not cuda:
                    print("torch precision=%s mode=graph batch=%d skipped=no_cuda" % (prec, b))
                    continue
                with torch.inference_mode():
                    if mode == "eager":
                        def call(m=m, din=din, host=host):
                            din.copy_(host, non_blocking=True)
                            return m(din)
                    else:
                        # Warm up on a side stream (cudnn.benchmark picks its
                        # algorithms there), then capture one call.
                        s = torch.cuda.Stream(dev)
                        s.wait_stream(torch.cuda.current_stream(dev))
                        with torch.cuda.stream(s):
                            for _ in range(3):
                                din.copy_(host, non_blocking=True)
                                m(din)
                        torch.cuda.current_stream(dev).wait_stream(s)
                        sync()
                        g = torch.cuda.CUDAGraph()
                        with torch.cuda.graph(g):
                            static_out = m(din)

                        def call(g=g, static_out=static_out, din=din, host=host):
                            din.copy_(host, non_blocking=True)
                            g.replay()
                            return static_out
                    for _ in range(a.warmup):
                        call()
                    sync()
                    ms = []
                    for _ in range(a.iters):
                        t0 = time.perf_counter()
                        call()
                        sync()
                        ms.append((time.perf_counter() - t0) * 1e3)
                med = statistics.median(ms)
                print("torch precision=%s mode=%s batch=%d iters=%d ms_median=%.4f ms_min=%.4f "
                      "ms_mean=%.4f ips=%.1f" % (prec, mode, b, a.iters, med, min(ms),
                                                 statistics.mean(ms), b / med * 1e3))
                sys.stdout.flush()
                del call
                if mode == "graph":
                    del g, static_out
            del host, din
            if cuda:
                torch.cuda.empty_cache()
        if cuda:
            print("torch_peak_mem_mib.%s=%.1f" % (prec, torch.cuda.max_memory_allocated(dev) / 2**20))
            torch.cuda.reset_peak_memory_stats(dev)


def main():
    a = parse_args()
    try:
        import torch
    except Exception as ex:  # ImportError, or a broken install
        print("skipped: torch not importable for %s (%s)" % (sys.executable, ex))
        return 0
    dev = torch.device(a.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            print("skipped: torch %s has no CUDA device (built for CUDA %s)"
                  % (torch.__version__, torch.version.cuda))
            return 0
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = a.tf32
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
    cfg = os.path.join(a.model_dir, "yolov3-tiny.cfg")
    weights = os.path.join(a.model_dir, "yolov3-tiny.weights")
    t0 = time.perf_counter()
    model, header = build_model(torch, cfg, weights)
    load_ms = (time.perf_counter() - t0) * 1e3

    print("engine=torch")
    print("torch_version=%s" % torch.__version__)
    print("python=%s" % sys.executable)
    if dev.type == "cuda":
        print("torch_cuda=%s" % torch.version.cuda)
        print("cudnn=%s" % torch.backends.cudnn.version())
        print("device_name=%s" % torch.cuda.get_device_name(dev))
        print("cudnn_benchmark=1")
        print("tf32=%d" % int(a.tf32))
    else:
        print("device_name=cpu (%d torch threads)" % torch.get_num_threads())
    print("device=%s" % dev)
    print("weights_header=%d.%d.%d seen=%d" % header)
    print("load_ms=%.1f" % load_ms)
    print("channels_last=%d" % int(a.channels_last))
    sys.stdout.flush()

    if a.check:
        labels = []
        names = os.path.join(a.model_dir, "coco.names")
        if os.path.exists(names):
            labels = [s.strip() for s in open(names)]
        return run_check(torch, a, model, dev, labels)

    x, desc, _ = load_input(torch, a, model)
    print("input=%s" % desc)
    print("iters=%d" % a.iters)
    print("warmup=%d" % a.warmup)
    sys.stdout.flush()
    time_rows(torch, a, model, dev, x)
    return 0


if __name__ == "__main__":
    sys.exit(main())
