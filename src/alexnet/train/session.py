"""Setting up a training run: its configuration, the run folder, and everything built from
them (``set_up``), or restored from the last checkpoint when resuming.

    session = set_up(TrainConfig(recipe=get_recipe("paper"), data="/data/imagenet",
                                 devices=DeviceRequest.parse("0,1")))

Nothing is written before the devices and the data have been checked.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch.utils.data import Dataset

from ..data import default_workers, load_or_compute_stats, open_dataset, resolve_data_root
from ..data.preprocess import Preprocess
from ..devices import AUTO, DeviceRequest, Placement
from ..errors import CheckpointError, ConfigError
from ..model.build import build_model
from ..model.spec import resolve
from ..progress import SILENT, Reporter
from ..machine import software_versions
from . import distributed
from .checkpoint import (load_momentum_buffers, load_weights, read_checkpoint, save_checkpoint,
                         stats_for_checkpoint)
from .distributed import SINGLE, World
from .evaluate import evaluate
from .optim import paper_sgd, set_lr
from .recipe import PRESETS, LRSchedule, Recipe, get_recipe, schedule_rule, validate
from .run_folder import RunFolder
from .step import amp_name, resolve_amp


@dataclass


class TrainConfig:
    """Everything a run needs: the recipe, the model's variant, the data, the devices, and how
    to run (precision, memory format, workers). The run folder records it fully resolved."""

    recipe: Recipe = field(default_factory=lambda: get_recipe("paper"))
    data: Optional[str] = None  # a folder or packed dataset; None: the built-in dataset
    out: Optional[str] = None  # the run folder; None: runs/<preset>-<time>
    devices: DeviceRequest = AUTO  # --devices and --layout
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
    collective_timeout: float = distributed.DEFAULT_TIMEOUT  # seconds; several processes only

    def __post_init__(self):
        self.devices = DeviceRequest.of(self.devices)

    def as_dict(self) -> Dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(recipe=self.recipe.as_dict(), **self.devices.as_dict())
        return d

    @classmethod
    def from_dict(cls, data: Dict) -> "TrainConfig":
        data = dict(data)
        recipe = Recipe.from_dict(data.pop("recipe"))
        devices = DeviceRequest.parse(data.pop("devices", "auto"), data.pop("layout", None))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(recipe=recipe, devices=devices, **{k: v for k, v in data.items() if k in known})


def _rng_state(generator: torch.Generator, placement: Placement) -> Dict:
    state = {"torch": torch.get_rng_state(), "augment": generator.get_state()}
    state["cuda"] = {str(i): torch.cuda.get_rng_state(i) for i in placement.cuda_indices}
    return state


def _set_rng_state(state: Dict, generator: torch.Generator) -> None:
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


def config_for_resume(run_dir: str, epochs: Optional[int] = None, **runtime) -> TrainConfig:
    """The configuration a run was started with, with how-to-run settings (devices,
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


@dataclass


class Session:
    """A run set up to train: its folder, data, model, optimizer and where it stands."""

    config: TrainConfig
    recipe: Recipe
    placement: Placement
    amp_dtype: Optional[torch.dtype]
    run: RunFolder
    root: Path
    train_set: Dataset
    val_set: Dataset
    classes: List[str]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    preprocess: Preprocess
    generator: torch.Generator  # the augmentation's random stream, on the training device
    scaler: Optional["torch.amp.GradScaler"]
    resolved: Dict  # config.json: the configuration, fully resolved
    saved_stats: Dict  # the dataset statistics as every checkpoint of the run holds them
    progress: Dict = field(default_factory=lambda: {"epoch": 0, "batch": 0, "step": 0, "images": 0})
    best: Dict = field(default_factory=lambda: {"val_top1_error": math.inf})
    world: World = SINGLE  # this process among the data-parallel replicas (torchrun)
    replica: Optional[torch.nn.Module] = None  # what the step calls: the model, or it inside DDP
    started_group: bool = False  # set_up joined the process group (train() leaves it)

    @property
    def writes(self) -> bool:
        """This process writes the run folder and reports (rank 0)."""
        return self.world.is_main

    @property
    def replica_batch(self) -> int:
        return distributed.replica_batch(self.recipe.batch_size, self.world)

    def record(self, record: Dict) -> None:
        """One line of metrics.jsonl (rank 0 only)."""
        if self.writes:
            self.run.append_metrics(record)

    @property
    def chance_loss(self) -> float:
        return math.log(len(self.classes))

    def save(self, path=None, metrics: Optional[Dict] = None, resumable: bool = True) -> None:
        """A checkpoint of everything needed to continue exactly (``last.pt`` by default);
        ``resumable=False`` leaves out the momentum buffers (half the file), as ``best.pt``
        does: it is for evaluation, and resuming reads ``last.pt``. Only rank 0 saves."""
        if not self.writes:
            return
        save_checkpoint(path or self.run.last_checkpoint, model=self.model, classes=self.classes,
                        stats=self.saved_stats, config=self.resolved,
                        optimizer=self.optimizer if resumable else None,
                        schedule=self.schedule.state_dict(), progress=self.progress,
                        rng=_rng_state(self.generator, self.placement),
                        metrics={"best": self.best, **(metrics or {})})

    def evaluate(self, desc: str, reporter: Reporter, ten_crop: bool = False) -> Dict:
        return evaluate(self.model, self.val_set, self.preprocess, ten_crop=ten_crop, desc=desc,
                        batch_size=self.config.eval_batch_size or self.recipe.batch_size,
                        amp_dtype=self.amp_dtype, workers=self.config.workers, reporter=reporter,
                        world=self.world)


def set_up(config: TrainConfig, resume: Optional[str] = None, reporter: Reporter = SILENT,
           world: World = SINGLE) -> Session:
    """Check the devices and the data, then open the run folder (a new one, or ``resume``'s
    with its last checkpoint loaded) and build the model, optimizer and preprocessing. Nothing
    is written before the devices and the data have been checked.

    ``world``: this process among several data-parallel replicas (``alexnet.train.distributed``):
    it takes its local rank's devices, joins the process group, and leaves the writing to rank 0."""
    recipe = validate(config.recipe)
    if config.log_every < 1:
        raise ConfigError(f"--log-every must be at least 1; got {config.log_every}")
    distributed.replica_batch(recipe.batch_size, world)  # the global batch divides among the replicas
    if world.local_size > 1 and config.workers is None:  # the node's cores shared between its processes
        config = dataclasses.replace(config, workers=default_workers(world.local_size))
    towers = resolve(variant=config.variant).towers
    placement = config.devices.for_local_rank(world.local_rank, world.local_size, towers).resolve(towers)
    amp_dtype = resolve_amp(config.amp, placement)
    started_group = distributed.start(world, placement, config.collective_timeout)
    payload = None
    if resume is not None:
        run = RunFolder.open(resume)
        payload = read_checkpoint(run.last_checkpoint)
    elif config.data is None:
        reporter.line(f"no --data: training on the built-in dataset with the '{recipe.name}' recipe "
                      f"({recipe.description})" + _changes(recipe))
    with distributed.main_first(world):  # rank 0 generates the built-in data and the statistics once
        root = resolve_data_root(config.data, reporter)
        train_set = open_dataset(root, "train", skip_bad=config.skip_bad)
        val_set = open_dataset(root, "val", skip_bad=config.skip_bad)
        classes = list(train_set.classes)
        if payload is not None and list(payload["classes"]) != classes:
            raise CheckpointError(f"{run.path}: the run was trained on {len(payload['classes'])} classes, "
                                  f"{root} has {len(classes)} (or in another order)")
        stats = load_or_compute_stats(root, workers=config.workers, reporter=reporter)
    if payload is None:
        if world.is_main:
            run = RunFolder.create(config.out or default_out(recipe), overwrite=config.overwrite)
        # Every rank needs the folder's name (its default has the time in it): rank 0's.
        run = RunFolder(distributed.gather(str(run.path) if world.is_main else None, world)[0])
    if any(d.type == "cuda" for d in placement.devices):
        torch.backends.cudnn.benchmark = config.cudnn_benchmark

    model = build_model(variant=config.variant, layout=placement.layout, devices=placement.devices, lrn=config.lrn,
                        overlap=config.overlap, num_classes=len(classes), dropout=recipe.dropout,
                        dropout_style=recipe.dropout_style, init=recipe.init, initialize=payload is None,
                        seed=recipe.seed, lrn_impl=config.lrn_impl)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = paper_sgd(model, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                          decay_biases=recipe.decay_biases, bias_lr_mult=recipe.bias_lr_mult)
    primary = placement.primary
    session = Session(
        config=config, recipe=recipe, placement=placement, amp_dtype=amp_dtype, run=run, root=root,
        train_set=train_set, val_set=val_set, classes=classes, model=model, optimizer=optimizer,
        schedule=LRSchedule(recipe), generator=torch.Generator(device=primary).manual_seed(recipe.seed + 1),
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
        preprocess=Preprocess(stats=stats.to(primary), mean=recipe.mean, divide_std=recipe.input_divide_std,
                              channels_last=config.channels_last, pca=recipe.pca, pca_std=recipe.pca_std),
        resolved={}, saved_stats=stats_for_checkpoint(stats), world=world, started_group=started_group)
    if payload is not None:
        _restore(session, payload, reporter)
    else:
        if world.is_main:
            stats.save(run.stats_dir)
            run.write_classes(classes)
        # Dropout masks follow the seed too; each replica draws its own.
        torch.manual_seed(distributed.rank_seed(recipe.seed, world.rank))
    session.replica = distributed.replicate(model, world)

    ranks = distributed.gather(placement.describe(), world)
    session.resolved = config.as_dict()
    session.resolved.update(
        out=str(run.path), data_root=str(root), placement=placement.as_dict(), amp_dtype=amp_name(amp_dtype),
        lr_rule=schedule_rule(recipe),
        classes=len(classes), train_images=len(train_set), val_images=len(val_set), stats=stats.summary(),
        versions=software_versions(), command=sys.argv)
    if world.distributed:
        session.resolved["distributed"] = {
            "world_size": world.size, "processes_per_node": world.local_size,
            "backend": distributed.backend_for(placement), "global_batch": recipe.batch_size,
            "batch_per_replica": session.replica_batch, "ranks": ranks}
    if world.is_main:
        run.write_config(session.resolved)
    reporter.line(f"training {config.variant} AlexNet ({placement.describe()}, {amp_name(amp_dtype)}) on "
                  f"{len(train_set):,} images in {len(classes)} classes from {root}; recipe {recipe.name}; "
                  f"run folder {run.path}")
    if world.distributed:
        reporter.line(f"{world.size} data-parallel replicas ({distributed.backend_for(placement)}), global batch "
                      f"{recipe.batch_size} = {world.size} x {session.replica_batch}; "
                      + "; ".join(f"rank {r}: {where}" for r, where in enumerate(ranks)))
    reporter.line(f"learning rate: {schedule_rule(recipe)}; dropout: {recipe.dropout_style} form")
    return session


def _changes(recipe: Recipe) -> str:
    """What differs from the preset the recipe is named after, for the start-up line."""
    preset = PRESETS.get(recipe.name)
    changes = {} if preset is None else {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe)
                                         if getattr(recipe, f.name) != getattr(preset, f.name)}
    return f"; changed: {', '.join(f'{k}={v}' for k, v in changes.items())}" if changes else ""


