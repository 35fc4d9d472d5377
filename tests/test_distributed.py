"""Data-parallel replicas (alexnet.train.distributed): two processes with the gloo backend on
127.0.0.1 compute what one process computes at the doubled batch, and keep the towers'
exchange points; the device, batch and environment rules fail clearly."""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alexnet.data import load_or_compute_stats, open_dataset
from alexnet.data.loader import make_loader
from alexnet.data.transforms import train_crops
from alexnet.devices import DeviceRequest, Placement
from alexnet.errors import ConfigError, DeviceError
from alexnet.model.build import build_model
from alexnet.progress import Reporter
from alexnet.train import distributed
from alexnet.train.distributed import rank_seed, replica_batch
from alexnet.world import World
from alexnet.checkpoint import read_checkpoint
from alexnet.train.loop import TrainRuntime, resume_config, train
from alexnet.train.recipe import get_preset

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ddp_worker import run_replica  # noqa: E402

#: Bound on the whole two-process run: a hang fails the test instead of stalling the suite.
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(n, args, extra_env=None):
    """``n`` worker processes as torchrun would start them on one node, on 127.0.0.1 only."""
    port = _free_port()
    procs = []
    for rank in range(n):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "WORLD_SIZE": str(n), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(n),
               "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", **(extra_env or {})}
        procs.append(subprocess.Popen([sys.executable, str(HERE / "ddp_worker.py"), *map(str, args(rank))],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return [p.returncode for p in procs], outputs


@pytest.fixture(scope="module")
def two_replicas(tiny, tmp_path_factory):
    """2 replicas x global batch 4 (2 each) on the towers layout (cpu,cpu), 3 steps; and one
    process at batch 4 on the same samples, in this process."""
    tmp = tmp_path_factory.mktemp("ddp")
    codes, outputs = launch(2, lambda rank: [tiny, tmp / "run", "cpu,cpu", 4, 3, tmp / f"rank{rank}.pt"])
    assert codes == [0, 0], "\n".join(outputs)
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(2)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_replica(tiny, tmp / "single", "cpu,cpu", 4, 3, tmp / "single.pt", world=World())
    finally:
        torch.set_num_threads(threads)
    return ranks, torch.load(tmp / "single.pt", weights_only=True), tmp


def test_replicas_stay_identical_and_equal_one_process_at_the_doubled_batch(two_replicas):
    (rank0, rank1), single, _ = two_replicas
    assert rank0["world"] == [0, 2] and rank1["world"] == [1, 2]
    assert rank0["placement"] == {"layout": "towers", "devices": ["cpu", "cpu"]}
    assert rank0["progress"]["step"] == single["progress"]["step"] == 3
    assert rank0["progress"]["images"] == single["progress"]["images"] == 12  # global images
    initial = run_initial_state()
    for name, value in single["state"].items():
        assert torch.equal(rank0["state"][name], rank1["state"][name]), name  # DDP: the same update everywhere
        assert not torch.equal(value, initial[name]), f"{name} did not train"
        assert_same_update(rank0["state"][name], value, initial[name], name)


def assert_same_update(theirs, ours, initial, name, fraction=2e-2):
    """The same training, to float rounding of each parameter's update: conv1's weight gradient
    sums many large terms of both signs (0-255 inputs), so batches split otherwise round it apart
    by up to about 0.5% of its update over these steps (most layers by far less); a wrong averaging
    or a step out of place is off by the whole update. ``fraction``: of the largest update."""
    update = ours - initial
    torch.testing.assert_close(theirs - initial, update, rtol=0, atol=fraction * update.abs().max().item(), msg=name)


def run_initial_state():
    model = build_model(get_preset("builtin").model, num_classes=10, seed=3, dropout=0.0, init="caffe")
    return model.state_dict()


def test_ddp_keeps_the_four_exchange_points_per_step(two_replicas):
    (rank0, rank1), single, _ = two_replicas
    for traffic in (rank0["traffic"], rank1["traffic"]):
        assert set(traffic) == {"input", "conv3", "fc6", "fc7", "fc8"}
        for point, counts in single["traffic"].items():
            # as many hand-overs per step as one process makes, each of half the batch
            assert traffic[point]["sends"] == counts["sends"], point
            assert 2 * traffic[point]["values"] == counts["values"], point


def test_ddp_all_reduces_every_gradient_once_per_step_and_counts_it(two_replicas):
    """The paper's 60,965,224 parameters (FACTS §1) with fc8 for the 10 built-in classes, fp32,
    all-reduced once per step: a ring all-reduce sends 2(K-1)/K of it per process."""
    (rank0, rank1), single, _ = two_replicas
    params = 60_965_224 - 4_097_000 + 4096 * 10 + 10
    assert rank0["communication"]["bytes_per_step"] == {"gradients all-reduce": 2 * 4 * params / 2}
    assert rank1["communication"]["bytes_per_step"] == rank0["communication"]["bytes_per_step"]
    assert single["communication"]["bytes_per_step"] == {}


def test_only_rank_0_writes_the_run_folder(two_replicas):
    _, _, tmp = two_replicas
    run = tmp / "run"
    assert (run / "checkpoints" / "last.pt").exists()  # max_steps saves, as Ctrl-C does
    recorded = json.loads((run / "config.json").read_text())["resolved"]["distributed"]
    assert recorded["world_size"] == 2 and recorded["global_batch"] == 4 and recorded["batch_per_replica"] == 2
    assert recorded["ranks"] == ["towers on cpu, cpu", "towers on cpu, cpu"]
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if r["kind"] == "step"] == [1, 2, 3]  # one line per step, not one per rank


def test_the_shards_of_a_global_batch_are_its_slices(tiny):
    dataset = open_dataset(tiny, "train")
    whole = make_loader(dataset, 4, shuffle=True, seed=5, epoch=2, workers=0, drop_last=True)
    parts = [make_loader(dataset, 4, shuffle=True, seed=5, epoch=2, workers=0, drop_last=True, shard=(r, 2))
             for r in range(2)]
    assert [len(p) for p in parts] == [len(whole)] * 2
    for batch, a, b in zip(whole.batches, *(p.batches for p in parts)):
        assert a + b == batch and len(a) == len(b) == 2
    with pytest.raises(ConfigError):
        make_loader(dataset, 5, shuffle=True, workers=0, shard=(0, 2))


def test_a_replicas_augmentation_is_its_slice_of_the_global_draws(tiny):
    stats = load_or_compute_stats(tiny, workers=0)
    dataset = open_dataset(tiny, "train")
    images = torch.stack([dataset[i][0] for i in range(6)])
    whole = train_crops(images, stats, torch.Generator().manual_seed(9))
    for start in (0, 2, 4):
        part = train_crops(images[start:start + 2], stats, torch.Generator().manual_seed(9), slice_of=(start, 6))
        torch.testing.assert_close(part, whole[start:start + 2], rtol=0, atol=0)


def test_world_from_torchrun_environment():
    assert World.from_env({}) == World()
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert World.from_env(env) == World(5, 8, 1, 4)
    with pytest.raises(ConfigError, match="RANK"):
        World.from_env({**env, "RANK": "x"})
    with pytest.raises(ConfigError, match="inconsistent"):
        World.from_env({**env, "RANK": "8"})


def test_global_batch_must_divide_among_the_replicas():
    assert replica_batch(128, World(0, 4, 0, 4)) == 32
    with pytest.raises(ConfigError, match="--batch-size 128 .* 3 processes"):
        replica_batch(128, World(0, 3, 0, 3))


def test_rank_seeds_rank_0_keeps_the_seed_the_others_differ():
    assert rank_seed(7, 0) == 7
    assert len({rank_seed(7, r) for r in range(8)}) == 8


def test_each_local_rank_gets_its_devices(fake_gpus):
    fake_gpus(8)
    auto = DeviceRequest.parse("auto")
    assert [str(auto.for_local_rank(r, 4)) for r in range(4)] == ["0,1", "2,3", "4,5", "6,7"]
    grouped = DeviceRequest.parse("auto", "grouped")
    assert [str(grouped.for_local_rank(r, 8)) for r in range(8)] == [str(r) for r in range(8)]
    assert str(auto.for_local_rank(3, 8, towers=1)) == "3"  # the one-GPU net: one GPU each
    lists = DeviceRequest.parse("0,1;2,3")
    assert str(lists) == "0,1;2,3" and DeviceRequest.parse(**lists.as_dict()) == lists
    assert [str(lists.for_local_rank(r, 2)) for r in range(2)] == ["0,1", "2,3"]
    assert DeviceRequest.parse("cpu,cpu").for_local_rank(1, 2) == DeviceRequest.parse("cpu,cpu")
    assert str(DeviceRequest.parse("auto").for_local_rank(0, 1)) == "auto"  # one process: unchanged


def test_bad_device_set_ups_fail_clearly(fake_gpus):
    fake_gpus(8)
    with pytest.raises(DeviceError, match="8 processes per node need 16 GPUs .* 8 CUDA devices are visible"):
        DeviceRequest.parse("auto").for_local_rank(0, 8)
    with pytest.raises(DeviceError, match="cuda:1 is in the lists of local ranks 0 and 1"):
        DeviceRequest.parse("0,1;1,2").for_local_rank(0, 2)
    with pytest.raises(DeviceError, match="3 device lists .* 2 processes"):
        DeviceRequest.parse("0,1;2,3;4,5").for_local_rank(0, 2)
    with pytest.raises(DeviceError, match="same GPUs"):
        DeviceRequest.parse("0,1").for_local_rank(0, 2)
    fake_gpus(0)
    assert str(DeviceRequest.parse("auto").for_local_rank(1, 2)) == "cpu"  # no GPU: every replica on the CPU


def test_without_torchrun_address_it_says_how_to_start(monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        distributed.start(World(0, 2, 0, 2), Placement.of("grouped", ["cpu"]))


def test_a_dying_replica_stops_the_others_with_an_error_not_a_hang(tiny, tmp_path):
    codes, outputs = launch(2, lambda rank: [tiny, tmp_path / "run", "cpu", 4, 5, "die-at=2"])
    assert codes[1] == 3  # the rank that died
    assert codes[0] != 0
    # rank 0 keeps the step it reached (the one the dead rank broke off is undone)
    assert "rank 0 of 2 (local rank 0 of 2) stopped at step 1 (checkpoint saved at step 1; continue with: alexnet " \
           "train --resume" in outputs[0], outputs[0][-2000:]
    assert read_checkpoint(tmp_path / "run")["progress"]["step"] == 1


def test_a_two_process_run_resumes_in_one_process_where_it_stopped(two_replicas, tiny, tmp_path):
    """Stopped at step 3 by two replicas, continued by one process: the same parameters after
    the epoch's 5 steps as one process that trained all 5 (data order, augmentation stream and
    progress all count global batches)."""
    _, _, tmp = two_replicas
    run = tmp_path / "run"
    shutil.copytree(tmp / "run", run)
    stream = io.StringIO()
    runtime = TrainRuntime(devices="cpu,cpu", workers=0, log_every=1, ten_crop=False)
    train(resume_config(str(run), runtime=runtime), resume=str(run), reporter=Reporter(stream=stream))
    assert "trained with 2 processes; continuing with 1" in stream.getvalue()
    resumed = read_checkpoint(run / "checkpoints" / "last.pt")
    assert resumed["progress"]["step"] == 5
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_replica(tiny, tmp_path / "single5", "cpu,cpu", 4, 5, tmp_path / "single5.pt",
                    world=World())
    finally:
        torch.set_num_threads(threads)
    reference = torch.load(tmp_path / "single5.pt", weights_only=True)["state"]
    initial = run_initial_state()
    # Three steps split 2 + 2 between processes, then two in one process at 2 threads, against
    # five in one process at 1 thread: on a 2-core AMD EPYC (2026-12-02) fc6's weights came out
    # 6.4% of their largest update apart (conv4 1.9%, the rest under 1.3%), where an Intel Xeon
    # kept every layer within 2% (the landed commit fails the same way here: a machine's rounding,
    # not a change; not yet checked in float64). A step out of place is off by the whole update,
    # and 10% of it still fails for that.
    for name, value in reference.items():
        assert_same_update(resumed["model"][name], value, initial[name], name, fraction=0.1)


def sigterm_after_steps(procs, metrics, steps=3):
    """SIGTERM to every process once ``metrics`` (a run's metrics.jsonl) holds ``steps`` lines, a
    process ended or the time is up, as torchrun does: to every rank, and again to those still
    running when one has exited (rank 0, saving, meets a second one; its default would end it as
    -15). Their outputs, each process ended (killed at the end)."""
    try:
        deadline = time.time() + TIMEOUT_S
        while time.time() < deadline and all(p.poll() is None for p in procs) and not (
                metrics.exists() and metrics.read_text().count("\n") >= steps):
            time.sleep(0.2)
        stop_by = time.time() + TIMEOUT_S
        while any(p.poll() is None for p in procs) and time.time() < stop_by:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
        return [proc.communicate(timeout=TIMEOUT_S)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.slow
def test_replicas_stopped_by_sigterm_save_a_checkpoint_and_exit_143(tiny, tmp_path):
    """What torchrun does on SIGTERM: it sends SIGTERM to every rank, and again while they run.
    Each finishes its step, they stop together, rank 0 saves where they stopped, and every rank
    exits 128 + 15."""
    out, port = tmp_path / "run", _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1",
               "GLOO_SOCKET_IFNAME": "lo"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "alexnet", "train", "--data", str(tiny), "--out", str(out), "-b", "4",
             "--epochs", "30", "--devices", "cpu,cpu", "-j", "0", "--log-every", "1", "--no-ten-crop", "-q"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    metrics = out / "metrics.jsonl"
    outputs = sigterm_after_steps(procs, metrics)
    assert [p.returncode for p in procs] == [143, 143], outputs
    assert "stopped (SIGTERM)" in outputs[0]
    saved = read_checkpoint(out)["progress"]
    steps = [r["step"] for r in json.loads("[" + ",".join(metrics.read_text().splitlines()) + "]")
             if r["kind"] == "step"]
    assert saved["step"] == steps[-1] >= 3  # the step they stopped at, not the last epoch's end
