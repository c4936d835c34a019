"""Benchmark reports: ``results.json`` (records), ``details.json``, ``results.md`` and PNG figures.

Figures use matplotlib's Agg backend (no display needed). Every number in ``results.md`` comes from
``results.json``; ``details.json`` holds what made it (settings, oracle choices, machine, command).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np

from .quality import METHODS, RECORD_KEYS, TASKS, QualityResult

FIGURE_DPI = 80
PSNR_AXIS_MAX = 50.0  # dB; taller bars are cut there and labelled with their value


def machine_info(device: str | None = None) -> dict:
    """Where a benchmark ran: CPU, cores, load, torch, CUDA device; JSON-able."""
    import torch

    from .._version import __version__

    info = {
        "napari_svi_version": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cuda": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["cuda"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                        "cuda_version": torch.version.cuda}
    if device is not None:
        info["device"] = str(device)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_json(path: Path, obj) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN/inf are not allowed: use ``None``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def check_records(records: list[dict]) -> None:
    """Raise ``ValueError`` unless every record has exactly :data:`RECORD_KEYS` with the right types."""
    for r in records:
        if tuple(r) != RECORD_KEYS:
            raise ValueError(f"record keys must be {RECORD_KEYS}, got {tuple(r)}")
        if not isinstance(r["task"], str) or r["method"] not in METHODS:
            raise ValueError(f"bad task or method in {r}")
        for key in RECORD_KEYS[2:]:
            if r[key] is not None and not isinstance(r[key], (int, float)):
                raise ValueError(f"{key} must be a number or null in {r}")


# ---------------------------------------------------------------- quality


def write_quality_report(result: QualityResult, out_dir, *, header: dict | None = None,
                         featured_task: str | None = None) -> list[Path]:
    """Write ``results.json``, ``details.json``, ``results.md``, ``figure.png`` and ``montage_<task>.png``.

    ``header`` (data description, command, machine) is stored in ``details.json`` and summarised on
    top of ``results.md``. ``featured_task`` is the task whose montage goes into ``figure.png``
    (default: ``temporal-box7-noisy`` if it ran, else the first task).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_records(result.records)
    details = {**(header or {}), **result.details}
    written = [write_json(out / "results.json", result.records), write_json(out / "details.json", details)]
    md = out / "results.md"
    md.write_text(quality_markdown(result.records, details))
    written.append(md)
    tasks = list(dict.fromkeys(r["task"] for r in result.records))
    if featured_task is None:
        featured_task = "temporal-box7-noisy" if "temporal-box7-noisy" in tasks else (tasks[0] if tasks else None)
    if featured_task is not None:
        written.append(quality_figure(result, featured_task, out / "figure.png"))
    for task in tasks:
        written.append(montage(result, task, out / f"montage_{task}.png"))
    return written


