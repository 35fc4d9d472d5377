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
from alexnet.errors import ConfigError
from alexnet.experiments import bench
from alexnet.experiments.bench import Settings, placements, plan, run_benchmark, why_not_run
from alexnet.experiments.bench.tables import format_report

CPU = torch.device("cpu")
CUDA0, CUDA1 = torch.device("cuda", 0), torch.device("cuda", 1)


def fake_gpus(monkeypatch, count):
    """Pretend ``count`` CUDA devices are visible (planning only: nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def parse_devices(text):
    return placements(DeviceRequest.parse(text))


def tiny(**overrides):
    values = dict(devices="cpu,cpu", batch_sizes=(2,), warmup=1, steps=1, repeats=2, lrn_batch=1,
                  lrn_repeats=1, profile_steps=1, matmul_size=64)
    values.update(overrides)
    return Settings(**values)


# -- planning and "not run" ------------------------------------------------------------------

@pytest.mark.parametrize("count,reason", [
    (0, "cuda:0 requested but no CUDA device is visible"),
    (1, "cuda:1 requested but 1 CUDA device is visible"),
])
def test_auto_lists_the_two_gpu_towers_and_reports_them_not_run(monkeypatch, count, reason):
    fake_gpus(monkeypatch, count)
    towers, single = parse_devices("auto")
    assert towers[0] == (CUDA0, CUDA1)
    assert single == (CUDA0 if count else CPU)
    assert towers[1] == (single, single)  # the towers still run, both on the best device
    cases = plan(Settings(devices="auto").resolved(gpu=count > 0))
    two_gpu = [c for c in cases if c.setup.devices == (CUDA0, CUDA1)]
    assert two_gpu and all(why_not_run(c) == reason for c in two_gpu)
    assert all(why_not_run(c) is None for c in cases if c.setup.devices[0] == CPU)


def test_with_two_gpus_auto_plans_the_paper_setup(monkeypatch):
    fake_gpus(monkeypatch, 2)
    towers, single = parse_devices("auto")
    assert towers == [(CUDA0, CUDA1)] and single == CUDA0
    settings = Settings(devices="auto").resolved(gpu=True)
    assert settings.precisions == ("fp32", "bf16")
    assert all(why_not_run(c) is None for c in plan(settings) if c.precision != "fp16")


def test_named_devices(monkeypatch):
    fake_gpus(monkeypatch, 0)
    assert parse_devices("cpu") == ([(CPU, CPU)], CPU)
    assert parse_devices("cpu,cpu") == ([(CPU, CPU)], CPU)
    assert parse_devices("0,1") == ([(CUDA0, CUDA1)], CUDA0)
    assert parse_devices("0,cpu") == ([(CUDA0, CPU)], CUDA0)
    for bad in ("cpu,cpu,cpu", "tpu", "cpu,"):
        with pytest.raises(ConfigError):
            parse_devices(bad)


def test_fp16_on_the_cpu_is_not_run_with_its_reason():
    cases = plan(tiny(precisions=("fp32", "fp16"), models=("grouped",)).resolved(gpu=False))
    reasons = {c.precision: why_not_run(c) for c in cases}
    assert reasons["fp32"] is None and "CUDA" in reasons["fp16"]


def test_the_sweep_is_every_combination():
    settings = tiny(models=("grouped", "torchvision"), batch_sizes=(1, 2), lrn_impl="both", compile="both",
                    channels_last="on").resolved(gpu=False)
    cases = plan(settings)
    grouped = [c for c in cases if c.setup.model == "grouped"]
    torchvision = [c for c in cases if c.setup.model == "torchvision"]
    assert len(grouped) == 2 * 2 * 2 * 2  # lrn x compile x batch x mode
    assert len(torchvision) == 2 * 2 * 2  # no LRN to vary
    assert all(c.setup.channels_last for c in cases)


# -- a whole run -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results():
    """One whole CPU benchmark of three models (tiny batches), shared by the tests below."""
    return run_benchmark(tiny(models=("towers", "grouped", "torchvision"), lrn_repeats=2),
                         command=["alexnet", "bench", "(test)"])


@pytest.mark.slow
def test_results_have_the_environment_and_every_setting(results):
    env = results["environment"]
    for key in ("python", "torch", "torchvision", "cpu", "cpu_count", "torch_threads", "cuda", "kernel_settings"):
        assert key in env, key
    assert env["torch"] == torch.__version__
    assert results["schema"] == bench.SCHEMA
    assert results["settings"]["devices"] == "cpu,cpu"
    # What `save` writes reads back with every setting and number (no object saved as its repr).
    saved = json.loads(json.dumps(results))
    assert saved["settings"]["batch_sizes"] == [2]
    assert saved["results"][0]["images_per_s"] == results["results"][0]["images_per_s"]


@pytest.mark.slow
def test_every_row_carries_its_settings_and_its_numbers(results):
    rows = results["results"]
    assert {(r["model"], r["mode"]) for r in rows} == {
        (m, mode) for m in ("towers", "grouped", "torchvision") for mode in ("train", "inference")}
    for row in rows:
        for key in ("model", "variant", "layout", "devices", "device_names", "lrn_impl", "batch_size", "precision",
                    "channels_last", "compile", "mode", "warmup_steps", "timed_steps", "repeats", "status"):
            assert key in row, key
        assert row["status"] == "ok", row.get("reason")
        assert len(row["ms_per_step"]["all"]) == 2  # one per repeat
        assert row["ms_per_step"]["min"] <= row["ms_per_step"]["median"] <= row["ms_per_step"]["max"]
        # Each block's images/s is its batch over its ms per step.
        assert row["images_per_s"]["all"] == pytest.approx([row["batch_size"] / (ms / 1e3)
                                                            for ms in row["ms_per_step"]["all"]])
        assert row["achieved_tflops"] > 0 and row["matmul_tflops"] > 0
        assert row["fraction_of_matmul"] == pytest.approx(row["achieved_tflops"] / row["matmul_tflops"])
        assert "cpu" in row["peak_memory"]
        memory = row["peak_memory"]["cpu"]
        assert memory["parameters_bytes"] == (60_965_224 if row["model"] != "torchvision" else 61_100_840) * 4
    macs = {r["model"]: r["macs_per_image"] for r in rows}
    assert macs == {"towers": 724_406_816, "grouped": 724_406_816, "torchvision": 714_188_480}
    train = next(r for r in rows if r["model"] == "grouped" and r["mode"] == "train")
    assert train["flops_per_image"] == 6 * 724_406_816  # training is 3x the forward pass


@pytest.mark.slow
def test_towers_traffic_is_counted_per_step_and_per_image(results):
    row = next(r for r in results["results"] if r["model"] == "towers" and r["mode"] == "inference")
    traffic = row["traffic"]
    assert traffic["counted"]
    values = 2 * 3 * 227 * 227 + 2 * 21_632 + 2 * 4_608 + 2 * 2_048 + 2_048  # input to both towers, 4 points
    assert traffic["handed_over_bytes_per_image"] == 4 * values
    assert traffic["handed_over_bytes_per_step"] == 4 * values * row["batch_size"]
    assert traffic["crossed_devices_bytes_per_step"] == 0  # both towers on the CPU
    assert set(traffic["points_bytes_per_step"]) == {"input", "conv3", "fc6", "fc7", "fc8"}
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
        stock_ms = next(r for r in lrn if r["impl"] == "stock" and r["shape"] == row["shape"])["ms"]["median"]
        assert row["speedup_vs_stock"] == pytest.approx(stock_ms / row["ms"]["median"])
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
    assert sum(r["share"] for r in profile["rows"]) == pytest.approx(1.0)


@pytest.mark.slow
def test_report_prints_every_section(results):
    text = format_report(results)
    for heading in ("Throughput", "Matrix-multiply ceiling", "LRN, forward+backward", "Per-layer time"):
        assert heading in text
    assert "towers" in text and "torchvision" in text


def test_two_gpus_on_a_cpu_only_machine_are_reported_not_run(monkeypatch):
    fake_gpus(monkeypatch, 0)
    out = run_benchmark(Settings(devices=DeviceRequest.parse("0,1"), models=("towers", "grouped"), modes=("train",),
                                 profile="grouped"))
    assert {r["status"] for r in out["results"]} == {"not run"}
    reasons = {r["model"]: r["reason"] for r in out["results"]}
    assert reasons == {"towers": "cuda:0 requested but no CUDA device is visible",
                       "grouped": "cuda:0 requested but no CUDA device is visible"}
    assert {r["status"] for r in out["lrn"]} == {"not run"}
    assert out["profile"]["status"] == "not run"
    assert "targets" not in out  # the project's promises are checked by tools/bench_targets.py


def test_loaders_and_training_from_the_real_loader(tmp_path, monkeypatch):
    from alexnet.data import generate_builtin

    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))  # the packed copies go here
    root = generate_builtin(tmp_path / "data", train_per_class=1, val_per_class=1, workers=0)
    out = run_benchmark(tiny(devices="cpu", models=("grouped",), modes=("train",), lrn_bench=False, profile=None,
                             loaders=True, data_root=str(root), loader_workers=0))
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
    assert e2e["synthetic_train_images_per_s"] == synthetic
    assert e2e["fraction_of_synthetic"] == pytest.approx(e2e["train_images_per_s"] / synthetic)
    report = format_report(out)
    assert "Loaders (batch 2" in report and "packed-raw" in report and "End to end: grouped net" in report


def test_the_verdict_names_the_slower_side():
    from alexnet.experiments.bench.loaders import limit

    assert limit(100.0, 300.0).startswith("the loader is the limit")
    assert limit(300.0, 100.0).startswith("the model is the limit")
    assert limit(300.0, None).startswith("no synthetic-input row")


def test_loaders_not_requested_are_said_so():
    out = run_benchmark(tiny(devices="cpu", models=("grouped",), modes=("inference",), batch_sizes=(1,),
                             lrn_bench=False, profile=None, repeats=1))
    assert out["loaders"]["status"] == out["end_to_end"]["status"] == "not requested"
    assert "--loaders" in out["end_to_end"]["reason"]


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
    (["--models", "resnet"], "resnet: choose from towers, grouped, one-gpu, torchvision"),
    (["-b", "0"], "batch sizes must be positive"),
])
def test_cli_errors_are_one_line(args, message, tmp_path):
    result = CliRunner().invoke(main, ["bench", *args, "--json", str(tmp_path / "x.json")])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
