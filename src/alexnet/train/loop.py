"""The training loop: the paper's recipe on one device or two, in a run folder that survives
interruption.

    train(TrainConfig.from_preset("paper", data="/data/imagenet", devices="0,1"))
    train(resume="runs/paper-...")              # its next session, exactly where it stopped

``train`` reads top to bottom: ``set_up`` (devices, data, run folder, model, optimizer: see
``alexnet.train.session``), then for each epoch ``train_one_epoch`` (shuffled batches in a
deterministic order from the seed and the epoch, the paper's augmentation on the training
device, SGD steps), ``Session.evaluate`` (centre crop), the learning-rate schedule and
``end_epoch`` (metrics, a checkpoint written atomically, the curves); then
``final_evaluation`` (the paper's ten crops). Ctrl-C or SIGTERM finishes the current step,
saves a checkpoint and stops; ``--resume`` continues from it exactly. A NaN or infinite loss
stops without saving over the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from typing import Callable, Dict, Iterator, Optional

import torch

from ..analysis.colourfulness import tower_colourfulness
from ..data import make_loader
from ..errors import AlexNetError, ConfigError, DataError, TrainingError
from ..inference import EvaluationStopped
from ..progress import SILENT, Reporter
from ..run_folder import RunFolder, quote
from ..world import World, all_sum, any_rank
from . import distributed, hybrid
from .config import TrainConfig, TrainRuntime
from .curves import plot_curves
from .diagnostics import stall_check
from .optim import current_lr, group_rates, set_lr
from .session import Session, resume_config, rng_state, set_up
from .step import train_step

__all__ = ["Interrupted", "Session", "TrainConfig", "TrainRuntime", "end_epoch", "final_evaluation", "resume_config",
           "set_up", "train", "train_one_epoch"]


class Interrupted(Exception):
    """Training stopped on a signal or at max_steps, after saving a checkpoint. ``signal``:
    the signal's name (SIGINT, SIGTERM), None at max_steps."""

    def __init__(self, message: str, signal_name: Optional[str] = None):
        super().__init__(message)
        self.signal = signal_name

    @property
    def exit_code(self) -> int:
        """What the process exits with: 128 + the signal's number, as a shell reports a process
        the signal ended (130 for Ctrl-C, 143 for SIGTERM: torchrun then sees a stopped rank,
        not a failed one); 0 at max_steps, a stop the user asked for."""
        return 128 + signal.Signals[self.signal].value if self.signal else 0


