"""The project's speed promises, checked against one ``alexnet bench`` JSON.

The promises belong to the project, not to the library a user installs, so they live here:
``alexnet bench`` measures and records, this tool judges. Each target is computed from rows
of the same run (a ratio of two configurations measured side by side, or a throughput), and
only from rows whose settings match; anything the run did not measure is reported as "not
measured", with why and which bench options would measure it.

    python tools/bench_targets.py bench.json

prints one line per target and exits 0 whatever the targets say (a missed target is
information, not an error); it exits 2 with one line when the file cannot be read as a
bench JSON. ``tools/gpu_check.py`` runs :func:`evaluate` on each bench JSON it writes.

Only the standard library: a bench JSON from a GPU machine can be judged anywhere.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

#: The fast LRN's forward+backward against the stock one (torch's LocalResponseNorm), at
#: each of AlexNet's two LRN shapes, with lower memory.
LRN_SPEEDUP = 5.0
#: Training images/s of the grouped net (fast LRN) over torchvision.models.alexnet's, on the
#: same device with the same batch size, precision, memory format and compile setting.
GROUPED_VS_TORCHVISION = 0.90
#: images/s of the towers layout with both towers on one device over the grouped layout's,
#: same settings: the towers' bookkeeping may cost at most 5%.
TOWERS_VS_GROUPED = 0.95
#: Training images/s of the grouped net on one H100-class GPU in bf16, the best batch size
#: of the run: eager with the stock LRN, and with the fast LRN under torch.compile.
H100_EAGER_STOCK_LRN = 20_000.0
H100_COMPILED_FAST_LRN = 40_000.0

#: H100-class GPUs: "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200". Whole words
#: only, so that an A100 or an H800 does not count.
H100_CLASS = re.compile(r"\bH[12]00\b", re.IGNORECASE)

#: Settings two rows must share for their ratio to mean anything (besides the device).
SAME_SETTINGS = ("batch_size", "precision", "channels_last", "compile", "mode")

STATUSES = ("met", "missed", "not measured")


# -- building target records --------------------------------------------------------------

def _measured(name: str, case: str, description: str, threshold: float, value: float, met: bool,
              matched_on: Dict, **extra) -> Dict:
    return {"name": name, "case": case, "description": description, "threshold": threshold, "value": value,
            "status": "met" if met else "missed", "matched_on": matched_on, **extra}


def _not_measured(name: str, case: str, description: str, threshold: float, reason: str,
                  measure_with: str, matched_on: Optional[Dict] = None) -> Dict:
    return {"name": name, "case": case, "description": description, "threshold": threshold, "value": None,
            "status": "not measured", "reason": reason, "measure_with": measure_with,
            "matched_on": matched_on or {}}


def _ok(row: Optional[Dict]) -> bool:
    return row is not None and row.get("status") == "ok"


def _why_unusable(row: Optional[Dict], what: str) -> Optional[str]:
    """None when ``row`` was measured; else why it cannot be used, naming it."""
    if row is None:
        return f"the run has no {what} row"
    if row.get("status") != "ok":
        return f"the {what} row is {row.get('status')}: {row.get('reason')}"
    return None


def _one(rows: Iterable[Dict], **want) -> Optional[Dict]:
    """The first row whose fields equal ``want``, measured or not (a row that did not run
    still tells why)."""
    found = None
    for row in rows:
        if all(row.get(k) == v for k, v in want.items()):
            if _ok(row):
                return row
            found = found or row
    return found


def _case(row: Dict, devices: Optional[Sequence[str]] = None) -> str:
    """A row's settings in a few words: "train b128 bf16 channels_last compiled on cuda:0"."""
    words = [row.get("mode", "?"), f"b{row.get('batch_size', '?')}", row.get("precision", "?")]
    if row.get("channels_last"):
        words.append("channels_last")
    if row.get("compile"):
        words.append("compiled")
    return " ".join(words) + " on " + ",".join(devices or row.get("devices") or ["?"])


# -- the targets --------------------------------------------------------------------------

LRN_DESCRIPTION = (f"fast LRN forward+backward at least {LRN_SPEEDUP:g}x faster than the stock one at "
                   "the same shape, with lower memory")
