"""The towers layout against the grouped net, and autocast against fp32, on every placement.

The same test functions run on the CPU in the ordinary suite and on real GPUs under
``pytest -m gpu`` (the GPU check's gpu-tests step, docs/gpu.md): each CUDA case is marked
``gpu`` and skipped where fewer CUDA devices are visible. On a GPU the batches are the
check's (8 images for the layouts, 32 for autocast); on the CPU one image keeps the suite
fast. Every case prints what it measured (the ``measured`` fixture), which pytest's report
shows under ``-rA`` and the GPU check keeps in its summary; each number is also a property of
the case in the JUnit report (``record_property``).

Tolerances (docs/gpu.md, "Why the tolerances are what they are"): logits as max|difference|
/ max|reference logit|; each gradient as ||difference|| / ||reference|| under its canonical
name (in fp32 a near-tie in max-pooling can move one element's gradient to its neighbour:
large in that element, small in the norm); autocast's loss as |difference| / fp32 loss.
"""

import shutil
import statistics
from typing import Dict, Optional, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from alexnet import build_model
from measuring import measured  # noqa: F401 - the fixture every measuring case uses
from alexnet.model.lrn import LocalResponseNorm, stock_lrn
from alexnet.model.spec import resolve
from alexnet.precision import autocast_dtype
from alexnet.run_folder import RunFolder
from alexnet.train.config import TrainConfig
from alexnet.train.loop import train
from helpers import needs_gpus

#: The largest error allowed against the grouped net on the CPU in float64, by the dtype the
#: net under test runs in: float64 checks the layout exactly, float32 (TF32 off) the numbers
#: training uses.
TOLERANCE = {torch.float64: {"logits": 1e-9, "gradients": 1e-9},
             torch.float32: {"logits": 1e-3, "gradients": 2e-2}}
#: The largest error allowed under autocast against fp32 (bf16 keeps 8 bits of mantissa, fp16 11).
AUTOCAST_TOLERANCE = {"bf16": 0.05, "fp16": 0.01}
#: Ops that convert a tensor's dtype: the LRN's entry and exit, not its arithmetic.
CONVERSIONS = ("aten._to_copy", "aten.to", "aten.copy_")
BYTES_PER_FP32 = 4


def on_gpu(devices: Sequence[str]) -> bool:
    return any(d.startswith("cuda") for d in devices)


def marks(devices: Sequence[str], cpu_marks=()):
    """A CUDA case is a ``gpu`` test needing as many GPUs as its highest index names."""
    if not on_gpu(devices):
        return list(cpu_marks)
    needed = 1 + max(torch.device(d).index or 0 for d in devices if d.startswith("cuda"))
    return [pytest.mark.gpu, needs_gpus(needed)]


def layout_batch(devices: Sequence[str]) -> int:
    return 8 if on_gpu(devices) else 1


def autocast_batch(device: str) -> int:
    return 32 if on_gpu([device]) else 1


def fixed_batch(n: int):
    """The same crops and labels on every machine: 0-255-scale pixels minus a rough mean."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, 224, 224, generator=generator) * 255 - 120
    labels = torch.randint(0, 1000, (n,), generator=generator)
    return images, labels


@pytest.fixture(autouse=True)
def _no_tf32():
    """Full fp32 on the GPU: TF32 convolutions and matmuls (cuDNN's default on Ampere and
    later) round to 10 bits, which alone can exceed the fp32 tolerances."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def max_relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).abs().max() / reference.abs().max())


def norm_relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).norm() / reference.norm())


def forward_backward(model, images, labels):
    """Logits and every gradient of one cross-entropy step, the gradients under their
    canonical names, all in float64 on the CPU."""
    logits = model(images.to(model.devices[0]))
    F.cross_entropy(logits, labels.to(logits.device)).backward()
    gradients = model.to_canonical({name: p.grad for name, p in model.named_parameters()})
    return logits.detach().double().cpu(), {name: g.double().cpu() for name, g in gradients.items()}


def grouped_reference(batch: int, seed: int = 0) -> Dict:
    """The grouped net on the CPU in float64, forward and backward on the fixed batch: what
    every placement is held to. ``build_model``'s seed gives every layout the same weights."""
    images, labels = fixed_batch(batch)
    model = build_model(layout="grouped", devices=["cpu"], seed=seed, dropout=0.0).double()
    logits, gradients = forward_backward(model, images.double(), labels)
    return {"images": images, "labels": labels, "logits": logits, "gradients": gradients}


