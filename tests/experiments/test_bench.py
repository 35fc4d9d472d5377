"""alexnet bench: what it plans, what it reports as not run, the JSON it writes, the CLI.

Tiny settings throughout (batch 1-2, one timed step): these tests check the benchmark's
logic and output, never its timings.
"""

import json

import pytest
import torch
from click.testing import CliRunner

from alexnet.cli import main
from alexnet.devices import DeviceRequest
import alexnet.experiments.bench as bench_module
from alexnet.errors import ConfigError, DataError
from alexnet.experiments.bench import Bench, cases_to_measure, placements, run_benchmark, why_not_run
from alexnet.experiments.bench.tables import format_bench_report
from alexnet.runtime import Runtime

CPU = torch.device("cpu")
CUDA0, CUDA1 = torch.device("cuda", 0), torch.device("cuda", 1)
ONE_DEVICE_MODELS = ("grouped", "one-gpu", "torchvision")


def conv(out_size, out_channels, in_per_group, kernel):
    return out_size * out_size * out_channels * in_per_group * kernel * kernel


#: Multiply-adds per image, layer by layer, worked out here from the paper's Figure 2 (both
#: towers; conv2, conv4, conv5 read their own tower's half) and from torchvision's alexnet.
PAPER_MACS = sum([conv(55, 96, 3, 11), conv(27, 256, 48, 5), conv(13, 384, 256, 3), conv(13, 384, 192, 3),
                  conv(13, 256, 192, 3), 9216 * 4096, 4096 * 4096, 4096 * 1000])
TORCHVISION_MACS = sum([conv(55, 64, 3, 11), conv(27, 192, 64, 5), conv(13, 384, 192, 3), conv(13, 256, 384, 3),
                        conv(13, 256, 256, 3), 9216 * 4096, 4096 * 4096, 4096 * 1000])