class _StopSignal:
    """First Ctrl-C or SIGTERM: finish the step (or stop the validation), save, stop. A second
    Ctrl-C stops at once (exit 130, nothing saved); a second SIGTERM (torchrun repeats its own)
    changes nothing. Held for the whole of ``train``, its set-up and clean-up included, so no
    signal finds the process without it before it exits."""

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
        if self.requested is not None:
            return
        self.requested = signal.Signals(signum).name
        self.reporter.line(f"{self.requested}: finishing this step and saving a checkpoint "
                           f"(press Ctrl-C again to stop at once)")

    def stopping(self, world: World, device: torch.device) -> Callable[[], bool]:
        """Whether any rank was asked to stop (every rank learns it at the same batch)."""
        return lambda: any_rank(self.requested is not None, world, device)

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def train_one_epoch(session: Session, epoch: int, stop: _StopSignal, reporter: Reporter = SILENT) -> Dict:
    """One pass over the training set (the rest of it, when resuming mid-epoch): SGD steps,
    a progress record every ``log_every`` steps. Returns the epoch's training loss and error.
    Raises ``Interrupted`` after saving when asked to stop, ``TrainingError`` on a NaN loss."""
    plan, state, recipe = session.plan, session.state, session.config.recipe
    primary, world = plan.placement.primary, plan.world
    # Every replica cuts the same global batches from the same order and trains on its slice.
    loader = make_loader(session.data.train_set, recipe.batch_size, shuffle=True, seed=recipe.seed, epoch=epoch,
                         skip_batches=state.progress.batch, workers=session.config.runtime.workers,
                         drop_last=True, pin_memory=primary.type == "cuda", shard=(world.rank, world.size))
    state.model.train()
    log = _StepLog(session, epoch)  # the epoch's sums so far: a resumed epoch reports its whole
    batches_left = len(loader)  # after the batches a resumed run already trained on
    try:
        with reporter.bar(loader.epoch_batches, f"epoch {epoch + 1}/{recipe.epochs}",
                          initial=state.progress.batch) as bar:
            for i, (images, labels) in enumerate(loader):
                loss, logits, labels = _step(session, images, labels)
                log.add(loss, logits, labels)
                bar.update(1)
                last = i == batches_left - 1
                # --max-steps at an epoch's last batch lets the epoch end (validation, checkpoint).
                stopping = stop.stopping(world, primary)() or (_max_steps_reached(session) and not last)
                if state.progress.step % session.config.runtime.log_every == 0 or last or stopping:
                    record = log.write()
                    bar.set_postfix_str(f"loss {record['loss']:.3f} err {100 * record['error']:.1f}% "
                                        f"{record['images_per_second']:.0f} img/s")
                if stopping:
                    state.progress.epoch_sums = tuple(log.epoch_sums.tolist())
                    session.save()
                    raise _why_stopped(session, stop)
    except (Interrupted, TrainingError):  # saved already; or a loss that is not finite: nothing good to save
        raise
    except Exception as error:  # a bad image, a failed collective, ...: the state reached is kept
        raise _saved_after(session, log, error) from None
    state.progress.epoch_sums = tuple(log.epoch_sums.tolist())  # a stop in the validation saves them
    return {**log.epoch(), "skipped_images": getattr(loader, "skipped", 0)}


def _saved_after(session: Session, log: "_StepLog", error: Exception) -> Exception:
    """Save the state training reached before ``error`` (the step it broke off, undone: the
    random streams as they were when it began) and say so in the error."""
    state = session.state
    again = f"alexnet train --resume {quote(session.run.path)}" + (" --skip-bad" if isinstance(error, DataError) else "")
    if isinstance(session.replica, hybrid.HybridReplica):
        # Its FC layers are split over the ranks, which the error has left out of step (one rank
        # stopped, the others wait in a collective): joining them to save could not work.
        saved = "not saved: a hybrid run's FC layers are split over its ranks" + (
            f"; continue from the last checkpoint with: {again}" if session.run.last_checkpoint.exists() else "")
    else:
        if not session.plan.world.distributed and log.pending():
            log.write()  # the steps since the last record: their metrics line and the epoch's sums
        state.progress.epoch_sums = tuple(log.epoch_sums.tolist())
        step, rng = session.step_rng
        session.save(rng=rng if step == state.progress.step else None)
        saved = (f"checkpoint saved at step {state.progress.step}; continue with: {again}" if session.writes
                 else "rank 0 saved its checkpoint")
    if isinstance(error, AlexNetError):
        return type(error)(f"{error}; {saved}")
    error.saved = saved  # train() words a failed collective (distributed.replica_failed) and adds it
    return error


def _step(session: Session, images: torch.Tensor, labels: torch.Tensor):
    """One SGD step on this replica's slice of the global batch; the position advanced."""
    plan, state, batch = session.plan, session.state, session.config.recipe.batch_size
    world = plan.world
    images = images.to(plan.placement.primary, non_blocking=True)
    labels = labels.to(plan.placement.primary, non_blocking=True)
    # The augmentation is drawn for the global batch; this replica uses its slice.
    colour = session.config.recipe.colour_noise(state.progress.epoch)  # the authors' turns it off late
    session.step_rng = (state.progress.step, rng_state(state.generator, plan.placement))  # to undo a failed step
    x = session.preprocess.augment(images, state.generator, slice_of=(world.rank * plan.replica_batch, batch),
                                   colour=colour)  # (B, 3, 224, 224)
    step = hybrid.train_step if isinstance(session.replica, hybrid.HybridReplica) else train_step  # issue 30
    loss, logits = step(session.replica, x, labels, state.optimizer, plan.amp_dtype, state.scaler)
    progress = state.progress
    progress.batch += 1
    progress.step += 1
    progress.images += labels.shape[0] * world.size  # every replica trained on as many
    return loss, logits, labels