def _fmt(v, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def quality_markdown(records: list[dict], details: dict) -> str:
    """``results.md``: a short header and one table (tasks x methods, PSNR dB / SSIM, best PSNR in bold)."""
    tasks = list(dict.fromkeys(r["task"] for r in records))
    methods = [m for m in METHODS if any(r["method"] == m for r in records)]
    by = {(r["task"], r["method"]): r for r in records}
    lines = ["# Restoration quality", ""]
    data = details.get("data", {})
    if data:
        lines.append(f"Data: {data.get('name', '?')}, clip {data.get('shape')} (T, H, W), "
                     f"frames {data.get('frames')}, rows {data.get('rows')}, columns {data.get('columns')}.")
    scale = details.get("scale", {})
    if scale:
        lines.append(f"Scale: ground truth's 0.1/99.9 percentiles ({scale.get('low'):.4g}, {scale.get('high'):.4g}) "
                     "-> [0, 1]; PSNR and SSIM with data range 1, no clipping.")
    settings = details.get("settings", {})
    if settings:
        lines.append(f"Noise (noisy tasks): Poisson, {settings.get('peak_photons'):g} photons at the truth's 99.9th "
                     f"percentile, plus Gaussian read noise of {settings.get('read_noise_photons'):g} photons. "
                     f"SVI: {settings.get('steps') or 'default'} NFE, start {settings.get('start')}, blend "
                     f"{settings.get('blend')}, eta {settings.get('eta')}, {settings.get('cg_steps')} CG "
                     "steps, noise level and gamma automatic. richardson-lucy and tv-admm: iterations / weight "
                     "tuned on the ground truth (oracle).")
    machine = details.get("machine", {})
    if machine:
        lines.append(f"Machine: {machine.get('processor')}, {machine.get('cpu_cores')} cores, device "
                     f"{machine.get('device', 'cpu')}; torch {machine.get('torch')}.")
    if details.get("command"):
        lines.append(f"Command: `{details['command']}`")
    lines += ["", "PSNR (dB) / SSIM; best PSNR per task in bold.", ""]
    lines.append("| task | " + " | ".join(methods) + " |")
    lines.append("|---|" + "---|" * len(methods))
    for task in tasks:
        values = [by[(task, m)]["psnr"] for m in methods if (task, m) in by and by[(task, m)]["psnr"] is not None]
        best = max(values) if values else None
        cells = []
        for m in methods:
            r = by.get((task, m))
            if r is None:
                cells.append("n/a")
                continue
            text = f"{_fmt(r['psnr'], 2)} / {_fmt(r['ssim'], 3)}"
            cells.append(f"**{text}**" if r["psnr"] is not None and r["psnr"] == best else text)
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += ["", "<details><summary>All metrics (temporal error = RMSE of frame-to-frame differences on the "
              "[0, 1] scale; seconds and peak memory of one call)</summary>", "",
              "| task | method | PSNR (dB) | SSIM | temporal error | seconds | peak MB |", "|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['task']} | {r['method']} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'], 4)} | "
                     f"{_fmt(r['temporal_error'], 4)} | {_fmt(r['seconds'], 2)} | {_fmt(r['peak_mb'], 1)} |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def _panels(result: QualityResult, task: str) -> list[tuple[str, np.ndarray]]:
    panels = [("ground truth", result.truth)]
    for m in METHODS:
        if (task, m) in result.estimates:
            panels.append((m, result.estimates[(task, m)]))
    return panels


def _draw_montage(fig, grid, result: QualityResult, task: str) -> None:
    from .metrics import truth_scale

    scale = truth_scale(result.truth)
    by = {(r["task"], r["method"]): r for r in result.records}
    panels = _panels(result, task)
    t, h, _ = result.truth.shape
    frame, row = t // 2, h // 2
    sub = grid.subgridspec(2, len(panels), height_ratios=[3, 2], hspace=0.08, wspace=0.04)
    for k, (name, stack) in enumerate(panels):
        s01 = scale.to_unit(stack)
        ax = fig.add_subplot(sub[0, k])
        ax.imshow(s01[frame], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if k == 0:
            ax.axhline(row, color="tab:orange", lw=0.6)
        r = by.get((task, name))
        ax.set_title(name + ("" if r is None or r["psnr"] is None else f"\n{r['psnr']:.2f} dB"), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax2 = fig.add_subplot(sub[1, k])
        ax2.imshow(s01[:, row, :], cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax2.set_xticks([])
        ax2.set_yticks([] if k else [0, t - 1])
        if k == 0:
            ax2.set_ylabel("frame", fontsize=7)
            ax2.tick_params(labelsize=6)


def montage(result: QualityResult, task: str, path) -> Path:
    """One task: frame ``T // 2`` (top) and the kymograph of row ``H // 2`` over time (bottom) per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    n = len(_panels(result, task))
    fig = plt.figure(figsize=(1.6 * n, 3.4))
    _draw_montage(fig, GridSpec(1, 1, figure=fig, left=0.03, right=0.99, top=0.8, bottom=0.03)[0], result, task)
    fig.suptitle(f"{task}: {TASKS[task].description if task in TASKS else ''} (frame {result.truth.shape[0] // 2}; "
                 f"kymograph of row {result.truth.shape[1] // 2})", fontsize=8)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return Path(path)


def _draw_psnr_bars(ax, records: list[dict]) -> None:
    tasks = list(dict.fromkeys(r["task"] for r in records))
    methods = [m for m in METHODS if any(r["method"] == m for r in records)]
    by = {(r["task"], r["method"]): r["psnr"] for r in records}
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(tasks))
    finite = [v for v in by.values() if v is not None]
    top = min(max(finite) + 2, PSNR_AXIS_MAX) if finite else PSNR_AXIS_MAX
    for k, m in enumerate(methods):
        vals = [by.get((t, m)) for t in tasks]
        xs = x + (k - (len(methods) - 1) / 2) * width
        ax.bar(xs, [np.nan if v is None else min(v, top) for v in vals], width, label=m)
        for xi, v in zip(xs, vals, strict=True):
            if v is not None and v > top:  # a near-exact fit (noiseless data) would flatten every other bar
                ax.text(xi, top, f"{v:.0f}", ha="center", va="bottom", fontsize=5, rotation=90)
    ax.set_ylim(0, top * 1.08)
    ax.set_xticks(x)
    ax.set_xticklabels(tasks, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("PSNR (dB)")
    ax.legend(fontsize=7, ncol=len(methods), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)


def quality_figure(result: QualityResult, task: str, path) -> Path:
    """``figure.png``: the montage of ``task`` above PSNR bars of every task and method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    n = len(_panels(result, task))
    fig = plt.figure(figsize=(max(1.6 * n, 9), 7.5))
    grid = GridSpec(2, 1, figure=fig, height_ratios=[1, 1.1], left=0.07, right=0.99, top=0.88, bottom=0.12, hspace=0.3)
    _draw_montage(fig, grid[0], result, task)
    _draw_psnr_bars(fig.add_subplot(grid[1]), result.records)
    fig.suptitle(f"{task}: frame {result.truth.shape[0] // 2} and kymograph of row {result.truth.shape[1] // 2}; "
                 "PSNR of every task below", fontsize=9)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------- speed


def write_speed_report(result: dict, out_dir) -> list[Path]:
    """Write ``speed.json``, ``speed.md`` and ``speed.png`` from :func:`napari_svi.benchmark.speed.run_speed`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(out / "speed.json", result)]
    md = out / "speed.md"
    md.write_text(speed_markdown(result))
    written.append(md)
    written.append(speed_figure(result, out / "speed.png"))
    return written


def speed_markdown(result: dict) -> str:
    """Tables of the speed sweep and the linear fits."""
    s = result.get("settings", {})
    m = result.get("machine", {})
    lines = ["# Speed and memory", "",
             f"Machine: {m.get('processor')}, {m.get('cpu_cores')} cores"
             + (f", GPU {m['cuda']['name']}" if m.get("cuda") else "") + f"; torch {m.get('torch')}; "
             f"load average at start {m.get('load_average_1min')}.",
             f"Prior: {result.get('prior')}. Restores: {s.get('steps')} NFE (network evaluations per frame), "
             f"{s.get('cg_steps')} CG steps, operator `{s.get('operator')}`, frames evaluated in chunks of at most "
             f"{s.get('max_pixels_per_batch')} pixels. Frame-count sweep at {s.get('frames_size')} x "
             f"{s.get('frames_size')} px; frame-size sweep with {s.get('size_frames')} frames. Time per restore at "
             "20 NFE is about 20 / NFE times the restore time here (the network dominates).",
             ""]
    if result.get("command"):
        lines += [f"Command: `{result['command']}`", ""]
    lines += ["| device | what | frames | frame size (px) | seconds | ms per frame | peak MB (host) | peak MB (GPU) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in result.get("records", []):
        gpu = "" if r.get("cuda_peak_mb") is None else f"{r['cuda_peak_mb']:.0f}"
        lines.append(f"| {r['device']} | {r['kind']} | {r['frames']} | {r['size']} | {r['seconds']:.3f} | "
                     f"{1000 * r['seconds'] / r['frames']:.1f} | {r['peak_mb']:.0f} | {gpu} |")
    lines += ["", "Linear fits `seconds = slope * x + intercept`:", "",
              "| device | what | x | slope | intercept (s) | R^2 |", "|---|---|---|---|---|---|"]
    for f in result.get("fits", []):
        lines.append(f"| {f['device']} | {f['kind']} | {f['x']} | {f['slope']:.4g} s per {f['unit']} | "
                     f"{f['intercept']:.3g} | {f['r2']:.4f} |")
    lines.append("")
    return "\n".join(lines)


def _memory(record: dict) -> float:
    return record["cuda_peak_mb"] if record.get("cuda_peak_mb") is not None else record["peak_mb"]


def speed_figure(result: dict, path) -> Path:
    """Seconds and peak memory versus frames and versus megapixels per frame, with the linear fits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = result.get("records", [])
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for col, (sweep, xlabel) in enumerate((("frames", "frames"), ("size", "megapixels per frame"))):
        for r_kind in ("network", "restore"):
            for dev in sorted({r["device"] for r in recs}):
                sel = [r for r in recs if r["kind"] == r_kind and r["device"] == dev and r["sweep"] == sweep]
                if not sel:
                    continue
                x = [r["frames"] if sweep == "frames" else r["size"] ** 2 / 1e6 for r in sel]
                label = f"{r_kind} ({dev})"
                axes[0, col].plot(x, [r["seconds"] for r in sel], "o-", label=label)
                axes[1, col].plot(x, [_memory(r) for r in sel], "o-", label=label)
        if sweep == "size":
            for r in recs:
                if r["sweep"] == "size-tiled":
                    x = r["size"] ** 2 / 1e6
                    axes[0, col].plot([x], [r["seconds"]], "*", ms=10, label=f"{r['kind']} ({r['device']})")
                    axes[1, col].plot([x], [_memory(r)], "*", ms=10, label=f"{r['kind']} ({r['device']})")
        axes[0, col].set_xlabel(xlabel)
        axes[1, col].set_xlabel(xlabel)
        axes[0, col].set_ylabel("seconds")
        axes[1, col].set_ylabel("peak MB above start (GPU memory on CUDA)")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"napari-svi speed: network = one evaluation of all frames; restore = {result['settings']['steps']} "
                 "NFE", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return Path(path)


def command_line() -> str:
    """The command that is running, as typed (``napari-svi ...`` when run through the entry point)."""
    argv = list(sys.argv)
    if argv and (Path(argv[0]).name in ("napari-svi", "__main__.py") or Path(argv[0]).parts[-2:] == ("napari_svi", "cli.py")):
        argv[0] = "napari-svi"
    return " ".join(argv)
