"""Everything that needs real CUDA devices, in one command that fits a short GPU window (docs/gpu.md):
pytest's GPU tests and ``alexnet bench``, each in a subprocess within its budget (a CUDA crash or a
hang costs its step only). ``summary.md``, rewritten after every step with ``gpu_check.json``, keeps
their own reports: pytest's output (the tests print what they measured), the bench's and its targets'."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

THIS = Path(__file__).resolve()
REPO = THIS.parent.parent
sys.path[:0] = [p for p in (str(REPO / "src"), str(THIS.parent)) if p not in sys.path]

import bench_targets  # noqa: E402
from alexnet.experiments.bench.tables import format_bench_report  # noqa: E402
from alexnet.devices import cuda_count  # noqa: E402
from alexnet.files import write_json  # noqa: E402
from alexnet.machine import describe, git_state  # noqa: E402
from alexnet.tables import markdown_table  # noqa: E402

LIMIT_S = 480  # issue 14: the whole check in under 8 minutes on one GPU
MIN_STEP_S = 10  # a step is not started with less time than this left
STOP_GRACE_S = 5  # after SIGINT at its timeout (pytest still prints its report), then SIGKILL
SCHEMA = "alexnet-gpu-check/4"
TAIL_LINES = 15
#: 3 warm-up steps and 3 timed blocks of 10 steps per bench case, sized to the budgets.
BENCH = ("-m", "alexnet", "bench", "--devices", "0", "--warmup", "3", "--steps", "10", "--repeats", "3")
#: The training run: a GPU test of its own (the built-in recipe in full learns to at least twice chance).
TRAIN_TEST = "tests/model/test_gpu.py::test_the_builtin_recipe_learns_on_a_gpu"


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: float  # its timeout
    gpus: int  # CUDA devices it needs (skipped, with why, on fewer)
    args: Sequence[str]  # after the Python interpreter; "{out}" in them is the results folder
    #: (check, exit status or None when stopped, log) -> status, reason, summary; None: no results.
    collect: Callable[["Check", Optional[int], Path], Optional[Dict]]
    outputs: Sequence[str] = ()  # removed before it runs: an earlier run's results never pass for this one's
    optional: bool = False  # runs in whatever time is left; running out of it is no failure


@dataclass
class Check:
    out: Path
    dry_run: bool = False
    only: Optional[Sequence[str]] = None
    scale: float = 1.0
    started: float = field(default_factory=time.monotonic)
    environment: Dict = field(default_factory=dict)  # what the environment step found: GPUs, versions
    steps: List[Dict] = field(default_factory=list)
    git: Dict = field(default_factory=lambda: git_state(REPO))

    def left_s(self) -> float:
        return BUDGET_S * self.scale - (time.monotonic() - self.started)

    def timeout_s(self, step: Step) -> float:
        return self.left_s() if step.optional else min(step.budget_s * self.scale, self.left_s())


def run_command(command: Sequence[str], timeout: float, log: Path) -> Optional[int]:
    """The exit status of ``command`` (output into ``log``), or None when stopped at ``timeout``: in
    its own session, so that stopping it (SIGINT, for pytest's report; then SIGKILL) stops all it started."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p))
    with open(log, "w") as handle:
        print(f"$ {shlex.join(command)}", file=handle, flush=True)
        process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return process.wait(timeout=timeout)
        except BaseException as error:
            for sig in (signal.SIGINT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(process.pid, sig)
                    process.wait(timeout=STOP_GRACE_S)
                    break
            if not isinstance(error, subprocess.TimeoutExpired):
                raise
            return None


def why_skip(step: Step, check: Check) -> Optional[str]:
    if check.only is not None and step.name not in check.only and step.name != "environment":
        return "not selected by --only"
    if step.gpus > check.environment.get("gpu_count", step.gpus):  # unknown before the environment step
        return f"{check.environment['gpu_count']} CUDA GPU(s) visible; the step needs {step.gpus}"
    if check.dry_run and step.name != "environment":
        return f"dry run: would run within {step.budget_s * check.scale:.0f} s"
    if check.timeout_s(step) < MIN_STEP_S:
        return f"out of time: {max(check.left_s(), 0):.0f} s left of the {BUDGET_S * check.scale:.0f} s budget"
    return None


def run_step(step: Step, check: Check, position: str) -> Dict:
    """One step, guarded: whatever goes wrong in it (or in reading its results) is its failure."""
    command = [sys.executable, *(arg.replace("{out}", str(check.out)) for arg in step.args)]
    record = {"name": step.name, "budget_s": step.budget_s * check.scale,
              "gpus_needed": step.gpus, "optional": step.optional, "command": shlex.join(command)}
    reason = why_skip(step, check)
    if reason:
        print(f"[gpu-check] {position} {step.name}: skipped ({reason}): {record['command']}", flush=True)
        return {**record, "status": "skipped", "reason": reason, "summary": [], "seconds": 0.0}
    timeout, log, start = check.timeout_s(step), check.out / "logs" / f"{step.name}.log", time.monotonic()
    print(f"[gpu-check] {position} {step.name}: started (budget {timeout:.0f} s)", flush=True)
    for path in (check.out / output for output in step.outputs):
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    try:
        code = run_command(command, timeout, log)  # its exit status, None when stopped
        found = step.collect(check, code, log) or {"status": "failed", "reason": f"exit status {code}; no results"}
        if code is None:
            found.update(status="timed out", reason=f"stopped after {timeout:.0f} s (its budget)")
    except Exception as error:  # noqa: BLE001 - a bug in one step must not cost the others
        found = {"status": "failed", "reason": f"the check itself failed: {type(error).__name__}: {error}"}
    if found["status"] != "ok" and not found.get("summary"):
        last = log.read_text(errors="replace").rstrip().splitlines()[-TAIL_LINES:] if log.exists() else []
        found["summary"] = [f"The last lines of `logs/{log.name}`:", "", "```", *last, "```"]
    record.update({"reason": None, "summary": [], **found}, seconds=time.monotonic() - start, log=f"logs/{log.name}")
    note = f": {record['reason']}" if record["reason"] else ""
    print(f"[gpu-check] {position} {step.name}: {record['status']} in {record['seconds']:.1f} s{note}", flush=True)
    return record


def write_environment(path: Path) -> int:
    """The environment step (``--environment PATH``): ``alexnet.machine.describe`` with the driver."""
    found = describe([(0, 1), (1, 0)] if cuda_count() >= 2 else [])
    smi = shutil.which("nvidia-smi")
    query = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=15) if smi else None
    write_json(path, {**found, "gpu_count": len(found["cuda"]["devices"]),
                      "driver": query.stdout.split()[0] if query and query.stdout.split() else None,
                      "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")})
    return 0


