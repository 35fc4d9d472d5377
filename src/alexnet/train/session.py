"""Setting up a training run, top to bottom:

    plan_run       the config checked and resolved against this machine: devices, precision,
                   the replicas' batch; the checkpoint read when resuming (nothing written)
    open_data      the datasets, their classes and the training statistics (the built-in
                   dataset and the statistics are made once and cached)
    open_run       the run folder: a new one, or the resumed one
    build          the net, the optimizer, the schedule, the preprocessing, the random stream
    restore / start_fresh, replicate, record_config, announce

    session = set_up(TrainConfig.from_preset("paper", data="/data/imagenet", devices="0,1"))

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

from ..checkpoint import (load_momentum_buffers, load_start_weights, load_weights, read_checkpoint, save_checkpoint,
                          saved_model, stats_for_checkpoint)
from ..data import default_workers, load_or_compute_stats, open_dataset, resolve_data_root
from ..data.images import SHORTER_SIDE
from ..data.preprocess import Preprocess
from ..data.stats import DatasetStats
from ..devices import Placement
from ..errors import ConfigError
from ..inference import evaluate
from ..machine import software_versions
from ..model.build import build_model
from ..model.spec import resolve
from ..precision import precision_name
from ..progress import SILENT, Reporter
from ..run_folder import RunFolder, check_classes, check_same_data
from ..world import SINGLE, World, gather, main_first
from . import distributed, hybrid
from .config import NET_FROM_CHECKPOINT, RESUME_MAY_CHANGE, TrainConfig, options
from .optim import paper_sgd, set_lr
from .recipe import PRESETS, LRSchedule, schedule_rule


@dataclass(frozen=True)
class RunPlan:
    """What a run will be on this machine, worked out from its config before anything is
    written: where it runs, in what precision, and where it stands when resuming."""

    config: TrainConfig
    world: World
    placement: Placement
    amp_dtype: Optional[torch.dtype]
    resume: Optional[RunFolder]  # the run folder being continued
    payload: Optional[Dict]  # its last checkpoint
    start_from: Optional[Dict] = None  # a new run's --init-from checkpoint (fine-tuning)

    @property
    def replica_batch(self) -> int:
        return distributed.replica_batch(self.config.recipe.batch_size, self.world)


@dataclass
class RunData:
    """The run's data: where it is, its splits, their classes, the training statistics."""

    root: Path
    train_set: Dataset
    val_set: Dataset
    classes: List[str]
    stats: DatasetStats


@dataclass
class Progress:
    """Where training stands: epochs finished, batches into the current epoch, steps and images
    in all, and the current epoch's training sums so far (images, loss x images, misses), so an
    epoch resumed in its middle still reports its whole."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    images: int = 0
    epoch_sums: tuple = (0.0, 0.0, 0.0)

    def as_dict(self) -> Dict[str, object]:
        return {**dataclasses.asdict(self), "epoch_sums": list(self.epoch_sums)}

    @classmethod
    def from_dict(cls, saved: Dict) -> "Progress":
        """A checkpoint's progress (one written before the epoch's sums were kept has none)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in known}
        return cls(**{**values, "epoch_sums": tuple(float(v) for v in values.get("epoch_sums", cls.epoch_sums))})


