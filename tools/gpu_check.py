"""One prepared GPU check: everything this project needs real CUDA devices for, in one command
that fits a short GPU window (issues 14 and 18; docs/gpu.md).

    python tools/gpu_check.py [OUT_DIR]                  # default OUT_DIR: gpu-check/
    python tools/gpu_check.py --dry-run [OUT_DIR]        # walk through the steps, run none
    python tools/gpu_check.py --only gpu-tests,bench [OUT_DIR]

GPU windows are short (about ten minutes of one GPU), so the first must be used fully without
improvising. The steps of ``STEPS`` run in order, cheapest and most important first, each in a
subprocess within its own budget (together under 8 minutes): a CUDA crash or a hang costs its
step only, which ends ok, failed (with its last lines), skipped (with why) or timed out. The
checks themselves are tests (``pytest -m gpu``: tests/model/test_gpu.py), the benchmark and a
training run; this file runs them and reports. ``gpu_check.json`` and ``summary.md`` in OUT_DIR
are rewritten after every step, so a window that closes early still leaves what was measured.

It runs from a checkout: the checkout's ``src/`` goes first on the path, here and in every step,
so the check tests the commit it reports with the package's own helpers (atomic JSON, the git
state, Markdown tables, a run's metrics) and tools/bench_targets.py beside it. This process
never initialises CUDA: only the steps touch a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

THIS = Path(__file__).resolve()
REPO = THIS.parent.parent
# This checkout's alexnet, whatever else is installed, and tools/bench_targets.py beside this file.
sys.path[:0] = [p for p in (str(REPO / "src"), str(THIS.parent)) if p not in sys.path]

import bench_targets  # noqa: E402
from alexnet.files import write_json  # noqa: E402
from alexnet.machine import git_state  # noqa: E402
from alexnet.tables import markdown_table  # noqa: E402
from alexnet.run_folder import RunFolder  # noqa: E402

LIMIT_S = 480  # issue 14: the whole check in under 8 minutes on one GPU
#: A step is not started with less time than this left: it could not finish.
MIN_STEP_S = 10
#: How long a step stopped at its timeout gets to exit after SIGINT (pytest then still writes
#: its report, a training run its checkpoint) before SIGKILL.
STOP_GRACE_S = 5
SCHEMA = "alexnet-gpu-check/2"
TAIL_LINES = 15
#: 3 warm-up steps and 3 timed blocks of 10 steps per bench case, sized to the budgets.
BENCH_TIMING = ("--devices", "0", "--warmup", "3", "--steps", "10", "--repeats", "3")
#: The built-in recipe in full (5 epochs of batch 32 on 2,500 images, 78 steps an epoch).
TRAIN_ARGS = ("--devices", "0", "--log-every", "5", "--overwrite", "-q")
#: The built-in run learns to about 84.5% validation accuracy on a CPU (docs/training.md); a
#: GPU run below twice chance did not learn.
LEARNED_OVER_CHANCE = 2.0


@dataclass(frozen=True)
class Step:
    """One step, all of it: what it runs, what it writes (removed before it runs, so an earlier
    run's results never pass for this one's) and how its results are read."""

    name: str
    budget_s: float  # its timeout
    gpus: int  # CUDA devices it needs (it is skipped, with why, on fewer)
    checks: str
    command: Callable[["Check"], List[str]]
    collect: Callable[["Check", "Finished"], Dict]
    outputs: Tuple[str, ...] = ()
    optional: bool = False  # runs in whatever time is left; running out of it is no failure


@dataclass
class Check:
    """One run of the check: where its results go, its options, and what it found so far."""

    out: Path
    dry_run: bool = False
    only: Optional[Sequence[str]] = None
    scale: float = 1.0
    started: float = field(default_factory=time.monotonic)
    gpus: Optional[int] = None  # known once the environment step has run
    steps: List[Dict] = field(default_factory=list)
    git: Dict = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def left_s(self) -> float:
        return budget_s() * self.scale - (time.monotonic() - self.started)


@dataclass
class Finished:
    """A step's subprocess, after it ended or was stopped."""

    returncode: Optional[int]  # None when stopped at its timeout
    seconds: float
    log: Path

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").rstrip().splitlines()[-TAIL_LINES:])
        except OSError:
            return ""


