"""``napari-svi batch``, planning and report: which inputs, which outputs, what is already done.

All of it runs in the command's own process before any cluster starts (:mod:`napari_svi.batch`
calls it): the inputs a batch names and their outputs, the parameters recorded in an output (so
that a finished one is skipped), the checks that fail one input before any work, and the summary
table and CSV.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path

SUFFIX = "_restored"
SUMMARY_FILE = "batch_summary.csv"
SUMMARY_COLUMNS = ("input", "status", "seconds", "output", "message")
_INPUT_SUFFIXES = (".tif", ".tiff", ".zarr")


@dataclass
class Item:
    """One input of a batch and what became of it."""

    input: str
    output: str
    status: str = "pending"  # done | skipped | failed
    seconds: float = 0.0
    message: str = ""



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

    from .io import quiet_tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
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
    if path.is_dir() or first != ",".join(SUMMARY_COLUMNS):
        raise ValueError(f"--output-dir: {str(path)!r} exists and is not a batch summary; it is never replaced: "
                         "move it or choose another --output-dir")


def summary_table(items: list[Item]) -> str:
    """Plain-text table: input, status, seconds, output, message."""
    rows = [SUMMARY_COLUMNS]
    rows += [(it.input, it.status, f"{it.seconds:.1f}", it.output, it.message) for it in items]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    counts = {s: sum(it.status == s for it in items) for s in ("done", "skipped", "failed")}
    lines.append(f"{len(items)} input(s): {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
    return "\n".join(lines)


def write_summary(items: list[Item], path: Path) -> None:
    """Write the summary CSV atomically (a temporary file renamed), with the umask's permissions."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(list(SUMMARY_COLUMNS))
            for it in items:
                writer.writerow([it.input, it.status, it.seconds, it.output, it.message])
        from .io import process_umask

        os.chmod(tmp, 0o666 & ~process_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_output(path: Path) -> None:
    """Delete an output for ``--overwrite``: a file, or a zarr store napari-svi wrote (never another folder)."""
    import shutil

    from .sinks import is_napari_svi_store

    if path.is_dir():
        if not is_napari_svi_store(path):  # plan_item refused it already; never delete a user's folder
            raise ValueError(f"{path} is not a zarr store written by napari-svi; it is never deleted")
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