def collect_environment(check: Check, returncode: Optional[int], log: Path) -> Optional[Dict]:
    path = check.out / "environment.json"
    check.environment = json.loads(path.read_text()) if path.exists() else {}
    return {"status": "ok"} if check.environment else None


def pytest_step(name: str, budget_s: float, select: Sequence[str], optional=False, outputs=()) -> Step:
    """A pytest run whose status is pytest's exit status (all skipped is no pass) and whose summary
    is pytest's own output (with ``-rA``, the numbers each passed test printed)."""
    # xunit1: the JUnit family in which record_property's numbers are written without a warning.
    args = ("-m", "pytest", "-q", "--tb=short", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
            f"--junitxml={{out}}/{name}.xml", *select)

    def collect(check: Check, returncode: Optional[int], log: Path) -> Dict:
        lines = log.read_text(errors="replace").rstrip().splitlines()[1:]  # [0] is the command
        last = (lines or [""])[-1].strip("= ")  # pytest's count: "1 failed, 2 passed, 1 skipped in 3.1s"
        problem = {0: None if re.search(r"\b[1-9]\d* passed", last) else "no test ran", 1: "tests failed",
                   5: "no test was collected"}.get(returncode, f"pytest exited with status {returncode}")
        return {"status": "failed" if problem else "ok", "reason": problem and f"{problem}: {last}",
                "summary": ["```", *lines, "```"]}
    return Step(name, budget_s, 1, args, collect, outputs=(f"{name}.xml", *outputs), optional=optional)


def bench_step(name: str, budget_s: float, args: Sequence[str], needs_end_to_end=False) -> Step:
    """An ``alexnet bench`` run whose summary is the bench's own report and the targets tool's table."""
    def collect(check: Check, returncode: Optional[int], log: Path) -> Optional[Dict]:
        if returncode != 0 or not (check.out / f"{name}.json").exists():
            return None  # its last lines say why
        results = json.loads((check.out / f"{name}.json").read_text())
        statuses, e2e = [r["status"] for r in results["results"]], results["end_to_end"]
        problems = [f"{statuses.count('failed')} configuration(s) failed"] * ("failed" in statuses)
        problems += ["no configuration was measured"] * ("ok" not in statuses)
        problems += [f"end to end {e2e['status']}: {e2e.get('reason')}"] * (needs_end_to_end and e2e["status"] != "ok")
        summary = ["```", format_bench_report(results), "```", "", "Targets (tools/bench_targets.py):", "", "```",
                   bench_targets.format_table(bench_targets.evaluate(results)), "```"]
        return {"status": "failed" if problems else "ok", "reason": "; ".join(problems) or None, "summary": summary}
    return Step(name, budget_s, 1, (*BENCH, *args, "--json", f"{{out}}/{name}.json"), collect,
                outputs=(f"{name}.json",))