@pytest.fixture(scope="module")
def reference():
    """``reference(batch)``: the seed-0 reference, computed once per batch size in this module."""
    cache = {}

    def get(batch: int) -> Dict:
        if batch not in cache:
            cache[batch] = grouped_reference(batch)
        return cache[batch]
    yield get
    cache.clear()


def layout_errors(layout: str, devices: Sequence[str], dtype: torch.dtype, reference: Dict, seed: int = 0) -> Dict:
    """The net in ``layout`` on ``devices`` in ``dtype``, its weights from ``seed``, against
    ``reference``: the logits' and each gradient's error, and the parameters (or gradients)
    not on their tower's device."""
    model = build_model(layout=layout, devices=list(devices), seed=seed, dropout=0.0).to(dtype)
    logits, gradients = forward_backward(model, reference["images"].to(dtype), reference["labels"])
    errors = {name: norm_relative(gradients[name], g) for name, g in reference["gradients"].items()}
    misplaced = []
    for name, p in model.named_parameters():
        # Tower k's parameters live on devices[k]; fc8 (and the grouped net) on devices[0].
        home = torch.device(devices[int(name.split(".")[1]) if name.startswith("towers.") else 0])
        if p.device != home or p.grad is None or p.grad.device != p.device:
            misplaced.append(name)
    worst = max(errors, key=errors.get)
    return {"logits_error": max_relative(logits, reference["logits"]), "worst_gradient": worst,
            "worst_gradient_error": errors[worst], "gradients_compared": len(errors), "misplaced": misplaced}


# -- the layouts against the grouped net in float64 -------------------------------------------

PLACEMENTS = (("towers", ("cpu", "cpu")), ("towers", ("cuda:0", "cpu")), ("towers", ("cuda:0", "cuda:0")),
              ("towers", ("cuda:0", "cuda:1")), ("grouped", ("cuda:0",)))
COMPARISONS = [pytest.param(layout, devices, dtype, marks=marks(devices, [pytest.mark.slow]),
                            id=f"{layout}-{','.join(devices)}-{str(dtype)[len('torch.'):]}")
               for layout, devices in PLACEMENTS for dtype in (torch.float64, torch.float32)]


@pytest.mark.parametrize("layout,devices,dtype", COMPARISONS)
def test_the_layout_computes_the_grouped_nets_logits_and_gradients(layout, devices, dtype, reference, measured):
    errors = layout_errors(layout, devices, dtype, reference(layout_batch(devices)))
    tolerance = TOLERANCE[dtype]
    for key in ("logits_error", "worst_gradient_error", "worst_gradient", "misplaced"):
        measured(key, errors[key])
    measured("tolerance", f"{tolerance['logits']:g} / {tolerance['gradients']:g}")
    measured("batch", layout_batch(devices))
    assert errors["gradients_compared"] == 16  # weight and bias of conv1-5 and fc6-8
    assert not errors["misplaced"], errors["misplaced"]
    assert errors["logits_error"] <= tolerance["logits"], errors
    assert errors["worst_gradient_error"] <= tolerance["gradients"], errors


@pytest.mark.slow
def test_the_comparison_fails_for_other_weights(reference):
    """Not vacuous: towers with other weights than the reference's are far off."""
    errors = layout_errors("towers", ("cpu", "cpu"), torch.float32, reference(1), seed=1)
    assert errors["logits_error"] > 100 * TOLERANCE[torch.float32]["logits"], errors
    assert errors["worst_gradient_error"] > 10 * TOLERANCE[torch.float32]["gradients"], errors


# -- the exchange counters against the layer table --------------------------------------------

def expected_traffic(batch: int, crosses: bool) -> Dict[str, Dict[str, int]]:
    """What the layer table says each exchange point sends in one fp32 forward pass: one send
    per direction of batch x values per image and direction, 4 bytes a value, copied between
    devices only when the two towers' devices differ."""
    expected = {}
    for point in resolve().exchanges():
        directions = len(point["directions"])
        values = batch * point["values_per_direction"] * directions
        size = BYTES_PER_FP32 * values
        expected[point["layer"]] = {"sends": directions, "values": values, "bytes": size,
                                    "copied_bytes": size if crosses else 0}
    return expected


def counted_traffic(devices: Sequence[str], batch: int) -> Dict[str, Dict[str, int]]:
    model = build_model(layout="towers", devices=list(devices), seed=0, dropout=0.0)
    model.reset_traffic()
    with torch.no_grad():
        model(fixed_batch(batch)[0].to(devices[0]))
    return model.traffic()