# == running steps ==========================================================================

def run_command(command: Sequence[str], timeout: float, log: Path) -> Finished:
    """Run ``command`` from the repository root, its output into ``log``, within ``timeout``:
    this checkout's src/ first on the path, output unbuffered (a stopped step leaves its log)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    start = time.monotonic()
    with open(log, "w") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
        handle.flush()
        # Its own session: at the timeout the step goes with everything it started (data-loader
        # workers, compile workers), and Ctrl-C reaches only this process, which stops it.
        process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(process)
            returncode = None
        except BaseException:
            stop(process)
            raise
    return Finished(returncode, time.monotonic() - start, log)


def stop(process: subprocess.Popen) -> None:
    """End a step's process group: SIGINT first (as Ctrl-C: pytest writes its report of the
    tests done so far, a training run saves), SIGKILL after a short grace."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def outcome(status: str, details: Optional[Dict] = None, summary: Sequence[str] = (), reason: str = None) -> Dict:
    """What a step found: its status, the numbers (for the JSON), markdown lines (for the summary)."""
    found = {"status": status, "details": details or {}, "summary": list(summary)}
    return {**found, "reason": reason} if reason else found


def missing(finished: Finished, what: str) -> Dict:
    """A step that left no results: stopped at its timeout, or exited with its last lines."""
    if finished.timed_out:
        return outcome("timed out")
    last = finished.tail().splitlines()[-1:] or [""]
    return outcome("failed", reason=f"{what} exited with status {finished.returncode}: {last[0].strip()[:200]}",
                   summary=[f"{what} exited with status {finished.returncode}; the last lines of "
                            f"`logs/{finished.log.name}`:", "", "```", finished.tail(), "```"])


def why_skip(step: Step, check: Check) -> Optional[str]:
    """Why ``step`` does not run now, or None when it does."""
    if check.only is not None and step.name not in check.only and step.name != "environment":
        return "not selected by --only"
    if step.gpus and check.gpus is not None and check.gpus < step.gpus:
        visible = "no CUDA GPU is visible" if check.gpus == 0 else f"{check.gpus} CUDA GPU(s) visible"
        return f"{visible}; the step needs {step.gpus}"
    if check.dry_run and step.name != "environment":
        return f"dry run: would run within {step.budget_s * check.scale:.0f} s"
    if timeout_for(step, check) < MIN_STEP_S:
        return f"out of time: {max(check.left_s(), 0):.0f} s left of the {budget_s() * check.scale:.0f} s budget"
    return None


def timeout_for(step: Step, check: Check) -> float:
    """The step's budget within what is left of the whole; an optional step takes all that is left."""
    return check.left_s() if step.optional else min(step.budget_s * check.scale, check.left_s())


