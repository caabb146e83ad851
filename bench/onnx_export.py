#!/usr/bin/env python3
"""onnx_export - writes an ONNX model of a darknet cfg + fp32 weights, the
model bench/peers.py feeds to ONNX Runtime and OpenVINO.

    build/peers-venv/bin/python bench/onnx_export.py CFG WEIGHTS OUT.onnx
        [--opset N]

The graph takes one 1x3xHxW fp32 input ("input", H and W from [net]) and
has one output per [yolo] layer: the raw output of the layer that feeds it
(255 channels for COCO), named "layerN" after that layer's darknet index
(layer15 and layer22 for yolov3-tiny), so it can be compared with mpdet's
own outputs of those layers (bench_forward --dump). The yolo layers'
decoding (logistic, anchors) stays outside the graph, as in mpdet.

It mirrors mpdet's reading of the cfg (host/net.c) for the layer kinds
yolov3-tiny uses and refuses every other one, naming the cfg line:

  convolutional  Conv; batch norm folded into the weights and bias exactly
                 as darknet and mpdet do it: scale / (sqrt(var) + 1e-6)
                 (darknet's normalize_cpu; not sqrt(var + 1e-5), which is
                 cuDNN's), then LeakyRelu 0.1 / Relu / Sigmoid / nothing.
                 pad=1 is size/2 on every side, else padding=.
  maxpool        MaxPool. darknet pads (size - 1) in total by default
                 (padding=), the window starting at -padding/2, so the pad
                 is padding/2 before and the rest after, as far as the last
                 window needs: size 2 stride 1 keeps 13x13 with pads
                 [0, 0, 1, 1]; size 2 stride 2 needs none.
  route          Concat on channels, or the layer itself for one input.
  upsample       Resize nearest (asymmetric coordinates, floor):
                 out[y][x] = in[y / stride][x / stride], darknet's rule.
  yolo           a graph output (see above).

Numpy and the onnx package only; the export is deterministic, so the same
cfg and weights give the same file.
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# darknet's normalize_cpu: (x - mean) / (sqrt(variance) + .000001f). mpdet
# folds with the same expression (host/net.c), and its layers agree with
# Debian's darknet within 4e-6 (README, "Correctness").
BN_EPS = 1e-6
LEAKY_ALPHA = 0.1

# Keys each supported section may have. Keys that change the arithmetic
# and are not handled here (groups, dilation, ...) are therefore refused,
# as mpdet refuses every key it does not read.
CONV_KEYS = {"filters", "size", "stride", "pad", "padding", "batch_normalize", "activation",
             # mpdet's per-layer precision keys: not part of the fp32 network.
             "precision", "quantize"}
MAXPOOL_KEYS = {"size", "stride", "padding"}
ROUTE_KEYS = {"layers"}
UPSAMPLE_KEYS = {"stride"}
ACTIVATIONS = ("linear", "leaky", "relu", "logistic")


class ExportError(Exception):
    """A cfg or weights file this exporter cannot turn into ONNX."""


class Section:
    def __init__(self, name, line):
        self.name = name
        self.line = line
        self.kv = {}  # key -> (value, line)


def parse_cfg(path):
    """[section] and key=value lines, as mpdet's host/cfg.c reads them:
    blank lines and lines starting with '#' or ';' are skipped."""
    secs = []
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line[0] == "[":
                if line[-1] != "]" or len(line) < 3:
                    raise ExportError("%s:%d: malformed section header %r" % (path, n, line))
                secs.append(Section(line[1:-1].strip(), n))
                continue
            if "=" not in line:
                raise ExportError("%s:%d: expected key=value, got %r" % (path, n, line))
            if not secs:
                raise ExportError("%s:%d: key=value before the first [section]" % (path, n))
            k, v = line.split("=", 1)
            secs[-1].kv[k.strip()] = (v.strip(), n)
    if not secs or secs[0].name not in ("net", "network"):
        where = "%s:%d" % (path, secs[0].line) if secs else path
        raise ExportError("%s: the first section must be [net]" % where)
    if len(secs) < 2:
        raise ExportError("%s: no layers after [net]" % path)
    return secs


def get_int(path, s, key, default, lo, hi):
    if key not in s.kv:
        return default
    v, n = s.kv[key]
    try:
        x = int(v, 10)
    except ValueError:
        raise ExportError("%s:%d: %s=%r is not an integer" % (path, n, key, v)) from None
    if not lo <= x <= hi:
        raise ExportError("%s:%d: %s=%d outside %d..%d" % (path, n, key, x, lo, hi))
    return x


def check_keys(path, s, allowed, index):
    for k, (_, n) in s.kv.items():
        if k not in allowed:
            raise ExportError("%s:%d: key %r of [%s] (layer %d) is not supported by "
                              "onnx_export.py" % (path, n, k, s.name, index))


def weights_reader(path, nparams):
    """The weights file's floats after its header, checked for size the way
    mpdet checks it (host/net.c: mpd_net_weights_file_size)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 12:
        raise ExportError("%s: %d bytes is too short for a darknet weights header"
                          % (path, len(data)))
    major, minor, revision = np.frombuffer(data[:12], dtype="<i4")
    # darknet: a 64-bit "seen" counter from version 0.2 on.
    big = 0 <= major < 1000 and 0 <= minor < 1000 and major * 10 + minor >= 2
    off = 12 + (8 if big else 4)
    want = off + 4 * nparams
    if len(data) != want:
        raise ExportError("%s: size %d bytes does not match the cfg, which needs %d bytes "
                          "(version %d.%d.%d header + %d floats)"
                          % (path, len(data), want, major, minor, revision, nparams))
    return np.frombuffer(data, dtype="<f4", offset=off).astype(np.float32)


