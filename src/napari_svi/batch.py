"""``napari-svi batch``: restore many stacks on a Dask cluster, one stack per task.

Without ``--scheduler`` a local ``dask.distributed`` cluster of worker processes is started on
this machine; with ``--scheduler ADDRESS`` the stacks go to an existing cluster (for example one
started with dask-jobqueue on SLURM). Each task restores one file with the same operator and
sampler settings, on the worker's own GPU when it has one. Failed tasks are retried
(``--retries``), finished outputs are never recomputed (an output whose recorded parameters match
is skipped; a partly written zarr output is resumed), and a summary lists every input with its
status. See ``docs/cluster.md``.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SUFFIX = "_restored"
SUMMARY_FILE = "batch_summary.csv"
_INPUT_SUFFIXES = (".tif", ".tiff", ".zarr")


@dataclass
class Item:
    """One input of a batch and what became of it."""

    input: str
    output: str
    status: str = "pending"  # done | skipped | failed
    seconds: float = 0.0
    message: str = ""


# ---------------------------------------------------------------------------------------- planning


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files named or matched by glob patterns (``**`` recurses), in order, without duplicates.

    Raises ``ValueError`` for a pattern that matches nothing or a file of an unsupported type.
    """
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if Path(m).exists()]
        if not matches:
            raise ValueError(f"no input matches {pattern!r}")
        for m in matches:
            path = Path(m)
            if path.suffix.lower() not in _INPUT_SUFFIXES:
                if glob.has_magic(pattern):
                    continue
                raise ValueError(f"{m}: inputs must be TIFF files (.tif, .tiff) or zarr stores (.zarr)")
            if path.resolve() not in {p.resolve() for p in found}:
                found.append(path)
    if not found:
        raise ValueError(f"no TIFF or zarr input among {patterns}")
    return found


def output_path(path: Path, out_dir: Path, output_format: str = "same") -> Path:
    """``OUT_DIR/<stem>_restored.<tif|zarr>``; ``output_format`` ``same`` keeps the input's kind."""
    kind = ("zarr" if path.suffix.lower() == ".zarr" else "tif") if output_format == "same" else output_format
    return out_dir / f"{path.stem}{SUFFIX}.{kind}"


def parameters(args: argparse.Namespace) -> dict:
    """The settings that decide a restore's result (recorded in every output, compared to skip)."""
    from .cli_flags import operator_from_args, sampler_kwargs

    kwargs = sampler_kwargs(args)
    kwargs.pop("device")  # the device and the CPU threads do not change what is computed
    kwargs.pop("threads")
    spec = operator_from_args(args)
    record = {"operator": spec.to_dict(), "time_axis": args.time_axis, **kwargs}
    return json.loads(json.dumps(record, default=str))


def recorded_parameters(path: Path) -> dict | None:
    """The batch parameters recorded in an existing output, or ``None`` (missing, unfinished, other)."""
    if not path.exists():
        return None
    try:
        if path.suffix == ".zarr":
            import zarr

            attrs = dict(zarr.open_group(str(path), mode="r").attrs)
            if not (attrs.get("napari_svi_progress") or {}).get("complete"):
                return None
            record = attrs.get("napari_svi") or {}
        else:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                text = (tif.imagej_metadata or {}).get("Info") or (
                    tif.shaped_metadata[0].get("napari_svi") if tif.shaped_metadata else None
                )
            record = json.loads(text).get("napari_svi", {}) if text else {}
    except Exception:  # unreadable: recompute it
        return None
    return record.get("batch_parameters")


# ---------------------------------------------------------------------------------------- one task


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
    args = _task_parser().parse_args([input_path, "-o", output_path, *argv])
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
        if result.std is not None:
            write_stack(out.with_name(out.stem + "_std.tif"), result.std,  # checked by plan_item axes=axes, pixel_size_um=px,
                        frame_interval_s=interval, metadata={**meta, "content": "per-pixel posterior std"})
        write_stack(out, result.restored, axes=axes, pixel_size_um=px, frame_interval_s=interval, metadata=meta)
    return {"seconds": round(time.perf_counter() - t0, 2), "device": result.metadata["device"]}


def _task_parser() -> argparse.ArgumentParser:
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


