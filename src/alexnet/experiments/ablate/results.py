"""The ablation's report, built from the runs' own files only: ``summary.json`` (final centre-crop
and ten-crop errors, the best epoch), ``metrics.jsonl`` (per-epoch validation errors, training
throughput) and ``config.json`` (the net, the devices, the precision), with the wall time the
ablation recorded for each training session.

Differences are paired by seed (the arm's run minus the baseline's run of the same seed, in
percentage points of error, as the paper states its gains), so a seed that is easy for both
nets cancels out. A difference counts as beyond the seed noise when the 95% interval of its
mean over the seeds (Student's t) excludes zero; with one seed nothing can be judged.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ...errors import AlexNetError
from ...files import write_atomically, write_json
from ...model.config import ModelConfig
from ...model.spec import resolve
from ...tables import markdown_table
from ...train.curves import epoch_curve, plot_runs
from ...run_folder import quote
from .arms import Arm, arm_spec
from .folder import AblationFolder

REPORT_FORMAT = "alexnet-ablation-report"
CURVES = "curves.png"

#: The errors each run reports: key, label, summary.json entry and field.
METRICS = (
    ("ten_top1", "top-1, ten crops", "final_ten_crop", "top1_error"),
    ("ten_top5", "top-5, ten crops", "final_ten_crop", "top5_error"),
    ("centre_top1", "top-1, centre crop", "final_centre_crop", "top1_error"),
    ("centre_top5", "top-5, centre crop", "final_centre_crop", "top5_error"),
    ("best_top1", "top-1 at the best epoch", "best", "val_top1_error"),
    ("best_top5", "top-5 at the best epoch", "best", "val_top5_error"),
)

#: Student's t, two-sided 95% (the 0.975 quantile), for 1..30 degrees of freedom.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
       2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
       2.045, 2.042)

RULE = ("a difference is beyond the seed noise when the 95% interval of its mean over the N seeds that both "
        "runs finished, mean ± t·std/√N (Student's t, N−1 degrees of freedom; std of the paired differences), "
        "excludes zero; with one seed there is no spread to judge against")


def t95(df: int) -> float:
    """The two-sided 95% quantile of Student's t; past 30 degrees of freedom within 0.01."""
    return T95[df - 1] if df <= len(T95) else 1.96 + 2.4 / df


def half_width(std: float, n: int) -> float:
    """Half the 95% interval of a mean over ``n`` values of sample std ``std``: t·std/√n."""
    return t95(n - 1) * std / math.sqrt(n)


#: The size of effect (points of top-1 error) an ablation should be able to call: the paper's
#: LRN and one-GPU gains are 1.4-1.7 points on ImageNet; on the built-in data, about 3.
CALL_EFFECT = 3.0
#: seeds_to_tell stops looking here.
MAX_SEEDS = 200


def seeds_to_tell(std: Optional[float], effect: Optional[float]) -> Optional[int]:
    """The fewest seeds whose 95% interval, mean ± t·std/√N at the measured ``std`` of the
    paired differences, would exclude zero for a mean difference of ``effect`` points; None
    when there is no spread to go by or no effect, or past MAX_SEEDS."""
    if std is None or not effect:
        return None
    return next((n for n in range(2, MAX_SEEDS + 1) if half_width(std, n) < abs(effect)), None)


# -- the runs -------------------------------------------------------------------------------------
def training_images_per_second(records: Sequence[Dict]) -> Optional[float]:
    """Training images over training time, from the step records: each covers the images since
    the previous one at its own rate (validation and checkpoints are not in it)."""
    images = seconds = 0.0
    previous = 0
    for r in records:
        if r.get("kind") != "step" or not r.get("images_per_second"):
            continue
        n = r["images"] - previous
        previous = r["images"]
        images += n
        seconds += n / r["images_per_second"]
    return images / seconds if seconds > 0 else None


def _recorded_config(folder: AblationFolder, arm: Arm, seed: int) -> Dict:
    """The run's config.json in this version's shape, or {} while it has none (or it is unreadable)."""
    run = folder.run(arm, seed)
    try:
        return run.read_config() if run.config_path.exists() else {}
    except AlexNetError:
        return {}