@dataclass
class TrainState:
    """What a checkpoint holds to continue exactly: the net, its optimizer and schedule, the
    augmentation's random stream, the loss scaler, where training stands and its best epoch."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    generator: torch.Generator  # the augmentation's random stream, on the training device
    scaler: Optional["torch.amp.GradScaler"]
    progress: Progress = field(default_factory=Progress)
    best: Dict = field(default_factory=lambda: {"val_top1_error": math.inf})


@dataclass
class Session:
    """A run set up to train: its plan, data, folder and state, the preprocessing, and what the
    step calls (the net, or it inside DistributedDataParallel)."""

    plan: RunPlan
    data: RunData
    run: RunFolder
    state: TrainState
    preprocess: Preprocess
    replica: Optional[torch.nn.Module] = None
    record: Dict = field(default_factory=dict)  # config.json: the configuration and what set-up resolved
    started_group: bool = False  # set_up joined the process group (train() leaves it)
    step_rng: tuple = (None, None)  # (step, the random streams as the step began): to undo a step that failed

    @property
    def config(self) -> TrainConfig:
        return self.plan.config

    @property
    def writes(self) -> bool:
        """This process writes the run folder and reports (rank 0)."""
        return self.plan.world.is_main

    @property
    def chance_loss(self) -> float:
        return math.log(len(self.data.classes))

    def log(self, record: Dict) -> None:
        """One line of metrics.jsonl (rank 0 only)."""
        if self.writes:
            self.run.append_metrics(record)

    def save(self, path=None, metrics: Optional[Dict] = None, resumable: bool = True, rng: Optional[Dict] = None) -> None:
        """A checkpoint of everything needed to continue exactly (``last.pt`` by default);
        ``resumable=False`` leaves out the momentum buffers (half the file), as ``best.pt``
        does: it is for evaluation, and resuming reads ``last.pt``; ``rng``: the random streams
        to record (default: as they are now). Only rank 0 saves."""
        state = self.state
        if not self.writes:  # issue 30: a hybrid net's FC blocks are gathered with every rank
            hybrid.join_save(state.model, state.optimizer if resumable else None)
            return
        save_checkpoint(path or self.run.last_checkpoint, model=state.model, classes=self.data.classes,
                        preprocess=self.config.preprocess, stats=stats_for_checkpoint(self.data.stats),
                        config=self.record, optimizer=state.optimizer if resumable else None,
                        schedule=state.schedule.state_dict(), progress=state.progress.as_dict(),
                        rng=rng or rng_state(state.generator, self.plan.placement),
                        metrics={"best": state.best, **(metrics or {})})

    def evaluate(self, desc: str, reporter: Reporter, ten_crop: bool = False, stop=None) -> Dict:
        runtime = self.config.runtime
        return evaluate(self.state.model, self.data.val_set, self.preprocess, ten_crop=ten_crop, desc=desc,
                        batch_size=runtime.eval_batch_size or self.config.recipe.batch_size,
                        amp_dtype=self.plan.amp_dtype, workers=runtime.workers, reporter=reporter,
                        world=self.plan.world, stop=stop)


def set_up(config: TrainConfig, resume: Optional[str] = None, reporter: Reporter = SILENT,
           world: World = SINGLE) -> Session:
    """Check the devices and the data, then open the run folder (a new one, or ``resume``'s
    with its last checkpoint loaded) and build the model, optimizer and preprocessing. Nothing
    is written before the devices and the data have been checked, and a start that fails
    before training leaves nothing behind. The folder's one writer holds its lock until
    ``train`` ends (``Session.run.release``).

    ``world``: this process among several data-parallel replicas (``alexnet.train.distributed``):
    it takes its local rank's devices, joins the process group, and leaves the writing to rank 0.
    Training seeds torch's global generator (dropout draws from it); ``train`` puts it back."""
    # Rank 0 becomes the resumed folder's one writer before it reads the checkpoint it continues.
    locked = RunFolder.open(resume).acquire() if resume is not None and world.is_main else None
    try:
        plan = plan_run(config, resume, world)
        started = distributed.start(world, plan.placement, plan.config.runtime.collective_timeout)
        if resume is None and config.data is None:
            reporter.line(f"no --data: training on the built-in dataset with the '{config.recipe.name}' recipe "
                          f"({config.recipe.description})" + _changes(config))
        data = open_data(plan, reporter)
        plan = _with_classes(plan, data)
        run = locked or open_run(plan, data, reporter)
    except BaseException:
        if locked is not None:
            locked.release()
        raise
    try:
        return _start(plan, data, run, started, reporter)
    except BaseException:
        if plan.resume is None:
            run.discard_start()  # no-op for ranks but 0: they hold no lock and wrote nothing
        else:
            run.release()
        raise


def _start(plan: RunPlan, data: RunData, run: RunFolder, started: bool, reporter: Reporter) -> Session:
    """Build, restore or start fresh, and record the configuration."""
    session = build(plan, data, run, started)
    if plan.payload is not None:
        restore(session, plan.payload, reporter)
    else:
        start_fresh(session)
    replica = hybrid.replicate(session)  # issue 30: DDP, or the hybrid net's replica
    session.replica = torch.compile(replica) if plan.config.runtime.compile else replica
    session.record = record_config(session)
    if session.writes:
        session.run.write_config(session.record)
    announce(session, reporter)
    return session


