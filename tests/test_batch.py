"""``napari-svi batch`` on a local dask.distributed cluster of 2 worker processes."""

import csv

import numpy as np
import pytest
import tifffile
import torch

from napari_svi import cli
from napari_svi.batch_plan import Item, expand_inputs, output_path, recorded_parameters, summary_table


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    """An untrained 2-level UNet with 8 base channels, saved as a prior folder the workers can load."""
    from napari_svi.priors.unet import UNet, UNetConfig
    from napari_svi.training import TrainConfig, save_prior

    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4)
    torch.manual_seed(0)
    return save_prior(UNet(cfg), tmp_path_factory.mktemp("prior"), TrainConfig(unet=cfg), step=0, seconds=0.0)


def _inputs(folder):
    import zarr

    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        path = folder / f"stack{i}.tif"
        tifffile.imwrite(path, rng.uniform(100, 1000, (6, 16, 16)).astype(np.uint16), imagej=True, metadata={"axes": "TYX"})
        files.append(path)
    z = zarr.open_array(str(folder / "stack2.zarr"), mode="w", shape=(6, 16, 16), chunks=(1, 16, 16), dtype="uint16")
    z[:] = rng.uniform(100, 1000, (6, 16, 16)).astype(np.uint16)
    (folder / "broken.tif").write_bytes(b"this is not a TIFF")
    return files


def test_batch_on_a_local_cluster_of_two_processes(tmp_path, tiny_prior):
    import zarr

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _inputs(src)
    flags = ["--prior", str(tiny_prior), "--steps", "2", "--temporal-psf", "uniform:3", "--device", "cpu",
             "--window", "4"]
    argv = ["batch", str(src / "stack*"), str(src / "broken.tif"), "-o", str(out), *flags,
            "--workers", "2", "--threads-per-worker", "1", "--retries", "1"]
    assert cli.main(argv) == 1  # one input failed
    with open(out / "batch_summary.csv") as f:
        rows = {r["input"]: r for r in csv.DictReader(f)}
    assert [r["status"] for r in rows.values()] == ["done", "done", "done", "failed"]
    assert "not a TIFF" in rows[str(src / "broken.tif")]["message"]
    from napari_svi.io import read_stack
    from napari_svi.threads import usable_cores

    for i in range(2):
        restored, info = read_stack(out / f"stack{i}_restored.tif")
        assert restored.shape == (6, 16, 16) and restored.dtype == np.float32 and np.isfinite(restored).all()
        assert info.metadata["threads"] == max(1, usable_cores() // 2)  # two worker processes share the cores
    group = zarr.open_group(str(out / "stack2_restored.zarr"), mode="r")
    assert group.attrs["napari_svi_progress"]["complete"] and not np.isnan(group["restored"][:]).any()
    assert group.attrs["napari_svi"]["batch_parameters"]["steps"] == 2

    # finished outputs are never recomputed: no cluster is even started
    before = (out / "stack0_restored.tif").stat().st_mtime_ns
    assert cli.main(["batch", str(src / "stack*"), "-o", str(out), *flags]) == 0
    with open(out / "batch_summary.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["skipped"] * 3
    assert (out / "stack0_restored.tif").stat().st_mtime_ns == before


def test_planning_helpers(tmp_path):
    files = _inputs(tmp_path)
    found = expand_inputs([str(tmp_path / "*"), str(files[0])])
    assert [p.name for p in found] == ["broken.tif", "stack0.tif", "stack1.tif", "stack2.zarr"]
    with pytest.raises(ValueError, match="no input matches"):
        expand_inputs([str(tmp_path / "nothing*.tif")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="TIFF files"):
        expand_inputs([str(tmp_path / "notes.txt")])
    assert output_path(found[3], tmp_path / "o").name == "stack2_restored.zarr"
    assert output_path(found[1], tmp_path / "o", "zarr").name == "stack0_restored.zarr"
    assert recorded_parameters(tmp_path / "missing.tif") is None
    assert recorded_parameters(files[0]) is None  # a file without a batch record is never "done"
    table = summary_table([Item("a.tif", "a_restored.tif", "done", 1.5), Item("b.tif", "b_restored.tif", "failed", 0, "boom")])
    assert "1 done, 0 skipped, 1 failed" in table and "boom" in table


def test_local_layout_shares_the_cores_among_the_stacks_that_run_at_once(monkeypatch):
    import napari_svi.threads as threads
    from napari_svi.batch_plan import parameters
    from napari_svi.batch_tasks import local_layout

    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert local_layout(2, None, 10) == (2, 1, 4)  # 2 processes, one stack each at a time, 4 threads each
    assert local_layout(2, 2, 10) == (2, 2, 2)
    assert local_layout(16, None, 10) == (10, 1, 1)  # never more workers than stacks, at least one thread
    assert local_layout(2, None, 10, threads=3) == (2, 1, 3)  # --threads wins
    args = cli.build_parser("batch").parse_args(["batch", "a.tif", "-o", "out", "--threads", "2"])
    assert "threads" not in parameters(args)  # threads do not change the result: outputs are still skipped


def test_bad_flags_fail_before_any_cluster_starts(tmp_path, capsys):
    _inputs(tmp_path)
    assert cli.main(["batch", str(tmp_path / "stack0.tif"), "-o", str(tmp_path / "o"), "--temporal-psf", "box:3"]) == 2
    assert "temporal_psf" in capsys.readouterr().err
    assert cli.main(["batch", str(tmp_path / "none*.tif"), "-o", str(tmp_path / "o")]) == 2


def test_a_task_writes_the_std_side_file_with_the_axes_and_pixel_size_of_the_result(tmp_path, tiny_prior):
    from napari_svi.batch_tasks import restore_file
    from napari_svi.io import read_stack, write_stack

    rng = np.random.default_rng(1)
    src = write_stack(tmp_path / "cells.tif", rng.uniform(100, 1000, (4, 16, 16)).astype(np.uint16), axes="TYX",
                      pixel_size_um=(0.25, 0.25), frame_interval_s=2.0)
    out = tmp_path / "cells_restored.tif"
    report = restore_file(str(src), str(out), {}, ["--prior", str(tiny_prior), "--steps", "1", "--samples", "2",
                                                   "--device", "cpu", "--threads", "1"])
    assert "error" not in report, report
    restored, info = read_stack(out)
    std, std_info = read_stack(tmp_path / "cells_restored_std.tif")
    assert std.shape == restored.shape == (4, 16, 16)
    assert std_info.axes == info.axes == "TYX"
    assert std_info.pixel_size_um == info.pixel_size_um and np.allclose(info.pixel_size_um, (0.25, 0.25))
    assert std_info.frame_interval_s == info.frame_interval_s == 2.0
