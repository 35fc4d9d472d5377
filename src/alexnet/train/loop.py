"""The training loop: the paper's recipe on one device or two, in a run folder that survives
interruption.

    train(TrainConfig(recipe=get_recipe("paper"), data="/data/imagenet", devices="0,1"))

Each epoch: shuffled batches (a deterministic order from the seed and the epoch), the paper's
augmentation on the training device, SGD steps, a validation pass (centre crop), the learning
rate schedule, a checkpoint (written atomically), the metrics and the curves. Ctrl-C or SIGTERM
finishes the current step, saves a checkpoint and stops; ``--resume`` continues from it exactly.
A NaN or infinite loss stops without saving over the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch

from ..data import load_or_compute_stats, make_loader, open_dataset, resolve_data_root
from ..data.files import write_json
from ..devices import Placement, resolve_placement
from ..errors import CheckpointError, ConfigError, TrainingError
from ..model.build import build_model
from ..report import SILENT, Reporter
from ..versions import software_versions
from .checkpoint import (load_momentum_buffers, load_weights, read_checkpoint, save_checkpoint,
                         stats_for_checkpoint)
from .evaluate import Preprocess, evaluate
from .optim import current_lr, paper_sgd, set_lr
from .recipe import LRSchedule, Recipe, get_recipe, validate
from .runs import RunFolder, plot_curves
from .step import resolve_amp, train_step

@dataclass
class TrainConfig:
    """Everything a run needs: the recipe, the model's variant, the data, the devices, and how
    to run (precision, memory format, workers). The run folder records it fully resolved."""

    recipe: Recipe = field(default_factory=lambda: get_recipe("paper"))
    data: Optional[str] = None  # a folder or packed dataset; None: the built-in dataset
    out: Optional[str] = None  # the run folder; None: runs/<preset>-<time>
    devices: str = "auto"
    layout: Optional[str] = None
    variant: str = "two-gpu"
    lrn: bool = True
    overlap: bool = True
    lrn_impl: str = "fast"
    amp: str = "auto"  # auto: bf16 on GPUs that support it, fp32 elsewhere
    channels_last: bool = False
    cudnn_benchmark: bool = True
    workers: Optional[int] = None
    log_every: int = 10  # steps between progress records (and host synchronisations)
    skip_bad: bool = False
    ten_crop: bool = True  # a final ten-crop evaluation after the last epoch
    eval_batch_size: Optional[int] = None
    overwrite: bool = False
    max_steps: Optional[int] = None  # stop as if interrupted after this many steps in total

    def as_dict(self) -> Dict:
        d = dataclasses.asdict(self)
        d["recipe"] = self.recipe.as_dict()
        return d

    @classmethod
    def from_dict(cls, data: Dict) -> "TrainConfig":
        data = dict(data)
        recipe = Recipe(**data.pop("recipe"))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(recipe=recipe, **{k: v for k, v in data.items() if k in known})


class Interrupted(Exception):
    """Training stopped on a signal or at max_steps, after saving a checkpoint."""


def _rng_state(generator: torch.Generator, placement: Placement) -> Dict:
    state = {"torch": torch.get_rng_state(), "augment": generator.get_state()}
    cuda = sorted({d.index or 0 for d in placement.devices if d.type == "cuda"})
    state["cuda"] = {str(i): torch.cuda.get_rng_state(i) for i in cuda}
    return state


def _set_rng_state(state: Dict, generator: torch.Generator, placement: Placement) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "augment" in state:
        try:
            generator.set_state(state["augment"])
        except RuntimeError:
            pass  # another device type (resumed elsewhere): the augmentation stream restarts from its seed
    for index, value in state.get("cuda", {}).items():
        if int(index) < torch.cuda.device_count():
            torch.cuda.set_rng_state(value, int(index))


class _StopSignal:
    """First Ctrl-C or SIGTERM: finish the step, save, stop. A second Ctrl-C stops at once."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter
        self.requested = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self.reporter.line(f"{self.requested}: finishing this step and saving a checkpoint "
                           f"(press Ctrl-C again to stop at once)")

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def config_for_resume(run_dir: str, epochs: Optional[int] = None, **runtime) -> TrainConfig:
    """The configuration a run was started with, with how-to-run settings (devices, layout,
    precision, workers...) replaced by ``runtime`` and optionally more ``epochs``."""
    run = RunFolder.open(run_dir)
    saved = run.read_config()
    try:
        config = TrainConfig.from_dict(saved)
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{run.config_path}: not a configuration this version reads ({error})") from None
    changes = {k: v for k, v in runtime.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    config = dataclasses.replace(config, out=str(run.path), overwrite=False, **changes)
    if epochs is not None:
        config = dataclasses.replace(config, recipe=config.recipe.replace(epochs=epochs))
    return config


def default_out(recipe: Recipe) -> str:
    return str(Path("runs") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}")


def train(config: TrainConfig, *, resume: Optional[str] = None, reporter: Reporter = SILENT) -> Dict:
    """Train (or, with ``resume``, continue) a run. Returns the run's summary.

    Raises ``Interrupted`` after saving when stopped by a signal or ``max_steps``, and
    ``TrainingError`` when the loss stops being finite.
    """
    recipe = validate(config.recipe)
    if config.log_every < 1:
        raise ConfigError(f"--log-every must be at least 1; got {config.log_every}")
    placement = resolve_placement(config.devices, config.layout, config.variant)
    amp_dtype = resolve_amp(config.amp, placement)
    payload = None
    if resume is not None:
        run = RunFolder.open(resume)
        payload = read_checkpoint(run.last_checkpoint)
    else:
        run = RunFolder.create(config.out or default_out(recipe), overwrite=config.overwrite)
    if any(d.type == "cuda" for d in placement.devices):
        torch.backends.cudnn.benchmark = config.cudnn_benchmark

    root = resolve_data_root(config.data)
    train_set = open_dataset(root, "train", skip_bad=config.skip_bad)
    val_set = open_dataset(root, "val", skip_bad=config.skip_bad)
    classes = list(train_set.classes)
    if payload is not None and list(payload["classes"]) != classes:
        raise CheckpointError(f"{run.path}: the run was trained on {len(payload['classes'])} classes, "
                              f"{root} has {len(classes)} (or in another order)")
    stats = load_or_compute_stats(root, workers=config.workers, progress=reporter.enabled)

    model = build_model(config.variant, placement.layout, placement.devices, lrn=config.lrn,
                        overlap=config.overlap, num_classes=len(classes), dropout=recipe.dropout,
                        init=None if payload else recipe.init, seed=recipe.seed, lrn_impl=config.lrn_impl)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = paper_sgd(model, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                          decay_biases=recipe.decay_biases, bias_lr_mult=recipe.bias_lr_mult)
    schedule = LRSchedule(recipe)
    primary = placement.primary
    generator = torch.Generator(device=primary).manual_seed(recipe.seed + 1)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    preprocess = Preprocess(stats=stats.to(primary), mean=recipe.mean, divide_std=recipe.input_divide_std,
                            channels_last=config.channels_last, pca=recipe.pca, pca_std=recipe.pca_std)

    progress = {"epoch": 0, "batch": 0, "step": 0, "images": 0}
    best = {"val_top1_error": math.inf}
    if payload is not None:
        load_weights(model, payload)
        if payload.get("optimizer"):
            load_momentum_buffers(model, optimizer, payload["optimizer"]["momentum"])
        schedule.load_state_dict(payload["schedule"])
        set_lr(optimizer, schedule.lr, keep_velocity=False)
        progress.update(payload["progress"])
        best.update(payload.get("metrics", {}).get("best", {}))
        _set_rng_state(payload.get("rng", {}), generator, placement)
        run.truncate_metrics_after(progress["step"])
        reporter.line(f"resuming {run.path} at epoch {progress['epoch'] + 1}, batch {progress['batch']} "
                      f"(step {progress['step']}) on {placement.describe()}")
    else:
        stats.save(run.stats_dir)
        run.write_classes(classes)
        torch.manual_seed(recipe.seed)  # dropout masks follow the seed too

    resolved = config.as_dict()
    resolved.update(out=str(run.path), data_root=str(root), placement=placement.as_dict(),
                    amp_dtype=str(amp_dtype).replace("torch.", "") if amp_dtype else "float32",
                    classes=len(classes), train_images=len(train_set), val_images=len(val_set),
                    stats=stats.summary(), versions=software_versions(), command=sys.argv)
    run.write_config(resolved)
    chance_loss = math.log(len(classes))

    saved_stats = stats_for_checkpoint(stats)  # the same in every checkpoint of the run

    def checkpoint(path=None, metrics=None):
        save_checkpoint(path or run.last_checkpoint, model=model, classes=classes, stats=saved_stats,
                        config=resolved, optimizer=optimizer, schedule=schedule.state_dict(), progress=progress,
                        rng=_rng_state(generator, placement), metrics={"best": best, **(metrics or {})})

    eval_kwargs = dict(batch_size=config.eval_batch_size or recipe.batch_size, amp_dtype=amp_dtype,
                       workers=config.workers, reporter=reporter)
    reporter.line(f"training {config.variant} AlexNet ({placement.describe()}, "
                  f"{'bf16' if amp_dtype == torch.bfloat16 else 'fp16' if amp_dtype else 'fp32'}) on "
                  f"{len(train_set):,} images in {len(classes)} classes from {root}; recipe {recipe.name}; "
                  f"run folder {run.path}")
    last_val = None
    with _StopSignal(reporter) as stop:
        for epoch in range(progress["epoch"], recipe.epochs):
            loader = make_loader(train_set, recipe.batch_size, shuffle=True, seed=recipe.seed, epoch=epoch,
                                 skip_batches=progress["batch"], workers=config.workers, drop_last=True,
                                 pin_memory=primary.type == "cuda")
            model.train()
            sums = torch.zeros(3, dtype=torch.float64, device=primary)  # images, loss·n, misses (since last log)
            epoch_sums = torch.zeros(3, dtype=torch.float64, device=primary)
            tick, tick_images = time.perf_counter(), 0
            with reporter.bar(loader.epoch_batches, f"epoch {epoch + 1}/{recipe.epochs}",
                              initial=progress["batch"]) as bar:
                batches_left = len(loader)  # after the batches a resumed run already trained on
                for i, (images, labels) in enumerate(loader):
                    images = images.to(primary, non_blocking=True)
                    labels = labels.to(primary, non_blocking=True)
                    x = preprocess.train(images, generator)
                    loss, logits = train_step(model, x, labels, optimizer, amp_dtype, scaler, with_logits=True)
                    n = labels.shape[0]
                    misses = (logits.argmax(dim=1) != labels).sum()
                    sums += torch.stack([torch.tensor(float(n), dtype=torch.float64, device=primary),
                                         loss.double() * n, misses.double()])
                    progress["batch"] += 1
                    progress["step"] += 1
                    progress["images"] += n
                    tick_images += n
                    bar.update(1)
                    last = i == batches_left - 1
                    stopping = stop.requested or (config.max_steps and progress["step"] >= config.max_steps)
                    if progress["step"] % config.log_every == 0 or last or stopping:
                        count, loss_sum, miss_sum = sums.tolist()  # the one host synchronisation
                        if not math.isfinite(loss_sum):
                            raise TrainingError(
                                f"the loss became {loss_sum / max(count, 1)} by step {progress['step']} "
                                f"(epoch {epoch + 1}); stopped without saving. The last good checkpoint is "
                                f"{run.last_checkpoint if run.last_checkpoint.exists() else 'none (first epoch)'}; "
                                f"try a lower --lr")
                        now = time.perf_counter()
                        record = {"kind": "step", "epoch": epoch + 1, "step": progress["step"],
                                  "images": progress["images"], "loss": loss_sum / count,
                                  "error": miss_sum / count, "lr": current_lr(optimizer),
                                  "images_per_second": tick_images / max(now - tick, 1e-9),
                                  "chance_loss": chance_loss}
                        run.append_metrics(record)
                        bar.set_postfix_str(f"loss {record['loss']:.3f} err {100 * record['error']:.1f}% "
                                            f"{record['images_per_second']:.0f} img/s")
                        epoch_sums += sums
                        sums.zero_()
                        tick, tick_images = now, 0
                    if stopping:
                        checkpoint()
                        reason = stop.requested or f"max_steps={config.max_steps}"
                        raise Interrupted(f"stopped ({reason}) at step {progress['step']}, epoch {epoch + 1} batch "
                                          f"{progress['batch']}; checkpoint saved. Continue with: "
                                          f"alexnet train --resume {run.path}")
            if loader.epoch_batches == 0:
                raise ConfigError(f"--batch-size {recipe.batch_size} is larger than the training set "
                                  f"({len(train_set)} images): no full batch to train on")
            # End of the epoch: validate, schedule, save.
            count, loss_sum, miss_sum = epoch_sums.tolist()
            val = evaluate(model, val_set, preprocess, desc=f"val {epoch + 1}", **eval_kwargs)
            last_val = val
            dropped = schedule.after_epoch(epoch, val["top1_error"])
            if dropped:
                set_lr(optimizer, schedule.lr)
            progress.update(epoch=epoch + 1, batch=0)
            improved = val["top1_error"] < best["val_top1_error"]
            if improved:
                best = {"val_top1_error": val["top1_error"], "val_top5_error": val["top5_error"], "epoch": epoch + 1}
            record = {"kind": "epoch", "epoch": epoch + 1, "step": progress["step"], "images": progress["images"],
                      "train_loss": loss_sum / max(count, 1), "train_error": miss_sum / max(count, 1),
                      "val_loss": val["loss"], "val_top1_error": val["top1_error"],
                      "val_top5_error": val["top5_error"], "lr": current_lr(optimizer), "lr_dropped": dropped,
                      "skipped_images": getattr(loader, "skipped", 0), "chance_loss": chance_loss}
            run.append_metrics(record)
            checkpoint()
            if improved:
                shutil.copyfile(run.last_checkpoint, run.best_checkpoint)
            plot_curves(run.read_metrics(), run.curves_path, title=f"{run.path.name}: {config.variant}, "
                                                                  f"{placement.describe()}")
            reporter.line(f"epoch {epoch + 1}/{recipe.epochs}: train loss {record['train_loss']:.3f} "
                          f"err {100 * record['train_error']:.1f}% | val loss {val['loss']:.3f} "
                          f"top-1 {100 * val['top1_error']:.1f}% top-5 {100 * val['top5_error']:.1f}% | "
                          f"lr {record['lr']:.2g}{' (divided)' if dropped else ''}")

    summary = {"run": str(run.path), "epochs": progress["epoch"], "steps": progress["step"],
               "images": progress["images"], "best": best, "chance_top1_error": 1 - 1 / len(classes)}
    if last_val is not None:
        summary["final_centre_crop"] = last_val
    if config.ten_crop and progress["epoch"] == recipe.epochs:
        ten = evaluate(model, val_set, preprocess, ten_crop=True, desc="val ten-crop", **eval_kwargs)
        summary["final_ten_crop"] = ten
        run.append_metrics({"kind": "final", "step": progress["step"], "images": progress["images"],
                            "ten_crop_top1_error": ten["top1_error"], "ten_crop_top5_error": ten["top5_error"],
                            "ten_crop_loss": ten["loss"]})
    write_json(run.path / "summary.json", summary)
    return summary
