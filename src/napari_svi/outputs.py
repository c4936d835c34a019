"""Where results go: every output path is checked before the work, so that no user's file is lost.

The command line and the batch call :func:`check_outputs` with every file they are about to write
(the result and its side files: ``OUT_std.tif``, ``OUT_mask.tif``) and every file they read. It
refuses, with a message naming the option:

- an extension napari-svi does not write (``-o x.png`` would be a TIFF named ``.png``);
- an output that is one of the inputs (also through a link), or a zarr output that holds an input;
- an existing file without ``--overwrite``, and an existing folder as a TIFF output;
- an existing ``.zarr`` that is not a store napari-svi wrote: ``--overwrite`` replaces only those;
- a missing or read-only output folder (checked by creating and removing a temporary file).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIX = ".zarr"


def side_path(out: str | os.PathLike, tag: str) -> Path:
    """The side file ``OUT_<tag>.tif`` next to the output ``OUT.tif`` (``OUT_std.tif``, ``OUT_mask.tif``)."""
    out = Path(out)
    return out.with_name(f"{out.stem}_{tag}.tif")


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _inside(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or lies in it."""
    try:
        inner.resolve().relative_to(outer.resolve())
    except ValueError:
        return False
    return True


def check_writable_folder(folder: str | os.PathLike, option: str = "--output") -> Path:
    """``folder`` exists and a file can be created in it (tried, then removed); else ``ValueError``."""
    folder = Path(folder)
    if not folder.exists():
        raise ValueError(f"{option}: the output folder {str(folder)!r} does not exist; create it first")
    if not folder.is_dir():
        raise ValueError(f"{option}: {str(folder)!r} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".napari-svi-write-test.", dir=folder)
    except OSError as err:
        raise ValueError(
            f"{option}: cannot write to the output folder {str(folder)!r} ({err.strerror or err}); "
            "choose a folder you can write to"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return folder


def check_outputs(
    outputs: Iterable[str | os.PathLike],
    inputs: Iterable[str | os.PathLike] = (),
    *,
    overwrite: bool = False,
    zarr_ok: bool = False,
    option: str = "--output",
) -> list[Path]:
    """Refuse (``ValueError`` naming ``option``) any output that would destroy a file or fail after the work.

    ``outputs`` are every path a command will write, the main result first; ``inputs`` every path it
    reads (the data, a mask, a kernel file). With ``overwrite`` an existing output file may be
    replaced, and an existing zarr store only when napari-svi wrote it. Returns the outputs as paths.
    """
    from .sinks import is_napari_svi_store

    outs = [Path(o) for o in outputs]
    ins = [Path(i) for i in inputs if i is not None and not isinstance(i, (bytes, bytearray))]
    seen: list[Path] = []
    for out in outs:
        suffix = out.suffix.lower()
        allowed = TIFF_SUFFIXES + ((ZARR_SUFFIX,) if zarr_ok else ())
        if suffix not in allowed:
            kinds = "TIFF (.tif, .tiff)" + (" or zarr (.zarr)" if zarr_ok else "")
            raise ValueError(f"{option}: {out.name!r} must end in {', '.join(allowed)}: napari-svi writes {kinds}")
        for other in seen:
            if _same(out, other):
                raise ValueError(f"{option}: two outputs of this command would be the same file {str(out)!r}")
        seen.append(out)
        for inp in ins:
            if _same(out, inp):
                raise ValueError(
                    f"{option}: {str(out)!r} is an input of this command, and the input is never overwritten: choose another name"
                )
            if suffix == ZARR_SUFFIX and _inside(inp, out):
                raise ValueError(f"{option}: the input {str(inp)!r} lies inside the output {str(out)!r}; choose another output")
            if inp.is_dir() and _inside(out, inp):
                raise ValueError(f"{option}: {str(out)!r} lies inside the input store {str(inp)!r}; choose another output")
        if out.exists() or out.is_symlink():
            if suffix == ZARR_SUFFIX:
                if not is_napari_svi_store(out):
                    raise ValueError(
                        f"{option}: {str(out)!r} exists and is not a zarr store written by napari-svi; "
                        "it is never replaced, even with --overwrite: choose another output"
                    )
            elif out.is_dir():
                raise ValueError(f"{option}: {str(out)!r} is a folder; name a file to write")
            elif not overwrite:
                raise ValueError(f"{option}: {str(out)!r} exists; pass --overwrite to replace it")
        check_writable_folder(out.parent, option)
    return outs


def input_paths(args) -> list[Path]:
    """Every existing file or folder a command's parsed arguments read: data, mask, kernel files, prior."""
    names = list(getattr(args, "inputs", None) or []) + [getattr(args, "input", None)]
    names += [getattr(args, key, None) for key in ("mask", "temporal_psf", "spatial_psf", "prior", "data")]
    found = []
    for name in names:
        if isinstance(name, (str, os.PathLike)) and str(name) not in ("", "none", "default"):
            p = Path(name)
            if p.exists():
                found.append(p)
    return found


def describe_error(err: BaseException) -> str:
    """One line for an error the commands did not foresee: what happened and what to do, no traceback."""
    if isinstance(err, MemoryError):
        return "out of memory; restore fewer frames at once (--window), or set --memory-budget or --tile-size"
    if isinstance(err, PermissionError):
        return f"permission denied: {err.filename or err}; choose a file or folder you can read and write"
    if isinstance(err, ImportError):
        missing = getattr(err, "name", None)
        hint = f" (pip install {missing})" if missing and "pip install" not in str(err) else ""
        return f"a needed package is missing: {err}{hint}"
    if isinstance(err, OSError):
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror or err}{where}"
    text = str(err).split("\n")[0]
    if isinstance(err, RuntimeError) and "out of memory" in text.lower():
        return "the device ran out of memory; use --tile-size, --memory-budget or a smaller --window"
    return (f"{type(err).__name__}: {text} (unexpected; please report it, with the output of "
            "NAPARI_SVI_DEBUG=1 napari-svi ...)")


#: What ``napari-svi train`` writes into its output folder.
PRIOR_FOLDER_FILES = ("config.json", "weights.safetensors", "checkpoint.pt", "loss.csv", "MODEL_CARD.md")


def check_prior_folder(folder: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), option: str = "--output") -> Path:
    """``train``'s output folder: new, empty, or a prior folder napari-svi wrote (resumed); writable.

    A folder holding other files would have its ``config.json`` (and the rest of
    :data:`PRIOR_FOLDER_FILES`) replaced, so it is refused.
    """
    import json

    folder = Path(folder)
    for inp in inputs:
        if _inside(Path(inp), folder):
            raise ValueError(f"{option}: the training image {str(inp)!r} lies inside the output folder; choose another")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option}: {str(folder)!r} is a file; name a folder for the prior")
    if folder.is_dir() and any(folder.iterdir()):
        ours = False
        config = folder / "config.json"
        try:
            ours = json.loads(config.read_text()).get("format") == "napari-svi-prior"
        except (OSError, ValueError, AttributeError):
            ours = False
        ours = ours or (folder / "checkpoint.pt").is_file() and not config.exists()
        if not ours:
            raise ValueError(
                f"{option}: {str(folder)!r} holds other files and is not a napari-svi prior folder; "
                f"training writes {', '.join(PRIOR_FOLDER_FILES)} there: choose a new or empty folder"
            )
    parent = folder if folder.is_dir() else folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    check_writable_folder(parent, option)
    return folder