def read_run(folder: AblationFolder, arm: Arm, seed: int) -> Dict:
    """One run's figures, as its own files give them (errors as fractions)."""
    run = folder.run(arm, seed)
    config, summary = _recorded_config(folder, arm, seed), run.read_summary()
    resolved = config.get("resolved", {})
    timing = folder.settings.get("timing", {}).get(run.path.name, {})
    placement = resolved.get("placement") or {}
    devices = placement.get("devices", [])
    return {
        "arm": arm.name, "seed": seed, "run": run.path.name, "state": folder.state(arm, seed),
        "net": config.get("model") or None,
        "classes": resolved.get("classes"),
        "runs_on": None if not placement else
        f"{placement['layout']} on {', '.join(devices)}, {resolved.get('amp_dtype', '?')}",
        "two_gpus": placement.get("layout") == "towers" and len(set(devices)) == 2
                    and all(d.startswith("cuda") for d in devices),
        "epochs": summary.get("epochs"),
        "errors": {key: (summary.get(entry) or {}).get(field) for key, _, entry, field in METRICS} if summary else {},
        "best_epoch": (summary.get("best") or {}).get("epoch"),
        "wall_seconds": folder.seconds(run.path.name),
        "untimed_sessions": timing.get("untimed_sessions", 0) + (1 if "open" in timing else 0),
        "images_per_second": training_images_per_second(run.read_metrics()),
    }


