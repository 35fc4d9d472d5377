"""The benchmark's results (the dict :func:`alexnet.experiments.bench.run_benchmark` returns)
as plain-text tables."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from ...tables import plain_table
from .loaders import format_throughput


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_spread(s: Dict[str, float], digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def _load(values) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "-"


def _devices(devices: Sequence[str]) -> str:
    return ",".join(devices)


def _memory(row) -> str:
    peaks = row.get("peak_memory") or {}
    parts = []
    for device, entry in peaks.items():
        tag = "rss" if entry["method"].startswith("process") else ""
        value = fmt_bytes(entry["bytes"]) + (f" ({tag})" if tag and entry["bytes"] is not None else "")
        parts.append(value if len(peaks) == 1 else f"{device} {value}")
    return "; ".join(parts) or "-"


def _traffic(row) -> str:
    t = row.get("traffic") or {}
    if not t.get("counted"):
        return "-"
    return fmt_bytes(t["handed_over_bytes_per_image"]) + (
        f" ({fmt_bytes(t['crossed_devices_bytes_per_image'])} crossed)" if t["crossed_devices_bytes_per_image"] else "")


def results_table(results) -> List[str]:
    header = ("model", "devices", "lrn", "batch", "prec", "chlast", "compile", "mode", "ms/step median [min-max]",
              "img/s", "TFLOP/s", "of mm", "peak memory", "handed over/img")
    right = (False, False, False, True, False, False, False, False, True, True, True, True, True, True)
    rows, notes = [], []
    for r in results["results"]:
        settings = (r["model"], _devices(r["devices"]), r["lrn_impl"] or "-", r["batch_size"], r["precision"],
                    "on" if r["channels_last"] else "off", "on" if r["compile"] else "off", r["mode"])
        if r["status"] != "ok":
            rows.append(settings + (r["status"], "", "", "", "", ""))
            notes.append(f"{r['status']}: {r['model']} on {_devices(r['devices'])} b{r['batch_size']} "
                         f"{r['precision']} {r['mode']}: {r['reason']}")
            continue
        frac = r["fraction_of_matmul"]
        rows.append(settings + (fmt_spread(r["ms_per_step"]), f"{r['images_per_s']['median']:.1f}",
                                f"{r['achieved_tflops']:.3f}", f"{frac:.0%}" if frac is not None else "-",
                                _memory(r), _traffic(r)))
        if r.get("peer_access") is not None:
            notes.append(f"peer access {_devices(r['devices'])}: {'enabled' if r['peer_access'] else 'not available'}")
    return plain_table(header, rows, right) + ([""] + list(dict.fromkeys(notes)) if notes else [])


def matmul_table(results) -> List[str]:
    rows = []
    for m in results["matmul"]:
        if "tflops" in m:
            rows.append((m["device"], m["dtype"], f"{m['size']}x{m['size']}", fmt_spread(m["tflops"], 3)))
        else:
            rows.append((m["device"], m["dtype"], "-", f"failed: {m.get('reason', '')}"))
    return plain_table(("device", "dtype", "matrices", "TFLOP/s median [min-max]"), rows, (False, False, True, True))


def lrn_table(results) -> List[str]:
    rows = []
    for r in results["lrn"]:
        shape = "x".join(map(str, r["shape"]))
        if r["status"] != "ok":
            rows.append((shape, r["impl"], r["device"], f"{r['status']}: {r['reason']}", "", "", "", ""))
            continue
        rows.append((shape, r["impl"], r["device"], fmt_spread(r["ms"]), fmt_bytes(r["peak_memory"]["bytes"]),
                     fmt_bytes(r["saved_for_backward_bytes"]),
                     f"{r['speedup_vs_stock']:.2f}x" if "speedup_vs_stock" in r else "",
                     f"{r['max_rel_diff_value']:.1e} / {r['max_diff_grad_over_max_grad']:.1e}"
                     if "max_rel_diff_value" in r else ""))
    groups = ",".join(str(g) for g in sorted({r["groups"] for r in results["lrn"]}))
    return plain_table((f"shape (groups={groups})", "impl", "device", "ms fwd+bwd median [min-max]", "peak memory",
                        "kept for backward", "speed-up", "diff value / grad"),
                       rows, (False, False, False, True, True, True, True, True))


def profile_table(profile) -> List[str]:
    if profile.get("status") != "ok":
        return [f"{profile.get('status')}: {profile.get('reason', '')}".rstrip(": ")]
    head = (f"{profile['model']} on {_devices(profile['devices'])}, batch {profile['batch_size']}, "
            f"{profile['precision']}, lrn {profile['lrn_impl'] or '-'}, training step; {profile['time']}; "
            f"{profile['step_ms']:.1f} ms per profiled step, {profile['attributed_ms']:.1f} ms attributed")
    shown = [r for r in profile["rows"] if r["total_ms"] >= 0.05]
    rows = [(r["name"], r["type"], f"{r['forward_ms']:.1f}", f"{r['backward_ms']:.1f}", f"{r['total_ms']:.1f}",
             f"{r['share']:.1%}" if r["share"] is not None else "-") for r in shown]
    left = len(profile["rows"]) - len(shown)
    return [head] + plain_table(("layer", "type", "forward ms", "backward ms", "total ms", "share"), rows,
                                (False, False, True, True, True, True)) + (
        [f"({left} rows under 0.05 ms left out; all are in the JSON)"] if left else [])


def end_to_end_lines(e2e) -> List[str]:
    if e2e.get("status") != "ok":
        return [f"End to end: {e2e.get('status')} ({e2e.get('reason', '')})"]
    synthetic = e2e["synthetic_train_images_per_s"]
    return [
        f"End to end: {e2e['model']} net training from {e2e['data_root']} ({e2e['images']} images), batch "
        f"{e2e['batch_size']}, {e2e['precision']}, {e2e['workers']} loader workers, {e2e['timed_steps']} timed steps",
        f"  training with the real loader   {e2e['train_images_per_s']:8.1f} img/s"
        + (f"  ({100 * e2e['fraction_of_synthetic']:.0f}% of the synthetic-input step)" if synthetic else ""),
        f"  synthetic input, same net       {synthetic:8.1f} img/s" if synthetic else "  synthetic input: not measured",
        f"  loader + augmentation alone     {e2e['loader_images_per_s']:8.1f} img/s",
        f"  {e2e['verdict']}",
    ]


def _commit(git) -> str:
    """The commit, and how many tracked files differ from it (``machine.git_state``), for the
    report's version line; "" outside a git checkout."""
    if not git or not git.get("commit"):
        return ""
    changed = len(git.get("modified_files") or [])
    modified = f", {changed} tracked file{'s' if changed != 1 else ''} modified" if changed else ""
    return f" ({git['commit'][:12]}{modified})"


