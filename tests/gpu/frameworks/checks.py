"""Framework checks run natively and under Baton with the same seed.

    python3 checks.py NAME OUT.npz     run one check, save its outputs
    python3 checks.py --list           print the checks: name, tolerance, needs

Each check returns a dict of numpy arrays; compare.py diffs the native and Baton files.
A check's tolerance is the largest absolute difference accepted (0: bit-exact). Checks that
depend on nondeterministic kernels (atomics in backward passes, autotuning) state a tolerance.
"""

import os
import sys

import numpy as np

CHECKS = {}


def check(tol=0.0, needs="torch"):
    def wrap(fn):
        CHECKS[fn.__name__] = (fn, tol, needs)
        return fn

    return wrap


# ----------------------------------------------------------------------------- PyTorch helpers


def _torch():
    import torch

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def resnet50(torch):
    """ResNet-50 (torchvision's layout), defined here so torchvision is not required."""
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = width * 4
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + idt)

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    return nn.Sequential(*layers)


def encoder(torch, layers=6, d=512):
    layer = torch.nn.TransformerEncoderLayer(d, 8, 2048, dropout=0.0, batch_first=True)
    return torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def np_of(t):
    return t.detach().float().cpu().numpy()


# ----------------------------------------------------------------------------- PyTorch checks


@check()
def torch_device_query():
    torch = _torch()
    p = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info()
    return {
        "count": np.array([torch.cuda.device_count()]),
        "cc": np.array(torch.cuda.get_device_capability(0)),
        "sms": np.array([p.multi_processor_count]),
        "total_mem": np.array([p.total_memory]),
        "free_le_total": np.array([free <= total and free > 0]),
        "name": np.frombuffer(torch.cuda.get_device_name(0).encode(), dtype=np.uint8),
    }


@check()
def torch_nvml_queries():
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    torch = _torch()
    out = {"nvml_count": np.array([torch.cuda._device_count_nvml()]), "available": np.array([torch.cuda.is_available()])}
    torch.ones(1, device="cuda")
    return out


@check()
def torch_elementwise_reduce():
    torch = _torch()
    x = torch.randn(1 << 20, device="cuda")
    return {"sum": np_of((x * 2 + 1).relu().sum()), "max": np_of(x.max()), "sorted": np_of(torch.sort(x[:4096])[0])}


def _matmul(dtype):
    torch = _torch()
    a = torch.randn(1024, 1024, device="cuda", dtype=getattr(torch, DTYPES[dtype]))
    b = torch.randn(1024, 1024, device="cuda", dtype=getattr(torch, DTYPES[dtype]))
    return {"c": np_of(a @ b)}


@check()
def torch_matmul_fp32():
    return _matmul("fp32")


@check()
def torch_matmul_fp16():
    return _matmul("fp16")


@check()
def torch_matmul_bf16():
    return _matmul("bf16")


def _resnet(dtype, batch=2):
    torch = _torch()
    m = resnet50(torch).cuda().eval().to(getattr(torch, DTYPES[dtype]))
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=getattr(torch, DTYPES[dtype]))
    with torch.no_grad():
        y = m(x)
    return {"logits": np_of(y)}


@check()
def torch_resnet50_fp32():
    return _resnet("fp32")


@check()
def torch_resnet50_fp16():
    return _resnet("fp16")


@check()
def torch_resnet50_bf16():
    return _resnet("bf16")


def _encoder(dtype):
    torch = _torch()
    m = encoder(torch).cuda().eval().to(getattr(torch, DTYPES[dtype]))
    x = torch.randn(4, 128, 512, device="cuda", dtype=getattr(torch, DTYPES[dtype]))
    with torch.no_grad():
        y = m(x)
    return {"out": np_of(y)}


@check()
def torch_encoder_fp32():
    return _encoder("fp32")


@check()
def torch_encoder_fp16():
    return _encoder("fp16")


@check()
def torch_encoder_bf16():
    return _encoder("bf16")