LRN_OPTIONS = "alexnet bench --lrn-bench (the default), on the device to judge"


def lrn_targets(lrn_rows: Sequence[Dict]) -> List[Dict]:
    """One target per LRN shape the run measured (AlexNet has two: after conv1 and conv2)."""
    shapes = list(dict.fromkeys(tuple(r["shape"]) for r in lrn_rows if "shape" in r))
    if not shapes:
        return [_not_measured("lrn", "both LRN shapes", LRN_DESCRIPTION, LRN_SPEEDUP,
                              "the run has no LRN section", LRN_OPTIONS)]
    return [_lrn_target(lrn_rows, list(shape)) for shape in shapes]


def _lrn_target(lrn_rows: Sequence[Dict], shape: List[int]) -> Dict:
    fast, stock = (_one(lrn_rows, impl=impl, shape=shape) for impl in ("fast", "stock"))
    device = (fast or stock or {}).get("device", "?")
    case = f"{'x'.join(map(str, shape))} on {device}"
    matched_on = {"shape": shape, "device": device}
    problem = _why_unusable(fast, "fast LRN") or _why_unusable(stock, "stock LRN")
    if problem is None and "speedup_vs_stock" not in fast:
        problem = "the fast LRN row has no speed-up recorded"
    if problem:
        return _not_measured("lrn", case, LRN_DESCRIPTION, LRN_SPEEDUP, problem, LRN_OPTIONS, matched_on)
    basis, fast_bytes, stock_bytes = lrn_memory(fast, stock)
    speedup = fast["speedup_vs_stock"]
    lower = fast_bytes < stock_bytes
    met = speedup >= LRN_SPEEDUP and lower
    extra = {"lower_memory": lower, "memory_basis": basis, "memory_bytes": {"fast": fast_bytes, "stock": stock_bytes}}
    if not met:
        extra["reason"] = "; ".join(
            ([f"speed-up {speedup:.2f}x is below {LRN_SPEEDUP:g}x"] if speedup < LRN_SPEEDUP else [])
            + ([f"memory ({basis}) is not lower: {fast_bytes:,} vs {stock_bytes:,} bytes"] if not lower else []))
    return _measured("lrn", case, LRN_DESCRIPTION, LRN_SPEEDUP, speedup, met, matched_on, **extra)


def lrn_memory(fast: Dict, stock: Dict):
    """(basis, fast bytes, stock bytes): peak memory where both rows measured it, else the
    bytes autograd keeps for backward (a CPU's peak-RSS increase reads 0 when the allocator
    reuses memory, as it does at small batches)."""
    peaks = [(row.get("peak_memory") or {}).get("bytes") for row in (fast, stock)]
    if all(peaks):
        return "peak", peaks[0], peaks[1]
    return "saved_for_backward", fast["saved_for_backward_bytes"], stock["saved_for_backward_bytes"]


def ratio(numerator: Dict, denominator: Dict) -> Dict:
    """The ratio of the two rows' median images/s, and beside it the ratio within each round
    (blocks run seconds apart), whose median moves less on a machine whose speed drifts."""
    value = numerator["images_per_s"]["median"] / denominator["images_per_s"]["median"]
    rounds = [a / b for a, b in zip(_per_round(numerator), _per_round(denominator))]
    return {"value": value, "per_round": rounds, "per_round_median": statistics.median(rounds) if rounds else None}


def _per_round(row: Dict) -> List[float]:
    return [row["batch_size"] / (ms / 1e3) for ms in row["ms_per_step"].get("all", [])]


GVT_DESCRIPTION = (f"training images/s of the grouped net (fast LRN) at least {GROUPED_VS_TORCHVISION:g}x "
                   "torchvision.models.alexnet's, same device and settings")
GVT_OPTIONS = "alexnet bench --models grouped,torchvision --modes train --lrn-impl fast (or both)"


