"""Benchmarks: restoration quality against classical baselines on real data, speed and memory scaling.

- :mod:`.metrics`: PSNR, SSIM and temporal error on the ground truth's [0, 1] scale.
- :mod:`.baselines`: CG least squares, Richardson-Lucy and TV-ADMM on the same forward operator.
- :mod:`.quality`: the tasks, the methods and :func:`~.quality.run_quality`.
- :mod:`.speed`: :func:`~.speed.run_speed`, time and memory versus frames and frame size.
- :mod:`.measure`: wall time and peak memory of one call.
- :mod:`.report`: ``results.json``, ``results.md``, figures.
- :mod:`.gpu`: the GPU check run by ``benchmarks/gpu_check.sh``.
- :mod:`.cli`: ``napari-svi benchmark quality|speed``.
"""

from .metrics import psnr, ssim, stack_metrics, temporal_error
from .quality import METHODS, TASKS, QualitySettings, run_quality

__all__ = ["METHODS", "TASKS", "QualitySettings", "psnr", "run_quality", "ssim", "stack_metrics", "temporal_error"]
