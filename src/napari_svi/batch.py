"""``napari-svi batch``: restore many stacks on a Dask cluster, one stack per task.

Without ``--scheduler`` a local ``dask.distributed`` cluster of worker processes is started on
this machine; with ``--scheduler ADDRESS`` the stacks go to an existing cluster (for example one
started with dask-jobqueue on SLURM). Each task restores one file with the same operator and
sampler settings, on the worker's own GPU when it has one. Failed tasks are retried
(``--retries``), finished outputs are never recomputed (an output whose recorded parameters match
is skipped; a partly written zarr output is resumed), and a summary lists every input with its
status. See ``docs/cluster.md``.

The command's own process plans (:mod:`napari_svi.batch_plan`: inputs, outputs, what is done,
the summary); the workers restore (:mod:`napari_svi.batch_tasks`: the task, the cluster).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .batch_plan import (
    SUMMARY_FILE,
    Item,
    check_summary_file,
    expand_inputs,
    output_path,
    parameters,
    plan_item,
    recorded_parameters,
    remove_output,
    summary_table,
    write_summary,
)
from .validation import check_positive_int


def add_parser(subparsers) -> None:
    """Register ``napari-svi batch``."""
    from .cli_flags import add_operator_flags, add_sampler_flags

    p = subparsers.add_parser(
        "batch", help="restore many stacks on a Dask cluster (local worker processes by default)",
        description=__doc__.split("\n\n")[1].replace("\n", " ").replace("``", "'"),
    )
    p.add_argument("inputs", nargs="+", metavar="FILES_OR_GLOB", help="TIFF files or zarr stores, or glob patterns")
    p.add_argument("-o", "--output-dir", required=True, help="folder for the outputs (<stem>_restored.tif|.zarr)")
    p.add_argument("--output-format", choices=("same", "tif", "zarr"), default="same",
                   help="same as the input (default), or always tif / zarr")
    p.add_argument("--overwrite", action="store_true", help="recompute outputs that exist even if their parameters match")
    add_operator_flags(p)
    add_sampler_flags(p)
    d = p.add_argument_group("Dask")
    d.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of an existing Dask scheduler, e.g. tcp://10.0.0.1:8786 (default: a local cluster)")
    d.add_argument("--workers", type=int, default=None,
                   help="local cluster: worker processes (default: one per GPU, else 1)")
    d.add_argument("--threads-per-worker", type=int, default=None,
                   help="local cluster: stacks each worker process restores at once (default: 1); PyTorch's "
                   "threads per stack are --threads, by default the usable CPU cores / (workers x this)")
    d.add_argument("--memory-limit", default="auto", help="local cluster: memory per worker, e.g. 16GB (default: auto)")
    d.add_argument("--gpus-per-task", type=int, default=0,
                   help="ask for this many units of the worker resource GPU per task (workers started with "
                        "--resources GPU=1); 0: no resource constraint (default)")
    d.add_argument("--retries", type=int, default=2, help="retries of a failed stack (default: 2)")
    p.set_defaults(func=run_batch)


def run_batch(args: argparse.Namespace) -> int:
    """Run ``napari-svi batch``: plan every input, restore what is left on the cluster, write the summary."""
    from .cli_flags import operator_from_args
    from .outputs import check_writable_folder

    out_dir = Path(args.output_dir)
    inputs = expand_inputs(args.inputs)
    params = parameters(args)
    operator_from_args(args)  # bad operator flags fail here, before any cluster starts
    for flag, value, least in (("--retries", args.retries, 0), ("--workers", args.workers, 1),
                               ("--threads-per-worker", args.threads_per_worker, 1), ("--gpus-per-task", args.gpus_per_task, 0)):
        if value is not None:
            check_positive_int(value, flag, minimum=least)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--output-dir: {str(out_dir)!r} is a file; name a folder")
    check_summary_file(out_dir / SUMMARY_FILE)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_writable_folder(out_dir, "--output-dir")
    items = [Item(str(p), str(output_path(p, out_dir, args.output_format))) for p in inputs]
    outputs = [it.output for it in items]
    duplicates = sorted({o for o in outputs if outputs.count(o) > 1})
    if duplicates:
        raise ValueError(f"several inputs would write the same output: {duplicates}; rename them")
    for it in items:
        if Path(it.output).resolve() == Path(it.input).resolve():
            raise ValueError(f"{it.input}: the output would overwrite the input; choose another --output-dir")
        if not args.overwrite and recorded_parameters(Path(it.output)) == params:
            it.status, it.message = "skipped", "output exists with the same parameters"
            continue
        problem = plan_item(it, inputs, args)
        if problem:
            it.status, it.message = "failed", problem
        elif args.overwrite and Path(it.output).exists():
            remove_output(Path(it.output))
    todo = [it for it in items if it.status == "pending"]
    if todo:
        from .batch_tasks import run_on_cluster  # imports dask.distributed only when there is work

        run_on_cluster(todo, params, args)
    print(summary_table(items))
    write_summary(items, out_dir / SUMMARY_FILE)
    return 1 if any(it.status == "failed" for it in items) else 0