#: In running order (docs/gpu.md: what each checks, when it passes); budgets under LIMIT_S, the rest
#: slack for stopping a step that overruns. bench-compile runs late: compiling is likeliest to overrun.
STEPS = (
    Step("environment", 20, 0, (str(THIS), "--environment", "{out}/environment.json"), collect_environment,
         outputs=("environment.json",)),
    pytest_step("gpu-tests", 100, ("-rA", "-m", "gpu", "--deselect", TRAIN_TEST, "tests")),
    bench_step("bench", 110, ("--models", "towers,grouped,torchvision", "-b", "128,256", "--amp", "fp32,bf16",
                              "--channels-last", "both", "--lrn-impl", "both", "--no-loaders")),
    pytest_step("train", 90, ("-rA", "-m", "gpu", "--basetemp", "{out}/train-run", TRAIN_TEST), outputs=("train-run",)),
    # The training run's batch (the built-in recipe's 32) and precision (bf16: --amp auto on a GPU).
    bench_step("bench-loaders", 50, ("--models", "grouped", "--modes", "train", "-b", "32", "--amp", "bf16",
                                     "--no-lrn-bench", "--profile", "none", "--loaders"), needs_end_to_end=True),
    # One compiled configuration beside its eager twin: the one the 40,000 images/s target names.
    bench_step("bench-compile", 75, ("--models", "grouped", "--modes", "train", "-b", "256", "--amp", "bf16",
                                     "--compile", "both", "--no-lrn-bench", "--profile", "none", "--no-loaders")),
    # -rfEs: the failures and skips only, not a line for each of the hundreds of passed tests.
    pytest_step("cpu-tests", 10, ("-rfEs", "-m", "not gpu", "tests"), optional=True),
)
BUDGET_S = sum(step.budget_s for step in STEPS)


def save(check: Check, argv: Sequence[str], finished: bool = False) -> None:
    env, git, cuda = check.environment, check.git, check.environment.get("cuda") or {}
    data = {"schema": SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": ["python", "tools/gpu_check.py", *argv], "dry_run": check.dry_run, "only": check.only,
            "limit_s": LIMIT_S, "budget_s": BUDGET_S * check.scale, "duration_s": time.monotonic() - check.started,
            "finished": finished, "git": git, "environment": env or None, "steps": check.steps}
    write_json(check.out / "gpu_check.json", data)
    gpus = ", ".join(f"{g['name']} ({g['memory_bytes'] / 2**30:.0f} GiB)" for g in cuda.get("devices", [])) or "none"
    changed = len(git.get("modified_files") or [])
    commit = f"`{git['commit'][:12]}`" + (f", {changed} tracked files modified" if changed else ", tree clean") \
        if git.get("commit") else git.get("reason")
    lines = [f"# GPU check{' (dry run)' if check.dry_run else ''}: {gpus}", "",
             "What each step checks: docs/gpu.md.", "",
             f"{data['created']}, `{shlex.join(data['command'])}`{'' if finished else ' (not finished)'}; commit "
             f"{commit}; driver {env.get('driver') or '-'}, CUDA {cuda.get('version') or '-'}, cuDNN "
             f"{cuda.get('cudnn') or '-'}, torch {env.get('torch', '-')}, torchvision {env.get('torchvision', '-')}; "
             f"{data['duration_s']:.0f} s of the {data['budget_s']:.0f} s budget (limit {LIMIT_S} s).", "",
             *markdown_table(("step", "budget s", "time s", "status", "note", "command"), [
                 (s["name"], f"{s['budget_s']:.0f}", f"{s['seconds']:.1f}", s["status"], s["reason"] or "",
                  f"`{s['command']}`") for s in check.steps])]
    for s in check.steps:
        if s["summary"]:
            lines += ["", f"## {s['name']}: {s['status']}", "", *s["summary"]]
    (check.out / "summary.md").write_text("\n".join(lines) + "\n")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    names = [s.name for s in STEPS]
    parser = argparse.ArgumentParser(description=f"The GPU checks in {BUDGET_S:.0f} s of budgets; see docs/gpu.md.")
    parser.add_argument("out", nargs="?", default="gpu-check", help="where results go (default: gpu-check/)")
    parser.add_argument("--dry-run", action="store_true", help="list every step and why it would be skipped")
    parser.add_argument("--only", metavar="STEP[,STEP]", help=f"these steps (and the environment): {', '.join(names)}")
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
    check = Check(out=out, dry_run=args.dry_run, only=args.only, scale=args.budget_scale)
    print(f"[gpu-check] {len(STEPS)} steps, {BUDGET_S * check.scale:.0f} s of budgets"
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
    """0 when nothing failed and (outside a dry run) a step ran on a GPU."""
    counts = {s: sum(step["status"] == s for step in check.steps) for s in ("ok", "failed", "timed out", "skipped")}
    print(f"[gpu-check] done in {time.monotonic() - check.started:.0f} s: "
          + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; see {check.out / 'summary.md'}", flush=True)
    if any(s["status"] == "failed" or (s["status"] == "timed out" and not s["optional"]) for s in check.steps):
        return 1
    if not check.dry_run and not any(s["status"] == "ok" and s["gpus_needed"] for s in check.steps):
        print("[gpu-check] no step ran on a GPU: this check is for a machine with CUDA GPUs", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