def grouped_vs_torchvision(rows: Sequence[Dict]) -> List[Dict]:
    """One target per torchvision training row measured, against the grouped row with the
    fast LRN at exactly its device and settings."""
    references = [r for r in rows if r.get("model") == "torchvision" and r.get("mode") == "train"]
    measured = [r for r in references if _ok(r)]
    if not measured:
        reason = _why_unusable(references[0] if references else None, "torchvision training")
        return [_not_measured("grouped_vs_torchvision", "training", GVT_DESCRIPTION, GROUPED_VS_TORCHVISION,
                              reason, GVT_OPTIONS)]
    targets = []
    for reference in measured:
        settings = {k: reference.get(k) for k in SAME_SETTINGS}
        matched_on = {**settings, "devices": reference["devices"], "lrn_impl": "fast"}
        grouped = _one(rows, model="grouped", lrn_impl="fast", devices=reference["devices"], **settings)
        targets.append(_ratio_target("grouped_vs_torchvision", _case(reference), GVT_DESCRIPTION,
                                     GROUPED_VS_TORCHVISION, grouped, "grouped (fast LRN)", reference,
                                     matched_on, GVT_OPTIONS))
    return targets


TVG_DESCRIPTION = (f"images/s of the towers layout with both towers on one device at least "
                   f"{TOWERS_VS_GROUPED:g}x the grouped layout's, same settings")
TVG_OPTIONS = "alexnet bench --models towers,grouped --devices DEVICE (one device: both towers on it)"


def towers_vs_grouped(rows: Sequence[Dict]) -> List[Dict]:
    """One target per measured grouped row that has a towers row with both towers on its
    device, at the same settings and LRN implementation."""
    targets = []
    for grouped in (r for r in rows if r.get("model") == "grouped" and _ok(r)):
        settings = {k: grouped.get(k) for k in SAME_SETTINGS + ("lrn_impl",)}
        one_device = [grouped["devices"][0]] * 2
        towers = _one(rows, model="towers", devices=one_device, **settings)
        if towers is not None:
            case = _case(grouped, one_device) + f" lrn {grouped.get('lrn_impl')}"
            targets.append(_ratio_target("towers_vs_grouped", case, TVG_DESCRIPTION, TOWERS_VS_GROUPED, towers,
                                         "towers (one device)", grouped, {**settings, "devices": one_device},
                                         TVG_OPTIONS))
    if not targets:
        targets.append(_not_measured("towers_vs_grouped", "any", TVG_DESCRIPTION, TOWERS_VS_GROUPED,
                                     "no measured grouped row has a towers row with both towers on its device",
                                     TVG_OPTIONS))
    return targets


def _ratio_target(name, case, description, threshold, numerator, numerator_label, denominator, matched_on,
                  options) -> Dict:
    problem = _why_unusable(numerator, numerator_label)
    if problem:
        return _not_measured(name, case, description, threshold, problem, options, matched_on)
    measured = ratio(numerator, denominator)
    value = measured.pop("value")
    return _measured(name, case, description, threshold, value, value >= threshold, matched_on, **measured)


#: (name, threshold, LRN implementation, compiled)
H100_TARGETS = (
    ("h100_bf16_eager_stock_lrn", H100_EAGER_STOCK_LRN, "stock", False),
    ("h100_bf16_compiled_fast_lrn", H100_COMPILED_FAST_LRN, "fast", True),
)


def h100_targets(rows: Sequence[Dict], environment: Dict) -> List[Dict]:
    """The two throughput targets on one H100-class GPU (the best batch size counts)."""
    return [_h100_target(rows, environment, *spec) for spec in H100_TARGETS]