class _StepLog:
    """The steps' loss and misses, summed on the device since the last record (so a step does
    not wait for the host) and over the epoch; ``write`` makes one metrics line of them."""

    def __init__(self, session: Session, epoch: int):
        self.session, self.epoch_number = session, epoch
        device = session.plan.placement.primary
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # images, loss·n, misses (since last log)
        self.epoch_sums = torch.tensor(session.state.progress.epoch_sums, dtype=torch.float64, device=device)
        self.tick, self.tick_images = time.perf_counter(), 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.shape[0]
        misses = (logits.argmax(dim=1) != labels).sum()
        self.sums += torch.stack([torch.tensor(float(n), dtype=torch.float64, device=self.sums.device),
                                  loss.double() * n, misses.double()])
        self.tick_images += n * self.session.plan.world.size

    def pending(self) -> bool:
        """Steps added since the last record (read without synchronising the device)."""
        return self.tick_images > 0

    def write(self) -> Dict:
        now = time.perf_counter()
        record = _log_record(self.session, self.epoch_number, self.sums,
                             self.tick_images / max(now - self.tick, 1e-9))
        self.epoch_sums += self.sums
        self.sums.zero_()
        self.tick, self.tick_images = now, 0
        return record

    def epoch(self) -> Dict:
        count, loss_sum, miss_sum = self.epoch_sums.tolist()
        return {"train_loss": loss_sum / max(count, 1), "train_error": miss_sum / max(count, 1)}


def _max_steps_reached(session: Session) -> bool:
    max_steps = session.config.runtime.max_steps
    return bool(max_steps and session.state.progress.step >= max_steps)


def _why_stopped(session: Session, stop: _StopSignal) -> Interrupted:
    """This process's signal, --max-steps, or another replica's signal (torchrun sends SIGTERM)."""
    if stop.requested:
        return _interrupted(session, stop.requested, stop.requested)
    if _max_steps_reached(session):
        return _interrupted(session, f"max_steps={session.config.runtime.max_steps}")
    return _interrupted(session, "another rank was stopped", "SIGTERM")


def _interrupted(session: Session, reason: str, signal_name: Optional[str] = None) -> Interrupted:
    """What stopping early says; the checkpoint is saved before."""
    p = session.state.progress
    return Interrupted(f"stopped ({reason}) at step {p.step}, epoch {p.epoch + 1} batch {p.batch}; "
                       f"checkpoint saved. Continue with: alexnet train --resume {quote(session.run.path)}",
                       signal_name)


def _log_record(session: Session, epoch: int, sums: torch.Tensor, images_per_second: float) -> Dict:
    """The steps since the last record (summed over the replicas) as one metrics line; the one
    host synchronisation."""
    count, loss_sum, miss_sum = all_sum(sums, session.plan.world).tolist()
    progress = session.state.progress
    if not math.isfinite(loss_sum):
        last = session.run.last_checkpoint
        raise TrainingError(f"the loss became {loss_sum / max(count, 1)} by step {progress.step} "
                            f"(epoch {epoch + 1}); stopped without saving. The last good checkpoint is "
                            f"{last if last.exists() else 'none (first epoch)'}; try a lower --lr")
    record = {"kind": "step", "epoch": epoch + 1, "step": progress.step, "images": progress.images,
              "loss": loss_sum / count, "error": miss_sum / count, "lr": current_lr(session.state.optimizer),
              "images_per_second": images_per_second, "chance_loss": session.chance_loss}
    session.log(record)
    return record