def run_step(step: Step, check: Check, position: str) -> Dict:
    """Run one step, guarded: whatever goes wrong in it (or in collecting its results) is
    recorded as its failure, and the check goes on."""
    command = step.command(check)
    record = {"name": step.name, "checks": step.checks, "budget_s": step.budget_s * check.scale,
              "gpus_needed": step.gpus, "optional": step.optional, "command": shlex.join(command)}
    reason = why_skip(step, check)
    if reason:
        print(f"[gpu-check] {position} {step.name}: skipped ({reason}): {record['command']}", flush=True)
        return {**record, "status": "skipped", "reason": reason, "seconds": 0.0}
    timeout = timeout_for(step, check)
    print(f"[gpu-check] {position} {step.name}: started (budget {timeout:.0f} s)", flush=True)
    for path in map(check.path, step.outputs):  # an earlier run's results must not pass for this one's
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    log = check.path("logs", f"{step.name}.log")
    start = time.monotonic()
    try:
        finished = run_command(command, timeout, log)
        found = step.collect(check, finished)
        if finished.timed_out:
            found.update(status="timed out", reason=f"stopped after {timeout:.0f} s (its budget)")
            found["summary"] += ["", f"Timed out; the last lines of `logs/{log.name}`:", "", "```",
                                 finished.tail(), "```"]
    except Exception as error:  # noqa: BLE001 - a bug in one step must not cost the others
        finished = Finished(None, 0.0, log)
        found = outcome("failed", reason=f"the check itself failed: {type(error).__name__}: {error}",
                        summary=["```", traceback.format_exc().rstrip(), "```"])
    record.update(found, seconds=time.monotonic() - start, log=os.path.relpath(log, check.out))
    if record["status"] in ("failed", "timed out"):
        record.setdefault("error", finished.tail())
    note = f": {record['reason']}" if record.get("reason") else ""
    print(f"[gpu-check] {position} {step.name}: {record['status']} in {record['seconds']:.1f} s{note}", flush=True)
    return record


# == the steps: what each runs, and what it found ==========================================

def python_command(*args: str) -> List[str]:
    return [sys.executable, *args]