def plan_run(config: TrainConfig, resume: Optional[str] = None, world: World = SINGLE) -> RunPlan:
    """The run ``config`` describes, resolved on this machine: its local rank's devices, the
    precision, the replicas' share of the batch; with ``resume``, the run folder and its last
    checkpoint. Reads, checks, and writes nothing."""
    distributed.replica_batch(config.recipe.batch_size, world)  # the global batch divides among the replicas
    if config.preprocess.resize != SHORTER_SIDE:  # the training set and its statistics are the paper's images
        raise ConfigError(f"resize {config.preprocess.resize!r} is for evaluating imported Caffe nets; training "
                          f"reads every image with the shorter side resized to 256 ({SHORTER_SIDE!r})")
    if config.data is not None:  # recorded absolute: evaluation and resume may run from elsewhere
        config = config.replace(data=str(Path(config.data).expanduser().absolute()))
    if world.local_size > 1 and config.runtime.workers is None:  # the node's cores shared between its processes
        config = config.replace(workers=default_workers(world.local_size))
    hybrid.check_plan(config, world)  # issue 30: --parallel's rules
    placement = hybrid.place(config, world, resolve(config.model).towers)
    amp_dtype = config.runtime.amp_dtype(placement)
    run = payload = start_from = None
    if resume is not None:
        run = RunFolder.open(resume)
        check_resumable(config, run)
        payload = read_checkpoint(run.last_checkpoint)
    elif config.recipe.init_from is not None:
        config, start_from = with_start(config)
    return RunPlan(config, world, placement, amp_dtype, run, payload, start_from)


def check_resumable(config: TrainConfig, run: RunFolder) -> None:
    """A resumed run is the run it was: ``config`` differs from the run's own configuration in
    its runtime, its epochs and where its data is, or it is one line naming the setting (the
    class count is the data's, checked against the checkpoint's classes when the data opens)."""
    saved = TrainConfig.from_dict(run.read_config(), str(run.config_path))
    changed = config.differences(saved, ignore=(*RESUME_MAY_CHANGE, "num_classes"))
    if changed:
        name, (given, own) = next(iter(changed.items()))
        raise ConfigError(f"--resume {run.path}: the run has {name}={own!r}, this configuration {given!r}; a resumed "
                          f"run keeps its own recipe and net (start from resume_config(), or drop {options(changed)})")


def with_start(config: TrainConfig):
    """A run that starts from ``recipe.init_from``: its net is the checkpoint's (recorded so in
    config.json), the path recorded absolute; and the checkpoint read."""
    start_from = read_checkpoint(config.recipe.init_from)
    source = saved_model(start_from)
    config = config._replace(init_from=str(Path(start_from["path"]).absolute()),
                             **{name: getattr(source, name) for name in NET_FROM_CHECKPOINT})
    return config, start_from


def open_data(plan: RunPlan, reporter: Reporter = SILENT) -> RunData:
    """The run's datasets and training statistics; a resumed run's classes must be the data's.
    Rank 0 goes first: it may generate the built-in dataset and compute the statistics."""
    runtime = plan.config.runtime
    with main_first(plan.world):
        root = resolve_data_root(plan.config.data, reporter)
        train_set = open_dataset(root, "train", skip_bad=runtime.skip_bad)
        val_set = open_dataset(root, "val", skip_bad=runtime.skip_bad)
        if plan.payload is not None:
            check_classes(plan.payload["classes"], train_set, plan.resume.path, root)
            check_same_data(plan.payload["config"], {"train": train_set, "val": val_set}, plan.resume.path, root)
        batch = plan.config.recipe.batch_size
        if batch > len(train_set):
            raise ConfigError(f"--batch-size {batch} is larger than the training set ({len(train_set)} images in "
                              f"{root}): no full batch to train on")
        stats = load_or_compute_stats(root, workers=runtime.workers, reporter=reporter, skip_bad=runtime.skip_bad)
    return RunData(root, train_set, val_set, list(train_set.classes), stats)


def _with_classes(plan: RunPlan, data: RunData) -> RunPlan:
    """fc8 has as many outputs as the data has classes."""
    return dataclasses.replace(plan, config=plan.config._replace(num_classes=len(data.classes)))