# ---------------------------------------------------------------------------------------- the command


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
    from .cli_flags import operator_from_args
    from .outputs import check_writable_folder

    out_dir = Path(args.output_dir)
    inputs = expand_inputs(args.inputs)
    params = parameters(args)
    operator_from_args(args)  # bad operator flags fail here, before any cluster starts
    for flag, value, least in (("--retries", args.retries, 0), ("--workers", args.workers, 1),
                               ("--threads-per-worker", args.threads_per_worker, 1), ("--gpus-per-task", args.gpus_per_task, 0)):
        if value is not None and value < least:
            raise ValueError(f"{flag} must be an integer >= {least}, got {value}")
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
            _remove(Path(it.output))
    todo = [it for it in items if it.status == "pending"]
    if todo:
        _run_on_cluster(todo, params, args)
    print(summary_table(items))
    write_summary(items, out_dir / SUMMARY_FILE)
    return 1 if any(it.status == "failed" for it in items) else 0


def _run_on_cluster(todo: list[Item], params: dict, args) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as err:
        raise ValueError("napari-svi batch needs dask.distributed: pip install 'napari-svi[distributed]'") from err
    cluster = None
    argv = _forwarded_flags(args)
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        workers, per_worker, threads = _local_layout(args.workers, args.threads_per_worker, len(todo), args.threads)
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


def plan_item(it: Item, inputs: list[Path], args: argparse.Namespace) -> str:
    """Why this input cannot be restored to its output, found before any work (``""`` when it can).

    The input must be readable (a TIFF's header, a zarr store's metadata); its output and side file
    (``_std.tif`` with several samples) must not be an input, must not exist unless ``--overwrite``
    (a zarr store napari-svi wrote is resumed), and an existing zarr store that napari-svi did not
    write is never replaced.
    """
    from .outputs import check_outputs, side_path

    try:
        probe_input(Path(it.input))
        out = Path(it.output)
        outputs = [out] + ([side_path(out, "std")] if args.samples > 1 and out.suffix != ".zarr" else [])
        others = [Path(p) for p in (args.mask,) if p]
        check_outputs(outputs, [*inputs, *others], overwrite=args.overwrite, zarr_ok=True, option="--output-dir")
    except (ValueError, FileNotFoundError) as err:
        return str(err)
    return ""


def probe_input(path: Path) -> None:
    """Open ``path``'s header (TIFF) or metadata (zarr) without reading pixels; ``ValueError`` if unreadable."""
    if path.suffix.lower() == ".zarr":
        from .lazy import open_zarr

        open_zarr(path)
        return
    import tifffile

    from .io import _quiet_tifffile

    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape if tif.series else ()
    except Exception as err:  # tifffile raises many types for damaged files
        raise ValueError(f"cannot read {path} as a TIFF (damaged or not a TIFF file): {err}") from None
    if not shape or 0 in shape:
        raise ValueError(f"cannot read {path} as a TIFF: it holds no pixels (an empty or damaged file)")


def check_summary_file(path: Path) -> None:
    """The summary is rewritten by every batch; a file of that name that a batch did not write is kept."""
    if not path.exists():
        return
    try:
        with open(path, newline="") as f:
            first = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        first = ""
    if path.is_dir() or first != ",".join(_SUMMARY_COLUMNS):
        raise ValueError(f"--output-dir: {str(path)!r} exists and is not a batch summary; it is never replaced: "
                         "move it or choose another --output-dir")


def _local_layout(workers: int | None, per_worker: int | None, n_tasks: int,
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


def _forwarded_flags(args: argparse.Namespace) -> list[str]:
    """Operator and sampler flags, as command-line text for :func:`restore_file` (parsed again there)."""
    parser = _task_parser()
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


def summary_table(items: list[Item]) -> str:
    """Plain-text table: input, status, seconds, output, message."""
    rows = [("input", "status", "seconds", "output", "message")]
    rows += [(it.input, it.status, f"{it.seconds:.1f}", it.output, it.message) for it in items]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    counts = {s: sum(it.status == s for it in items) for s in ("done", "skipped", "failed")}
    lines.append(f"{len(items)} input(s): {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
    return "\n".join(lines)


_SUMMARY_COLUMNS = ("input", "status", "seconds", "output", "message")


def write_summary(items: list[Item], path: Path) -> None:
    """Write the summary CSV atomically (a temporary file renamed), with the umask's permissions."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(list(_SUMMARY_COLUMNS))
            for it in items:
                writer.writerow([it.input, it.status, it.seconds, it.output, it.message])
        from .io import _umask

        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _remove(path: Path) -> None:
    import shutil

    from .sinks import is_napari_svi_store

    if path.is_dir():
        if not is_napari_svi_store(path):  # plan_item refused it already; never delete a user's folder
            raise ValueError(f"{path} is not a zarr store written by napari-svi; it is never deleted")
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