def write_environment(path: Path) -> int:
    """``--environment PATH`` (the environment step's subprocess): the machine, the software
    and the GPUs as ``alexnet.machine`` describes them, with the NVIDIA driver."""
    import torch

    from alexnet.machine import describe

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    found = describe(cuda_pairs=[(0, 1), (1, 0)] if count >= 2 else [])
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15)
        driver = smi.stdout.split()[0] if smi.returncode == 0 and smi.stdout.split() else None
    except (OSError, subprocess.SubprocessError):
        driver = None
    found.update(gpu_count=count, driver=driver, cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    write_json(path, found)
    return 0


def collect_environment(check: Check, finished: Finished) -> Dict:
    path = check.path("environment.json")
    if not path.exists():
        return missing(finished, "the environment step")
    found = json.loads(path.read_text())
    check.gpus = found["gpu_count"]
    names = ", ".join(g["name"] for g in found["cuda"]["devices"]) or "none"
    return outcome("ok", found, [f"{check.gpus} CUDA GPU(s) visible: {names}."])


def read_junit(report: Path) -> Dict:
    """Passed, failed and skipped tests from a JUnit XML report, the failures' and skips'
    messages, and each test's recorded properties (``record_property``) by function and case."""
    found = {"passed": 0, "failed": 0, "skipped": 0, "failures": [], "skips": [], "measured": {}}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            status = "failed"
            found["failures"].append({"test": name, "message": (problem.get("message") or "")[:500]})
        elif case.find("skipped") is not None:
            status = "skipped"
            found["skips"].append({"test": name, "reason": case.find("skipped").get("message") or ""})
        else:
            status = "passed"
        found[status] += 1
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        if properties:
            function, _, param = case.get("name").partition("[")
            found["measured"].setdefault(function, {})[param.rstrip("]") or "-"] = {"status": status, **properties}
    return found


def measured_tables(measured: Dict[str, Dict[str, Dict]]) -> List[str]:
    """One table per test function: a row per case, a column per recorded property."""
    def cell(value: str) -> str:
        try:
            return value if value.lstrip("-").isdigit() else f"{float(value):.1e}"
        except ValueError:
            return value
    lines = []
    for function, cases in measured.items():
        keys = list(dict.fromkeys(k for properties in cases.values() for k in properties))
        lines += ["", f"`{function}`:", ""]
        lines += markdown_table(("case", *keys), [(case, *(cell(p.get(k, "-")) for k in keys))
                                                  for case, p in cases.items()])
    return lines


def pytest_step(name: str, budget_s: float, checks: str, marker: str, optional: bool = False) -> Step:
    report = f"{name}.xml"

    def command(check: Check) -> List[str]:
        # xunit1: the JUnit family in which record_property's numbers are written without a warning.
        return python_command("-m", "pytest", "-m", marker, "-q", "-rs", "-p", "no:cacheprovider",
                              "-o", "junit_family=xunit1", f"--junitxml={check.path(report)}", "tests")

    def collect(check: Check, finished: Finished) -> Dict:
        if not check.path(report).exists():
            return missing(finished, "pytest")
        found = read_junit(check.path(report))
        total = found["passed"] + found["failed"] + found["skipped"]
        summary = [f"{total} tests: {found['passed']} passed, {found['failed']} failed, {found['skipped']} skipped."]
        summary += [f"- failed: `{f['test']}`: {(f['message'].splitlines() or [''])[0]}" for f in found["failures"]]
        summary += [f"- skipped: `{s['test']}`: {s['reason']}" for s in found["skips"]]
        summary += measured_tables(found["measured"])
        if finished.returncode == 5 or total == 0:
            return outcome("failed", found, summary, reason="pytest selected no test")
        if found["passed"] == 0:
            return outcome("failed", found, summary, reason="no test ran: every one was skipped")
        failed = f"{found['failed']} failed" if found["failed"] else None
        return outcome("ok" if finished.returncode == 0 else "failed", found, summary,
                       reason=failed or (None if finished.returncode == 0 else f"pytest exited {finished.returncode}"))
    return Step(name, budget_s, 1, checks, command, collect, outputs=(report,), optional=optional)


def row_label(row: Dict) -> str:
    """A bench row's settings in words (alexnet.experiments.bench labels its plan's cases, not rows)."""
    words = [row["model"], ",".join(row["devices"]), f"b{row['batch_size']}", row["precision"], row["mode"]]
    words += [f"lrn {row['lrn_impl']}"] if row.get("lrn_impl") else []
    return " ".join(words + [word for key, word in (("channels_last", "channels_last"), ("compile", "compiled"))
                             if row.get(key)])


#: What the JSON keeps of the fastest row per model, mode and precision (the bench JSON has the rest).
BEST_KEYS = ("model", "mode", "precision", "batch_size", "lrn_impl", "channels_last", "compile")


def best_rows(rows: Sequence[Dict]) -> List[Dict]:
    """The fastest measured row per model, mode and precision."""
    best: Dict[tuple, Dict] = {}
    for row in rows:
        key = (row["model"], row["mode"], row["precision"])
        if row.get("status") == "ok" and (key not in best or row["images_per_s"]["median"]
                                          > best[key]["images_per_s"]["median"]):
            best[key] = row
    return list(best.values())


def number(value: Optional[float]) -> str:
    """images/s as a reader wants them: 41,230 on a GPU, 37.5 on a CPU."""
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def peak_bytes(row: Dict) -> Optional[int]:
    """The row's peak memory on its busiest device."""
    return max((p["bytes"] for p in (row.get("peak_memory") or {}).values() if p.get("bytes") is not None),
               default=None)


def gib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def summarise_bench(results: Dict, finished: Finished, json_name: str) -> Dict:
    rows = results["results"]
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "failed", "not run")}
    failed = [f"{row_label(r)}: {r.get('reason')}" for r in rows if r.get("status") == "failed"]
    best, targets = best_rows(rows), bench_targets.evaluate(results)
    summary = [f"`{json_name}` ({results.get('duration_s', 0):.0f} s; full report in `logs/{finished.log.name}`): "
               f"{counts['ok']} rows measured, {counts['failed']} failed, {counts['not run']} not run.",
               "", "Fastest setting per model, mode and precision:", ""]
    summary += markdown_table(("model", "mode", "precision", "images/s", "batch", "lrn", "channels_last", "compile",
                               "peak memory"), [
        (b["model"], b["mode"], b["precision"], number(b["images_per_s"]["median"]), b["batch_size"],
         b.get("lrn_impl") or "-", b.get("channels_last"), b.get("compile"), gib(peak_bytes(b))) for b in best])
    summary += ["", "Targets (tools/bench_targets.py):", ""]
    summary += markdown_table(("target", "case", "value", "needs", "status", "note"), [
        (t["name"], t["case"], bench_targets.format_value(t), f">= {t['threshold']:,g}", t["status"],
         bench_targets.note(t)) for t in targets])
    summary += ["", *(f"- failed: {f}" for f in failed)] if failed else []
    problems = [f"alexnet bench exited with status {finished.returncode}"] if finished.returncode else []
    problems += [f"{len(failed)} configuration(s) failed"] if failed else []
    problems += [] if counts["ok"] else ["no configuration was measured"]
    details = {"json": json_name, "duration_s": results.get("duration_s"), "rows": counts, "failed_rows": failed,
               "best": [{**{k: b.get(k) for k in BEST_KEYS}, "images_per_s": b["images_per_s"]["median"],
                         "peak_memory_bytes": peak_bytes(b)} for b in best],
               "targets": targets}
    return outcome("failed" if problems else "ok", details, summary, reason="; ".join(problems) or None)