TOWERS = [pytest.param(devices, marks=marks(devices), id=",".join(devices))
          for layout, devices in PLACEMENTS if layout == "towers"]


@pytest.mark.parametrize("devices", TOWERS)
def test_the_exchange_counters_match_the_layer_table(devices, measured):
    batch = layout_batch(devices)
    counted = counted_traffic(devices, batch)
    expected = expected_traffic(batch, crosses=devices[0] != devices[1])
    for point in expected:
        measured(f"{point}_values", counted.get(point, {}).get("values"))
        measured(f"{point}_copied_bytes", counted.get(point, {}).get("copied_bytes"))
    measured("batch", batch)
    assert {point: counted.get(point) for point in expected} == expected


def test_the_counter_check_tells_copies_from_none():
    """Not vacuous: on two (fake) GPUs the counters match the table only with copies."""
    with FakeTensorMode():
        counted = counted_traffic(("cuda:0", "cuda:1"), 2)
    points = list(expected_traffic(2, crosses=True))
    assert {p: counted[p] for p in points} == expected_traffic(2, crosses=True)
    assert {p: counted[p] for p in points} != expected_traffic(2, crosses=False)


# -- autocast against fp32, and the LRN's dtype -----------------------------------------------

class LRNWatch:
    """Records, for every LRN module, the dtype it receives and returns and the dtypes of
    everything it computes (each op's floating outputs, dtype conversions aside): a
    TorchDispatchMode sees the ops as they run, forward hooks say which LRN is running.
    With the fast LRN on the CPU build the net with ``fuse_relu_lrn_pool=False``: fused, the
    LRN modules' forward (and their hooks) are not called."""

    def __init__(self, model: torch.nn.Module):
        watch = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                result = func(*args, **(kwargs or {}))
                if watch.current is not None and not str(func).startswith(CONVERSIONS):
                    watch.note(result)
                return result

        self.mode = Mode()
        self.current: Optional[str] = None
        self.records: Dict[str, Dict] = {}
        self.handles = []
        for name, module in model.named_modules():
            if isinstance(module, LocalResponseNorm):
                self.handles.append(module.register_forward_pre_hook(
                    lambda m, args, name=name: self.enter(name, args)))
                self.handles.append(module.register_forward_hook(lambda m, args, output: self.leave(output)))

    def enter(self, name: str, args) -> None:
        self.current = name
        self.records[name] = {"input": args[0].dtype, "output": None, "computes_in": set()}

    def leave(self, output) -> None:
        self.records[self.current]["output"] = output.dtype
        self.current = None

    def note(self, result) -> None:
        for t in (result if isinstance(result, (tuple, list)) else [result]):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.records[self.current]["computes_in"].add(t.dtype)

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        for handle in self.handles:
            handle.remove()


@pytest.fixture(scope="module")
def fp32_run():
    """``fp32_run(device, lrn_impl)``: the grouped net, the fixed batch and its fp32 logits and
    loss; the last one is kept (a net is 244 MB), the cases come grouped by net."""
    kept = {}

    def get(device: str, impl: str) -> Dict:
        if (device, impl) not in kept:
            kept.clear()
            model = build_model(devices=[device], seed=0, dropout=0.0, lrn_impl=impl, fuse_relu_lrn_pool=False)
            images, labels = (t.to(device) for t in fixed_batch(autocast_batch(device)))
            with torch.no_grad():
                logits = model(images).float()
            kept[(device, impl)] = {"model": model, "images": images, "labels": labels, "logits": logits,
                                    "loss": F.cross_entropy(logits, labels).item()}
        return kept[(device, impl)]
    yield get
    kept.clear()


AUTOCAST = [pytest.param(device, impl, precision, marks=marks([device]), id=f"{device}-{impl}-{precision}")
            for device in ("cpu", "cuda:0") for impl in ("fast", "stock") for precision in AUTOCAST_TOLERANCE]


