"""The benchmark's results (what :func:`alexnet.experiments.bench.run_benchmark` returns) as the
plain-text report the command prints."""

from __future__ import annotations

from typing import Dict, List, Optional

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


def _memory(row) -> str:
    peaks = row.get("peak_memory") or {}
    parts = [fmt_bytes(p["bytes"]) + (" (rss)" if p["method"].startswith("process") and p["bytes"] is not None else "")
             for p in peaks.values()]
    return "; ".join(parts if len(parts) == 1 else [f"{d} {p}" for d, p in zip(peaks, parts)]) or "-"


def _traffic(t) -> str:
    if not t.get("counted"):
        return "-"
    crossed = t["crossed_devices_bytes_per_image"]
    return fmt_bytes(t["handed_over_bytes_per_image"]) + (f" ({fmt_bytes(crossed)} crossed)" if crossed else "")


def results_table(results) -> List[str]:
    rows, notes = [], []
    for r in results["results"]:
        devices = ",".join(r["devices"])
        settings = (r["model"], devices, r["lrn_impl"] or "-", r["batch_size"], r["precision"],
                    "on" if r["channels_last"] else "off", "on" if r["compile"] else "off", r["mode"])
        if r["status"] != "ok":
            rows.append(settings + (r["status"],) + ("",) * 5)
            notes.append(f"{r['status']}: {r['model']} on {devices} b{r['batch_size']} {r['precision']} {r['mode']}: "
                         f"{r['reason']}")
            continue
        frac = r["fraction_of_matmul"]
        rows.append(settings + (fmt_spread(r["ms_per_step"]), f"{r['images_per_s']['median']:.1f}",
                                f"{r['achieved_tflops']:.3f}", f"{frac:.0%}" if frac is not None else "-",
                                _memory(r), _traffic(r["traffic"])))
        if r.get("peer_access") is not None:
            notes.append(f"peer access {devices}: {'enabled' if r['peer_access'] else 'not available'}")
    header = ("model", "devices", "lrn", "batch", "prec", "chlast", "compile", "mode", "ms/step median [min-max]",
              "img/s", "TFLOP/s", "of mm", "peak memory", "handed over/img")
    table = plain_table(header, rows, [False] * 3 + [True] + [False] * 4 + [True] * 6)
    return table + ([""] + list(dict.fromkeys(notes)) if notes else [])


def matmul_table(results) -> List[str]:
    rows = [(m["device"], m["dtype"], f"{m['size']}x{m['size']}", fmt_spread(m["tflops"], 3)) if "tflops" in m
            else (m["device"], m["dtype"], "-", f"failed: {m.get('reason', '')}") for m in results["matmul"]]
    return plain_table(("device", "dtype", "matrices", "TFLOP/s median [min-max]"), rows, (False, False, True, True))


def lrn_table(lrn) -> List[str]:
    rows = []
    for r in lrn:
        shape = "x".join(map(str, r["shape"]))
        if r["status"] != "ok":
            rows.append((shape, r["impl"], r["device"], f"{r['status']}: {r['reason']}", "", "", "", ""))
            continue
        fast = "speedup_vs_stock" in r
        rows.append((shape, r["impl"], r["device"], fmt_spread(r["ms"]), fmt_bytes(r["peak_memory"]["bytes"]),
                     fmt_bytes(r["saved_for_backward_bytes"]), f"{r['speedup_vs_stock']:.2f}x" if fast else "",
                     f"{r['max_rel_diff_value']:.1e} / {r['max_diff_grad_over_max_grad']:.1e}" if fast else ""))
    groups = ",".join(str(g) for g in sorted({r["groups"] for r in lrn}))
    return plain_table((f"shape (groups={groups})", "impl", "device", "ms fwd+bwd median [min-max]", "peak memory",
                        "kept for backward", "speed-up", "diff value / grad"), rows, [False] * 3 + [True] * 5)