# -- statistics -----------------------------------------------------------------------------------
def seed_spread(values: Sequence[float]) -> Dict:
    values = list(values)
    return {"n": len(values), "values": values, "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) >= 2 else None}


def paired_difference(baseline: Dict[int, float], arm: Dict[int, float]) -> Dict:
    """arm minus baseline, seed by seed, in percentage points; its mean, std and 95% interval."""
    seeds = sorted(set(baseline) & set(arm))
    result = seed_spread([100 * (arm[s] - baseline[s]) for s in seeds])
    result.update(seeds=seeds, interval=None, beyond_noise=None, seeds_to_tell_mean=None, seeds_to_tell_call=None)
    if result["n"] >= 2:
        half = half_width(result["std"], result["n"])
        low, high = result["mean"] - half, result["mean"] + half
        # With this spread: the seeds it would take to call this mean, and a CALL_EFFECT one.
        result.update(interval=[low, high], beyond_noise=not low <= 0 <= high,
                      seeds_to_tell_mean=seeds_to_tell(result["std"], result["mean"]),
                      seeds_to_tell_call=seeds_to_tell(result["std"], CALL_EFFECT))
    return result


def _finished_values(runs: Sequence[Dict], key: str) -> Dict[int, float]:
    return {r["seed"]: r["errors"][key] for r in runs if r["state"] == "finished" and r["errors"].get(key) is not None}


# -- the report -----------------------------------------------------------------------------------
def _arm_summary(template, arm: Arm, mine: Sequence[Dict], classes: Optional[int]) -> Dict:
    """One arm's row: what it is, its net's cost, its errors over the seeds, its time."""
    net = next((r["net"] for r in mine if r["net"]), None)
    n = next((r["classes"] for r in mine if r["classes"]), classes) or 1000
    # The net the runs recorded, else the arm's.
    spec = resolve(ModelConfig.from_dict(net), num_classes=n) if net else arm_spec(template, arm, n)
    done = [r for r in mine if r["state"] == "finished"]
    walls = [r["wall_seconds"] for r in done if r["wall_seconds"] is not None]
    rates = [r["images_per_second"] for r in done if r["images_per_second"]]
    return {
        "arm": arm.name, "section": arm.section, "description": arm.description, "changes": dict(arm.changes),
        "paper_delta": _delta(arm),
        "params": spec.params, "macs": spec.macs, "classes": n,
        "params_1000_classes": arm_spec(template, arm, 1000).params,
        "runs_on": sorted({r["runs_on"] for r in mine if r["runs_on"]}),
        "finished": len(done), "seeds": len(mine),
        "errors": {key: seed_spread([100 * v for v in _finished_values(mine, key).values()]) for key, *_ in METRICS},
        "wall_seconds": statistics.fmean(walls) if walls else None,
        "untimed_sessions": sum(r["untimed_sessions"] for r in done),
        "images_per_second": statistics.fmean(rates) if rates else None,
    }


def _delta(arm: Arm) -> Optional[Dict[str, float]]:
    return None if arm.paper_delta is None else {"top1": arm.paper_delta[0], "top5": arm.paper_delta[1]}


def build_report(folder: AblationFolder) -> Dict:
    """Everything report.md says, as data (see its "units")."""
    settings, template = folder.settings, folder.template()
    runs = {arm.name: [read_run(folder, arm, seed) for seed in folder.seeds] for arm in folder.arms}
    finished = [r for rs in runs.values() for r in rs if r["state"] == "finished"]
    protocol = "ten" if finished and all(r["errors"].get("ten_top1") is not None for r in finished) else "centre"
    classes = settings.get("classes")
    base = runs[folder.arms[0].name]
    differences = [{"arm": arm.name, "paper_delta": _delta(arm),
                    **{key: paired_difference(_finished_values(base, key), _finished_values(runs[arm.name], key))
                       for key, *_ in METRICS}} for arm in folder.arms[1:]]
    experiment = settings["experiment"]
    report = {
        "format": REPORT_FORMAT, "version": 2, "folder": str(folder.path),
        "data": experiment["data"], "builtin": folder.builtin, "model": experiment["model"],
        "recipe": experiment["recipe"], "ten_crop": template.runtime.ten_crop,
        "seeds": folder.seeds, "classes": classes, "train_images": settings.get("train_images"),
        "protocol": protocol, "rule": RULE,
        "units": "arms' errors: percent (mean, std and values over the seeds' finished runs); runs' errors: "
                 "fractions, as in summary.json; differences: percentage points, arm minus baseline, paired by seed",
        "arms": [_arm_summary(template, arm, runs[arm.name], classes) for arm in folder.arms],
        "differences": differences, "runs": [r for rs in runs.values() for r in rs],
        "not_finished": [r["run"] for rs in runs.values() for r in rs if r["state"] != "finished"],
    }
    report["findings"] = findings(report)
    return report


# -- in words -------------------------------------------------------------------------------------
def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _protocol_label(report: Dict) -> str:
    return "ten-crop" if report["protocol"] == "ten" else "centre-crop"


def findings(report: Dict) -> List[str]:
    """What the tables show, in sentences: the data's caveat, the seed noise, each arm's verdict,
    where the runs ran, what is missing."""
    label = _protocol_label(report)
    key1, key5 = f"{report['protocol']}_top1", f"{report['protocol']}_top5"
    arms = {a["arm"]: a for a in report["arms"]}
    out = _noise_findings(report, label, key1)
    for d in report["differences"]:
        if d[key1]["n"] == 0:
            out.append(f"{d['arm']}: no finished pair of runs yet.")
        else:
            out.append(_verdict_sentence(d, arms[d["arm"]], label, key1, key5))
    out += _placement_findings(report)
    missing = report["not_finished"]
    if missing:
        out.append(f"{len(missing)} run{'s' if len(missing) != 1 else ''} not finished ({', '.join(missing)}): the "
                   f"tables leave {'them' if len(missing) != 1 else 'it'} out; continue with "
                   f"`alexnet ablate --resume {quote(report['folder'])}`.")
    return out


def _noise_findings(report: Dict, label: str, key1: str) -> List[str]:
    """The built-in data's caveat, and what the seeds say (or cannot say) about the noise."""
    out, recipe = [], report["recipe"]
    if report["builtin"]:
        out.append(f"These runs use the built-in dataset (10 classes of generated shapes, textures and colours), "
                   f"not ImageNet, with {recipe['epochs']} epoch{'s' if recipe['epochs'] != 1 else ''} per run: they measure "
                   f"what each change is worth on ten generated classes in a short run, against how far results move "
                   f"between seeds. They are not a reproduction of the paper's numbers (ILSVRC, 1000 classes, about "
                   f"90 epochs): an effect here, or its absence, in either direction, says nothing certain about "
                   f"ImageNet.")
    diffs, base = report["differences"], report["arms"][0]["errors"][key1]
    paired = max((d[key1]["n"] for d in diffs), default=0)
    if not diffs:
        out.append("Only the baseline was trained: there is nothing to compare.")
    elif paired == 0:
        out.append("No arm has a finished run beside a finished baseline run of the same seed yet: nothing to compare.")
    elif paired == 1:
        out.append("With one seed per arm there is no measure of how far a result moves from seed to seed, so no "
                   "difference below can be told apart from noise. Run the same command with --seeds 3 or more (it "
                   "continues this folder, training the new seeds only) to judge.")
    elif base["n"] >= 2:
        out.append(f"The baseline's {label} top-1 error moves between seeds by {base['std']:.1f} points (std; "
                   f"{min(base['values']):.1f}% to {max(base['values']):.1f}% over {base['n']} seeds).")
    return out


def _verdict_sentence(d: Dict, arm: Dict, label: str, key1: str, key5: str) -> str:
    """One arm against the baseline: the mean differences, the paper's where it measured the
    same change, and whether the top-1 difference is beyond the seed noise."""
    one, five, paper = d[key1], d[key5], d["paper_delta"]
    text = (f"{d['arm']} ({arm['description']}): {one['mean']:+.1f} points of {label} top-1 error against the "
            f"baseline, {five['mean']:+.1f} top-5"
            + (f" (the paper: {paper['top1']:+.1f} / {paper['top5']:+.1f})" if paper else ""))
    if one["beyond_noise"] is None:
        text += "; one seed: not judged."
    elif not one["beyond_noise"]:
        low, high = one["interval"]
        text += (f"; the 95% interval of the top-1 difference, {low:+.1f} to {high:+.1f}, includes zero: within "
                 f"the seed noise, so this ablation cannot tell whether the change matters here. " + _what_it_takes(one))
    else:
        low, high = one["interval"]
        worse = one["mean"] > 0
        direction = "" if not paper else (
            f" ({'the direction the paper reports' if worse else 'the opposite of the paper'})")
        text += (f"; the 95% interval, {low:+.1f} to {high:+.1f}, excludes zero: the arm is "
                 f"{'worse' if worse else 'better'} than the baseline by more than the seed noise{direction}.")
    if five["beyond_noise"] is not None and five["beyond_noise"] != one["beyond_noise"]:
        low, high = five["interval"]
        text += f" Top-5: {'beyond' if five['beyond_noise'] else 'within'} the noise ({low:+.1f} to {high:+.1f})."
    return text


def _what_it_takes(d: Dict) -> str:
    """What would decide a difference still within the noise, from its measured spread."""
    need_mean, need_call = d["seeds_to_tell_mean"], d["seeds_to_tell_call"]
    mean = (f"a difference of this size ({d['mean']:+.1f}) would need {need_mean} seeds" if need_mean
            else f"a difference of this size ({d['mean']:+.1f}) would need more than {MAX_SEEDS} seeds")
    call = (f"one of {CALL_EFFECT:g} points, {need_call}" if need_call
            else f"one of {CALL_EFFECT:g} points, more than {MAX_SEEDS}")
    return (f"At the paired differences' measured spread ({d['std']:.1f} points, std over {d['n']} seeds), "
            f"{mean}; {call} (continue with a larger --seeds; longer runs may also narrow the spread).")


def _placement_findings(report: Dict) -> List[str]:
    """Where the one-GPU comparison ran, and arms whose runs ran on different devices."""
    out, arms = [], {a["arm"]: a for a in report["arms"]}
    baseline = report["arms"][0]["arm"]
    if "one-gpu" in arms and arms["one-gpu"]["runs_on"] and arms[baseline]["runs_on"]:
        base_runs = [r for r in report["runs"] if r["arm"] == baseline and r["runs_on"]]
        one_on, base_on = "; ".join(arms["one-gpu"]["runs_on"]), "; ".join(arms[baseline]["runs_on"])
        if all(r["two_gpus"] for r in base_runs):
            out.append(f"The one-gpu arm ran {one_on}; the baseline ran its two towers on two GPUs ({base_on}): "
                       f"the paper's comparison, wall times included.")
        else:
            out.append(f"The one-gpu arm ran {one_on}; the baseline ran {base_on}: with both towers on one device "
                       f"(the grouped net computes the same function as the two towers) this compares the two nets, "
                       f"not one GPU with two, and its wall times say nothing of the paper's two-GPU speed.")
    for arm in report["arms"]:
        if len(arm["runs_on"]) > 1:
            out.append(f"{arm['arm']}'s runs ran on different devices or precisions ({'; '.join(arm['runs_on'])}).")
    return out


# -- as markdown ----------------------------------------------------------------------------------
#: report.md: the findings in words, then the tables they come from.
REPORT_MD = """# Ablation report: {name}

{data}. Recipe `{recipe[name]}`: {recipe[epochs]} epoch{epochs_s}, batch {recipe[batch_size]}, learning rate \
{recipe[lr]:g}, {model[init]} initialization; {seeds}. Every arm trains with the baseline's data, recipe, schedule, \
number of steps, seeds, data order and augmentation draws; {differs}.

## What the tables show

{findings}

## Differences from the baseline

Arm minus baseline in percentage points of {label} validation error, paired by seed: mean ± std over the seeds \
(each seed's value when fewer than three). Positive: the arm is worse, as the paper found.

{differences}

{rule}. Seeds to tell: the fewest seeds whose interval, at the measured std of the paired differences, would exclude \
zero for a mean difference of the measured size, and of {call:g} points.

## Validation error of each arm (%)

After the last epoch with the centre crop and the paper's ten crops, and at the epoch with the lowest centre-crop \
top-1 error; mean ± std over the seeds (each seed's value when fewer than three).

{errors}

## The nets and their cost

{cost}
{at_1000}
Wall time: each run's training sessions as the ablation timed them (set-up, training, validation, checkpoints; ≥ \
where a session was stopped without being timed). Training images/s: the runs' own step records (training steps \
only).

{curves}## Runs

{runs}
"""
CURVES_MD = """![validation error per epoch]({curves})

`{curves}`: validation top-1 and top-5 error (centre crop) per epoch; one colour per arm, each seed a thin line, the \
mean over the seeds a thick one.

"""


def _cell(s: Dict, signed: bool = False) -> str:
    """mean ± std over the seeds; each seed's value when fewer than three."""
    form = "{:+.1f}" if signed else "{:.1f}"
    if s["n"] == 0:
        return "—"
    if s["n"] < 3:
        return ", ".join(form.format(v) for v in s["values"])
    return f"{form.format(s['mean'])} ± {s['std']:.1f}"


def _interval(d: Dict) -> str:
    return "—" if d["interval"] is None else "{:+.1f} to {:+.1f}".format(*d["interval"])


def _verdict(d: Dict) -> str:
    if d["beyond_noise"] is None:
        return "one seed: cannot tell" if d["n"] == 1 else "—"
    return "**yes**" if d["beyond_noise"] else "no"


def _seeds_cell(d: Dict) -> str:
    if d["std"] is None:
        return "—"
    return " / ".join(str(n) if n else f"> {MAX_SEEDS}" for n in (d["seeds_to_tell_mean"], d["seeds_to_tell_call"]))


def _table(header, rows) -> str:
    return "\n".join(markdown_table(header, rows))


def format_ablation_report(report: Dict) -> str:
    """report.md (``REPORT_MD``) from the report's data."""
    label = _protocol_label(report)
    key1, key5 = f"{report['protocol']}_top1", f"{report['protocol']}_top5"
    recipe, classes = report["recipe"], report["arms"][0]["classes"]
    data = "Data: the built-in dataset (not ImageNet)" if report["builtin"] else f"Data: `{report['data']}`"
    if report.get("train_images"):
        data += f", {report['train_images']:,} training images in {report['classes']} classes"
    net_only = all(set(a["changes"]) <= set(ModelConfig.names()) for a in report["arms"])
    at_1000 = ", ".join(f"{a['arm']} {a['params_1000_classes']:,}" for a in report["arms"])
    return REPORT_MD.format(
        name=Path(report["folder"]).name, data=data, recipe=recipe, model=report["model"], label=label,
        epochs_s="s" if recipe["epochs"] != 1 else "", call=CALL_EFFECT,
        seeds=f"seed{'s' if len(report['seeds']) > 1 else ''} " + ", ".join(str(s) for s in report["seeds"]),
        differs="only the network differs" if net_only else "only what each arm changes differs",
        findings="\n".join(f"- {f}" for f in report["findings"]), rule=report["rule"][0].upper() + report["rule"][1:],
        differences=_table(
            ["arm", "Δ top-1", "95% interval", "beyond the seed noise?",
             f"seeds to tell Δ top-1 / {CALL_EFFECT:g} points", "Δ top-5", "95% interval", "beyond the seed noise?",
             "the paper: Δ top-1 / top-5"],
            [[d["arm"], _cell(d[key1], True), _interval(d[key1]), _verdict(d[key1]), _seeds_cell(d[key1]),
              _cell(d[key5], True), _interval(d[key5]), _verdict(d[key5]),
              "+{top1:.1f} / +{top5:.1f}".format(**d["paper_delta"]) if d["paper_delta"] else "—"]
             for d in report["differences"]]),
        errors=_table(["arm", "runs finished", "top-1, ten crops", "top-5, ten crops", "top-1, centre", "top-5, centre",
                       "best epoch: top-1", "best epoch: top-5"],
                      [[a["arm"], f"{a['finished']} of {a['seeds']}", *(_cell(a["errors"][key]) for key, *_ in METRICS)]
                       for a in report["arms"]]),
        cost=_table(["arm", "what changes", "runs on", "parameters", "multiply-adds per image", "wall time per run",
                     "training images/s"],
                    [[a["arm"], a["description"] + (f" ({a['section']})" if a["section"] else ""),
                      "; ".join(a["runs_on"]) or "—", f"{a['params']:,}", f"{a['macs']:,}",
                      ("≥ " if a["untimed_sessions"] else "") + duration(a["wall_seconds"]),
                      "—" if a["images_per_second"] is None else f"{a['images_per_second']:,.1f}"]
                     for a in report["arms"]]),
        at_1000="" if classes == 1000 else (f"\nParameters and multiply-adds of the nets as trained here, with a "
                                           f"{classes}-way fc8; with ImageNet's 1000 classes: {at_1000}.\n"),
        curves=CURVES_MD.format(curves=report["curves"]) if report.get("curves") else "",
        runs=_table(["run", "state", f"top-1, {label}", f"top-5, {label}", "wall time"],
                    [[f"`{r['run']}`", r["state"],
                      *("—" if r["errors"].get(k) is None else f"{100 * r['errors'][k]:.1f}" for k in (key1, key5)),
                      ("≥ " if r["untimed_sessions"] else "") + duration(r["wall_seconds"])] for r in report["runs"]]))


def write_report(folder: AblationFolder) -> Dict:
    """report.json, report.md and curves.png in the ablation's folder, from its runs."""
    report = build_report(folder)
    groups = {arm.name: [folder.run(arm, seed).path for seed in folder.seeds] for arm in folder.arms}
    if any(epoch_curve(run, "val_top1_error") for runs in groups.values() for run in runs):
        title = (f"{folder.path.name}: validation error per epoch"
                 f"{' (built-in dataset, not ImageNet)' if folder.builtin else ''}")
        plot_runs(groups, folder.path / CURVES, metrics=("val_top1_error", "val_top5_error"), title=title)
        report["curves"] = CURVES
    else:
        report["curves"] = None
    write_json(folder.path / "report.json", report)
    text = format_ablation_report(report)

    def write(tmp):
        Path(tmp).write_text(text)
    write_atomically(folder.path / "report.md", write)
    return report