def summarise_loaders(results: Dict, finished: Finished, json_name: str) -> Dict:
    e2e, loaders = results.get("end_to_end") or {}, results.get("loaders") or {}
    details = {"json": json_name, "end_to_end": e2e, "loaders": loaders}
    if e2e.get("status") != "ok":
        why = f"end to end {e2e.get('status')}: {e2e.get('reason')}"
        return outcome("failed", details, [why], reason=why)
    summary = [f"Training from the real loader ({e2e['workers']} workers, batch {e2e['batch_size']}, "
               f"{e2e['precision']}) against the same net on a batch already on the GPU:", ""]
    summary += markdown_table(("what", "images/s"), [
        ("training fed by the loader", number(e2e["train_images_per_s"])),
        ("training on a synthetic batch (the model alone)", number(e2e.get("synthetic_train_images_per_s"))),
        ("loader and augmentation alone", number(e2e["loader_images_per_s"]))])
    summary += ["", f"Verdict: {e2e['verdict']}."]
    if loaders.get("status") == "ok":
        summary += ["", "Loader paths, one process (images per second of one core):", ""]
        summary += markdown_table(("path", "images/s", "note"), [
            (r["path"], number(r.get("images_per_second")), r.get("note", "")) for r in loaders["rows"]])
    return outcome("ok" if finished.returncode == 0 else "failed", details, summary,
                   reason=None if finished.returncode == 0 else f"alexnet bench exited {finished.returncode}")


def bench_step(name: str, budget_s: float, checks: str, json_name: str, args: Sequence[str],
               summarise: Callable[[Dict, Finished, str], Dict] = summarise_bench) -> Step:
    def command(check: Check) -> List[str]:
        return python_command("-m", "alexnet", "bench", *BENCH_TIMING, *args, "--json", str(check.path(json_name)))

    def collect(check: Check, finished: Finished) -> Dict:
        if finished.timed_out or not check.path(json_name).exists():
            return missing(finished, "alexnet bench")
        return summarise(json.loads(check.path(json_name).read_text()), finished, json_name)
    return Step(name, budget_s, 1, checks, command, collect, outputs=(json_name,))


