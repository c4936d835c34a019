"""``napari-svi batch``, the worker side: the Dask task that restores one file, and the cluster that runs them.

:func:`restore_file` is one task; it parses the batch's operator and sampler flags again (as
forwarded by :func:`forwarded_flags`), so that a worker builds exactly what ``napari-svi restore``
would, on its own GPU when it has one. :func:`run_on_cluster` starts a local cluster (or connects
to ``--scheduler``), submits the tasks with their retries and records each outcome in its
:class:`~napari_svi.batch_plan.Item`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .batch_plan import Item


def restore_file(input_path: str, output_path: str, params: dict, argv: list[str]) -> dict:
    """Restore one file to ``output_path`` (the body of one Dask task); returns a small report.

    ``argv`` are the command-line flags of the batch (operator and sampler flags), parsed again
    here so that the worker builds exactly what ``napari-svi restore`` would. On a worker with
    several GPUs and ``--device auto``, worker ``i`` uses GPU ``i mod n``.
    """
    from .cli_flags import operator_from_args, sampler_kwargs
    from .io import read_input, write_stack
    from .restore import restore

    t0 = time.perf_counter()
    args = task_parser().parse_args([input_path, "-o", output_path, *argv])
    kwargs = sampler_kwargs(args)
    kwargs["device"] = _worker_device(kwargs["device"])
    kwargs["threads"] = _task_threads(kwargs["threads"])
    try:
        data, info, time_axis, axes = read_input(args.input, args.time_axis)
        spec = operator_from_args(args)
        out = Path(output_path)
        to_zarr = out.suffix == ".zarr"
        result = restore(data, spec, time_axis=time_axis, **kwargs, out=str(out) if to_zarr else None)
    except (ValueError, FileNotFoundError) as err:
        # bad input fails the same way every time: reported, not raised, so that Dask does not retry it
        return {"error": str(err), "seconds": round(time.perf_counter() - t0, 2)}
    px = info.pixel_size_um
    if px is not None and args.downsample > 1:
        px = (px[0] / args.downsample, px[1] / args.downsample)
    interval = info.frame_interval_s / args.temporal_subsample if info.frame_interval_s else None
    meta = {**result.metadata, "command": "batch", "source": str(input_path), "batch_parameters": params}
    if to_zarr:
        import zarr

        group = zarr.open_group(str(out), mode="r+")
        group.attrs["napari_svi"] = json.loads(json.dumps(
            {**meta, "axes": axes, "pixel_size_um": list(px) if px else None, "frame_interval_s": interval},
            default=str))
    else:
        if result.std is not None:  # the side file's path was checked by plan_item
            write_stack(out.with_name(out.stem + "_std.tif"), result.std, axes=axes, pixel_size_um=px,
                        frame_interval_s=interval, metadata={**meta, "content": "per-pixel posterior std"})
        write_stack(out, result.restored, axes=axes, pixel_size_um=px, frame_interval_s=interval, metadata=meta)
    return {"seconds": round(time.perf_counter() - t0, 2), "device": result.metadata["device"]}


def task_parser() -> argparse.ArgumentParser:
    """The flags one task understands: an input, an output, and the operator and sampler flags."""
    from .cli_flags import add_operator_flags, add_sampler_flags

    p = argparse.ArgumentParser(prog="napari-svi batch (task)")
    p.add_argument("input")
    p.add_argument("-o", "--output")
    add_operator_flags(p)
    add_sampler_flags(p)
    return p


def _worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def _task_threads(threads: int | None) -> int | None:
    """PyTorch threads of one task: ``--threads``, else the worker's usable cores shared by the tasks it runs at once.

    (A local cluster always passes ``--threads``: its worker processes share one machine.)
    """
    worker = _worker()
    if threads is not None or worker is None:
        return threads
    from .threads import usable_cores

    return max(1, usable_cores() // max(1, int(getattr(worker.state, "nthreads", 1))))


def _worker_device(device: str) -> str:
    """``auto`` on a machine with several visible GPUs: spread local workers (named 0, 1, ...) over them."""
    if device != "auto":
        return device
    import torch

    worker = _worker()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if worker is None or count <= 1:
        return device
    try:
        index = int(worker.name)
    except (TypeError, ValueError):
        return device
    return f"cuda:{index % count}"


def run_on_cluster(todo: list[Item], params: dict, args: argparse.Namespace) -> None:
    """Restore ``todo`` on a local cluster or ``--scheduler``, one task per input; record each outcome in its item."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as err:
        raise ValueError("napari-svi batch needs dask.distributed: pip install 'napari-svi[distributed]'") from err
    cluster = None
    argv = forwarded_flags(args)
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        workers, per_worker, threads = local_layout(args.workers, args.threads_per_worker, len(todo), args.threads)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=per_worker, processes=True,
                               memory_limit=args.memory_limit, dashboard_address=None)
        client = Client(cluster)
        if args.threads is None:  # the worker processes share this machine's cores
            argv += ["--threads", str(threads)]
    try:
        print(f"napari-svi batch: {len(todo)} stack(s) on {_describe(client)}", file=sys.stderr)
        resources = {"GPU": args.gpus_per_task} if args.gpus_per_task else None
        futures = {}
        for it in todo:
            future = client.submit(restore_file, it.input, it.output, params, argv, key=f"napari-svi-{_key(it)}",
                                   retries=args.retries, pure=False, resources=resources)
            futures[future] = it
        for future in as_completed(futures):
            it = futures[future]
            if future.status == "finished" and "error" in future.result():
                report = future.result()
                it.status, it.seconds, it.message = "failed", report["seconds"], report["error"]
                print(f"napari-svi batch: {it.input} failed (not retried: the same input fails again): "
                      f"{it.message}", file=sys.stderr)
            elif future.status == "finished":
                report = future.result()
                it.status, it.seconds, it.message = "done", report["seconds"], f"on {report['device']}"
            else:
                err = future.exception()
                it.status, it.message = "failed", f"{type(err).__name__}: {err}"
                print(f"napari-svi batch: {it.input} failed after {args.retries} retries: {it.message}", file=sys.stderr)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def local_layout(workers: int | None, per_worker: int | None, n_tasks: int,
                 threads: int | None = None) -> tuple[int, int, int]:
    """Worker processes, stacks each restores at once, and PyTorch threads per stack, for a local cluster.

    The threads default to the usable cores divided among all stacks that run at once, so the
    processes do not oversubscribe the CPU: one thread each when there are as many as cores.
    """
    from .threads import usable_cores

    if workers is None:
        try:
            import torch

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except ImportError:
            gpus = 0
        workers = gpus or 1
    workers = max(1, min(workers, n_tasks))
    per_worker = max(1, per_worker or 1)
    threads = threads or max(1, usable_cores() // (workers * per_worker))
    return workers, per_worker, threads


def _describe(client) -> str:
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    return f"{len(workers)} worker(s), {threads} thread(s) at {info.get('address', '?')}"


def _key(it: Item) -> str:
    import hashlib

    return hashlib.sha1(f"{it.input}->{it.output}".encode()).hexdigest()[:12]


def forwarded_flags(args: argparse.Namespace) -> list[str]:
    """Operator and sampler flags, as command-line text for :func:`restore_file` (parsed again there)."""
    parser = task_parser()
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "output"):
            continue
        value = getattr(args, action.dest, None)
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            if value:
                argv.append(flag)
        elif value is not None and value != action.default:
            argv += [flag, "none" if value is None else str(value)]
    return argv