def end_epoch(session: Session, epoch: int, trained: Dict, val: Dict, dropped: bool,
              reporter: Reporter = SILENT) -> Dict:
    """Record the epoch, save ``last.pt`` (and ``best.pt`` on a new best), redraw the curves."""
    state, run, config = session.state, session.run, session.config
    state.progress.epoch, state.progress.batch, state.progress.epoch_sums = epoch + 1, 0, (0.0, 0.0, 0.0)
    improved = val["top1_error"] < state.best["val_top1_error"]
    if improved:
        state.best = {"val_top1_error": val["top1_error"], "val_top5_error": val["top5_error"], "epoch": epoch + 1}
    record = {"kind": "epoch", "epoch": epoch + 1, "step": state.progress.step,
              "images": state.progress.images, "train_loss": trained["train_loss"],
              "train_error": trained["train_error"], "val_loss": val["loss"], "val_top1_error": val["top1_error"],
              "val_top5_error": val["top5_error"], "lr": current_lr(state.optimizer), "lr_dropped": dropped,
              "rates": group_rates(state.optimizer),  # the next epoch's, per group
              "skipped_images": trained["skipped_images"], "chance_loss": session.chance_loss,
              "conv1_colourfulness": tower_colourfulness(state.model)}  # per tower (alexnet.analysis.colourfulness)
    record["stall"] = stall_check(record, len(session.data.classes), val["images"],
                                  train_images=len(session.data.train_set), batch_size=config.recipe.batch_size,
                                  init=config.model.init, lr=config.recipe.lr)
    session.log(record)
    session.save()
    if improved:
        session.save(run.best_checkpoint, resumable=False)
    if session.writes:
        plot_curves(run.read_metrics(), run.curves_path,
                    title=f"{run.path.name}: {config.model.variant}, {session.plan.placement.describe()}")
    reporter.line(f"epoch {epoch + 1}/{config.recipe.epochs}: train loss {record['train_loss']:.3f} "
                  f"err {100 * record['train_error']:.1f}% | val loss {val['loss']:.3f} "
                  f"top-1 {100 * val['top1_error']:.1f}% top-5 {100 * val['top5_error']:.1f}% | "
                  f"lr {record['lr']:.2g}{' (divided)' if dropped else ''}")
    if record["stall"]:
        reporter.warn(record["stall"]["message"])  # shown under --quiet too
    return record


def final_evaluation(session: Session, last_val: Optional[Dict], reporter: Reporter = SILENT,
                     last_epoch: Optional[Dict] = None, stop: Optional[Callable[[], bool]] = None) -> Dict:
    """The run's summary (``summary.json``), with the paper's ten-crop evaluation when the run
    finished its epochs; ``stall`` is the last epoch's (``last_epoch``, its record) when it
    ended still at chance, else None."""
    progress, config = session.state.progress, session.config
    summary = {"run": str(session.run.path), "epochs": progress.epoch, "steps": progress.step,
               "images": progress.images, "best": session.state.best,
               "chance_top1_error": 1 - 1 / len(session.data.classes),
               "stall": (last_epoch or {}).get("stall")}
    if last_val is not None:
        summary["final_centre_crop"] = last_val
    if config.runtime.ten_crop and progress.epoch == config.recipe.epochs:
        ten = session.evaluate("val ten-crop", reporter, ten_crop=True, stop=stop)
        summary["final_ten_crop"] = ten
        session.log({"kind": "final", "step": progress.step, "images": progress.images,
                     "ten_crop_top1_error": ten["top1_error"], "ten_crop_top5_error": ten["top5_error"],
                     "ten_crop_loss": ten["loss"]})
    summary["communication"] = hybrid.communication(session)  # issue 30: bytes per step per collective
    summary["disk_bytes"] = session.run.disk_bytes()
    if session.writes:
        session.run.write_summary(summary)
    return summary