@pytest.mark.parametrize("device,impl,precision", AUTOCAST)
def test_autocast_stays_near_fp32_and_the_lrn_computes_in_fp32(device, impl, precision, fp32_run, measured):
    fp32 = fp32_run(device, impl)
    dtype = autocast_dtype(precision)
    with torch.no_grad(), LRNWatch(fp32["model"]) as watch, torch.autocast(torch.device(device).type, dtype=dtype):
        logits = fp32["model"](fp32["images"])
        loss = F.cross_entropy(logits, fp32["labels"]).item()
    logits_error = max_relative(logits.float(), fp32["logits"])
    loss_error = abs(loss - fp32["loss"]) / abs(fp32["loss"])
    computes_in = {str(d) for r in watch.records.values() for d in r["computes_in"]}
    for key, value in (("logits_error", logits_error), ("loss_error", loss_error),
                       ("tolerance", AUTOCAST_TOLERANCE[precision]), ("lrn_computes_in", sorted(computes_in)),
                       ("lrn_returns", sorted({str(r["output"]) for r in watch.records.values()})),
                       ("batch", len(fp32["images"]))):
        measured(key, value)
    assert logits.dtype == dtype  # autocast ran: fc8's output is in its dtype
    assert torch.isfinite(logits).all()
    assert logits_error <= AUTOCAST_TOLERANCE[precision]
    assert loss_error <= AUTOCAST_TOLERANCE[precision]
    assert set(watch.records) == {"lrn1", "lrn2"}
    for name, record in watch.records.items():
        assert record["input"] == dtype, (name, record)  # conv1/conv2 ran in the autocast dtype
        assert record["computes_in"] == {torch.float32}, (name, record)


def _lrn_in_autocast_dtype(self, x):
    """A bug the watch must catch: the stock LRN without the cast to fp32."""
    return stock_lrn(x, self.groups, self.size, self.alpha, self.beta, self.k)


@pytest.mark.parametrize("buggy", [False, True])
def test_the_lrn_watch_sees_the_dtype_an_lrn_computes_in(monkeypatch, buggy):
    if buggy:
        monkeypatch.setattr(LocalResponseNorm, "forward", _lrn_in_autocast_dtype)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), LocalResponseNorm(8, groups=2, impl="stock"))
    with torch.no_grad(), LRNWatch(model) as watch, torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(1, 3, 8, 8))
    (record,) = watch.records.values()
    assert record["input"] == torch.bfloat16
    if buggy:  # some of stock LRN's ops run in bf16 (CPU autocast puts others in fp32)
        assert torch.bfloat16 in record["computes_in"], record
    else:
        assert record["computes_in"] == {torch.float32}, record


# -- on real GPUs only --------------------------------------------------------------------------

@pytest.mark.gpu
@needs_gpus(1)
def test_bf16_autocast_and_channels_last_on_gpu(measured):
    images = fixed_batch(4)[0].to("cuda:0")
    model = build_model(devices=["cuda:0"], seed=0, dropout=0.0)
    with torch.no_grad():
        reference = model(images)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model.to(memory_format=torch.channels_last)(images.contiguous(memory_format=torch.channels_last))
    logits_error = max_relative(out.float(), reference)
    measured("logits_error", logits_error)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    assert logits_error <= AUTOCAST_TOLERANCE["bf16"]


#: The built-in run learns to about 85% validation accuracy on a CPU (docs/training.md); a run
#: below twice chance did not learn.
LEARNED_OVER_CHANCE = 2.0


@pytest.mark.gpu
@needs_gpus(1)
def test_the_builtin_recipe_learns_on_a_gpu(tmp_path, measured):
    """The built-in recipe in full on cuda:0, as ``alexnet train --devices 0`` runs it (5 epochs
    of batch 32 on the built-in dataset's 2,500 images, --amp auto: bf16 where the GPU has it),
    ends with its validation accuracy at least twice chance. The GPU check runs it as its own
    training step, with the run folder kept under its results (``--basetemp``). No CPU twin:
    the same run takes 7 to 8 minutes on a CPU (docs/training.md)."""
    run = tmp_path / "run"
    summary = train(TrainConfig.from_preset("builtin", devices="0", log_every=5, out=str(run), overwrite=True))
    accuracy, chance = 1 - summary["final_centre_crop"]["top1_error"], 1 - summary["chance_top1_error"]
    records = RunFolder(run).read_metrics()
    rates = [r["images_per_second"] for r in records if r.get("kind") == "step"]
    for key, value in (("val_accuracy", accuracy), ("chance_accuracy", chance),
                       ("ten_crop_accuracy", 1 - summary["final_ten_crop"]["top1_error"]),
                       ("val_top1_error_per_epoch", [round(r["val_top1_error"], 4) for r in records
                                                     if r.get("kind") == "epoch"]),
                       ("images_per_second_median", statistics.median(rates)), ("run", str(run))):
        measured(key, value)
    # 61 M weights and their momentum, twice: a gigabyte that is no result of the check.
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    assert accuracy >= LEARNED_OVER_CHANCE * chance, (accuracy, chance)