def open_run(plan: RunPlan, data: RunData, reporter: Reporter = SILENT) -> RunFolder:
    """The resumed run's folder, or a new one (created and locked by rank 0; every rank learns
    its name, which by default has the time in it)."""
    if plan.resume is not None:
        return plan.resume
    path = None
    if plan.world.is_main:
        config = plan.config
        run = RunFolder.create(config.out or default_out(config), overwrite=config.overwrite)
        if run.restarted and not config.overwrite:
            reporter.line(f"{run.path}: the run started there before saved no checkpoint; starting it again")
        path = str(run.path)
    shared = gather(path, plan.world)[0]
    return run if plan.world.is_main else RunFolder(shared)


def default_out(config: TrainConfig) -> str:
    return str(Path("runs") / f"{config.recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}")


def build(plan: RunPlan, data: RunData, run: RunFolder, started_group: bool) -> Session:
    """The net (initialized from the recipe's seed unless a checkpoint will replace it), the
    paper's SGD, the schedule, the augmentation's stream and the preprocessing, on the plan's
    devices."""
    config, placement = plan.config, plan.placement
    recipe, runtime = config.recipe, config.runtime
    model = build_model(config.model, layout=placement.layout, devices=placement.devices, seed=recipe.seed,
                        initialize=plan.payload is None, lrn_impl=runtime.lrn_impl)
    model = hybrid.placed(model, config, plan.world)  # issue 30: this process's part of a hybrid net
    if plan.start_from is not None and plan.payload is None:
        load_start_weights(model, plan.start_from)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = paper_sgd(model, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                          decay_biases=recipe.decay_biases, bias_lr_mult=recipe.bias_lr_mult,
                          anneal_biases=recipe.anneal_biases, layer_mults=recipe.layer_lr_mults(0),
                          own_rate=sorted({layer for _, layer, _ in recipe.layer_lr}))
    hybrid.scale_conv_rates(optimizer, model, recipe, plan.world)  # issue 30: --scale-conv-lr
    primary = placement.primary
    state = TrainState(model=model, optimizer=optimizer, schedule=LRSchedule(recipe),
                       generator=torch.Generator(device=primary).manual_seed(recipe.seed + 1),
                       scaler=torch.amp.GradScaler("cuda") if plan.amp_dtype == torch.float16 else None)
    preprocess = Preprocess(data.stats.to(primary), config.preprocess, runtime.channels_last)
    return Session(plan=plan, data=data, run=run, state=state, preprocess=preprocess, started_group=started_group)


def start_fresh(session: Session) -> None:
    """A new run: its statistics and class names in the folder, and the dropout masks seeded
    (each replica draws its own)."""
    if session.writes:
        session.data.stats.save(session.run.stats_dir)
        session.run.write_classes(session.data.classes)
    torch.manual_seed(distributed.rank_seed(session.config.recipe.seed, session.plan.world.rank))


def restore(session: Session, payload: Dict, reporter: Reporter = SILENT) -> None:
    """Continue from a checkpoint: weights, momentum, schedule, position, random streams."""
    state, world = session.state, session.plan.world
    load_weights(state.model, payload)
    if payload.get("optimizer"):
        load_momentum_buffers(state.model, state.optimizer, payload["optimizer"]["momentum"])
    state.schedule.load_state_dict(payload["schedule"])
    set_lr(state.optimizer, state.schedule.lr, keep_velocity=False,
           layer_mults=session.config.recipe.layer_lr_mults(int(payload["progress"]["epoch"])))
    state.progress = Progress.from_dict(payload["progress"])
    state.best.update(payload.get("metrics", {}).get("best", {}))
    set_rng_state(payload.get("rng", {}), state.generator)
    p = state.progress
    if world.rank:  # the checkpoint holds rank 0's dropout stream; the others start their own here
        torch.manual_seed(distributed.rank_seed(session.config.recipe.seed + p.step, world.rank))
    if session.writes:
        for problem in session.run.truncate_metrics_after(p.step):
            reporter.line(problem)
    reporter.line(f"resuming {session.run.path} at epoch {p.epoch + 1}, batch {p.batch} "
                  f"(step {p.step}) on {session.plan.placement.describe()}")
    before = payload["config"].get("resolved", {}).get("distributed", {}).get("world_size", 1)
    if before != world.size:
        reporter.line(f"the run was trained with {before} process{'es' if before > 1 else ''}; continuing with "
                      f"{world.size} (the global batch stays {session.config.recipe.batch_size}, the data order "
                      f"and augmentation are the same)")