def collect_train(check: Check, finished: Finished) -> Dict:
    run = RunFolder(check.path("train-run"))
    records = run.read_metrics()
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    summary_path = run.path / "summary.json"
    result = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if run.curves_path.exists():
        shutil.copyfile(run.curves_path, check.path("train-curves.png"))
    # The checkpoints (61 M weights and their momentum, twice: about a gigabyte) are not results.
    checkpoints = run.path / "checkpoints"
    freed = sum(f.stat().st_size for f in checkpoints.rglob("*") if f.is_file()) if checkpoints.is_dir() else None
    shutil.rmtree(checkpoints, ignore_errors=True)
    rates = [r["images_per_second"] for r in steps]
    details = {"run": "train-run", "checkpoints_deleted_bytes": freed,
               "loss_curve": [{"step": r["step"], "loss": r["loss"], "error": r["error"]} for r in steps],
               "images_per_second_median": statistics.median(rates) if rates else None, "epochs": epochs,
               "final": next((r for r in records if r.get("kind") == "final"), None), "summary": result}
    summary = train_lines(details, steps, epochs)
    if finished.timed_out:
        return outcome("timed out", details, summary)
    if finished.returncode != 0:
        return {**missing(finished, "alexnet train"), "details": details}
    if result is None or "final_centre_crop" not in result:
        return outcome("failed", details, summary,
                       reason="the run ended without its final validation (no summary.json with final_centre_crop)")
    accuracy, chance = 1 - result["final_centre_crop"]["top1_error"], 1 - result["chance_top1_error"]
    details.update(val_accuracy=accuracy, chance_accuracy=chance)
    learned = accuracy >= LEARNED_OVER_CHANCE * chance
    return outcome("ok" if learned else "failed", details, summary, reason=None if learned else
                   f"validation accuracy {accuracy:.1%} is below {LEARNED_OVER_CHANCE:g}x chance")