def profile_table(p) -> List[str]:
    if p.get("status") != "ok":
        return [f"{p.get('status')}: {p.get('reason', '')}".rstrip(": ")]
    shown = [r for r in p["rows"] if r["total_ms"] >= 0.05]
    rows = [(r["name"], r["type"], f"{r['forward_ms']:.1f}", f"{r['backward_ms']:.1f}", f"{r['total_ms']:.1f}",
             f"{r['share']:.1%}" if r["share"] is not None else "-") for r in shown]
    left = len(p["rows"]) - len(shown)
    return [f"{p['model']} on {','.join(p['devices'])}, batch {p['batch_size']}, {p['precision']}, lrn "
            f"{p['lrn_impl'] or '-'}, training step; {p['time']}; {p['step_ms']:.1f} ms per profiled step, "
            f"{p['attributed_ms']:.1f} ms attributed",
            *plain_table(("layer", "type", "forward ms", "backward ms", "total ms", "share"), rows,
                         (False, False, True, True, True, True)),
            *([f"({left} rows under 0.05 ms left out; all are in the JSON)"] if left else [])]


def loader_lines(loaders, e2e) -> List[str]:
    lines = ([f"Loaders (batch {loaders['batch_size']}, {loaders['workers']} workers)",
              format_throughput(loaders["rows"])] if loaders.get("status") == "ok"
             else [f"Loaders: {loaders.get('status')} ({loaders.get('reason', '')})"])
    if e2e.get("status") != "ok":
        return lines + ["", f"End to end: {e2e.get('status')} ({e2e.get('reason', '')})"]
    synthetic = e2e["synthetic_train_images_per_s"]
    return lines + [
        "", f"End to end: {e2e['model']} net training from {e2e['data_root']} ({e2e['images']} images), batch "
        f"{e2e['batch_size']}, {e2e['precision']}, {e2e['workers']} loader workers, {e2e['timed_steps']} timed steps",
        f"  training with the real loader   {e2e['train_images_per_s']:8.1f} img/s"
        + (f"  ({100 * e2e['fraction_of_synthetic']:.0f}% of the synthetic-input step)" if synthetic else ""),
        f"  synthetic input, same net       {synthetic:8.1f} img/s" if synthetic else "  synthetic input: not measured",
        f"  loader + augmentation alone     {e2e['loader_images_per_s']:8.1f} img/s", f"  {e2e['verdict']}"]


def format_bench_report(results) -> str:
    """The whole run as the command prints it: the machine and the settings, then each section."""
    env, s, git = results["environment"], results["settings"], results["environment"].get("git") or {}
    changed = len(git.get("modified_files") or [])
    modified = f", {changed} tracked file{'s' if changed != 1 else ''} modified" if changed else ""
    commit = f" ({git['commit'][:12]}{modified})" if git.get("commit") else ""
    load = ["/".join(f"{v:.2f}" for v in values) if values else "-"
            for values in (env.get("load_average"), results.get("load_average_at_end"))]
    lines = [
        f"AlexNet benchmark ({results['created']}, {results['duration_s']:.0f} s)",
        f"cpu: {env['cpu']} ({env['cpu_count']} cores, {env['torch_threads']} torch threads); gpus: "
        f"{', '.join(d['name'] for d in env['cuda']['devices']) or 'none'}",
        f"python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, alexnet {env['alexnet']}"
        f"{commit}",
        f"load average at start {load[0]}, at end {load[1]} (on {env['cpu_count']} cores: above that, other work "
        "shared the machine)",
        f"{s['warmup']} warm-up steps, then {s['repeats']} blocks of {s['steps']} timed steps per case, interleaved "
        f"across cases; synthetic input on the device; flush denormals: "
        f"{'on' if env['kernel_settings']['flush_denormal'] else 'off'}",
        "", "Throughput", *results_table(results), "", "Matrix-multiply ceiling (same run)", *matmul_table(results)]
    if results["lrn"]:
        lines += ["", "LRN, forward+backward (fp32)", *lrn_table(results["lrn"])]
    lines += ["", "Per-layer time", *profile_table(results["profile"]), ""]
    return "\n".join(lines + loader_lines(results["loaders"], results.get("end_to_end") or {"status": "not recorded"}))