@contextlib.contextmanager
def _global_state() -> Iterator[None]:
    """Whatever a run sets for itself in torch's globals, put back when it ends: cuDNN's
    autotuner flag, and the random generators (set_up seeds them: dropout draws from them)."""
    benchmark = torch.backends.cudnn.benchmark
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = benchmark
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def train(config: Optional[TrainConfig] = None, *, resume: Optional[str] = None, reporter: Reporter = SILENT) -> Dict:
    """Train (or, with ``resume``, continue) a run. Returns the run's summary.

    ``resume`` alone continues the run with its own configuration; ``config`` with it must be
    that run's (``resume_config(resume, epochs=..., devices=...)`` makes one), or it is one line
    naming the setting that differs. A run that already finished its epochs is left as it is
    (its summary is returned; a larger ``epochs`` continues it).

    Raises ``Interrupted`` after saving when stopped by a signal or ``max_steps``, and
    ``TrainingError`` when the loss stops being finite; any other error met while training (a
    bad image, a failed collective) saves the state reached first. Leaves torch's global state
    (random generators, cudnn.benchmark) as it found it.

    Started by torchrun (``WORLD_SIZE`` in the environment), this process is one of several
    data-parallel replicas (``alexnet.train.distributed``); rank 0 reports and writes.
    """
    if config is None:
        if resume is None:
            raise ConfigError("train() needs a configuration, or a run folder to resume")
        config = resume_config(resume)
    world = World.from_env()
    reporter = reporter if world.is_main else SILENT
    if resume is not None and _finished(resume, config, reporter) is not None:
        return _finished(resume, config, reporter)
    with _global_state(), _StopSignal(reporter) as stop:
        session = set_up(config, resume, reporter, world)
        if any(d.type == "cuda" for d in session.plan.placement.devices):
            torch.backends.cudnn.benchmark = session.config.runtime.cudnn_benchmark
        try:
            return _epochs(session, stop, reporter if session.writes else SILENT)
        except RuntimeError as error:  # torch.distributed's errors are RuntimeErrors
            failed = distributed.replica_failed(error, world, session.state.progress.step)
            if failed is None:
                raise
            raise failed from error
        finally:
            session.run.release()
            distributed.finish(session.started_group)


def _finished(resume: str, config: TrainConfig, reporter: Reporter) -> Optional[Dict]:
    """The summary of a run that finished ``config``'s epochs already (said in one line), else None."""
    summary = RunFolder.open(resume).read_summary()
    if not summary or summary.get("epochs", 0) < config.recipe.epochs:
        return None
    reporter.line(f"{resume}: the run finished its {summary['epochs']} epochs; nothing to do, its summary is kept "
                  f"(a larger --epochs continues it)")
    return summary


def _epochs(session: Session, stop: _StopSignal, reporter: Reporter) -> Dict:
    """Every epoch left: train, validate (the same figures on every rank), the schedule, the
    epoch's records and checkpoints; then the final evaluation. A stop in a validation saves
    the epoch's steps (a resumed run validates again); in the final evaluation, nothing is lost."""
    state, epochs = session.state, session.config.recipe.epochs
    stopping = stop.stopping(session.plan.world, session.plan.placement.primary)
    val = record = None
    for epoch in range(state.progress.epoch, epochs):
        trained = train_one_epoch(session, epoch, stop, reporter)
        try:
            val = session.evaluate(f"val {epoch + 1}", reporter, stop=stopping)
        except EvaluationStopped:
            session.save()
            raise _why_stopped(session, stop) from None
        dropped = state.schedule.after_epoch(epoch, val["top1_error"])
        # The scheduled rate, and the rates of layers the recipe sets on their own.
        set_lr(state.optimizer, state.schedule.lr, layer_mults=session.config.recipe.layer_lr_mults(epoch + 1))
        record = end_epoch(session, epoch, trained, val, dropped, reporter)
        if _max_steps_reached(session) and epoch + 1 < epochs:
            raise _interrupted(session, f"max_steps={session.config.runtime.max_steps}")
    try:
        return final_evaluation(session, val, reporter, last_epoch=record, stop=stopping)
    except EvaluationStopped:  # every epoch is saved: the next session runs this evaluation
        raise _why_stopped(session, stop) from None