@pytest.fixture
def fake_gpus(fake_gpus, monkeypatch):
    """conftest's fake GPUs, supporting bf16 (what amp auto asks of them) unless a test says otherwise."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    return fake_gpus


def parse_devices(text):
    """(the towers placements' devices, the one-device models' device) for a --devices spelling."""
    towers, single = placements(DeviceRequest.parse(text))
    assert all(p.layout == "towers" for p in towers) and single.layout == "grouped"
    return [p.devices for p in towers], single.primary


def bench(devices="auto", sweep=None, workers=None, **own):
    """Bench settings on ``devices``, sweeping ``sweep`` (default: the command's)."""
    runtime = Runtime(devices=DeviceRequest.parse(devices), workers=workers)
    return Bench(runtime=runtime, **({"sweep": sweep} if sweep is not None else {}), **own)


def tiny(devices="cpu,cpu", **overrides):
    values = dict(batch_sizes=(2,), warmup=1, steps=1, repeats=2, lrn_batch=1, lrn_repeats=1, profile_steps=1,
                  matmul_size=64)
    values.update(overrides)
    return bench(devices, **values)


# -- planning and "not run" ------------------------------------------------------------------

@pytest.mark.parametrize("count,reason", [
    (0, "cuda:0 requested but no CUDA device is visible"),
    (1, "cuda:1 requested but 1 CUDA device is visible"),
])
def test_auto_lists_the_two_gpu_towers_and_reports_them_not_run(fake_gpus, count, reason):
    fake_gpus(count)
    towers, single = parse_devices("auto")
    assert towers[0] == (CUDA0, CUDA1)
    assert single == (CUDA0 if count else CPU)
    assert towers[1:] == [(single, single)]  # the towers still run, both on the best device
    settings = bench("auto").resolved(gpu=count > 0)
    cases = cases_to_measure(settings)
    two_gpu = [c for c in cases if c.devices == (CUDA0, CUDA1)]
    assert two_gpu and all(why_not_run(c) == reason for c in two_gpu)
    assert all(why_not_run(c) is None for c in cases if c.devices != (CUDA0, CUDA1))
    # amp auto cannot be resolved on devices that are not here: beside fp32, which reports
    # them not run, it adds no row; alone, it is reported as asked.
    assert sorted((c.batch_size, c.mode, c.precision) for c in two_gpu) == sorted(
        (b, mode, "fp32") for b in settings.batch_sizes for mode in ("train", "inference"))
    alone = cases_to_measure(bench("auto", sweep={"amp": ("auto",)}).resolved(gpu=count > 0))
    assert {c.precision for c in alone if c.devices == (CUDA0, CUDA1)} == {"auto"}


@pytest.mark.parametrize("bf16,precisions", [(True, {"fp32", "bf16"}), (False, {"fp32"})])
def test_with_two_gpus_auto_plans_the_paper_setup(fake_gpus, monkeypatch, bf16, precisions):
    """The default sweep, fp32 and amp auto: bf16 beside fp32 on GPUs that support it; elsewhere
    auto is fp32 again, and measured once."""
    fake_gpus(2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    towers, single = parse_devices("auto")
    assert towers == [(CUDA0, CUDA1)] and single == CUDA0
    cases = cases_to_measure(bench("auto").resolved(gpu=True))
    assert all(why_not_run(c) is None for c in cases)
    assert {c.precision for c in cases} == precisions
    per_net = {}
    for c in cases:
        per_net.setdefault((c.model, c.batch_size, c.mode), []).append(c.precision)
    assert all(sorted(p) == sorted(precisions) for p in per_net.values())  # each precision once per net


@pytest.mark.parametrize("text,towers,single", [
    ("cpu", (CPU, CPU), CPU),
    ("cpu,cpu", (CPU, CPU), CPU),
    ("0", (CUDA0, CUDA0), CUDA0),
    ("cuda:1", (CUDA1, CUDA1), CUDA1),
    ("0,1", (CUDA0, CUDA1), CUDA0),
    ("0,cpu", (CUDA0, CPU), CUDA0),
    ("cpu,0", (CPU, CUDA0), CPU),
])
def test_named_devices(fake_gpus, text, towers, single):
    """As in every command: one device holds both towers; two devices are one tower each, and
    the one-device models run on the first."""
    fake_gpus(0)
    assert parse_devices(text) == ([towers], single)
    cases = cases_to_measure(bench(text, models=("towers", *ONE_DEVICE_MODELS)).resolved(gpu=False))
    assert {c.devices for c in cases if c.model == "towers"} == {towers}
    assert {c.devices for c in cases if c.model != "towers"} == {(single,)}


@pytest.mark.parametrize("bad", ["cpu,cpu,cpu", "tpu", "cpu,"])
def test_misspelt_devices_are_a_config_error(bad):
    with pytest.raises(ConfigError):
        parse_devices(bad)


def test_fp16_on_the_cpu_is_not_run_with_its_reason():
    cases = cases_to_measure(tiny(sweep={"amp": ("fp32", "fp16")}, models=("grouped",)).resolved(gpu=False))
    reasons = {c.precision: why_not_run(c) for c in cases}
    assert reasons["fp32"] is None and "CUDA" in reasons["fp16"]


def test_the_sweep_is_every_combination_of_the_runtime_values():
    sweep = {"lrn_impl": ("fast", "stock"), "channels_last": (True,), "compile": (False, True), "amp": ("fp32",)}
    settings = tiny(models=("grouped", "torchvision"), batch_sizes=(1, 2), sweep=sweep).resolved(gpu=False)
    cases = cases_to_measure(settings)
    grouped = [c for c in cases if c.model == "grouped"]
    torchvision = [c for c in cases if c.model == "torchvision"]
    assert len(grouped) == 2 * 2 * 2 * 2  # lrn x compile x batch x mode
    assert len(torchvision) == 2 * 2 * 2  # no LRN to vary
    assert {(c.runtime.lrn_impl, c.runtime.compile) for c in grouped} == {
        (lrn, compiled) for lrn in ("fast", "stock") for compiled in (False, True)}
    assert all(c.runtime.channels_last and c.runtime.devices == DeviceRequest.parse("cpu,cpu") for c in cases)


@pytest.mark.parametrize("sweep,message", [
    ({"amp": ("fp64",)}, "--amp must be one of auto, fp32, bf16, fp16; got 'fp64'"),
    ({"lrn_impl": ("fast", "slow")}, "--lrn-impl must be one of fast, stock; got 'slow'"),
    ({"workers": (1, 2)}, "the bench sweeps amp, channels_last, lrn_impl, compile; got workers"),
])
def test_swept_values_are_checked_by_the_runtime(sweep, message):
    with pytest.raises(ConfigError) as error:
        cases_to_measure(tiny(sweep=sweep).resolved(gpu=False))
    assert str(error.value) == message


# -- a whole run -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results():
    """One whole CPU benchmark of three models (tiny batches), shared by the tests below."""
    return run_benchmark(tiny(models=("towers", "grouped", "torchvision"), lrn_repeats=2),
                         command=["alexnet", "bench", "(test)"])


@pytest.mark.slow
def test_results_have_the_environment_and_every_setting(results):
    env = results["environment"]
    for key in ("python", "torch", "torchvision", "cpu", "cpu_count", "torch_threads", "cuda", "kernel_settings",
                "git", "load_average", "thread_env"):
        assert key in env, key
    # Recorded while the run measured: denormals flushed and cuDNN's benchmark mode on (the defaults).
    assert env["kernel_settings"]["flush_denormal"] is True
    assert env["kernel_settings"]["cudnn_benchmark"] is True
    assert isinstance(env["git"]["modified_files"], list)
    assert env["git"]["modified"] == bool(env["git"]["modified_files"])
    assert results["settings"]["devices"] == "cpu,cpu"
    # Plain JSON values only: `save` would write anything else (a torch.device, a dtype) as its repr.
    json.dumps(results)


@pytest.mark.slow
def test_every_row_carries_its_settings_and_its_numbers(results):
    rows = results["results"]
    (cpu_matmul,) = [m for m in results["matmul"] if m["device"] == "cpu" and m["dtype"] == "fp32"]
    assert {(r["model"], r["mode"]) for r in rows} == {
        (m, mode) for m in ("towers", "grouped", "torchvision") for mode in ("train", "inference")}
    for row in rows:
        for key in ("model", "variant", "layout", "devices", "device_names", "lrn_impl", "batch_size", "precision",
                    "channels_last", "compile", "mode", "warmup_steps", "timed_steps", "repeats", "status"):
            assert key in row, key
        assert row["status"] == "ok", row.get("reason")
        assert len(row["ms_per_step"]["all"]) == 2  # one per repeat
        assert row["ms_per_step"]["min"] <= row["ms_per_step"]["median"] <= row["ms_per_step"]["max"]
        # Against the run's own wall clock: no block lasted longer than the run, so each
        # block's rate is at least its batch over the run's duration (one step per block).
        assert all(0 < ms / 1e3 < results["duration_s"] for ms in row["ms_per_step"]["all"])
        assert all(ips >= row["batch_size"] / results["duration_s"] for ips in row["images_per_s"]["all"])
        assert row["achieved_tflops"] > 0
        # Both towers on the CPU: the ceiling is the CPU's matmul rate, counted once.
        assert row["matmul_tflops"] == cpu_matmul["tflops"]["median"]
        assert "cpu" in row["peak_memory"]
        memory = row["peak_memory"]["cpu"]
        assert memory["parameters_bytes"] == (60_965_224 if row["model"] != "torchvision" else 61_100_840) * 4
    macs = {r["model"]: r["macs_per_image"] for r in rows}
    assert macs == {"towers": PAPER_MACS, "grouped": PAPER_MACS, "torchvision": TORCHVISION_MACS}
    assert PAPER_MACS == 724_406_816 and TORCHVISION_MACS == 714_188_480  # as docs/benchmarks.md says
    train = next(r for r in rows if r["model"] == "grouped" and r["mode"] == "train")
    assert train["flops_per_image"] == 6 * PAPER_MACS  # training is 3x the forward pass


@pytest.mark.slow
def test_towers_traffic_is_counted_per_step_and_per_image(results):
    row = next(r for r in results["results"] if r["model"] == "towers" and r["mode"] == "inference")
    traffic = row["traffic"]
    assert traffic["counted"]
    # fp32 values per image: the padded input to both towers, then each exchange point's
    # half per direction (pool2 into conv3, pool5 into fc6, fc6 into fc7 both ways; fc7 into
    # the unsplit fc8 one way).
    values = {"input": 2 * 3 * 227 * 227, "conv3": 2 * 21_632, "fc6": 2 * 4_608, "fc7": 2 * 2_048, "fc8": 2_048}
    batch = row["batch_size"]
    assert traffic["points_bytes_per_step"] == {name: 4 * v * batch for name, v in values.items()}
    assert traffic["handed_over_bytes_per_image"] == 4 * sum(values.values())
    assert traffic["handed_over_bytes_per_step"] == 4 * sum(values.values()) * batch
    assert traffic["crossed_devices_bytes_per_step"] == 0  # both towers on the CPU
    grouped = next(r for r in results["results"] if r["model"] == "grouped")
    assert not grouped["traffic"]["counted"]


@pytest.mark.slow
def test_lrn_section_compares_fast_and_stock(results):
    lrn = results["lrn"]
    assert {(tuple(r["shape"]), r["impl"]) for r in lrn} == {
        ((1, 96, 55, 55), "fast"), ((1, 96, 55, 55), "stock"), ((1, 256, 27, 27), "fast"), ((1, 256, 27, 27), "stock")}
    for row in lrn:
        assert row["status"] == "ok" and row["groups"] == 2 and len(row["ms"]["all"]) == 2
        assert row["saved_for_backward_bytes"] > 0
    for row in (r for r in lrn if r["impl"] == "fast"):
        assert row["speedup_vs_stock"] > 0
        assert row["max_rel_diff_value"] < 1e-5 and row["max_diff_grad_over_max_grad"] < 1e-5
        stock = next(r for r in lrn if r["impl"] == "stock" and r["shape"] == row["shape"])
        # The fast LRN keeps only its input for backward; the stock one keeps more.
        assert row["saved_for_backward_bytes"] == 4 * torch.Size(row["shape"]).numel()
        assert row["saved_for_backward_bytes"] < stock["saved_for_backward_bytes"]


@pytest.mark.slow
def test_profile_breaks_a_training_step_down_by_layer(results):
    profile = results["profile"]
    assert profile["status"] == "ok" and profile["model"] == "grouped" and profile["mode"] == "train"
    names = [r["name"] for r in profile["rows"]]
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8", "Optimizer.step"):
        assert layer in names, layer
    assert "_ReluLRNMaxPool after conv1" in names and "_ReluLRNMaxPool after conv2" in names  # the fused CPU blocks
    conv2 = next(r for r in profile["rows"] if r["name"] == "conv2")
    assert conv2["forward_ms"] > 0 and conv2["backward_ms"] > 0
    # Host time on the CPU: counting any op twice (in its module and again on its own) would
    # attribute more than the profiled steps took.
    assert 0 < profile["attributed_ms"] <= profile["step_ms"]


@pytest.mark.slow
def test_report_prints_every_section(results):
    text = format_bench_report(results)
    for heading in ("Throughput", "Matrix-multiply ceiling", "LRN, forward+backward", "Per-layer time"):
        assert heading in text
    assert "towers" in text and "torchvision" in text


@pytest.mark.slow
@pytest.mark.parametrize("git,shown", [
    ({"commit": "0123456789abcdef" * 2 + "01234567", "modified": True, "modified_files": ["a.py", "b.py"]},
     "alexnet 0.1.0 (0123456789ab, 2 tracked files modified)"),
    ({"commit": "0123456789abcdef" * 2 + "01234567", "modified": False, "modified_files": []},
     "alexnet 0.1.0 (0123456789ab)\n"),
    ({"commit": None, "modified": None, "modified_files": [], "reason": "not a git checkout here"},
     "alexnet 0.1.0\n"),
])
def test_report_names_the_commit_and_the_modified_files(results, git, shown):
    text = format_bench_report({**results, "environment": {**results["environment"], "alexnet": "0.1.0", "git": git}})
    assert shown in text


def test_two_gpus_on_a_cpu_only_machine_are_reported_not_run(fake_gpus):
    fake_gpus(0)
    out = run_benchmark(bench("0,1", models=("towers", "grouped"), modes=("train",), profile="grouped"))
    assert {r["status"] for r in out["results"]} == {"not run"}
    reasons = {r["model"]: r["reason"] for r in out["results"]}
    assert reasons == {"towers": "cuda:0 requested but no CUDA device is visible",
                       "grouped": "cuda:0 requested but no CUDA device is visible"}
    assert {r["status"] for r in out["lrn"]} == {"not run"}
    assert out["profile"]["status"] == "not run"
    assert "targets" not in out  # the project's promises are checked by tools/bench_targets.py


def test_loaders_and_training_from_the_real_loader(tmp_path, private_cache):
    from alexnet.data import generate_builtin

    root = generate_builtin(tmp_path / "data", train_per_class=1, val_per_class=1, workers=0)
    out = run_benchmark(tiny("cpu", models=("grouped",), modes=("train",), lrn_bench=False, profile=None,
                             loaders=True, data_root=str(root), workers=0))
    loaders = out["loaders"]
    assert loaders["status"] == "ok"
    assert [r["path"] for r in loaders["rows"]] == ["folder-pil", "folder-tvjpeg", "packed-raw", "packed-jpeg"]
    assert all(r["images_per_second"] > 0 and r["images"] > 0 for r in loaders["rows"])
    e2e = out["end_to_end"]
    assert e2e["status"] == "ok", e2e
    assert e2e["data_root"] == str(root) and e2e["images"] == 10 and e2e["batch_size"] == 2
    assert e2e["timed_steps"] == 2  # warm-up 1 + 2 blocks of 1 step, from 5 batches of 2
    assert e2e["train_images_per_s"] > 0 and e2e["loader_images_per_s"] > 0
    synthetic = out["results"][0]["images_per_s"]["median"]
    assert e2e["synthetic_train_images_per_s"] == synthetic  # the results row of the same net and settings
    report = format_bench_report(out)
    assert "Loaders (batch 2" in report and "packed-raw" in report and "End to end: grouped net" in report


def test_the_verdict_names_the_slower_side():
    from alexnet.experiments.bench.loaders import limit

    assert limit(100.0, 300.0).startswith("the loader is the limit")
    assert limit(300.0, 100.0).startswith("the model is the limit")
    assert limit(300.0, None).startswith("no synthetic-input row")


def test_loaders_not_requested_are_said_so():
    out = run_benchmark(tiny("cpu", models=("grouped",), modes=("inference",), batch_sizes=(1,),
                             lrn_bench=False, profile=None, repeats=1))
    assert out["loaders"]["status"] == out["end_to_end"]["status"] == "not requested"
    assert "--loaders" in out["end_to_end"]["reason"]


class Timed(Exception):
    """Raised where the benchmark would start timing the models."""


@pytest.mark.parametrize("loaders", [True, False])
def test_a_missing_data_root_stops_before_any_timing_only_when_the_loaders_read_it(tmp_path, monkeypatch, loaders):
    def run_models(*args, **kwargs):
        raise Timed
    monkeypatch.setattr(bench_module, "run_models", run_models)
    settings = tiny("cpu", models=("grouped",), loaders=loaders, data_root=str(tmp_path / "nope"))
    with pytest.raises(DataError if loaders else Timed) as error:
        run_benchmark(settings)
    if loaders:
        assert str(error.value) == f"{tmp_path / 'nope'}: no such file or folder"


# -- the command -----------------------------------------------------------------------------

def test_cli_writes_the_table_and_the_json(tmp_path):
    path = tmp_path / "out" / "bench.json"
    result = CliRunner().invoke(main, [
        "bench", "--devices", "cpu", "--models", "grouped,torchvision", "--modes", "inference", "-b", "1",
        "--warmup", "0", "--steps", "1", "--repeats", "1", "--no-lrn-bench", "--profile", "none", "--no-loaders",
        "--json", str(path)])
    assert result.exit_code == 0, result.output
    assert "Throughput" in result.output
    data = json.loads(path.read_text())
    assert [r["model"] for r in data["results"]] == ["grouped", "torchvision"]
    assert data["settings"]["devices"] == "cpu"
    assert data["settings"]["batch_sizes"] == [1]


@pytest.mark.parametrize("args,message", [
    (["--devices", "cpu,cpu,cpu"], "--devices takes one or two devices"),
    (["--models", "resnet"], "--models: resnet; choose from towers, grouped, one-gpu, torchvision"),
    (["-b", "0"], "--batch-size takes positive integers; got [0]"),
    (["-b", "1,x"], "'1,x' is not a comma-separated list of integers"),
    (["--amp", "fp32,fp64"], "--amp must be one of auto, fp32, bf16, fp16; got 'fp64'"),
    (["--channels-last", "yes"], "'yes': give off, on or both"),
    (["--warmup", "-1"], "--warmup must be at least 0; got -1"),
    (["--workers", "-1"], "--workers must be between 0 and"),
    # (small settings: were the check gone, the benchmark would run before the loaders fail)
    (["--loaders", "--data-root", "/nope", "--devices", "cpu", "--models", "grouped", "--modes", "inference",
      "-b", "1", "--warmup", "0", "--steps", "1", "--repeats", "1", "--no-lrn-bench", "--profile", "none"],
     "Error: /nope: no such file or folder"),
])
def test_cli_errors_are_one_line(args, message, tmp_path):
    result = CliRunner().invoke(main, ["bench", *args, "--json", str(tmp_path / "x.json")])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
