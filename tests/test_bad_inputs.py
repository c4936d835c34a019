"""The command line over many bad inputs: each is refused with a message naming the parameter.

For every case: a non-zero exit, a message that names the parameter (or the file) at fault, no
traceback, every input file byte-identical afterwards, and (unless the prior itself is the bad
input) the prior never loaded, i.e. the input was refused before the work.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_svi.cli import main
from napari_svi.io import write_stack

R = ["restore", "{d}/movie.tif", "-o", "{d}/out/r.tif", "--prior", "{prior}", "--device", "cpu", "--quiet"]
D = ["degrade", "{d}/movie.tif", "-o", "{d}/out/d.tif"]
B = ["batch", "{d}/movie.tif", "-o", "{d}/out/batch", "--prior", "{prior}", "--device", "cpu"]
T = ["train", "{d}/movie.tif", "-o", "{d}/out/prior", "--patch-size", "16", "--batch-size", "2", "--steps", "2",
     "--base-channels", "8", "--channel-mults", "1,2", "--blocks-per-level", "1", "--device", "cpu"]
Q = ["benchmark", "quality", "-o", "{d}/out/report", "--methods", "cg", "--tasks", "temporal-box7", "--frames", "4",
     "--crop", "32"]


def restore_on(name: str) -> list[str]:
    return [R[0], "{d}/" + name, *R[2:]]


# (id, argv, words the message must contain, the prior may load)
CASES = [
    # --- restore: the input file
    ("restore-missing-input", restore_on("missing.tif"), ["missing.tif", "not found"], False),
    ("restore-text-input", restore_on("notes.tif"), ["notes.tif", "cannot read"], False),
    ("restore-empty-file", restore_on("empty.tif"), ["empty.tif", "cannot read"], False),
    ("restore-truncated-tiff", restore_on("truncated.tif"), ["truncated.tif", "cannot read"], False),
    ("restore-2d-image", restore_on("image2d.tif"), ["time axis"], False),
    ("restore-rgb-photo", restore_on("photo.tif"), ["colour channels"], False),
    ("restore-nan", restore_on("nan.tif"), ["data", "NaN"], False),
    ("restore-constant", restore_on("const.tif"), ["data", "constant"], False),
    ("restore-float64-overflow", restore_on("huge.tif"), ["data", "values up to"], False),
    ("restore-one-pixel-frames", restore_on("thin.tif"), ["data", "2 x 2"], False),
    ("restore-nan-zarr", restore_on("nan.zarr"), ["data", "NaN"], False),
    ("restore-plain-folder-input", restore_on("plain.zarr"), ["plain.zarr"], False),
    # --- restore: the output
    ("restore-png-output", R[:3] + ["{d}/out/r.png"] + R[4:], ["--output", ".tif"], False),
    ("restore-no-extension", R[:3] + ["{d}/out/r"] + R[4:], ["--output", ".tif"], False),
    ("restore-output-is-input", R[:3] + ["{d}/movie.tif", "--overwrite"] + R[4:], ["--output", "input"], False),
    ("restore-output-exists", R[:3] + ["{d}/existing.tif"] + R[4:], ["--overwrite"], False),
    ("restore-output-folder-missing", R[:3] + ["{d}/nowhere/r.tif"] + R[4:], ["--output", "does not exist"], False),
    ("restore-output-is-a-folder", R[:3] + ["{d}/folder.tif", "--overwrite"] + R[4:], ["--output", "folder"], False),
    ("restore-overwrite-plain-zarr", R[:3] + ["{d}/plain.zarr", "--overwrite"] + R[4:],
     ["--output", "not a zarr store written by napari-svi"], False),
    ("restore-zarr-holding-input", ["restore", "{d}/plain.zarr/inner.tif", "-o", "{d}/plain.zarr", "--overwrite",
                                    *R[4:]], ["--output", "inside"], False),
    ("restore-output-unwritable", R[:3] + ["{ro}/r.tif"] + R[4:], ["--output", "cannot write"], False),
    ("restore-std-over-input", ["restore", "{d}/a_std.tif", "-o", "{d}/a.tif", "--samples", "2", *R[4:]],
     ["--output", "input is never overwritten"], False),
    ("restore-std-exists", ["restore", "{d}/movie.tif", "-o", "{d}/out/e.tif", "--samples", "2", *R[4:]],
     ["e_std.tif", "--overwrite"], False),
    # --- restore: sampler flags
    ("restore-steps-0", R + ["--steps", "0"], ["steps"], False),
    ("restore-steps-negative", R + ["--steps", "-3"], ["steps"], False),
    ("restore-steps-text", R + ["--steps", "many"], ["--steps"], False),
    ("restore-eta-2", R + ["--eta", "2"], ["eta"], False),
    ("restore-eta-nan", R + ["--eta", "nan"], ["eta"], False),
    ("restore-cg-steps-negative", R + ["--cg-steps", "-1"], ["cg_steps"], False),
    ("restore-samples-0", R + ["--samples", "0"], ["samples"], False),
    ("restore-seed-negative", R + ["--seed", "-1"], ["seed"], False),
    ("restore-noise-negative", R + ["--noise-sigma", "-1"], ["--noise-sigma"], False),
    ("restore-noise-nan", R + ["--noise-sigma", "nan"], ["--noise-sigma"], False),
    ("restore-noise-text", R + ["--noise-sigma", "lots"], ["--noise-sigma"], False),
    ("restore-gamma-negative", R + ["--gamma", "-1"], ["gamma"], False),
    ("restore-gamma-zero", R + ["--gamma", "0"], ["gamma"], False),
    ("restore-device-tpu", R + ["--device", "tpu"], ["device"], False),
    ("restore-device-cuda-99", R + ["--device", "cuda:99"], ["device"], False),
    ("restore-prior-missing", R + ["--prior", "{d}/no-prior"], ["prior", "no-prior"], True),
    ("restore-prior-empty-folder", R + ["--prior", "{d}/empty-prior"], ["empty-prior", "config.json"], True),
    ("restore-prior-text-file", R + ["--prior", "{d}/notes.txt"], ["notes.txt", "prior"], True),
    ("restore-prior-diffusers-class", R + ["--prior", "{d}/vae-prior"], ["vae-prior", "UNet2DModel"], True),
    # --- restore: forward model flags
    ("restore-temporal-uniform-0", R + ["--temporal-psf", "uniform:0"], ["temporal_psf"], False),
    ("restore-temporal-unknown", R + ["--temporal-psf", "wiggly:3"], ["temporal_psf"], False),
    ("restore-temporal-gaussian-negative", R + ["--temporal-psf", "gaussian:-1"], ["temporal_psf"], False),
    ("restore-temporal-file-missing", R + ["--temporal-psf", "{d}/kernel-missing.txt"], ["temporal_psf"], False),
    ("restore-temporal-too-long-circular", R + ["--temporal-psf", "uniform:9", "--temporal-boundary", "circular"],
     ["temporal_psf"], False),
    ("restore-temporal-boundary-bad", R + ["--temporal-boundary", "wrap"], ["--temporal-boundary"], False),
    ("restore-exposure-alone", R + ["--exposure-ms", "100"], ["--exposure-ms", "--frame-interval-ms"], False),
    ("restore-exposure-and-psf", R + ["--exposure-ms", "50", "--frame-interval-ms", "100", "--temporal-psf", "uniform:3"],
     ["--temporal-psf", "--exposure-ms"], False),
    ("restore-exposure-interval-zero", R + ["--exposure-ms", "50", "--frame-interval-ms", "0"], ["interval"], False),
    ("restore-subsample-0", R + ["--temporal-subsample", "0"], ["temporal_subsample"], False),
    ("restore-spatial-negative", R + ["--spatial-psf", "gaussian:-1"], ["spatial_psf"], False),
    ("restore-spatial-too-large", R + ["--spatial-psf", "gaussian:40"], ["spatial_psf"], False),
    ("restore-spatial-airy-bad-na", R + ["--spatial-psf", "airy:0,520,100"], ["spatial_psf"], False),
    ("restore-spatial-file-missing", R + ["--spatial-psf", "{d}/psf-missing.tif"], ["spatial_psf"], False),
    ("restore-downsample-0", R + ["--downsample", "0"], ["downsample"], False),
    ("restore-mask-missing", R + ["--mask", "{d}/mask-missing.tif"], ["mask"], False),
    ("restore-mask-shape", R + ["--mask", "{d}/mask-small.tif"], ["mask", "5 x 7"], False),
    ("restore-mask-all-zero", R + ["--mask", "{d}/mask-zero.tif"], ["mask", "no observed pixel"], False),
    ("restore-mask-damaged", R + ["--mask", "{d}/truncated.tif"], ["mask", "cannot read"], False),
    ("restore-time-axis-out-of-range", R + ["--time-axis", "5"], ["time_axis", "0..0"], False),
    ("restore-time-axis-is-y", R + ["--time-axis", "1"], ["time_axis"], False),
    # --- restore: windows and memory
    ("restore-window-negative", R + ["--window", "-1"], ["window"], False),
    ("restore-window-overlap-too-big", R + ["--window", "4", "--window-overlap", "4"], ["window_overlap"], False),
    ("restore-window-margin-negative", R + ["--window-margin", "-1"], ["window_margin"], False),
    ("restore-tile-size-tiny", R + ["--tile-size", "3"], ["tile_size"], False),
    ("restore-memory-budget-text", R + ["--memory-budget", "lots"], ["memory_budget"], False),
    ("restore-true-frames-without-subsample", R + ["--true-frames", "3"], ["true_frames"], False),
    # --- degrade
    ("degrade-noise-negative", D + ["--noise-sigma", "-1"], ["noise_sigma"], False),
    ("degrade-poisson-zero", D + ["--poisson-peak", "0"], ["poisson_peak"], False),
    ("degrade-missing-fraction-1.5", D + ["--missing-fraction", "1.5"], ["missing_fraction"], False),
    ("degrade-mask-and-fraction", D + ["--missing-fraction", "0.3", "--mask", "{d}/mask-ok.tif"],
     ["--mask", "--missing-fraction"], False),
    ("degrade-png-output", D[:3] + ["{d}/out/d.png"], ["--output", ".tif"], False),
    ("degrade-mask-over-input", ["degrade", "{d}/b_mask.tif", "-o", "{d}/b.tif", "--missing-fraction", "0.2"],
     ["--output", "input is never overwritten"], False),
    ("degrade-2d-image", ["degrade", "{d}/image2d.tif", "-o", "{d}/out/d.tif"], ["time axis"], False),
    ("degrade-downsample-not-dividing", D + ["--downsample", "3"], ["downsample"], False),
    # --- batch
    ("batch-no-match", ["batch", "{d}/nothing*.tif", *B[2:]], ["no input matches"], False),
    ("batch-text-file", ["batch", "{d}/notes.txt", *B[2:]], ["notes.txt", "TIFF"], False),
    ("batch-retries-negative", B + ["--retries", "-1"], ["--retries"], False),
    ("batch-workers-0", B + ["--workers", "0"], ["--workers"], False),
    ("batch-output-dir-is-file", ["batch", "{d}/movie.tif", "-o", "{d}/existing.tif", *B[4:]], ["--output-dir"], False),
    ("batch-bad-operator", B + ["--temporal-psf", "box:3"], ["temporal_psf"], False),
    ("batch-summary-not-ours", ["batch", "{d}/movie.tif", "-o", "{d}/foreign", *B[4:]],
     ["batch_summary.csv", "never replaced"], False),
    # --- train
    ("train-missing-image", ["train", "{d}/missing.tif", *T[2:]], ["missing.tif", "not found"], False),
    ("train-text-image", ["train", "{d}/notes.tif", *T[2:]], ["notes.tif", "TIFF"], False),
    ("train-steps-0", T + ["--steps", "0"], ["steps"], False),
    ("train-lr-negative", T + ["--lr", "-1"], ["--lr"], False),
    ("train-minutes-0", T + ["--minutes", "0"], ["--minutes"], False),
    ("train-patch-larger-than-frames", T + ["--patch-size", "64"], ["patch"], False),
    ("train-output-holds-user-files", T[:3] + ["{d}/foreign"] + T[4:], ["--output", "napari-svi prior folder"], False),
    ("train-channel-mults-text", T + ["--channel-mults", "one,two"], ["--channel-mults"], False),
    ("train-device-tpu", T + ["--device", "tpu"], ["device"], False),
    # --- benchmark
    ("benchmark-frames-0", Q + ["--frames", "0"], ["--frames"], False),
    ("benchmark-peak-photons-0", Q + ["--peak-photons", "0"], ["--peak-photons"], False),
    ("benchmark-data-missing", Q + ["--data", "{d}/missing.tif"], ["missing.tif", "not found"], False),
    ("benchmark-output-is-file", ["benchmark", "quality", "-o", "{d}/existing.tif", *Q[4:]], ["--output"], False),
    ("benchmark-threads-0", Q + ["--threads", "0"], ["--threads"], False),
    ("benchmark-unknown-task", Q + ["--tasks", "sharpen"], ["--tasks"], False),
]


def _files(d: Path, real_clip: np.ndarray) -> None:
    """The inputs of the cases (all small), in ``d``."""
    rng = np.random.default_rng(0)
    write_stack(d / "movie.tif", real_clip, axes="TYX")
    write_stack(d / "a_std.tif", real_clip, axes="TYX")
    write_stack(d / "b_mask.tif", real_clip, axes="TYX")
    (d / "existing.tif").write_bytes(b"an existing result")
    (d / "notes.tif").write_text("not an image")
    (d / "notes.txt").write_text("not an image")
    (d / "empty.tif").write_bytes(b"")
    (d / "truncated.tif").write_bytes((d / "movie.tif").read_bytes()[:8])
    tifffile.imwrite(d / "image2d.tif", real_clip[0])
    tifffile.imwrite(d / "photo.tif", np.stack([real_clip[0]] * 3, axis=-1), photometric="rgb")
    nan = real_clip.astype(np.float32)
    nan[2, 3, 4] = np.nan
    tifffile.imwrite(d / "nan.tif", nan, photometric="minisblack")
    tifffile.imwrite(d / "const.tif", np.full((4, 16, 16), 7, np.uint16), photometric="minisblack")
    tifffile.imwrite(d / "huge.tif", real_clip.astype(np.float64) * 1e300, photometric="minisblack")
    tifffile.imwrite(d / "thin.tif", rng.random((4, 1, 16)).astype(np.float32), photometric="minisblack")
    (d / "plain.zarr").mkdir()
    (d / "plain.zarr" / "notes.txt").write_text("a user's folder")
    write_stack(d / "plain.zarr" / "inner.tif", real_clip, axes="TYX")
    (d / "folder.tif").mkdir()
    (d / "empty-prior").mkdir()
    (d / "vae-prior").mkdir()
    (d / "vae-prior" / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    tifffile.imwrite(d / "mask-small.tif", np.ones((5, 7), np.uint8))
    tifffile.imwrite(d / "mask-zero.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(d / "mask-ok.tif", np.ones((32, 32), np.uint8))
    (d / "foreign").mkdir()
    (d / "foreign" / "batch_summary.csv").write_text("a user's table\n")
    (d / "foreign" / "config.json").write_text('{"mine": true}')
    (d / "out").mkdir()
    (d / "out" / "e_std.tif").write_bytes(b"an existing std map")
    try:
        import zarr
    except ImportError:
        return
    z = zarr.open_array(str(d / "nan.zarr"), mode="w", shape=nan.shape, chunks=(1, 32, 32), dtype="float32")
    z[:] = nan


def _hashes(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if _can_write(folder) and Path("/sys").is_dir() and not _can_write(Path("/sys")):
        return Path("/sys")  # running as root: /sys is read-only even then
    return folder


def _can_write(folder: Path) -> bool:
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("case_id, argv, words, prior_may_load", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_clear_message(case_id, argv, words, prior_may_load, tmp_path, real_clip,
                                                   tiny_prior_dir, monkeypatch, capsys):
    if case_id == "restore-nan-zarr":
        pytest.importorskip("zarr")
    d = tmp_path / "in"
    d.mkdir()
    _files(d, real_clip)
    ro = _read_only_folder(tmp_path)
    if case_id == "restore-output-unwritable" and _can_write(ro):
        pytest.fail("no read-only folder on this machine to test with")
    from napari_svi.priors import loading

    loads = []
    real_load = loading.load_prior
    monkeypatch.setattr(loading, "load_prior", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    args = [a.format(d=d, prior=tiny_prior_dir, ro=ro) for a in argv]
    before = _hashes(d, Path(tiny_prior_dir))
    try:
        rc = main(args)
    except SystemExit as exit_:  # argparse's own errors
        rc = exit_.code
    err = capsys.readouterr().err
    assert rc not in (0, None), f"accepted: {err}"
    assert "Traceback" not in err
    missing = [w for w in words if w not in err]
    assert not missing, f"the message {err!r} does not name {missing}"
    last = err.strip().splitlines()[-1]
    assert last.startswith("napari-svi") and "error" in last, f"not one clear error line: {err!r}"
    after = _hashes(d, Path(tiny_prior_dir))
    changed = [p for p in before if after.get(p) != before[p]]
    assert not changed, f"input files changed or removed: {changed}"
    if not prior_may_load:
        assert not loads, "the prior was loaded before the bad input was refused"


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
