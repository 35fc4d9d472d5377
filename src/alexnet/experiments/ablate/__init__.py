"""``alexnet ablate``: the paper's three ablations (§3.2-§3.4) from one command, with a report.

The baseline (by default the paper's two-tower net) and each chosen arm (``arms.PAPER_ARMS``:
the one-GPU net, no LRN, non-overlapping pooling; or arms given in Python, ``arms.Arm``) train
with everything else identical: data, recipe, schedule, number of steps, seed, data order and
augmentation draws (the loop derives the order and the augmentation stream from the recipe's
seed). With several seeds every arm runs every seed.

    from alexnet.experiments import ablate
    report = ablate.run(TrainConfig.from_preset("builtin"), arms=["no-lrn"], seeds=3, out="runs/ablate-lrn")
    report = ablate.resume("runs/ablate-lrn")       # after Ctrl-C: finished runs are kept
    report = ablate.report("runs/ablate-lrn")       # the report again, without training
    report = ablate.run(config, baseline=Arm("builtin", {}, "..."),
                        arms=[Arm("paper-dropout", {"dropout_style": "paper"}, "...")], seeds=5)

The folder holds ``ablation.json`` (the settings), one ordinary run folder per arm and seed
(``<arm>-seed<k>/``, readable by ``alexnet eval`` and ``alexnet.load_model`` through its
``checkpoints/best.pt``), and the report: ``report.md``, ``report.json``, ``curves.png``.

The modules: ``arms`` (the arms table), ``folder`` (the folder and its settings), ``results``
(the figures, the statistics, the words).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ...data import open_dataset, resolve_data_root
from ...errors import ConfigError, TrainingError
from ...progress import SILENT, Reporter
from ...files import FolderLock
from ...train.loop import Interrupted, TrainConfig, resume_config, train
from ...run_folder import quote
from .arms import (ARM_NAMES, BASELINE, PAPER_ARMS, Arm, arm_config, arm_spec, check_paper_baseline, for_template,
                   get_arms, run_folder_name)
from .folder import AblationFolder, runtime_of
from .results import build_report, duration, format_ablation_report, write_report

__all__ = ["ARM_NAMES", "BASELINE", "PAPER_ARMS", "AblationFolder", "Arm", "build_report", "format_ablation_report",
           "get_arms", "report", "resume", "run"]

#: What a finished run keeps besides 4 bytes per parameter: the dataset statistics (the mean image,
#: in the run folder and again in best.pt), curves and config, 1.6 MiB measured on the built-in
#: set; and a metrics line (about 200 bytes) per --log-every steps.
RECORDS_BYTES = 1.7 * 2**20
METRICS_LINE_BYTES = 250
FP32 = 4


def default_out() -> str:
    return str(Path("runs") / f"ablate-{time.strftime('%Y%m%d-%H%M%S')}")


def run(config: Optional[TrainConfig] = None, arms: Sequence[Union[str, Arm]] = ARM_NAMES, seeds: int = 1,
        out: Optional[str] = None, reporter: Reporter = SILENT, baseline: Arm = BASELINE) -> Dict:
    """Train ``baseline`` and ``arms`` (the paper's arms by name, or ``Arm`` objects) with the
    seeds ``recipe.seed`` .. ``recipe.seed + seeds - 1`` into ``out`` (default
    ``runs/ablate-<time>``), then write the report; returns it.

    ``config`` is the baseline's run without a folder: the data, the net, the recipe, the
    devices and how to run (default: the built-in dataset and the ``builtin`` preset); the
    baseline arm changes nothing in it, its name and description label it. The same call on
    the same ``out`` continues: finished runs are skipped, an interrupted one resumes from its
    checkpoint. Raises ``Interrupted`` (after saving) on Ctrl-C or SIGTERM.
    """
    config = config or TrainConfig.from_preset("builtin")
    chosen = for_template(get_arms(arms), config) if len(arms) else ()  # no arm: the baseline alone (its seed spread)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"--seeds must be at least 1; got {seeds!r}")
    if baseline.changes:
        raise ConfigError(f"the baseline {baseline.name!r} is the template run itself; it changes nothing")
    check_paper_baseline(config, chosen)
    folder = AblationFolder.start(out or config.out or default_out(), chosen,
                                  [config.recipe.seed + i for i in range(seeds)], config, baseline)
    return _train_all(folder, folder.template(), reporter, max_steps=config.runtime.max_steps)


def resume(out: str, reporter: Reporter = SILENT, **runtime) -> Dict:
    """Continue the ablation in ``out`` with its own settings; ``runtime`` (devices, amp,
    workers, ...: runtime settings, ``alexnet.train.config.TrainRuntime``) may change how the
    remaining runs run."""
    folder = AblationFolder.open(out)
    template = folder.template(**runtime)
    folder.settings["runtime"] = runtime_of(template)
    return _train_all(folder, template, reporter, max_steps=template.runtime.max_steps)


def report(out: str) -> Dict:
    """Rebuild report.md, report.json and curves.png of the ablation in ``out`` from its runs,
    without training; returns the report."""
    return write_report(AblationFolder.open(out, option="--report"))


def _check_before_writing(folder: AblationFolder, template: TrainConfig, reporter: Reporter):
    """The devices of every arm and the data, before anything is written; the training set."""
    for arm in folder.arms:
        config = arm_config(template, arm, folder.seeds[0], folder.path)
        config.runtime.amp_dtype(config.runtime.placement(arm_spec(template, arm).towers))
    root = resolve_data_root(template.data, reporter)
    return open_dataset(root, "train", skip_bad=template.runtime.skip_bad)


def _train_all(folder: AblationFolder, template: TrainConfig, reporter: Reporter,
               max_steps: Optional[int] = None) -> Dict:
    train_set = _check_before_writing(folder, template, reporter)
    folder.path.mkdir(parents=True, exist_ok=True)
    with FolderLock(folder.path, "ablation"):  # one process runs an ablation; each run has its own lock too
        folder.settings.update(classes=len(train_set.classes), train_images=len(train_set))
        folder.save()
        return _train_runs(folder, template, reporter, max_steps, len(train_set))


def _train_runs(folder: AblationFolder, template: TrainConfig, reporter: Reporter, max_steps: Optional[int],
                train_images: int) -> Dict:
    runs = folder.runs_in_order()
    for line in _run_lines(folder, template, runs, train_images):
        reporter.line(line)
    for i in range(1, len(runs) + 1):
        _train_one(folder, template, runs, i, reporter, max_steps)
    result = write_report(folder)
    reporter.line(f"report: {folder.path / 'report.md'}, {folder.path / 'report.json'}"
                  + (f", {folder.path / result['curves']}" if result.get("curves") else ""))
    return result


def _train_one(folder: AblationFolder, template: TrainConfig, runs: List[Tuple[Arm, int]], i: int,
               reporter: Reporter, max_steps: Optional[int]) -> None:
    """The i-th run of the runs: kept when finished, resumed when interrupted, else trained."""
    arm, seed = runs[i - 1]
    name, run = run_folder_name(arm, seed), folder.run(arm, seed)
    state = folder.state(arm, seed)
    if state == "finished":
        run.last_checkpoint.unlink(missing_ok=True)  # a kill may have come before the cleanup
        reporter.line(f"[{i}/{len(runs)}] {name}: finished before, kept")
        return
    config = arm_config(template, arm, seed, run.path).replace(max_steps=max_steps)
    resume_from = None
    if state == "interrupted":
        resume_from = str(run.path)
        config = resume_config(resume_from, runtime=config.runtime)
    elif state == "started":  # stopped before its first checkpoint: nothing to keep
        config = config.replace(overwrite=True)
    reporter.line(f"[{i}/{len(runs)}] {name}: {'resuming' if resume_from else 'training'} {arm.description}")
    started = folder.session_started(name)
    try:
        summary = train(config, resume=resume_from, reporter=reporter)
    except Interrupted as stop:
        raise Interrupted(_stopped(folder, name, stop), stop.signal) from None
    except TrainingError as error:
        raise TrainingError(f"{name}: {error}") from None
    finally:
        seconds = folder.session_ended(name, started)
    # best.pt (weights only) stays for evaluation; last.pt (momentum too) was only for resuming.
    run.last_checkpoint.unlink(missing_ok=True)
    reporter.line(_done_line(folder, runs, i, name, seconds, summary))


def _stopped(folder: AblationFolder, name: str, stop: Interrupted) -> str:
    reason = str(stop).split("; checkpoint saved")[0]
    where = quote(folder.path)
    return (f"{name}: {reason}; checkpoint saved. The ablation stopped; continue it with: alexnet ablate --resume "
            f"{where} (finished runs are kept; alexnet ablate --report {where} reports on them now)")


# -- what it will cost, in words ------------------------------------------------------------------
def _run_lines(folder: AblationFolder, template: TrainConfig, runs: List[Tuple[Arm, int]], train_images: int):
    recipe, classes = template.recipe, folder.settings["classes"]
    states = [folder.state(arm, seed) for arm, seed in runs]
    arms = " and ".join(a.name for a in folder.arms) if len(folder.arms) == 2 else \
        ", ".join(a.name for a in folder.arms)
    seeds = ", ".join(str(s) for s in folder.seeds)
    steps = recipe.epochs * (train_images // recipe.batch_size)
    data = "the built-in dataset" if folder.builtin else str(template.data)
    yield (f"ablation {folder.path}: {arms}; seed{'s' if len(folder.seeds) > 1 else ''} {seeds}: {len(runs)} runs "
           f"({states.count('finished')} finished, {states.count('interrupted')} to resume, "
           f"{len(runs) - states.count('finished') - states.count('interrupted')} to train)")
    yield (f"each run: {data} ({train_images:,} training images, {classes} classes), recipe {recipe.name}, "
           f"{recipe.epochs} epoch{'s' if recipe.epochs != 1 else ''} of {train_images // recipe.batch_size:,} "
           f"steps of {recipe.batch_size} images ({steps:,} steps)")
    params = {arm.name: arm_spec(template, arm, classes).params for arm in folder.arms}
    records = RECORDS_BYTES + METRICS_LINE_BYTES * steps / template.runtime.log_every
    done = sum(FP32 * params[arm.name] + records for arm, _ in runs)
    todo = [(arm, seed) for (arm, seed), state in zip(runs, states) if state != "finished"]
    peak = 4 * FP32 * max(params[arm.name] for arm, _ in todo) if todo else 0
    yield (f"disk: about {_size(done)} in all when done (each run keeps best.pt, 4 bytes per parameter, and its "
           f"records)" + (f"; while a run trains, up to {_size(peak)} more (last.pt with the momentum buffers, and "
                          f"a new one while it is written); last.pt is deleted when the run finishes" if todo else ""))
    left = _time_left(folder, todo)
    if not todo:
        yield "time: nothing left to train; the report is rebuilt from the runs"
    elif left is None:
        paper = "" if folder.builtin else "; the paper trained each 90-epoch run for five to six days on two GTX 580s"
        yield f"time: unknown until the first run finishes (none of this ablation's runs has been timed yet{paper})"
    else:
        yield f"time: about {duration(left)} for the {len(todo)} run{'s' if len(todo) != 1 else ''} left, from the runs timed so far"


def _time_left(folder: AblationFolder, todo: Sequence[Tuple[Arm, int]]) -> Optional[float]:
    """The runs left, each at its arm's mean time so far (else the mean over all arms); None
    before any run has finished."""
    timed: Dict[str, List[float]] = {}
    for arm, seed in folder.runs_in_order():
        seconds = folder.seconds(run_folder_name(arm, seed))
        if seconds is not None and folder.state(arm, seed) == "finished":
            timed.setdefault(arm.name, []).append(seconds)
    if not timed:
        return None
    overall = statistics.fmean(s for values in timed.values() for s in values)
    return sum(statistics.fmean(timed[arm.name]) if arm.name in timed else overall for arm, _ in todo)


def _done_line(folder: AblationFolder, runs, i: int, name: str, seconds: float, summary: Dict) -> str:
    final = summary.get("final_ten_crop") or summary.get("final_centre_crop") or {}
    protocol = "ten-crop" if "final_ten_crop" in summary else "centre-crop"
    result = f" ({protocol} top-1 error {100 * final['top1_error']:.1f}%)" if "top1_error" in final else ""
    todo = [(arm, seed) for arm, seed in runs[i:] if folder.state(arm, seed) != "finished"]
    left = _time_left(folder, todo)
    rest = (f"; {len(todo)} run{'s' if len(todo) != 1 else ''} left, about {duration(left)}" if todo and left
            else "")
    return f"[{i}/{len(runs)}] {name} finished, {duration(seconds)} of training sessions in all{result}{rest}"


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"
