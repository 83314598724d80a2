"""Single-tenant framework benchmark: one process runs every measurement and prints JSON.

    python3 bench.py OUT.json           (run natively or under Baton; the caller decides)

Measurements (PyTorch, CUDA, cuDNN benchmark mode off so both runs use the same kernels):
  resnet50_b1      ResNet-50 fp16 inference, batch 1: per-request latency, p50/p99 (ms)
  resnet50_b64     ResNet-50 fp16 inference, batch 64: throughput (images/s)
  encoder_b8       6-layer transformer encoder (d=512) fp16, batch 8 x 128 tokens: p50/p99 (ms)
  train_step       ResNet-50 fp32 training step, batch 32, SGD: median step time (ms)
Each request includes its host-to-device input copy and ends with a synchronize.
"""

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "gpu", "frameworks"))
from checks import encoder, resnet50  # noqa: E402


def percentiles(xs):
    a = np.array(xs) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(xs)}


def timed(fn, warm, n):
    import torch

    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def main():
    import torch

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = False
    res = {}
    m = resnet50(torch).cuda().eval().half()
    x1 = torch.randn(1, 3, 224, 224).half().pin_memory()
    x64 = torch.randn(64, 3, 224, 224).half().pin_memory()
    with torch.no_grad():
        res["resnet50_b1"] = percentiles(timed(lambda: m(x1.cuda(non_blocking=True)), 30, 300))
        t = timed(lambda: m(x64.cuda(non_blocking=True)), 5, 40)
        res["resnet50_b64"] = {"images_per_s": 64 / float(np.median(t)), "p50_ms": float(np.median(t) * 1e3), "n": len(t)}
        e = encoder(torch).cuda().eval().half()
        xe = torch.randn(8, 128, 512).half().pin_memory()
        res["encoder_b8"] = percentiles(timed(lambda: e(xe.cuda(non_blocking=True)), 20, 200))
    del m
    mt = resnet50(torch).cuda().train()
    opt = torch.optim.SGD(mt.parameters(), lr=0.01, momentum=0.9)
    xt = torch.randn(32, 3, 224, 224, device="cuda")
    yt = torch.randint(0, 1000, (32,), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(mt(xt), yt).backward()
        opt.step()

    t = timed(step, 5, 40)
    res["train_step"] = {"p50_ms": float(np.median(t) * 1e3), "n": len(t)}
    json.dump(res, open(sys.argv[1], "w"), indent=1)


if __name__ == "__main__":
    main()
