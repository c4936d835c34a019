"""No user's file is lost and bad input is refused with a clear message (issue 11, "Defects found on main").

Every test here failed on the code before the fix: it wrote over inputs, deleted folders, misread
RGB files, checked the output after the work, or let a traceback through.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_svi.cli import main
from napari_svi.io import read_stack, write_stack


def digest(path: Path) -> str:
    """SHA-256 of a file, or of every file under a folder (names included)."""
    h = hashlib.sha256()
    paths = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for p in paths:
        h.update(str(p.relative_to(path) if Path(path).is_dir() else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def movie(tmp_path, real_clip):
    path = tmp_path / "movie.tif"
    write_stack(path, real_clip, axes="TYX")
    return path


@pytest.fixture
def no_prior(monkeypatch):
    """Fail the test if the prior is loaded: every check must come before that."""
    from napari_svi.priors import loading

    def refuse(*args, **kwargs):
        raise AssertionError("the prior was loaded: the work started before the input was refused")

    monkeypatch.setattr(loading, "load_prior", refuse)


def restore_flags(prior, quiet: bool = True) -> list[str]:
    return ["--prior", str(prior), "--steps", "1", "--device", "cpu", "--noise-sigma", "2"] + (["--quiet"] if quiet else [])


# ------------------------------------------------------------------ 1. side files


def test_std_side_file_never_overwrites_the_input_or_an_existing_file(tmp_path, real_clip, tiny_prior_dir, capsys):
    src = tmp_path / "movie_std.tif"  # an input whose name is the std map of -o movie.tif
    write_stack(src, real_clip, axes="TYX")
    before = digest(src)
    rc = main(["restore", str(src), "-o", str(tmp_path / "movie.tif"), "--samples", "2", *restore_flags(tiny_prior_dir)])
    assert rc == 2 and digest(src) == before
    assert "input is never overwritten" in capsys.readouterr().err
    assert not (tmp_path / "movie.tif").exists()
    # an unrelated existing OUT_std.tif is not replaced without --overwrite
    other = tmp_path / "b_std.tif"
    other.write_bytes(b"precious")
    rc = main(["restore", str(src), "-o", str(tmp_path / "b.tif"), "--samples", "2", *restore_flags(tiny_prior_dir)])
    assert rc == 2 and other.read_bytes() == b"precious" and "--overwrite" in capsys.readouterr().err


def test_degrade_mask_side_file_never_overwrites_an_input(tmp_path, real_clip, capsys):
    src = tmp_path / "out_mask.tif"
    write_stack(src, real_clip, axes="TYX")
    before = digest(src)
    rc = main(["degrade", str(src), "-o", str(tmp_path / "out.tif"), "--missing-fraction", "0.3"])
    assert rc == 2 and digest(src) == before and "input is never overwritten" in capsys.readouterr().err
    clean = tmp_path / "clean.tif"
    write_stack(clean, real_clip, axes="TYX")
    existing = tmp_path / "m_mask.tif"
    existing.write_bytes(b"precious")
    assert main(["degrade", str(clean), "-o", str(tmp_path / "m.tif"), "--missing-fraction", "0.3"]) == 2
    assert existing.read_bytes() == b"precious" and "--overwrite" in capsys.readouterr().err
    # a --mask that already is OUT_mask.tif is used, not copied onto itself
    mask = tmp_path / "n_mask.tif"
    tifffile.imwrite(mask, np.ones(real_clip.shape[-2:], np.uint8))
    before = digest(mask)
    assert main(["degrade", str(clean), "-o", str(tmp_path / "n.tif"), "--mask", str(mask)]) == 0
    assert digest(mask) == before


# ------------------------------------------------------------------ 2. --overwrite and folders


def test_overwrite_replaces_only_a_zarr_store_napari_svi_wrote(tmp_path, movie, tiny_prior_dir, capsys):
    pytest.importorskip("zarr")
    plain = tmp_path / "results.zarr"  # a user's folder that happens to end in .zarr
    plain.mkdir()
    (plain / "notes.txt").write_text("my notes")
    before = digest(plain)
    rc = main(["restore", str(movie), "-o", str(plain), "--overwrite", *restore_flags(tiny_prior_dir)])
    assert rc == 2 and digest(plain) == before
    assert "not a zarr store written by napari-svi" in capsys.readouterr().err
    # the folder that holds the input
    holder = tmp_path / "data.zarr"
    holder.mkdir()
    inner = holder / "movie.tif"
    inner.write_bytes(movie.read_bytes())
    before = digest(holder)
    rc = main(["restore", str(inner), "-o", str(holder), "--overwrite", *restore_flags(tiny_prior_dir)])
    assert rc == 2 and digest(holder) == before and "inside the output" in capsys.readouterr().err
    # a store napari-svi wrote is replaced; once a user put a file in it, it is kept
    ours = tmp_path / "ours.zarr"
    assert main(["restore", str(movie), "-o", str(ours), *restore_flags(tiny_prior_dir)]) == 0
    assert main(["restore", str(movie), "-o", str(ours), "--overwrite", "--seed", "1", *restore_flags(tiny_prior_dir)]) == 0
    (ours / "added.txt").write_text("mine")
    assert main(["restore", str(movie), "-o", str(ours), "--overwrite", "--seed", "2", *restore_flags(tiny_prior_dir)]) == 2
    assert (ours / "added.txt").read_text() == "mine"


def test_create_zarr_output_never_deletes_a_plain_folder(tmp_path):
    pytest.importorskip("zarr")
    from napari_svi.sinks import create_zarr_output

    plain = tmp_path / "x.zarr"
    plain.mkdir()
    (plain / "keep.txt").write_text("keep")
    with pytest.raises(ValueError, match="not a zarr store written by napari-svi"):
        create_zarr_output(plain, (4, 8, 8), time_axis=0, samples=1, record={}, pending_frames=1, overwrite=True)
    assert (plain / "keep.txt").read_text() == "keep"


# ------------------------------------------------------------------ 3. RGB TIFFs


def test_rgb_timelapse_is_restored_channel_by_channel(tmp_path, real_clip, tiny_prior_dir):
    rng = np.random.default_rng(0)
    rgb = np.stack([real_clip, real_clip[:, ::-1], (rng.random(real_clip.shape) * 255).astype(np.uint8)], axis=-1)
    src = tmp_path / "rgb.tif"
    tifffile.imwrite(src, rgb, photometric="rgb")
    before = digest(src)
    out = tmp_path / "rgb_restored.tif"
    assert main(["restore", str(src), "-o", str(out), *restore_flags(tiny_prior_dir)]) == 0
    with tifffile.TiffFile(out) as tif:  # an ordinary float32 hyperstack, not a float "RGB" image
        assert tif.series[0].axes == "TCYX" and tif.series[0].shape == (8, 3, 32, 32)
        assert tif.pages[0].photometric != tifffile.PHOTOMETRIC.RGB
    restored, info = read_stack(out)
    assert info.axes == "TCYX"
    # the red channel restored inside the RGB file equals that channel restored alone
    grey = tmp_path / "red.tif"
    write_stack(grey, rgb[..., 0], axes="TYX")
    assert main(["restore", str(grey), "-o", str(tmp_path / "red_restored.tif"), *restore_flags(tiny_prior_dir)]) == 0
    alone, _ = read_stack(tmp_path / "red_restored.tif")
    np.testing.assert_allclose(restored[:, 0], alone, rtol=1e-5, atol=1e-4)
    assert digest(src) == before


def test_single_rgb_image_is_refused_with_a_message_about_channels(tmp_path, real_clip, tiny_prior_dir, no_prior, capsys):
    src = tmp_path / "photo.tif"
    tifffile.imwrite(src, np.stack([real_clip[0]] * 3, axis=-1), photometric="rgb")
    assert main(["restore", str(src), "-o", str(tmp_path / "o.tif"), *restore_flags(tiny_prior_dir)]) == 2
    err = capsys.readouterr().err
    assert "colour channels" in err and "time" in err
    assert not (tmp_path / "o.tif").exists()


# ------------------------------------------------------------------ 4. the output checked first


def _unwritable_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if not os.access(folder, os.W_OK):
        return folder
    if Path("/sys").is_dir() and not os.access("/sys", os.W_OK):
        return Path("/sys")  # read-only even for root
    import napari_svi.outputs as outputs  # root on a machine without a read-only folder: the OS answer, simulated

    real = outputs.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if Path(dir) == folder:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(outputs.tempfile, "mkstemp", mkstemp)
    return folder


def test_an_unwritable_output_folder_is_refused_before_the_prior_loads(tmp_path, movie, tiny_prior_dir, monkeypatch, capsys):
    folder = _unwritable_folder(tmp_path, monkeypatch)
    from napari_svi.priors import loading

    monkeypatch.setattr(loading, "load_prior", lambda *a, **k: pytest.fail("the prior was loaded"))
    rc = main(["restore", str(movie), "-o", str(folder / "out.tif"), *restore_flags(tiny_prior_dir)])
    assert rc == 2 and "cannot write to the output folder" in capsys.readouterr().err
    rc = main(["degrade", str(movie), "-o", str(folder / "out.tif")])
    assert rc == 2 and "cannot write to the output folder" in capsys.readouterr().err


# ------------------------------------------------------------------ 5. tracebacks -> messages


@pytest.mark.parametrize("cut", [0, 8, 120])
def test_damaged_tiff_gives_a_message(tmp_path, movie, tiny_prior_dir, cut, capsys):
    bad = tmp_path / "damaged.tif"
    bad.write_bytes(movie.read_bytes()[:cut] if cut else b"")
    assert main(["restore", str(bad), "-o", str(tmp_path / "o.tif"), *restore_flags(tiny_prior_dir)]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "damaged.tif" in err and "list index" not in err


def test_damaged_tiff_in_batch_fails_before_the_cluster_with_a_message(tmp_path, movie, tiny_prior_dir, monkeypatch):
    import napari_svi.batch_tasks as batch_tasks

    monkeypatch.setattr(batch_tasks, "run_on_cluster", lambda *a: pytest.fail("a cluster was started for bad input"))
    bad = tmp_path / "damaged.tif"
    bad.write_bytes(movie.read_bytes()[:8])
    out = tmp_path / "out"
    assert main(["batch", str(bad), "-o", str(out), *restore_flags(tiny_prior_dir, quiet=False)]) == 1
    text = (out / "batch_summary.csv").read_text()
    assert "cannot read" in text and "list index out of range" not in text


def test_diffusers_folder_without_diffusers_gives_a_message(tmp_path, movie, monkeypatch, capsys):
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "UNet2DModel", "sample_size": 32}')
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers now raises ImportError
    rc = main(["restore", str(movie), "-o", str(tmp_path / "o.tif"), "--prior", str(folder), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc != 0 and "diffusers" in err and "pip install" in err
    assert not (tmp_path / "o.tif").exists()


def test_truncated_training_checkpoint_gives_a_message_without_torchs_advice(tmp_path, tiny_prior_dir, real_clip, capsys):
    import shutil

    folder = tmp_path / "prior"
    shutil.copytree(tiny_prior_dir, folder)
    ckpt = folder / "checkpoint.pt"
    assert ckpt.is_file()
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    images = tmp_path / "frames.tif"
    write_stack(images, real_clip, axes="TYX")
    rc = main(["train", str(images), "-o", str(folder), "--steps", "4", "--batch-size", "2", "--patch-size", "16",
               "--base-channels", "8", "--channel-mults", "1,2", "--blocks-per-level", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "checkpoint" in err and "--no-resume" in err
    assert "weights_only" not in err and "Traceback" not in err


def test_python_dash_m_runs_the_command_line(tmp_path):
    import napari_svi

    env = {**os.environ, "PYTHONPATH": str(Path(napari_svi.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "napari_svi.cli", "info"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "napari-svi" in proc.stdout and "Traceback" not in proc.stderr


def test_unexpected_errors_are_one_line_not_a_traceback(tmp_path, movie, monkeypatch, capsys):
    import napari_svi.cli as cli

    def boom(args):
        raise OSError(28, "No space left on device", str(tmp_path / "o.tif"))

    monkeypatch.setattr(cli, "_run_restore", boom)  # bound when main() builds the parser
    assert cli.main(["restore", str(movie), "-o", str(tmp_path / "o.tif")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err


# ------------------------------------------------------------------ 6. the right reason


def test_float64_overflow_is_not_called_constant(tmp_path, real_clip, tiny_prior_dir, no_prior, capsys):
    huge = tmp_path / "huge.tif"
    tifffile.imwrite(huge, real_clip.astype(np.float64) * 1e300, photometric="minisblack")
    assert main(["restore", str(huge), "-o", str(tmp_path / "o.tif"), *restore_flags(tiny_prior_dir)]) == 2
    err = capsys.readouterr().err
    assert "constant" not in err and "values up to" in err and "scale the data down" in err


def test_nan_in_zarr_input_is_called_nan(tmp_path, real_clip, tiny_prior_dir, capsys):
    zarr = pytest.importorskip("zarr")
    data = real_clip.astype(np.float32)
    data[3, 5, 5] = np.nan
    z = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=data.shape, chunks=(1, 32, 32), dtype="float32")
    z[:] = data
    assert main(["restore", str(tmp_path / "in.zarr"), "-o", str(tmp_path / "o.tif"), *restore_flags(tiny_prior_dir)]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and "constant" not in err


def test_damaged_mask_and_mask_shape_messages(tmp_path, movie, tiny_prior_dir, no_prior, capsys):
    bad = tmp_path / "mask.tif"
    bad.write_bytes(movie.read_bytes()[:8] + bytes(2000))
    assert main(["restore", str(movie), "-o", str(tmp_path / "o.tif"), "--mask", str(bad), *restore_flags(tiny_prior_dir)]) == 2
    err = capsys.readouterr().err
    assert "mask" in err and "cannot read" in err and "(0,)" not in err
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.ones((5, 7), np.uint8))
    assert main(["restore", str(movie), "-o", str(tmp_path / "o.tif"), "--mask", str(small), *restore_flags(tiny_prior_dir)]) == 2
    err = capsys.readouterr().err
    assert "32 x 32" in err and "8 x 32 x 32" in err and "5 x 7" in err and "H_m" not in err


# ------------------------------------------------------------------ 7. modes, extensions, single frames, retries


def test_outputs_follow_the_umask(tmp_path, real_clip):
    old = os.umask(0o022)
    try:
        clean = tmp_path / "clean.tif"
        write_stack(clean, real_clip, axes="TYX")
        assert main(["degrade", str(clean), "-o", str(tmp_path / "d.tif"), "--missing-fraction", "0.2"]) == 0
    finally:
        os.umask(old)
    for name in ("clean.tif", "d.tif", "d_mask.tif"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize("name", ["x.png", "x.jpg", "x", "x.tif.bak", "x.npy"])
def test_extensions_napari_svi_does_not_write_are_refused(tmp_path, movie, tiny_prior_dir, no_prior, name, capsys):
    assert main(["restore", str(movie), "-o", str(tmp_path / name), *restore_flags(tiny_prior_dir)]) == 2
    err = capsys.readouterr().err
    assert "--output" in err and ".tif" in err and not (tmp_path / name).exists()
    assert main(["degrade", str(movie), "-o", str(tmp_path / name)]) == 2
    assert ".tif" in capsys.readouterr().err and not (tmp_path / name).exists()


def test_a_single_frame_stays_a_stack(tmp_path, real_clip, tiny_prior_dir):
    one = tmp_path / "one.tif"
    tifffile.imwrite(one, real_clip[:1], photometric="minisblack")  # (1, Y, X)
    assert read_stack(one)[0].shape == (1, 32, 32)
    assert main(["degrade", str(one), "-o", str(tmp_path / "d.tif"), "--noise-sigma", "1"]) == 0
    data, info = read_stack(tmp_path / "d.tif")
    assert data.shape == (1, 32, 32) and info.axes == "TYX"
    assert main(["restore", str(tmp_path / "d.tif"), "-o", str(tmp_path / "r.tif"), *restore_flags(tiny_prior_dir)]) == 0
    assert read_stack(tmp_path / "r.tif")[0].shape == (1, 32, 32)


def test_a_deterministic_failure_in_a_batch_task_is_reported_not_raised(tmp_path, tiny_prior_dir):
    from napari_svi.batch_tasks import restore_file

    const = tmp_path / "const.tif"
    tifffile.imwrite(const, np.full((4, 16, 16), 7, np.uint16), photometric="minisblack")
    report = restore_file(str(const), str(tmp_path / "o.tif"), {}, ["--prior", str(tiny_prior_dir), "--steps", "1",
                                                                     "--device", "cpu"])
    assert "constant" in report["error"]  # returned, so Dask does not run it again
    assert not (tmp_path / "o.tif").exists()


def test_batch_never_replaces_an_existing_file_it_did_not_write(tmp_path, movie, tiny_prior_dir, monkeypatch):
    import napari_svi.batch_tasks as batch_tasks

    monkeypatch.setattr(batch_tasks, "run_on_cluster", lambda *a: pytest.fail("a cluster was started"))
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "movie_restored.tif"
    existing.write_bytes(b"precious")
    (out / "batch_summary.csv").write_text("my own table\n")
    assert main(["batch", str(movie), "-o", str(out), *restore_flags(tiny_prior_dir, quiet=False)]) == 2  # the summary name
    (out / "batch_summary.csv").unlink()
    assert main(["batch", str(movie), "-o", str(out), *restore_flags(tiny_prior_dir, quiet=False)]) == 1
    assert existing.read_bytes() == b"precious"
    assert "--overwrite" in (out / "batch_summary.csv").read_text()


# ------------------------------------------------------------------ 8. benchmark extras first


def test_benchmark_checks_matplotlib_before_any_work(tmp_path, monkeypatch, capsys):
    import napari_svi.benchmark.quality as quality

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the benchmark extra were missing
    monkeypatch.setattr(quality, "run_quality", lambda *a, **k: pytest.fail("the benchmark ran without matplotlib"))
    rc = main(["benchmark", "quality", "-o", str(tmp_path / "report"), "--methods", "cg", "--tasks", "temporal-box7",
               "--frames", "4", "--crop", "32"])
    err = capsys.readouterr().err
    assert rc == 2 and "matplotlib" in err and "napari-svi[benchmark]" in err


def test_a_saved_prior_follows_the_umask(tmp_path):
    """safetensors writes its file 0600; a trained prior's weights follow the umask like every output."""
    from napari_svi.priors.unet import UNet, UNetConfig
    from napari_svi.training import TrainConfig, save_prior

    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4)
    old = os.umask(0o022)
    try:
        out = save_prior(UNet(cfg), tmp_path / "prior", TrainConfig(unet=cfg), step=0, seconds=0.0)
    finally:
        os.umask(old)
    for name in ("weights.safetensors", "config.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
