"""The GPU work of the benchmark's tenants (PyTorch), and a GPU-free stand-in for local tests.

Latency models: one request = H2D copy of the input from pinned memory, forward pass, D2H copy of
the output into pinned memory, stream synchronize. The synchronize is what makes each request
one job for Baton's srpt policy (jobs end at the tenant's synchronising calls).

Best-effort work: units issued back to back with up to `depth` units outstanding (tracked with
events), so the tenant always has work queued on the GPU, as a real training or batch job does.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Service times (seconds) of the stand-ins used with --fake, roughly the H100 figures.
FAKE_SERVICE = {
    "mlp": 0.0001,
    "resnet18": 0.0009,
    "resnet50": 0.003,
    "resnet50_b8": 0.004,
    "encoder": 0.002,
    "encoder_large": 0.008,
}
FAKE_UNIT = {"gemm": 0.002, "train": 0.03, "infer64": 0.02}

LAT_MODELS = sorted(FAKE_SERVICE)
BE_WORKS = sorted(FAKE_UNIT)


def _torch():
    import torch

    torch.manual_seed(0)
    return torch


def _checks_module():
    # ResNet-50 and the encoder are the ones the framework checks already validate under Baton.
    sys.path.insert(0, os.path.join(REPO, "tests", "gpu", "frameworks"))
    import checks

    return checks


def resnet18(torch):
    nn = torch.nn

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + idt)

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers)


def mlp(torch):
    nn = torch.nn
    return nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


def encoder_large(torch):
    layer = torch.nn.TransformerEncoderLayer(1024, 16, 4096, dropout=0.0, batch_first=True)
    return torch.nn.TransformerEncoder(layer, 12, enable_nested_tensor=False)


def _latency_model(torch, name):
    """(module, input shape)."""
    if name == "mlp":
        return mlp(torch), (1, 512)
    if name == "resnet18":
        return resnet18(torch), (1, 3, 224, 224)
    if name == "resnet50":
        return _checks_module().resnet50(torch), (1, 3, 224, 224)
    if name == "resnet50_b8":
        return _checks_module().resnet50(torch), (8, 3, 224, 224)
    if name == "encoder":
        return _checks_module().encoder(torch, layers=6, d=512), (1, 128, 512)
    if name == "encoder_large":
        return encoder_large(torch), (8, 512, 1024)
    raise ValueError(f"unknown latency model {name!r} (one of {', '.join(LAT_MODELS)})")


def latency_request(name, fake=False, issued=None):
    """Builds the model; returns a function that serves one request and returns when done.

    `issued`, if given, receives for each request the time.monotonic() at which all its work
    was handed to CUDA and the synchronize began: what comes before is the host's share of the
    service time (Python, PyTorch, the driver or Baton's shim), what comes after the wait for
    the GPU (and, under Baton, for the daemon to get the work there).
    """
    if fake:
        service = FAKE_SERVICE[name]

        def fake_request():
            time.sleep(service / 4)
            if issued is not None:
                issued.append(time.monotonic())
            time.sleep(service * 3 / 4)

        return fake_request
    torch = _torch()
    model, shape = _latency_model(torch, name)
    model = model.cuda().eval().half()
    x_h = torch.randn(*shape, dtype=torch.float16).pin_memory()
    x_d = torch.empty(shape, dtype=torch.float16, device="cuda")
    with torch.inference_mode():
        y_shape = model(x_d.copy_(x_h)).shape
    y_h = torch.empty(y_shape, dtype=torch.float16).pin_memory()
    stream = torch.cuda.current_stream()

    def request():
        with torch.inference_mode():
            x_d.copy_(x_h, non_blocking=True)
            y = model(x_d)
            y_h.copy_(y, non_blocking=True)
        if issued is not None:
            issued.append(time.monotonic())
        stream.synchronize()

    return request


class BestEffort:
    """One unit of best-effort work per `issue()`; `depth` units kept outstanding.

    `issue()` returns the completion times (time.monotonic()) of the units it saw finish: when
    the queue is full it waits for the oldest. `drain()` waits for the rest.
    """

    def __init__(self, work, depth, gemm_n=8192, fake=False):
        self.work, self.depth, self.fake = work, max(1, depth), fake
        self.pending = []
        if work not in FAKE_UNIT:
            raise ValueError(f"unknown best-effort work {work!r} (one of {', '.join(BE_WORKS)})")
        self.per_unit = {"gemm": 1, "train": 1, "infer64": 64}[work]
        self.unit_name = {"gemm": "GEMMs/s", "train": "steps/s", "infer64": "images/s"}[work]
        self.flop_per_unit = 2.0 * gemm_n**3 if work == "gemm" else None
        if fake:
            self._t = FAKE_UNIT[work]
            return
        torch = self.torch = _torch()
        if work == "gemm":
            a = torch.randn(gemm_n, gemm_n, device="cuda", dtype=torch.bfloat16)
            b = torch.randn(gemm_n, gemm_n, device="cuda", dtype=torch.bfloat16)
            c = torch.empty(gemm_n, gemm_n, device="cuda", dtype=torch.bfloat16)
            self._unit = lambda: torch.matmul(a, b, out=c)
        elif work == "infer64":
            m = _checks_module().resnet50(torch).cuda().eval().half()
            x = torch.randn(64, 3, 224, 224, device="cuda", dtype=torch.float16)

            def unit():
                with torch.inference_mode():
                    m(x)

            self._unit = unit
        else:
            m = _checks_module().resnet50(torch).cuda().train()
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
            x = torch.randn(32, 3, 224, 224, device="cuda")
            t = torch.randint(0, 1000, (32,), device="cuda")

            def unit():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = torch.nn.functional.cross_entropy(m(x), t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            self._unit = unit

    def issue(self):
        done = []
        if self.fake:
            time.sleep(self._t)
            return [time.monotonic()]
        self._unit()
        ev = self.torch.cuda.Event()
        ev.record()
        self.pending.append(ev)
        while len(self.pending) > self.depth:
            self.pending.pop(0).synchronize()
            done.append(time.monotonic())
        return done

    def drain(self):
        done = []
        while self.pending:
            self.pending.pop(0).synchronize()
            done.append(time.monotonic())
        return done