def build(cfg_path, weights_path, opset):
    secs = parse_cfg(cfg_path)
    net = secs[0]
    w = get_int(cfg_path, net, "width", 416, 1, 16384)
    h = get_int(cfg_path, net, "height", 416, 1, 16384)
    c = get_int(cfg_path, net, "channels", 3, 1, 4096)

    # First pass: shapes, parameter count and the layer list, so that a bad
    # cfg fails before the weights are read.
    layers = []  # dicts: kind, line, in/out shape, params
    shape = (c, h, w)
    for i, s in enumerate(secs[1:]):
        L = {"index": i, "line": s.line, "kind": s.name, "in": shape}
        if s.name in ("convolutional", "conv"):
            check_keys(cfg_path, s, CONV_KEYS, i)
            f = get_int(cfg_path, s, "filters", 1, 1, 65536)
            k = get_int(cfg_path, s, "size", 1, 1, 31)
            st = get_int(cfg_path, s, "stride", 1, 1, 64)
            pad = get_int(cfg_path, s, "pad", 0, 0, 1)
            padding = get_int(cfg_path, s, "padding", 0, 0, 64)
            bn = get_int(cfg_path, s, "batch_normalize", 0, 0, 1)
            act, aline = s.kv.get("activation", ("logistic", s.line))  # darknet's default
            if act not in ACTIVATIONS:
                raise ExportError("%s:%d: activation %r is not supported (%s)"
                                  % (cfg_path, aline, act, ", ".join(ACTIVATIONS)))
            p = k // 2 if pad else padding
            ci, hi, wi = shape
            if hi + 2 * p < k or wi + 2 * p < k:
                raise ExportError("%s:%d: convolution size %d is larger than its %dx%d input"
                                  % (cfg_path, s.line, k, wi, hi))
            shape = (f, (hi + 2 * p - k) // st + 1, (wi + 2 * p - k) // st + 1)
            L.update(kind="conv", filters=f, size=k, stride=st, pad=p, bn=bn, act=act)
        elif s.name in ("maxpool", "max"):
            check_keys(cfg_path, s, MAXPOOL_KEYS, i)
            st = get_int(cfg_path, s, "stride", 1, 1, 64)
            k = get_int(cfg_path, s, "size", st, 1, 64)
            padding = get_int(cfg_path, s, "padding", k - 1, 0, 64)
            ci, hi, wi = shape
            if hi + padding < k or wi + padding < k:
                raise ExportError("%s:%d: maxpool size %d is larger than its input"
                                  % (cfg_path, s.line, k))
            oh = (hi + padding - k) // st + 1
            ow = (wi + padding - k) // st + 1
            # darknet's window starts at -padding/2; ONNX pads explicitly,
            # before and after, and its output size must come out the same.
            pb = padding // 2
            ph = (oh - 1) * st + k - hi - pb
            pw = (ow - 1) * st + k - wi - pb
            if ph < 0 or pw < 0:
                raise ExportError("%s:%d: maxpool size %d stride %d padding %d drops input "
                                  "rows, which onnx_export.py does not export"
                                  % (cfg_path, s.line, k, st, padding))
            shape = (ci, oh, ow)
            L.update(kind="maxpool", size=k, stride=st, pads=[pb, pb, ph, pw])
        elif s.name == "route":
            check_keys(cfg_path, s, ROUTE_KEYS, i)
            if "layers" not in s.kv:
                raise ExportError("%s:%d: [route] needs layers=" % (cfg_path, s.line))
            v, n = s.kv["layers"]
            try:
                refs = [int(x, 10) for x in v.split(",")]
            except ValueError:
                raise ExportError("%s:%d: layers=%r is not a list of integers"
                                  % (cfg_path, n, v)) from None
            src = []
            for r in refs:
                a = i + r if r < 0 else r
                if not 0 <= a < i:
                    raise ExportError("%s:%d: layers refers to layer %d, which is not an "
                                      "earlier layer of layer %d" % (cfg_path, n, a, i))
                if layers[a]["kind"] == "yolo":
                    raise ExportError("%s:%d: route from a [yolo] layer (%d) is not supported"
                                      % (cfg_path, n, a))
                src.append(a)
            hs = {layers[a]["out"][1:] for a in src}
            if len(hs) != 1:
                raise ExportError("%s:%d: route joins layers of different sizes"
                                  % (cfg_path, n))
            shape = (sum(layers[a]["out"][0] for a in src),) + layers[src[0]]["out"][1:]
            L.update(src=src)
        elif s.name == "upsample":
            check_keys(cfg_path, s, UPSAMPLE_KEYS, i)
            st = get_int(cfg_path, s, "stride", 2, 1, 32)
            shape = (shape[0], shape[1] * st, shape[2] * st)
            L.update(stride=st)
        elif s.name == "yolo":
            # Its keys (mask, anchors, classes, ...) only decode the output,
            # which happens outside the graph.
            if i == 0:
                raise ExportError("%s:%d: [yolo] cannot be the first layer"
                                  % (cfg_path, s.line))
        else:
            raise ExportError("%s:%d: layer %d is [%s], which onnx_export.py does not export "
                              "(it exports convolutional, maxpool, route, upsample, yolo)"
                              % (cfg_path, s.line, i, s.name))
        L["out"] = shape
        layers.append(L)

    nparams = sum(L["filters"] * (4 if L["bn"] else 1)
                  + L["filters"] * L["in"][0] * L["size"] ** 2
                  for L in layers if L["kind"] == "conv")
    flat = weights_reader(weights_path, nparams)

    nodes, inits, outputs = [], [], []
    names = []  # tensor name of each layer's output
    pos = 0

    def take(n):
        nonlocal pos
        a = flat[pos:pos + n]
        pos += n
        return a

    for L in layers:
        i, kind = L["index"], L["kind"]
        x = names[i - 1] if i else "input"
        y = "layer%d" % i
        if kind == "conv":
            f, k, ci = L["filters"], L["size"], L["in"][0]
            bias = take(f).astype(np.float64)
            if L["bn"]:
                scales, mean, var = (take(f).astype(np.float64) for _ in range(3))
            wts = take(f * ci * k * k).reshape(f, ci, k, k).astype(np.float64)
            if L["bn"]:
                # In float64, then rounded once: closer to the exact fold
                # than mpdet's float32 products (their difference is far
                # below the export check's tolerance).
                sc = scales / (np.sqrt(var) + BN_EPS)
                wts = wts * sc[:, None, None, None]
                bias = bias - mean * sc
            wts, bias = wts.astype(np.float32), bias.astype(np.float32)
            if not (np.isfinite(wts).all() and np.isfinite(bias).all()):
                raise ExportError("%s: layer %d has a non-finite weight or bias after "
                                  "batch-norm folding" % (weights_path, i))
            inits += [numpy_helper.from_array(wts, "conv%d.weight" % i),
                      numpy_helper.from_array(bias, "conv%d.bias" % i)]
            p = L["pad"]
            cy = y if L["act"] == "linear" else "conv%d.out" % i
            nodes.append(helper.make_node(
                "Conv", [x, "conv%d.weight" % i, "conv%d.bias" % i], [cy], name="conv%d" % i,
                kernel_shape=[k, k], strides=[L["stride"]] * 2, pads=[p, p, p, p],
                dilations=[1, 1], group=1))
            if L["act"] == "leaky":
                nodes.append(helper.make_node("LeakyRelu", [cy], [y], name="leaky%d" % i,
                                              alpha=LEAKY_ALPHA))
            elif L["act"] == "relu":
                nodes.append(helper.make_node("Relu", [cy], [y], name="relu%d" % i))
            elif L["act"] == "logistic":
                nodes.append(helper.make_node("Sigmoid", [cy], [y], name="logistic%d" % i))
        elif kind == "maxpool":
            nodes.append(helper.make_node(
                "MaxPool", [x], [y], name="maxpool%d" % i, kernel_shape=[L["size"]] * 2,
                strides=[L["stride"]] * 2, pads=L["pads"]))
        elif kind == "route":
            src = [names[a] for a in L["src"]]
            if len(src) == 1:
                y = src[0]  # one input: the layer itself, no node
            else:
                nodes.append(helper.make_node("Concat", src, [y], name="route%d" % i, axis=1))
        elif kind == "upsample":
            st = float(L["stride"])
            sname = "upsample%d.scales" % i
            inits.append(numpy_helper.from_array(np.array([1, 1, st, st], np.float32), sname))
            nodes.append(helper.make_node(
                "Resize", [x, "", sname], [y], name="upsample%d" % i, mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
        elif kind == "yolo":
            y = x
            outputs.append(helper.make_tensor_value_info(
                x, TensorProto.FLOAT, [1] + list(layers[i - 1]["out"])))
        names.append(y)
    assert pos == nparams

    if not outputs:
        raise ExportError("%s: no [yolo] layer, so the graph would have no output" % cfg_path)
    graph = helper.make_graph(
        nodes, os.path.basename(cfg_path),
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, h, w])],
        outputs, initializer=inits)
    graph.doc_string = ("darknet %s + %s; outputs: the raw tensors entering the yolo layers"
                        % (os.path.basename(cfg_path), os.path.basename(weights_path)))
    model = helper.make_model(graph, producer_name="mpdet bench/onnx_export.py",
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cfg", help="darknet .cfg (yolov3-tiny's layer kinds only)")
    p.add_argument("weights", help="darknet .weights (fp32)")
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=13, help="ONNX opset, 13 or later (default 13)")
    a = p.parse_args()
    if a.opset < 13:
        p.error("--opset must be 13 or later")
    try:
        model = build(a.cfg, a.weights, a.opset)
    except (ExportError, OSError) as e:
        sys.exit("onnx_export: %s" % e)
    tmp = a.out + ".part"
    onnx.save(model, tmp)
    os.replace(tmp, a.out)
    outs = ", ".join("%s %s" % (o.name, "x".join(str(d.dim_value)
                                                  for d in o.type.tensor_type.shape.dim))
                     for o in model.graph.output)
    print("onnx_export: wrote %s (opset %d, %d nodes; outputs %s)"
          % (a.out, a.opset, len(model.graph.node), outs))


if __name__ == "__main__":
    main()