def record_config(session: Session) -> Dict:
    """config.json: the configuration, and under "resolved" what set-up worked out from it."""
    plan, data = session.plan, session.data
    ranks = gather(plan.placement.describe(), plan.world)
    resolved = {"data_root": str(data.root), "placement": plan.placement.as_dict(),
                "amp_dtype": precision_name(plan.amp_dtype), "lr_rule": schedule_rule(plan.config.recipe),
                "classes": len(data.classes), "train_images": len(data.train_set), "val_images": len(data.val_set),
                "stats": data.stats.summary(), "versions": software_versions(), "command": sys.argv}
    if plan.world.distributed:
        resolved["distributed"] = {
            "world_size": plan.world.size, "processes_per_node": plan.world.local_size,
            "parallel": plan.config.runtime.parallel,
            "backend": distributed.backend_for(plan.placement), "global_batch": plan.config.recipe.batch_size,
            "batch_per_replica": plan.replica_batch, "ranks": ranks}
    return {**plan.config.replace(out=str(session.run.path)).as_dict(), "resolved": resolved}


def announce(session: Session, reporter: Reporter) -> None:
    """What trains where, in a few lines."""
    plan, data, config = session.plan, session.data, session.config
    reporter.line(f"training {config.model.variant} AlexNet ({plan.placement.describe()}, "
                  f"{precision_name(plan.amp_dtype)}) on {len(data.train_set):,} images in {len(data.classes)} "
                  f"classes from {data.root}; recipe {config.recipe.name}; run folder {session.run.path}")
    if plan.world.distributed:
        ranks = session.record["resolved"]["distributed"]["ranks"]
        how = ("processes, conv layers data-parallel and fc6-fc8 split by output units"
               if config.runtime.parallel == "hybrid" else "data-parallel replicas")  # issue 30
        reporter.line(f"{plan.world.size} {how} ({distributed.backend_for(plan.placement)}), "
                      f"global batch {config.recipe.batch_size} = {plan.world.size} x {plan.replica_batch}; "
                      + "; ".join(f"rank {r}: {where}" for r, where in enumerate(ranks)))
    reporter.line(f"learning rate: {schedule_rule(config.recipe)}; dropout: {config.model.dropout_style} form")
    if plan.start_from is not None:
        fresh = len(plan.start_from["classes"]) != config.model.num_classes
        reporter.line(f"starting from {config.recipe.init_from} ({config.model.blocks} blocks)"
                      + (f"; fc8 drawn afresh for {config.model.num_classes} classes (it had "
                         f"{len(plan.start_from['classes'])})" if fresh else ""))


def resume_config(run_dir, **changes) -> TrainConfig:
    """The configuration run ``run_dir`` was started with, for its next session, with
    ``changes`` (``TrainConfig.resumed``: its runtime, more epochs, its data where it moved)."""
    run = RunFolder.open(run_dir)
    config = TrainConfig.from_dict(run.read_config(), str(run.config_path))
    return config.replace(out=str(run.path)).resumed(**changes)


def _changes(config: TrainConfig) -> str:
    """What differs from the preset the recipe is named after, for the start-up line."""
    preset = PRESETS.get(config.recipe.name)
    if preset is None:
        return ""
    parts = (("recipe", preset.recipe.as_dict()), ("model", preset.model.as_dict()),
             ("preprocess", preset.preprocess.as_dict()))
    changes = {k: v for part, saved in parts for k, v in getattr(config, part).as_dict().items() if v != saved[k]}
    return f"; changed: {', '.join(f'{k}={v}' for k, v in changes.items())}" if changes else ""


def rng_state(generator: torch.Generator, placement: Placement) -> Dict:
    state = {"torch": torch.get_rng_state(), "augment": generator.get_state()}
    state["cuda"] = {str(i): torch.cuda.get_rng_state(i) for i in placement.cuda_indices}
    return state


def set_rng_state(state: Dict, generator: torch.Generator) -> None:
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
