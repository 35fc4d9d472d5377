"""--parallel hybrid (alexnet.train.hybrid): K processes on gloo, conv layers data-parallel and
fc6-fc8 split by output units, compute what one process computes at the global batch; the 2014
schedule (K FC updates per step) is the one written out directly here; the collectives' counts
are the layer table's; checkpoints are canonical; the set-up rules fail in one line."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alexnet.checkpoint import read_checkpoint
from alexnet.data import generate_builtin, load_or_compute_stats
from alexnet.devices import DeviceRequest
from alexnet.errors import ConfigError
from alexnet.experiments.bench.communication import computed
from alexnet.inference import evaluate_checkpoint
from alexnet.model.build import build_model
from alexnet.model.column import prepare_input
from alexnet.model.spec import resolve
from alexnet.runtime import Runtime
from alexnet.train import hybrid
from alexnet.train.config import TrainConfig
from alexnet.train.loop import TrainRuntime, resume_config, train
from alexnet.train.optim import group_rates, paper_sgd, set_lr
from alexnet.train.recipe import get_preset
from alexnet.world import World

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import hybrid_worker  # noqa: E402
from test_distributed import _free_port, sigterm_after_steps  # noqa: E402

#: Bound on a whole multi-process run: a hang fails the test instead of stalling the suite.
TIMEOUT_S = 300
BATCH, STEPS = 32, 3


def _env(rank, n, port):
    return {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
            "WORLD_SIZE": str(n), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(n), "OMP_NUM_THREADS": "1",
            "GLOO_SOCKET_IFNAME": "lo"}


def launch(n, data, out, batch, steps, result, *settings):
    """``n`` hybrid_worker processes as torchrun would start them on one node (127.0.0.1);
    ``result`` holds ``{rank}``. Returns the exit codes and outputs."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(HERE / "hybrid_worker.py"), str(data), str(out), str(batch),
                               str(steps), str(result).format(rank=rank), *settings], env=_env(rank, n, port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(n)]
    try:
        outputs = [proc.communicate(timeout=TIMEOUT_S)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return [p.returncode for p in procs], outputs


def trained(n, data, tmp, name, *settings, batch=BATCH, steps=STEPS, results=None):
    """Every rank's result of a ``n``-process run in the run folder ``tmp / name`` (its results
    in ``tmp / results-RANK.pt``, ``results`` being ``name`` unless given)."""
    results = tmp / (results or name)
    codes, outputs = launch(n, data, tmp / name, batch, steps, f"{results}-{{rank}}.pt", *settings)
    assert codes == [0] * n, "\n".join(outputs)[-6000:]
    return [torch.load(f"{results}-{rank}.pt", weights_only=True) for rank in range(n)]


def one_process(data, tmp, name, batch=BATCH, steps=STEPS, **settings):
    """The same run in this process, on one thread as each worker runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        hybrid_worker.run(data, tmp / name, batch, steps, tmp / f"{name}.pt", world=World(), **settings)
    finally:
        torch.set_num_threads(threads)
    return torch.load(tmp / f"{name}.pt", weights_only=True)


def initial_state(classes=10):
    """The weights every run here starts from (hybrid_worker.config: seed 3, Caffe's init)."""
    return build_model(get_preset("builtin").model, num_classes=classes, seed=3, dropout=0.0, init="caffe").state_dict()


def relative(theirs, ours):
    return ((theirs - ours).norm() / ours.norm()).item()


def assert_same_training(theirs, ours, initial, of_update=1e-2):
    """Every parameter of ``theirs`` within 1e-5 of its norm of ``ours``, plus ``of_update`` of
    its update from ``initial`` (fp32 rounding: see the first test)."""
    for name, value in ours.items():
        update = (value - initial[name]).norm().item()
        assert update > 0, f"{name} did not train"
        assert (theirs[name] - value).norm().item() <= 1e-5 * value.norm().item() + of_update * update, name


@pytest.fixture(scope="module")
def data10(tmp_path_factory):
    """The built-in generator at 13 training images per class (10 classes): 4 global batches of
    32, so 3 steps stop inside the epoch (and save, as --max-steps does)."""
    root = generate_builtin(tmp_path_factory.mktemp("data") / "d13", train_per_class=13, val_per_class=2, workers=0)
    load_or_compute_stats(root, workers=0)
    return root


@pytest.fixture(scope="module")
def two_ranks(data10, tmp_path_factory):
    """2 hybrid processes x global batch 32 (16 each), 3 steps, validation after; and one
    process at batch 32, in this process."""
    tmp = tmp_path_factory.mktemp("hybrid")
    ranks = trained(2, data10, tmp, "hybrid", "parallel=hybrid", "evaluate=true")
    return ranks, one_process(data10, tmp, "single", evaluate=True), tmp


def test_two_hybrid_processes_train_what_one_process_trains(two_ranks):
    """Three steps of the whole loop (data order, crops, flips, colour noise, SGD) at batch 32,
    dropout off. fp32 rounds the two computations apart (the conv layers' gradients are summed
    over the processes' parts of the batch, as --parallel data does): each parameter must agree
    to 1e-5 of its norm, plus 1e-2 of its update. Every weight is within 3e-7 of its norm (2.5e-6
    with 4 processes); conv1's and conv3's biases start at 0, so they are their own update, and
    their gradients cancel over 96,800 terms per step: 2.5e-4 and 7e-5 of their norm here, 1.9e-3
    with 4 processes, where --parallel data's two replicas are 2.4e-3 from one process. In
    float64 every tensor agrees to 1e-12 (the float64 tests). A step on the wrong rows, or a
    gradient scaled by K, is off by the whole update."""
    (rank0, rank1), single, _ = two_ranks
    assert rank0["world"] == [0, 2] and rank0["progress"]["step"] == single["progress"]["step"] == STEPS
    assert rank0["progress"]["images"] == single["progress"]["images"] == STEPS * BATCH
    for name, value in rank0["state"].items():  # every rank holds one net (rank 1's by digest)
        assert hashlib.sha256(value.numpy().tobytes()).hexdigest() == rank1["state"][name], name
    assert_same_training(rank0["state"], single["state"], initial_state())


def test_hybrid_counts_are_the_layer_tables_and_below_data_parallels(two_ranks):
    (rank0, rank1), single, _ = two_ranks
    spec = resolve(num_classes=10)
    counted = rank0["communication"]["bytes_per_step"]
    assert counted == pytest.approx(computed(spec, "hybrid", BATCH, 2), rel=0, abs=0.5)
    # Two of them from FACTS §1 and §8: a ring all-gather sends (K-1)/K of the gathered tensor, an
    # all-reduce twice that; pool5 is 9,216 values per image, the conv layers 2,334,080 parameters.
    assert counted["pool5 all-gather"] == BATCH * 9216 * 4 / 2
    assert counted["conv grads all-reduce"] == 2 * 2_334_080 * 4 / 2
    assert rank1["communication"]["bytes_per_step"] == counted
    assert rank0["communication"]["total_bytes_per_step"] < sum(computed(spec, "data", BATCH, 2).values())
    assert single["communication"]["bytes_per_step"] == {}  # one process moves nothing


def test_the_run_folder_is_canonical_for_eval_and_resume(two_ranks, data10, tmp_path):
    """What the hybrid run saved is the canonical net: it loads into the grouped net and
    evaluates to the figures the ranks' own validation reached (each rank evaluating its share
    with the FC layers joined), and one process resumes it with --parallel data for the epoch's
    last step, where a one-process run of all 4 steps ends."""
    (rank0, _), _, tmp = two_ranks
    saved = read_checkpoint(tmp / "hybrid")
    for name, value in rank0["state"].items():
        assert torch.equal(saved["model"][name], value), name
    evaluated = evaluate_checkpoint(tmp / "hybrid", runtime=Runtime(devices="cpu", workers=0), ten_crop=False,
                                    save=False)["results"][0]
    for key in ("images", "top1_error", "top5_error"):
        assert evaluated[key] == rank0["val"][key], key
    assert evaluated["loss"] == pytest.approx(rank0["val"]["loss"], rel=1e-5)
    run = tmp_path / "run"
    shutil.copytree(tmp / "hybrid", run)
    runtime = TrainRuntime(devices="cpu", workers=0, log_every=1, ten_crop=False, parallel="data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(resume_config(str(run), runtime=runtime), resume=str(run))  # the epoch's 4th and last step
    finally:
        torch.set_num_threads(threads)
    resumed = read_checkpoint(run)
    assert resumed["progress"]["step"] == 4
    reference = one_process(data10, tmp_path, "single4", steps=4)["state"]
    assert_same_training(resumed["model"], reference, initial_state())


def sgd(model):
    recipe = get_preset("builtin").recipe
    return paper_sgd(model, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def conv_part(model, x):
    """conv1-pool5 of the grouped net: (N, 9216)."""
    x = prepare_input(x, channels_last=True, spec=model.spec)
    for layer in model.layers[:5]:
        x = model.block(layer, x)
    return x.flatten(1)


def fc_part(model, x):
    for layer in model.layers[5:]:
        x = model.block(layer, x)
    return x


def one_process_steps(inputs, fc_rounds, classes=10):
    """The hybrid's schedule written out on the grouped net in float64 from the inputs the ranks
    trained on (each step's global batch: rank 0's images first): the conv layers at the global
    batch; the FC layers in ``fc_rounds`` rounds over the batch's equal parts, an SGD update of
    the FC layers after each when there are several (cuda-convnet2's updatePeriod=1)."""
    model = build_model(get_preset("builtin").model, num_classes=classes, seed=3, dropout=0.0, init="caffe").double()
    optimizer = sgd(model)
    fc = [p for layer in model.layers[5:] for p in getattr(model, layer.name).parameters()]
    for x, labels in inputs:
        optimizer.zero_grad(set_to_none=True)
        pool5 = conv_part(model, x)
        features = pool5.detach().requires_grad_()
        for rows in torch.chunk(torch.arange(len(labels)), fc_rounds):
            F.cross_entropy(fc_part(model, features[rows]), labels[rows]).backward()
            if fc_rounds > 1:
                optimizer.step()
                for param in fc:
                    param.grad = None
        pool5.backward(features.grad / fc_rounds)  # the mean of the rounds' means: the batch's mean
        optimizer.step()
    return model.state_dict()


def global_batches(ranks):
    """Each step's global batch from the ranks' recorded inputs, in rank order."""
    return [(torch.cat([r["inputs"][s][0] for r in ranks]), torch.cat([r["inputs"][s][1] for r in ranks]))
            for s in range(len(ranks[0]["inputs"]))]


def assert_float64_equal(theirs, ours):
    for name, value in ours.items():
        assert theirs[name].dtype == torch.float64
        assert relative(theirs[name], value) < 1e-12, name


def test_in_float64_the_hybrid_is_one_process_at_the_global_batch(data10, tmp_path):
    """The same computation, not only one close to it: in float64 two hybrid processes and the
    plain single-process step on the same global batches agree to 1e-12 in every tensor."""
    ranks = trained(2, data10, tmp_path, "f64", "parallel=hybrid", "float64=true", batch=4)
    assert_float64_equal(ranks[0]["state"], one_process_steps(global_batches(ranks), fc_rounds=1))


@pytest.mark.slow
def test_the_2014_schedule_updates_the_fc_layers_after_each_ranks_images(data10, tmp_path):
    """--fc-updates rank: in float64, what the schedule written out directly computes (the FC
    layers updated after each rank's images in turn, the conv layers once at the global batch);
    and not what the one-update schedule computes."""
    ranks = trained(2, data10, tmp_path, "f64r", "parallel=hybrid", "fc_updates=rank", "float64=true", batch=4)
    batches = global_batches(ranks)
    assert_float64_equal(ranks[0]["state"], one_process_steps(batches, fc_rounds=2))
    once = one_process_steps(batches, fc_rounds=1)
    assert relative(ranks[0]["state"]["fc6.weight"], once["fc6.weight"]) > 1e-9


@pytest.mark.slow
def test_dropout_masks_do_not_depend_on_the_number_of_processes(data10, tmp_path, monkeypatch):
    """The paper's dropout on: two hybrid processes and one (the hybrid's code on one process,
    which the command line refuses) draw the same masks, so they train the same net to rounding;
    rank-dependent masks would differ in half the units."""
    ranks = trained(2, data10, tmp_path, "drop", "parallel=hybrid", "dropout=0.5")
    monkeypatch.setattr(hybrid, "check_plan", lambda config, world: None)
    single = one_process(data10, tmp_path, "drop1", parallel="hybrid", dropout=0.5)
    assert_same_training(ranks[0]["state"], single["state"], initial_state())


@pytest.fixture(scope="module")
def data8(tmp_path_factory):
    """8 of the built-in classes (fc8 splits between 4 processes), 16 training images each: 4
    global batches of 32."""
    root = generate_builtin(tmp_path_factory.mktemp("data") / "d16", train_per_class=16, val_per_class=1, workers=0)
    eight = tmp_path_factory.mktemp("data") / "d8"
    for split in ("train", "val"):
        for folder in sorted((root / split).iterdir())[:8]:
            shutil.copytree(folder, eight / split / folder.name)
    load_or_compute_stats(eight, workers=0)
    return eight


@pytest.mark.slow
def test_four_hybrid_processes_train_what_one_process_trains(data8, tmp_path):
    """K = 4 (8 images each) for 3 steps; then its checkpoint resumed by 2 hybrid processes for
    the epoch's last step: both where one process is after as many steps (and in float64 the
    same computation to 1e-12)."""
    f64 = trained(4, data8, tmp_path, "f64", "parallel=hybrid", "float64=true", batch=8)
    assert_float64_equal(f64[0]["state"], one_process_steps(global_batches(f64), fc_rounds=1, classes=8))
    ranks = trained(4, data8, tmp_path, "k4", "parallel=hybrid")
    assert ranks[0]["communication"]["bytes_per_step"] == pytest.approx(
        computed(resolve(num_classes=8), "hybrid", BATCH, 4), rel=0, abs=0.5)
    resumed = trained(2, data8, tmp_path, "k4", "parallel=hybrid", "resume=true", steps=4, results="k4to2")
    for theirs, steps in ((ranks, STEPS), (resumed, 4)):
        single = one_process(data8, tmp_path, f"single{steps}", steps=steps)
        assert_same_training(theirs[0]["state"], single["state"], initial_state(classes=8))


def test_a_dying_rank_stops_the_other_with_an_error_not_a_hang(data10, tmp_path):
    codes, outputs = launch(2, data10, tmp_path / "run", BATCH, 3, "unused", "parallel=hybrid", "die_at=2")
    assert codes[1] == 3  # the rank that died
    assert codes[0] != 0
    said = "rank 0 of 2 (local rank 0 of 2) stopped at step 1 (not saved: a hybrid run's FC layers are split over its ranks):"
    assert said in outputs[0], outputs[0][-2000:]
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


@pytest.mark.slow
def test_hybrid_processes_stopped_by_sigterm_save_a_checkpoint_and_exit_143(data10, tmp_path):
    """What torchrun does on SIGTERM: every rank finishes its step, rank 0 saves (the FC blocks
    gathered from every rank), and every rank exits 128 + 15."""
    out, port = tmp_path / "run", _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "alexnet", "train", "--parallel", "hybrid", "--data", str(data10), "--out", str(out),
         "-b", "8", "--epochs", "30", "--devices", "cpu", "-j", "0", "--log-every", "1", "--no-ten-crop", "-q"],
        env=_env(rank, 2, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    outputs = sigterm_after_steps(procs, out / "metrics.jsonl")
    assert [p.returncode for p in procs] == [143, 143], outputs
    saved = read_checkpoint(out)
    assert saved["progress"]["step"] >= 3 and saved["model"]["fc6.weight"].shape == (4096, 9216)


# -- the rules, without processes ------------------------------------------------------------
def _config(**changes):
    return TrainConfig.from_preset("builtin", **{"devices": "cpu", **changes})


def test_hybrid_outside_torchrun_is_one_line():
    with pytest.raises(ConfigError, match="torchrun"):
        hybrid.check_plan(_config(parallel="hybrid"), World())


def test_the_2014_options_need_the_hybrid():
    for changes in ({"fc_updates": "rank"}, {"scale_conv_lr": True}):
        with pytest.raises(ConfigError, match="--parallel hybrid"):
            hybrid.check_plan(_config(**changes), World(0, 2, 0, 2))


def test_a_number_of_processes_that_does_not_divide_an_fc_layer_is_one_line():
    with pytest.raises(ConfigError, match="fc6's 4096 output units .* 3 does not divide"):
        hybrid.check_plan(_config(parallel="hybrid"), World(0, 3, 0, 3))
    with pytest.raises(ConfigError, match=r"fc8's 10 output units \(the data's classes\) .* 4 does not divide"):
        hybrid.HybridAlexNet(resolve(num_classes=10), World(0, 4, 0, 4))
    hybrid.check_plan(_config(parallel="hybrid"), World(0, 4, 0, 4))  # 4096 splits in 4


def test_the_towers_layout_in_one_process_is_one_line():
    world = World(0, 2, 0, 2)
    with pytest.raises(ConfigError, match="one device .* cpu,cpu gives a process the towers layout"):
        hybrid.place(_config(parallel="hybrid", devices="cpu,cpu"), world, towers=2)
    with pytest.raises(ConfigError, match="--layout towers"):
        hybrid.place(_config(parallel="hybrid", devices=DeviceRequest.parse("cpu", "towers")), world, towers=2)
    assert hybrid.place(_config(parallel="hybrid"), world, towers=2).layout == "grouped"
    with pytest.raises(ConfigError, match="fp16"):
        hybrid.check_plan(_config(parallel="hybrid", amp="fp16"), world)


def test_scaled_conv_rates_are_cuda_convnet2s_data_model_rates():
    """--scale-conv-lr at K = 4, base rate 0.01, biases at twice the rate: conv weights 0.04 and
    biases 0.08, FC weights 0.01 and biases 0.02, as layer-params-imagenet-4gpu-data-model.cfg
    has them (epsW/epsB base); and a scheduled drop divides all of them."""
    net = hybrid.HybridAlexNet(resolve(num_classes=8), World(1, 4, 1, 4))
    optimizer = paper_sgd(net, lr=0.01, bias_lr_mult=2.0)
    recipe = get_preset("builtin").recipe.replace(scale_conv_lr=True)
    hybrid.scale_conv_rates(optimizer, net, recipe, World(1, 4, 1, 4))
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for name, param in net.named_parameters():
        expected = {("trunk", "weight"): 0.04, ("trunk", "bias"): 0.08}.get(
            (name.split(".")[0], name.split(".")[-1]), 0.01 if name.endswith("weight") else 0.02)
        assert rate[id(param)] == pytest.approx(expected), name
    set_lr(optimizer, 0.001)
    assert group_rates(optimizer) == pytest.approx({"weights": 0.001, "biases": 0.002, "conv weights": 0.004,
                                                    "conv biases": 0.008})


@pytest.mark.parametrize("style,kept", [("paper", 1.0), ("inverted", 2.0)])
def test_the_hybrids_dropout_masks_are_the_styles_own_form(style, kept):
    """§4.2: each of fc6's and fc7's units is zeroed with probability 0.5 and the rest pass
    unscaled (the paper's form; the inverted one scales them by 1/(1-p)); a step's masks are a
    function of the seed and the step only."""
    spec = resolve(num_classes=10, dropout_style=style)
    generator = torch.Generator()
    masks = hybrid.dropout_masks(spec, 64, generator, seed=3, step=5)
    assert sorted(masks) == ["fc6", "fc7"]
    for mask in masks.values():
        assert mask.shape == (64, 4096)
        assert set(mask.unique().tolist()) == {0.0, kept}
        n = mask.numel()  # kept fraction within 5 standard deviations of 1 - p = 0.5
        assert abs((mask > 0).float().mean().item() - 0.5) < 5 * (0.25 / n) ** 0.5
    again = hybrid.dropout_masks(spec, 64, generator, seed=3, step=5)
    other = hybrid.dropout_masks(spec, 64, generator, seed=3, step=6)
    assert all(torch.equal(masks[k], again[k]) for k in masks)
    assert not torch.equal(masks["fc6"], other["fc6"])