def format_report(results) -> str:
    env = results["environment"]
    s = results["settings"]
    gpus = ", ".join(d["name"] for d in env["cuda"]["devices"]) or "none"
    lines = [
        f"AlexNet benchmark ({results['created']}, {results['duration_s']:.0f} s)",
        f"cpu: {env['cpu']} ({env['cpu_count']} cores, {env['torch_threads']} torch threads); gpus: {gpus}",
        f"python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, alexnet {env['alexnet']}"
        + _commit(env.get("git")),
        f"load average at start {_load(env.get('load_average'))}, at end {_load(results.get('load_average_at_end'))} "
        f"(on {env['cpu_count']} cores: above that, other work shared the machine)",
        f"{s['warmup']} warm-up steps, then {s['repeats']} blocks of {s['steps']} timed steps per case, interleaved "
        "across cases; synthetic input on the device; flush denormals: "
        f"{'on' if env['kernel_settings']['flush_denormal'] else 'off'}",
        "",
        "Throughput",
        *results_table(results),
        "",
        "Matrix-multiply ceiling (same run)",
        *matmul_table(results),
    ]
    if results["lrn"]:
        lines += ["", "LRN, forward+backward (fp32)", *lrn_table(results)]
    lines += ["", "Per-layer time", *profile_table(results["profile"])]
    loaders = results["loaders"]
    if loaders.get("status") == "ok":
        lines += ["", f"Loaders (batch {loaders['batch_size']}, {loaders['workers']} workers)",
                  format_throughput(loaders["rows"])]
    else:
        lines += ["", f"Loaders: {loaders.get('status')} ({loaders.get('reason', '')})"]
    lines += ["", *end_to_end_lines(results.get("end_to_end") or {"status": "not recorded"})]
    return "\n".join(lines)