def train_lines(details: Dict, steps: Sequence[Dict], epochs: Sequence[Dict]) -> List[str]:
    lines = []
    if steps:
        every = max(1, len(steps) // 8)
        shown = list(steps[::every]) + ([steps[-1]] if (len(steps) - 1) % every else [])
        lines += ["Training loss (every few logged steps; all of them in the JSON):", ""]
        lines += markdown_table(("step", "loss", "error", "images/s"), [
            (r["step"], f"{r['loss']:.3f}", f"{r['error']:.1%}", number(r["images_per_second"])) for r in shown])
        lines += ["", f"Median images/s over the logged steps (loader included): "
                      f"{number(details['images_per_second_median'])}."]
    if epochs:
        lines += ["", *markdown_table(("epoch", "train loss", "val loss", "val top-1 error", "val top-5 error", "lr"), [
            (r["epoch"], f"{r['train_loss']:.3f}", f"{r['val_loss']:.3f}", f"{r['val_top1_error']:.1%}",
             f"{r['val_top5_error']:.1%}", f"{r['lr']:g}") for r in epochs])]
    run = details.get("summary") or {}
    lines.append("")
    for key, label in (("final_centre_crop", "centre crop"), ("final_ten_crop", "ten crops")):
        if key in run:
            lines.append(f"- final validation accuracy, {label}: {1 - run[key]['top1_error']:.1%} "
                         f"(chance {1 - run['chance_top1_error']:.1%})")
    return lines + ["", "![training curves](train-curves.png)"]


#: The steps, in running order: cheapest and most important first. The budgets add up to
#: under LIMIT_S; the rest is slack for stopping a step that overruns. bench-compile runs after
#: training: torch.compile is the costliest and likeliest step to overrun.
STEPS = (
    # In a subprocess, as every step: this process never initialises CUDA.
    Step("environment", 20, 0, "GPU names, driver, CUDA, cuDNN, torch and torchvision versions",
         lambda check: python_command(str(THIS), "--environment", str(check.path("environment.json"))),
         collect_environment, outputs=("environment.json",)),
    pytest_step("gpu-tests", 100, "pytest -m gpu (tests/model/test_gpu.py): towers on cuda:0,cpu, cuda:0,cuda:0 and "
                "cuda:0,cuda:1 and grouped on cuda:0 against the grouped net on the CPU in float64 (logits, every "
                "gradient), the exchange byte counters, bf16 and fp16 autocast against fp32 with the LRN in fp32",
                "gpu"),
    bench_step("bench", 110, "alexnet bench on cuda:0: towers, grouped and torchvision's alexnet, train and inference, "
               "batch 128 and 256, fp32 and bf16, channels_last both, LRN both; targets", "bench.json",
               ("--models", "towers,grouped,torchvision", "--modes", "train,inference", "-b", "128,256", "--precision",
                "fp32,bf16", "--channels-last", "both", "--compile", "off", "--lrn-impl", "both", "--no-loaders")),
    Step("train", 90, 1, "alexnet train on the built-in dataset, the built-in recipe in full: loss curve and validation accuracy",
         lambda check: python_command("-m", "alexnet", "train", *TRAIN_ARGS, "--out", str(check.path("train-run"))),
         collect_train, outputs=("train-run", "train-curves.png")),
    # The training run's batch (the built-in recipe's 32) and precision (bf16: --amp auto on a GPU).
    bench_step("loaders", 50, "alexnet bench --loaders at the training batch: the loader's images/s beside the "
               "model's", "bench-loaders.json",
               ("--models", "grouped", "--modes", "train", "-b", "32", "--precision", "bf16", "--lrn-impl", "fast",
                "--no-lrn-bench", "--profile", "none", "--loaders"), summarise_loaders),
    # One compiled configuration beside its eager twin: the one the 40,000 images/s target names.
    bench_step("bench-compile", 75, "alexnet bench with torch.compile: grouped, fast LRN, bf16, batch 256, eager and "
               "compiled; targets", "bench-compile.json",
               ("--models", "grouped", "--modes", "train", "-b", "256", "--precision", "bf16", "--channels-last",
                "off", "--compile", "both", "--lrn-impl", "fast", "--no-lrn-bench", "--profile", "none",
                "--no-loaders")),
    # Needs a GPU only in that it is worth its time on the GPU machine; elsewhere run pytest.
    pytest_step("cpu-tests", 10, "pytest -m 'not gpu': the CPU tests, in whatever time the steps before left",
                "not gpu", optional=True),
)


def budget_s() -> float:
    return sum(step.budget_s for step in STEPS)


# == the report ===========================================================================

def report(check: Check, argv: Sequence[str], finished: bool) -> Dict:
    environment = next((s for s in check.steps if s["name"] == "environment" and s["status"] == "ok"), None)
    return {"schema": SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": ["python", "tools/gpu_check.py", *argv], "dry_run": check.dry_run,
            "only": list(check.only) if check.only is not None else None, "limit_s": LIMIT_S,
            "budget_s": budget_s() * check.scale, "budget_scale": check.scale,
            "duration_s": time.monotonic() - check.started, "finished": finished, "git": check.git,
            "environment": environment["details"] if environment else None, "steps": check.steps}


def summary_markdown(data: Dict) -> str:
    env = data["environment"] or {}
    cuda, git = env.get("cuda") or {}, data["git"]
    gpus = ", ".join(f"{g['name']} ({g['memory_bytes'] / 2**30:.0f} GiB, capability {g['capability']})"
                     for g in cuda.get("devices", [])) or "none visible"
    changed = len(git.get("modified_files") or [])
    commit = (f"`{git['commit'][:12]}`, " + (f"tree modified ({changed} tracked files; listed in gpu_check.json)"
                                             if changed else "tree clean")) if git.get("commit") else git.get("reason")
    lines = [f"# GPU check{' (dry run)' if data['dry_run'] else ''}: {gpus}", "",
             f"{data['created']}, `{shlex.join(data['command'])}`"
             + ("" if data["finished"] else " (still running, or stopped before the end)"), ""]
    lines += markdown_table(("", ""), [
        ("GPUs", gpus), ("driver", env.get("driver") or "-"), ("CUDA (torch build)", cuda.get("version") or "-"),
        ("cuDNN", cuda.get("cudnn") or "-"), ("torch", env.get("torch", "-")),
        ("torchvision", env.get("torchvision", "-")), ("python", env.get("python", "-")), ("commit", commit),
        ("time", f"{data['duration_s']:.0f} s of the {data['budget_s']:.0f} s budget (limit {data['limit_s']} s)")])
    lines += ["", "## Steps", "", *markdown_table(("step", "budget s", "time s", "status", "note"), [
        (s["name"], f"{s['budget_s']:.0f}", f"{s['seconds']:.1f}", s["status"], s.get("reason", ""))
        for s in data["steps"]])]
    for s in data["steps"]:
        if s["status"] != "skipped" and s.get("summary"):
            lines += ["", f"## {s['name']}: {s['status']}", "", f"{s['checks']}.", "", *s["summary"]]
    if data["dry_run"]:
        lines += ["", "## What each step would run", ""]
        lines += [f"- {s['name']} ({s['budget_s']:.0f} s): `{s['command']}`" for s in data["steps"]]
    return "\n".join(lines) + "\n"


def save(check: Check, argv: Sequence[str], finished: bool = False) -> None:
    data = report(check, argv, finished)
    write_json(check.path("gpu_check.json"), data)
    check.path("summary.md").write_text(summary_markdown(data))


# == the command line ======================================================================

def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    names = [s.name for s in STEPS]
    parser = argparse.ArgumentParser(
        description="Everything that needs real CUDA devices, in one run that fits a short GPU window "
                    f"({len(STEPS)} steps, {budget_s():.0f} s of budgets). See docs/gpu.md.")
    parser.add_argument("out", nargs="?", default="gpu-check", help="where results go (default: gpu-check/)")
    parser.add_argument("--dry-run", action="store_true",
                        help="walk through every step without running it: what would run, with its budget, "
                             "or why it would be skipped here; still writes the JSON and the summary")
    parser.add_argument("--only", metavar="STEP[,STEP]",
                        help=f"run only these steps (the environment always runs): {', '.join(names)}")
    parser.add_argument("--budget-scale", type=float, default=1.0, metavar="X",
                        help="multiply every time budget by X (e.g. 2 on a GPU slower than an H100)")
    parser.add_argument("--environment", metavar="PATH", help=argparse.SUPPRESS)  # the environment step
    args = parser.parse_args(argv)
    if args.only is not None:
        args.only = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in args.only if s not in names]
        if unknown or not args.only:
            parser.exit(2, f"gpu_check: --only: unknown step {', '.join(unknown) or '(none given)'}; "
                           f"steps: {', '.join(names)}\n")
    if not args.budget_scale > 0:
        parser.exit(2, f"gpu_check: --budget-scale must be positive; got {args.budget_scale}\n")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.environment:
        return write_environment(Path(args.environment))
    out = Path(args.out).resolve()  # the steps run from the repository root
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"gpu_check: cannot create {out}: {error.strerror}", file=sys.stderr)
        return 2
    check = Check(out=out, dry_run=args.dry_run, only=args.only, scale=args.budget_scale, git=git_state(REPO))
    print(f"[gpu-check] {len(STEPS)} steps, {budget_s() * check.scale:.0f} s of budgets"
          f"{' (dry run)' if check.dry_run else ''}; results in {out}/", flush=True)
    try:
        for index, step in enumerate(STEPS, 1):
            check.steps.append(run_step(step, check, f"{index}/{len(STEPS)}"))
            save(check, argv)
    except KeyboardInterrupt:
        save(check, argv)
        print(f"[gpu-check] interrupted; what was measured is in {out}/", flush=True)
        return 130
    save(check, argv, finished=True)
    return finish(check)


def finish(check: Check) -> int:
    """One line of counts; the exit status: 0 when nothing failed and (outside a dry run)
    the GPU steps ran."""
    counts = {s: sum(step["status"] == s for step in check.steps) for s in ("ok", "failed", "timed out", "skipped")}
    print(f"[gpu-check] done in {time.monotonic() - check.started:.0f} s: "
          + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; see {check.path('summary.md')}", flush=True)
    if any(step["status"] == "failed" or (step["status"] == "timed out" and not step["optional"])
           for step in check.steps):
        return 1
    if not check.dry_run and not any(step["status"] == "ok" and step["gpus_needed"] for step in check.steps):
        print("[gpu-check] no step ran on a GPU: this check is for a machine with CUDA GPUs", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