# Backward passes of convolutions and index ops may use atomics: a stated tolerance.
@check(tol=1e-3)
def torch_training_loop():
    torch = _torch()
    nn = torch.nn
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 32 * 32, 10)).cuda()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    g = torch.Generator(device="cuda").manual_seed(1)
    losses = []
    for _ in range(20):
        x = torch.randn(32, 3, 32, 32, device="cuda", generator=g)
        t = torch.randint(0, 10, (32,), device="cuda", generator=g)
        loss = nn.functional.cross_entropy(m(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": np.array(losses), "w": np_of(m[3].weight[:4])}


@check()
def torch_pinned_nonblocking():
    torch = _torch()
    h = torch.randn(1 << 22).pin_memory()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        d = h.to("cuda", non_blocking=True)
        y = (d * 3).to("cpu", non_blocking=True)
    s.synchronize()
    return {"y": y.numpy(), "pinned": np.array([h.is_pinned()])}


@check()
def torch_streams_priorities_events():
    torch = _torch()
    lo, hi = torch.cuda.Stream(priority=0), torch.cuda.Stream(priority=-1)
    a = torch.randn(2048, 2048, device="cuda")
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.cuda.stream(lo):
        start.record()
        x = a @ a
        ev = torch.cuda.Event()
        ev.record()
    with torch.cuda.stream(hi):
        hi.wait_event(ev)
        y = x.sum(dim=0)
        end.record()
    end.synchronize()
    ms = start.elapsed_time(end)
    return {"y": np_of(y), "timed": np.array([ms > 0]), "prio": np.array([hi.priority, lo.priority])}


@check()
def torch_cuda_graph():
    torch = _torch()
    lin = torch.nn.Linear(256, 256).cuda()
    static_x = torch.randn(64, 256, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            lin(static_x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_y = torch.relu(lin(static_x)) * 2
    outs = []
    for i in range(3):
        static_x.copy_(torch.full((64, 256), float(i), device="cuda"))
        g.replay()
        outs.append(np_of(static_y))
    return {"replays": np.stack(outs)}


@check(tol=1e-4)
def torch_compile():
    torch = _torch()

    def f(x, y):
        return torch.sin(x) * torch.cos(y) + (x * y).sigmoid()

    cf = torch.compile(f)
    x, y = torch.randn(4096, 256, device="cuda"), torch.randn(4096, 256, device="cuda")
    return {"z": np_of(cf(x, y)), "ref": np_of(f(x, y))}


@check()
def torch_expandable_segments():
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    torch = _torch()
    xs = [torch.randn(1 << 20, device="cuda") * i for i in range(8)]
    big = torch.randn(64 << 20, device="cuda")
    del xs[::2]
    more = [torch.ones(3 << 20, device="cuda") for _ in range(4)]
    return {"s": np.array([float(t.sum()) for t in xs + more]), "big": np_of(big[:1024])}


@check()
def torch_memory_stats():
    torch = _torch()
    a = torch.empty(1 << 20, device="cuda")
    b = torch.empty(3 << 20, device="cuda")
    del a
    st = torch.cuda.memory_stats()
    return {
        "allocated": np.array([torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()]),
        "reserved_ge": np.array([torch.cuda.memory_reserved() >= torch.cuda.memory_allocated()]),
        "alloc_count": np.array([st["allocation.all.allocated"], st["allocation.all.freed"]]),
        "b": np.array([b.numel()]),
    }


# ----------------------------------------------------------------------------- CuPy


@check(needs="cupy")
def cupy_elementwise_reduce():
    import cupy as cp

    rs = cp.random.RandomState(0)
    x = rs.standard_normal(1 << 20, dtype=cp.float32)
    k = cp.ElementwiseKernel("float32 x", "float32 y", "y = x * x + 1.0f", "sq1")
    y = k(x)
    return {"y": cp.asnumpy(y[:4096]), "sum": cp.asnumpy(y.sum()), "max": cp.asnumpy(cp.max(x))}


@check(needs="cupy")
def cupy_matmul():
    import cupy as cp

    rs = cp.random.RandomState(0)
    a = rs.standard_normal((1024, 1024), dtype=cp.float32)
    b = rs.standard_normal((1024, 1024), dtype=cp.float32)
    return {"c": cp.asnumpy(a @ b)}


@check(needs="cupy")
def cupy_rawkernel_rawmodule():
    import cupy as cp

    src = r"""
    extern "C" __global__ void axpy(const float* x, float* y, float a, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n) y[i] = a * x[i] + y[i];
    }
    extern "C" __global__ void scale(float* y, float s, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n) y[i] *= s;
    }
    """
    n = 1 << 16
    x = cp.arange(n, dtype=cp.float32)
    y = cp.ones(n, dtype=cp.float32)
    cp.RawKernel(src, "axpy")((n // 256,), (256,), (x, y, cp.float32(2.0), cp.int32(n)))
    mod = cp.RawModule(code=src)
    mod.get_function("scale")((n // 256,), (256,), (y, cp.float32(0.5), cp.int32(n)))
    return {"y": cp.asnumpy(y)}


# ----------------------------------------------------------------------------- JAX


def _jax():
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    assert jax.devices()[0].platform == "gpu", jax.devices()
    return jax


@check(tol=1e-5, needs="jax")
def jax_jit_matmul():
    jax = _jax()
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(k1, (1024, 1024), jnp.float32)
    b = jax.random.normal(k2, (1024, 1024), jnp.float32)
    f = jax.jit(lambda a, b: jnp.tanh(a @ b))
    return {"c": np.asarray(f(a, b))}


@check(tol=1e-5, needs="jax")
def jax_mlp_train_step():
    jax = _jax()
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "w1": jax.random.normal(keys[0], (64, 128)) * 0.1,
        "w2": jax.random.normal(keys[1], (128, 10)) * 0.1,
    }
    x = jax.random.normal(keys[2], (256, 64))
    y = jax.random.randint(keys[3], (256,), 0, 10)

    def loss(p, x, y):
        logits = jnp.maximum(x @ p["w1"], 0) @ p["w2"]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(256), y])

    @jax.jit
    def step(p, x, y):
        l, g = jax.value_and_grad(loss)(p, x, y)
        return jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g), l

    ls = []
    for _ in range(5):
        params, l = step(params, x, y)
        ls.append(float(l))
    return {"losses": np.array(ls), "w2": np.asarray(params["w2"])}


def main():
    if sys.argv[1:] == ["--list"]:
        for name, (_, tol, needs) in CHECKS.items():
            print(name, tol, needs)
        return
    name, out = sys.argv[1], sys.argv[2]
    fn, _, _ = CHECKS[name]
    res = fn()
    np.savez(out, **{k: np.asarray(v) for k, v in res.items()})
    print(f"{name}: ok ({', '.join(sorted(res))})")


if __name__ == "__main__":
    main()
