"""The GPU check run by ``benchmarks/gpu_check.sh`` on a lent CUDA machine (no downloads, a few minutes).

1. Agreement: one ``restore`` of a fixed input (held-out nuclei clip, box-7 temporal blur) on the CPU
   and on the GPU with the same seed; the relative error ``||x_gpu - x_cpu|| / ||x_cpu||`` on the
   ground truth's [0, 1] scale is printed, with cuDNN's TF32 convolutions on (PyTorch's default)
   and off.
2. Timing: a 16 x 256 x 256 restore at 20 NFE (box-7 blur, Poisson-Gaussian noise) in float32 and in
   half precision (the network under float16 autocast; CG stays float32): seconds, frames per second,
   peak GPU memory and PSNR against the truth.
3. Levers (:mod:`.gpu_levers`) on the same restore: CUDA graphs in float32, float16 and bfloat16;
   2, 4 and 8 clips restored side by side with their network calls gathered into one batch (what
   fills a large GPU); a 64-frame stack in one piece and in windows; a ``torch.profiler`` table
   (``profile.txt``); ``torch.compile`` of the network with ``--compile`` when 200 s are left.
   Each reports frames per second, peak GPU memory, PSNR and its largest difference from float32.
4. Optionally (``--speed``) the speed sweep of :mod:`.speed` on the GPU.

``gpu_check.json`` is rewritten after every stage; stages that would not fit ``--budget-s`` are
skipped and say so in the table.

A short table is printed last. ``--dry-run`` shrinks every size so the whole check runs on a CPU in
seconds (what the tests do); ``--device cpu`` with it compares the CPU with itself.

Prior: ``--prior`` (default ``default``); if the bundled prior is missing, ``runs/default-prior``
when present, else a UNet with random weights (then timings are valid, PSNR is meaningless, and
the table says so).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _prior(spec: str, device):
    from ..priors.base import DiffusionPrior
    from ..priors.loading import load_prior
    from ..priors.unet import UNet, UNetConfig
    from ..schedules import alphas_cumprod

    candidates = [spec] + (["runs/default-prior"] if spec == "default" else [])
    for cand in candidates:
        try:
            prior = load_prior(cand, device, channels=1)
            return prior, f"{cand} ({prior.name})", True
        except FileNotFoundError as err:
            _log(f"prior {cand!r}: {err}")
    cfg = UNetConfig(base_channels=32, channel_mults=(1, 2, 3, 4))
    torch.manual_seed(0)
    net = UNet(cfg)
    prior = DiffusionPrior(net, alphas_cumprod("linear"), channels=1, size_multiple=cfg.size_multiple,
                           name="random-weights UNet (timing only)")
    return prior.to(device).eval().requires_grad_(False), "random weights (timing only; PSNR meaningless)", False


def _clip(frames: int, size: int) -> np.ndarray:
    from .speed import synthetic_stack

    return synthetic_stack(frames, size)


def _restore(y, spec, prior, device, steps, noise_sigma, precision="float32", true_frames=None):
    from ..priors.tiling import TiledPrior
    from ..restore import restore

    wrapped = TiledPrior(prior, tile_size=None, precision=precision)
    return restore(y, spec, prior=wrapped, steps=steps, noise_sigma=noise_sigma, seed=0, device=str(device),
                   true_frames=true_frames)


def run_check(args, save=lambda result, rows: None) -> dict:
    from ..degrade import degrade
    from ..operators import OperatorSpec
    from ..priors.loading import resolve_device
    from .measure import measure
    from .metrics import psnr, truth_scale
    from .report import machine_info

    t_start = time.perf_counter()
    device = resolve_device(args.device)
    if device.type != "cuda" and not args.dry_run:
        raise SystemExit("gpu_check: no CUDA device (torch.cuda.is_available() is False); use --dry-run to test on a CPU")
    if args.dry_run:
        frames, size, steps, a_frames, a_size, a_steps = 4, 32, 2, 4, 32, 2
    else:
        frames, size, steps = args.frames, args.size, args.steps
        a_frames, a_size, a_steps = args.agreement_frames, args.agreement_size, args.agreement_steps
    half = args.half
    info = machine_info(device)
    name = info["cuda"]["name"] if info.get("cuda") and device.type == "cuda" else info["processor"]
    _log(f"gpu_check: device {device} ({name}), torch {torch.__version__}")
    prior, prior_text, trained = _prior(args.prior, device)
    _log(f"gpu_check: prior {prior_text}")
    spec = OperatorSpec(temporal_psf="uniform:7")
    rows: list[tuple[str, str]] = []
    result: dict = {"device": str(device), "device_name": name, "machine": info, "prior": prior_text,
                    "prior_trained": trained}

    # 1. agreement CPU vs device, same seed and input
    truth = _clip(a_frames, a_size)
    y = degrade(truth, spec)
    scale = truth_scale(truth)
    ref = _restore(y, spec, prior.to("cpu"), "cpu", a_steps, None).restored
    prior = prior.to(device)
    agreement = {}
    tf32_default = torch.backends.cudnn.allow_tf32
    for label, tf32 in (("tf32-on", True), ("tf32-off", False)):
        torch.backends.cudnn.allow_tf32 = tf32
        out = _restore(y, spec, prior, device, a_steps, None).restored
        a, b = scale.to_unit(ref).astype(np.float64), scale.to_unit(out).astype(np.float64)
        rel = float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-30))
        agreement[label] = {"relative_error": rel, "max_abs_error": float(np.max(np.abs(b - a)))}
        rows.append((f"agreement {device.type} vs cpu, {a_frames}x{a_size}x{a_size}, {a_steps} NFE ({label})",
                     f"rel. error {rel:.2e}, max abs {agreement[label]['max_abs_error']:.2e} (of 1)"))
        _log(f"gpu_check: {rows[-1][0]}: {rows[-1][1]}")
        if device.type != "cuda":
            break
    torch.backends.cudnn.allow_tf32 = tf32_default
    result["agreement"] = agreement

    # 2. timing of one restore in float32 and half precision
    truth = _clip(frames, size)
    peak = float(np.percentile(truth, 99.9))
    y = degrade(truth, spec, noise_sigma=0.01 * peak, poisson_peak=200.0, seed=0)
    scale = truth_scale(truth)
    timings = {}
    estimates = {}
    from .quality import AUTO_NOISE

    sigma = "auto"
    _log(f"gpu_check: noise level {AUTO_NOISE}")
    for precision in ("float32", half):
        _restore(y[: min(4, frames)], spec, prior, device, 2, sigma, precision)  # warm-up (kernels, allocator)
        m = measure(lambda precision=precision: _restore(y, spec, prior, device, steps, sigma, precision), device)
        estimates[precision] = m.value.restored
        timings[precision] = {
            "seconds": m.seconds, "frames_per_second": frames / m.seconds, "seconds_per_nfe": m.seconds / steps,
            "peak_gpu_mb": m.cuda_peak_mb, "peak_host_mb": m.peak_mb,
            "psnr_db": psnr(scale.to_unit(truth), scale.to_unit(m.value.restored)),
        }
        t = timings[precision]
        gpu = "" if t["peak_gpu_mb"] is None else f", peak GPU {t['peak_gpu_mb']:.0f} MB"
        rows.append((f"restore {frames}x{size}x{size}, {steps} NFE, {precision}",
                     f"{t['seconds']:.2f} s, {t['frames_per_second']:.2f} fps{gpu}, PSNR {t['psnr_db']:.2f} dB"
                     + ("" if trained else " (untrained prior)")))
        _log(f"gpu_check: {rows[-1][0]}: {rows[-1][1]}")
    a, b = (scale.to_unit(estimates[p]).astype(np.float64) for p in ("float32", half))
    timings["half_vs_float32_relative_difference"] = float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-30))
    rows.append((f"{half} vs float32 result", f"rel. difference {timings['half_vs_float32_relative_difference']:.2e}"))
    result["timing"] = {"frames": frames, "size": size, "steps": steps, "operator": spec.describe(),
                        "noise": "Poisson 200 photons at the 99.9th percentile + Gaussian 0.01", **timings}

    save(result, rows)

    # 3. levers: CUDA graphs, half precision, clips batched together, a long stack in one piece, a profile
    from .gpu_levers import Levers

    levers = Levers(prior, device, y, truth, spec, steps, estimates["float32"], _log)
    left = lambda: args.budget_s - (time.perf_counter() - t_start)  # noqa: E731
    cuda = device.type == "cuda"  # half precision on a CPU is emulated (many times slower): float32 there
    plan = [("graphs", 60, lambda: levers.graphs(("float32", "float16", "bfloat16") if cuda else ("float32",))),
            ("batched", 90, lambda: levers.batched((2, 4) if args.dry_run else (2, 4, 8),
                                                   precision="float16" if cuda else "float32")),
            ("long stack", 60, lambda: levers.long_stack(8 if args.dry_run else 64, "float16" if cuda else "float32")),
            ("profile", 30, lambda: result.__setitem__("profile", levers.profile())),
            ("compile", 200, levers.compiled if args.compile else None)]
    for name, needs_s, fn in plan:
        if fn is None:
            continue
        if left() < needs_s and not args.dry_run:
            levers.rows.append((name, f"skipped: {left():.0f} s left of the {args.budget_s:.0f} s budget"))
            continue
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - record and go on
            levers.rows.append((name, f"FAILED: {type(err).__name__}: {err}"[:200]))
        result["levers"] = levers.records
        save(result, rows + levers.rows)
    rows += levers.rows
    if "profile" in result and args.output:
        Path(args.output, "profile.txt").write_text(result["profile"])

    # 4. optional speed sweep on the device
    if args.speed:
        remaining = args.budget_s - (time.perf_counter() - t_start)
        if remaining < 120 and not args.dry_run:
            rows.append(("speed sweep", f"skipped: {remaining:.0f} s left of the {args.budget_s:.0f} s budget"))
        else:
            from .report import write_speed_report
            from .speed import run_speed

            sweep = run_speed(prior, devices=(str(device),), frames=(8, 16, 32, 64, 128, 256) if not args.dry_run
                              else (2, 4), sizes=(64, 128, 256, 512, 1024) if not args.dry_run else (16, 32),
                              frames_size=64 if not args.dry_run else 16, size_frames=4 if not args.dry_run else 2,
                              steps=steps, progress=_log)
            sweep = {"command": "benchmarks/gpu_check.sh (speed sweep)", "machine": info, **sweep}
            if args.output:
                write_speed_report(sweep, args.output)
            for f in sweep["fits"]:
                rows.append((f"speed {f['kind']} vs {f['x']}", f"{f['slope']:.4g} s per {f['unit']}, "
                             f"intercept {f['intercept']:.3g} s, R^2 {f['r2']:.3f}"))
            result["speed_fits"] = sweep["fits"]
    result["seconds_total"] = time.perf_counter() - t_start
    result["rows"] = rows
    return result


def print_table(result: dict) -> None:
    """The short table (printed last by the script)."""
    rows = result["rows"]
    width = max(len(r[0]) for r in rows)
    print(f"\n== napari-svi GPU check: {result['device_name']} ({result['device']}), torch "
          f"{result['machine']['torch']}, prior {result['prior']} ==")
    for left, right in rows:
        print(f"{left:<{width}}  {right}")
    print(f"(total {result['seconds_total']:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m napari_svi.benchmark.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="device to check against the CPU (default: cuda)")
    p.add_argument("--prior", default="default", help="default | prior folder | checkpoint (default: default)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--agreement-frames", type=int, default=8)
    p.add_argument("--agreement-size", type=int, default=64)
    p.add_argument("--agreement-steps", type=int, default=10)
    p.add_argument("--half", choices=("float16", "bfloat16"), default="float16", help="half precision (default: float16)")
    p.add_argument("--speed", action="store_true", help="also run the speed sweep on the device")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the network (minutes to compile)")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip the speed sweep when less than 120 s are left")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, any device: test the script itself")
    p.add_argument("-o", "--output", default=None, help="folder for gpu_check.json (and the speed report)")
    args = p.parse_args(argv)

    def save(result: dict, rows) -> None:  # after every stage, so a check stopped by its time limit keeps its figures
        if args.output:
            from .report import write_json

            Path(args.output).mkdir(parents=True, exist_ok=True)
            write_json(Path(args.output) / "gpu_check.json", json.loads(json.dumps({**result, "rows": rows}, default=str)))

    result = run_check(args, save)
    save(result, result["rows"])
    print_table(result)
    worst = max(v["relative_error"] for v in result["agreement"].values())
    if worst > 0.05:
        print(f"FAILED: CPU and {result['device']} disagree (relative error {worst:.2e} > 0.05)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