def _restore(session: Session, payload: Dict, reporter: Reporter) -> None:
    """Continue from a checkpoint: weights, momentum, schedule, position, random streams."""
    load_weights(session.model, payload)
    if payload.get("optimizer"):
        load_momentum_buffers(session.model, session.optimizer, payload["optimizer"]["momentum"])
    session.schedule.load_state_dict(payload["schedule"])
    set_lr(session.optimizer, session.schedule.lr, keep_velocity=False)
    session.progress.update(payload["progress"])
    session.best.update(payload.get("metrics", {}).get("best", {}))
    _set_rng_state(payload.get("rng", {}), session.generator)
    p = session.progress
    world = session.world
    if world.rank:  # the checkpoint holds rank 0's dropout stream; the others start their own here
        torch.manual_seed(distributed.rank_seed(session.recipe.seed + p["step"], world.rank))
    if session.writes:
        session.run.truncate_metrics_after(p["step"])
    reporter.line(f"resuming {session.run.path} at epoch {p['epoch'] + 1}, batch {p['batch']} "
                  f"(step {p['step']}) on {session.placement.describe()}")
    before = payload.get("config", {}).get("distributed", {}).get("world_size", 1)
    if before != world.size:
        reporter.line(f"the run was trained with {before} process{'es' if before > 1 else ''}; continuing with "
                      f"{world.size} (the global batch stays {session.recipe.batch_size}, the data order and "
                      f"augmentation are the same)")
