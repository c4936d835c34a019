"""Compare SVI across runs of ``napari-svi benchmark suite`` (an ablation), against the classical methods.

    python tools/compare_suites.py BASELINE_DIR [LABEL=RUN_DIR ...] > table.md

The first run must hold the classical methods (their numbers do not depend on the sampler); it is the
"release" SVI column when it holds SVI too, and each further run adds an SVI column. Prints, per task,
the mean PSNR over the clips of the best oracle-tuned classical method and of SVI in every run, and per
clip and task every SVI run and the best classical, then SVI's mean seconds per clip in every run with
that run's torch threads and load (seconds from runs at different threads or load do not compare).
"""

import json
import sys
from pathlib import Path

import numpy as np

ORACLE = ("richardson-lucy", "tv-admm", "cg+tv")


def load_run(folder: str) -> dict:
    return json.loads((Path(folder) / "results.json").read_text())


def main(argv: list[str]) -> None:
    folders = {"release": argv[0], **dict(a.split("=", 1) for a in argv[1:])}
    loaded = {label: load_run(folder) for label, folder in folders.items()}
    base = loaded["release"]["records"]
    runs = {label: run["records"] for label, run in loaded.items()}
    if not any(r["method"] == "svi" for r in base):  # a baseline of classical methods only
        runs.pop("release")
    psnr = {label: {(r["clip"], r["task"], r["method"]): r["psnr"] for r in recs} for label, recs in runs.items()}
    clips = list(dict.fromkeys(r["clip"] for r in base))
    tasks = list(dict.fromkeys(r["task"] for r in base))
    b = {(r["clip"], r["task"], r["method"]): r["psnr"] for r in base}

    def best_classical(clip, task):
        vals = {m: b[(clip, task, m)] for m in ORACLE if (clip, task, m) in b}
        return max(vals.items(), key=lambda kv: kv[1])

    labels = list(runs)
    print("| task | measurement | best classical, per clip (oracle) | " + " | ".join(f"SVI {k}" for k in labels)
          + " | " + " | ".join(f"{k} - best" for k in labels) + " | " + " | ".join(f"clips {k} < meas." for k in labels) + " |")
    print("|---" * (3 + 3 * len(labels)) + "|")
    for task in tasks:
        meas = np.mean([b[(c, task, "measurement")] for c in clips])
        best = np.mean([best_classical(c, task)[1] for c in clips])
        svi = {k: np.mean([psnr[k][(c, task, "svi")] for c in clips]) for k in labels}
        below = {k: sum(psnr[k][(c, task, "svi")] < b[(c, task, "measurement")] for c in clips) for k in labels}
        print(f"| {task} | {meas:.2f} | {best:.2f} | " + " | ".join(f"{svi[k]:.2f}" for k in labels) + " | "
              + " | ".join(f"{svi[k] - best:+.2f}" for k in labels) + " | " + " | ".join(str(below[k]) for k in labels) + " |")
    print()
    print("| clip | task | measurement | best classical | " + " | ".join(f"SVI {k}" for k in labels) + " |")
    print("|---" * (4 + len(labels)) + "|")
    for clip in clips:
        for task in tasks:
            name, val = best_classical(clip, task)
            print(f"| {clip} | {task} | {b[(clip, task, 'measurement')]:.2f} | {val:.2f} ({name}) | "
                  + " | ".join(f"{psnr[k][(clip, task, 'svi')]:.2f}" for k in labels) + " |")
    print()
    print("| run | SVI seconds per clip (mean) | torch threads | load (1 min, start - end) |")
    print("|---|---|---|---|")
    for k in labels:
        machine = loaded[k].get("machine", {})
        secs = [r["seconds"] for r in runs[k] if r["method"] == "svi"]
        print(f"| {k} | {np.mean(secs):.2f} | {machine.get('torch_threads', '?')} | "
              f"{machine.get('load_average_1min', '?')} - {machine.get('load_average_1min_end', '?')} |")


if __name__ == "__main__":
    main(sys.argv[1:])