def _h100_target(rows, environment, name, threshold, impl, compiled) -> Dict:
    how = "compiled" if compiled else "eager"
    description = (f"training images/s of the grouped net on one H100 or H200 in bf16, {impl} LRN, {how}, "
                   f"best batch size of the run: at least {threshold:,.0f}")
    case = f"train bf16 lrn {impl} {how}"
    options = (f"alexnet bench --devices 0 --models grouped --modes train --amp bf16 "
               f"--lrn-impl {impl} --compile {'on' if compiled else 'off'}, on an H100 or H200")
    candidates = [r for r in rows if r.get("model") == "grouped" and r.get("mode") == "train"
                  and r.get("precision") == "bf16" and r.get("lrn_impl") == impl
                  and bool(r.get("compile")) == compiled]
    ran = [r for r in candidates if _ok(r)]
    measured = [r for r in ran if is_h100_class(device_name(r, environment))]
    if not measured:
        if not candidates:
            reason = f"the run has no grouped bf16 training row with the {impl} LRN, {how}"
        elif not ran:
            reason = _why_unusable(candidates[0], f"grouped bf16 training ({impl} LRN, {how})")
        else:
            names = sorted({device_name(r, environment) for r in ran})
            reason = f"not on an H100-class GPU (this run: {', '.join(names)})"
        return _not_measured(name, case, description, threshold, reason, options)
    best = max(measured, key=lambda r: r["images_per_s"]["median"])
    value = best["images_per_s"]["median"]
    return _measured(name, _case(best), description, threshold, value, value >= threshold,
                     {**{k: best.get(k) for k in SAME_SETTINGS + ("lrn_impl",)}, "devices": best["devices"]},
                     device_name=device_name(best, environment))


def device_name(row: Dict, environment: Dict) -> str:
    """The name of the row's first device: the row's own ``device_names``, else the GPU of
    that index in the environment, else the device string ("cpu", "cuda:3")."""
    names = row.get("device_names") or []
    if names and names[0]:
        return names[0]
    device = (row.get("devices") or ["?"])[0]
    gpus = ((environment or {}).get("cuda") or {}).get("devices") or []
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match:
        index = int(match.group(1) or 0)
        for position, gpu in enumerate(gpus):
            if gpu.get("index", position) == index:
                return gpu.get("name", device)
    return device


def is_h100_class(name: Optional[str]) -> bool:
    return bool(name) and H100_CLASS.search(name) is not None


# -- the whole file -----------------------------------------------------------------------

def evaluate(results: Dict) -> List[Dict]:
    """Every target, from the rows of one bench JSON (``alexnet bench --json``): a list of
    dicts with name, case, description, threshold, value, status ("met", "missed" or "not
    measured"), matched_on, and where it applies reason and measure_with."""
    rows = results.get("results") or []
    return [*lrn_targets(results.get("lrn") or []), *grouped_vs_torchvision(rows), *towers_vs_grouped(rows),
            *h100_targets(rows, results.get("environment") or {})]


def load(path) -> Dict:
    """A bench JSON, or ValueError with one line saying what is wrong with the file."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read it ({error})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from None
    if not isinstance(results, dict) or not isinstance(results.get("results"), list):
        raise ValueError(f"{path}: not an alexnet bench JSON (no 'results' list; write one with "
                         "alexnet bench --json PATH)")
    return results


def format_value(target: Dict) -> str:
    value = target["value"]
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.2f}"


def format_table(targets: Sequence[Dict]) -> str:
    """One line per target: name, case, value, threshold, status and a note."""
    header = ("target", "case", "value", "needs", "status", "note")
    lines = [(t["name"], t["case"], format_value(t), f">= {t['threshold']:,g}", t["status"], note(t))
             for t in targets]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in [header, *lines])


def note(target: Dict) -> str:
    """Why a target was not measured, or what to read beside its value."""
    if target["status"] == "not measured":
        return f"{target['reason']} (measure with: {target['measure_with']})"
    parts = []
    if target.get("per_round_median") is not None:
        parts.append(f"per round {target['per_round_median']:.2f}")
    if "lower_memory" in target:
        parts.append(f"lower memory ({target['memory_basis']}): {'yes' if target['lower_memory'] else 'no'}")
    if target.get("device_name"):
        parts.append(target["device_name"])
    if target["status"] == "missed" and target.get("reason"):
        parts.append(target["reason"])
    return "; ".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Check the project's speed targets against one bench JSON "
                                                 "(alexnet bench --json PATH).")
    parser.add_argument("bench_json", help="a JSON written by alexnet bench")
    args = parser.parse_args(argv)
    try:
        results = load(args.bench_json)
    except ValueError as error:
        print(f"bench_targets: {error}", file=sys.stderr)
        return 2
    targets = evaluate(results)
    print(format_table(targets))
    counts = {s: sum(t["status"] == s for t in targets) for s in STATUSES}
    print("\n" + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
