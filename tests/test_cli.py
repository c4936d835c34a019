"""The command line end to end: degrade then restore, metadata, atomic outputs, clear errors."""

import argparse
import json

import numpy as np
import pytest
import tifffile

from napari_svi.cli import main
from napari_svi.io import read_stack, write_stack


@pytest.fixture
def clean_tif(tmp_path, real_clip):
    path = tmp_path / "clean.tif"
    write_stack(path, real_clip, axes="TYX", pixel_size_um=(0.2, 0.2), frame_interval_s=5.0)
    return path


def test_degrade_then_restore_end_to_end(tmp_path, clean_tif, tiny_prior_dir, capsys):
    blurred = tmp_path / "blurred.tif"
    flags = ["--temporal-psf", "uniform:3", "--spatial-psf", "gaussian:1", "--downsample", "2"]
    assert main(["degrade", str(clean_tif), "-o", str(blurred), *flags, "--noise-sigma", "1.0",
                 "--missing-fraction", "0.2", "--seed", "3"]) == 0
    y, info = read_stack(blurred)
    assert y.shape == (8, 16, 16) and y.dtype == np.float32
    assert info.pixel_size_um == pytest.approx((0.4, 0.4))
    assert info.metadata["operator"]["downsample"] == 2
    mask_path = tmp_path / "blurred_mask.tif"
    assert mask_path.exists()
    mask = tifffile.imread(mask_path)
    assert mask.shape == (8, 16, 16) and 0.7 < mask.mean() < 0.9
    assert np.all(y[mask == 0] == 0)

    restored = tmp_path / "restored.tif"
    assert main(["restore", str(blurred), "-o", str(restored), *flags, "--mask", str(mask_path),
                 "--prior", str(tiny_prior_dir), "--steps", "3", "--samples", "2", "--device", "cpu",
                 "--quiet"]) == 0
    x, info = read_stack(restored)
    assert x.shape == (8, 32, 32) and x.dtype == np.float32 and np.all(np.isfinite(x))
    assert info.axes == "TYX"
    assert info.pixel_size_um == pytest.approx((0.2, 0.2))
    md = info.metadata
    assert md["steps"] == 3 and md["samples"] == 2 and md["prior"] == tiny_prior_dir.name
    assert md["operator"]["spatial_psf"] == "gaussian:1" and md["napari_svi_version"]
    std, _ = read_stack(tmp_path / "restored_std.tif")
    assert std.shape == x.shape and np.all(std >= 0) and std.max() > 0
    assert "wrote" in capsys.readouterr().out


def test_restore_refuses_to_overwrite(tmp_path, clean_tif, tiny_prior_dir, capsys):
    out = tmp_path / "out.tif"
    out.write_bytes(b"precious")
    assert main(["restore", str(clean_tif), "-o", str(out), "--prior", str(tiny_prior_dir)]) == 2
    assert out.read_bytes() == b"precious"
    assert "--overwrite" in capsys.readouterr().err
    assert main(["restore", str(clean_tif), "-o", str(clean_tif), "--overwrite"]) == 2
    assert "input is never overwritten" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--temporal-psf", "uniform:0"], "temporal_psf"),
        (["--temporal-psf", "wiggly:3"], "temporal_psf"),
        (["--spatial-psf", "gaussian:-1"], "spatial_psf"),
        (["--spatial-psf", "gaussian:40"], "spatial_psf"),
        (["--downsample", "0"], "downsample"),
        (["--device", "tpu"], "device"),
        (["--steps", "0"], "steps"),
        (["--eta", "2"], "eta"),
        (["--prior", "/nonexistent/prior"], "prior"),
    ],
)
def test_restore_bad_flags_give_clear_errors(tmp_path, clean_tif, tiny_prior_dir, flags, message, capsys):
    args = ["restore", str(clean_tif), "-o", str(tmp_path / "o.tif"), "--quiet"]
    if "--prior" not in flags:
        args += ["--prior", str(tiny_prior_dir)]
    assert main(args + flags) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "o.tif").exists()


def test_bad_mask_shape_and_nan_input(tmp_path, clean_tif, tiny_prior_dir, capsys):
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(mask, np.ones((5, 7), np.uint8))
    assert main(["restore", str(clean_tif), "-o", str(tmp_path / "o.tif"), "--mask", str(mask),
                 "--prior", str(tiny_prior_dir)]) == 2
    assert "mask" in capsys.readouterr().err
    bad = tmp_path / "nan.tif"
    data = np.ones((4, 16, 16), np.float32)
    data[1, 2, 3] = np.nan
    tifffile.imwrite(bad, data, photometric="minisblack")
    assert main(["restore", str(bad), "-o", str(tmp_path / "o2.tif"), "--prior", str(tiny_prior_dir)]) == 2
    assert "NaN" in capsys.readouterr().err
    const = tmp_path / "const.tif"
    tifffile.imwrite(const, np.full((4, 16, 16), 7, np.uint16), photometric="minisblack")
    assert main(["restore", str(const), "-o", str(tmp_path / "o3.tif"), "--prior", str(tiny_prior_dir)]) == 2
    assert "constant" in capsys.readouterr().err


def test_info_runs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "napari-svi" in out and "torch" in out and "bundled prior" in out


def test_write_stack_is_atomic_and_keeps_metadata(tmp_path):
    path = tmp_path / "x.tif"
    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    write_stack(path, data, axes="TZYX", pixel_size_um=(0.1, 0.2), metadata={"a": [1, 2], "b": "c"})
    back, info = read_stack(path)
    np.testing.assert_array_equal(back, data)
    assert info.axes == "TZYX" and info.metadata == {"a": [1, 2], "b": "c"}
    assert info.pixel_size_um == pytest.approx((0.1, 0.2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]  # no temporary file left
    # a non-ImageJ axis order still round-trips its record
    path2 = tmp_path / "y.tif"
    write_stack(path2, data, axes="ZTYX", metadata={"k": 1})
    back2, info2 = read_stack(path2)
    np.testing.assert_array_equal(back2, data)
    assert info2.metadata == {"k": 1}
    with pytest.raises(ValueError, match="axes"):
        write_stack(tmp_path / "z.tif", data, axes="TYX")
    assert json.dumps(info.metadata)


def test_noise_and_fill_flags_share_the_core_parsers():
    from napari_svi.cli_flags import add_sampler_flags, sampler_kwargs
    from napari_svi.noise import parse_noise_sigma

    parser = argparse.ArgumentParser()
    add_sampler_flags(parser)
    for text, value in (("auto", "auto"), ("none", None), ("noiseless", None), ("0", None), ("0.0", None), ("2.5", 2.5)):
        assert parse_noise_sigma(text) == value  # the widget's field reads the same words
        assert sampler_kwargs(parser.parse_args(["--noise-sigma", text]))["noise_sigma"] == value
    assert "fill_unseen" not in sampler_kwargs(parser.parse_args([]))  # restore's own default
    assert sampler_kwargs(parser.parse_args(["--fill-unseen", "0"]))["fill_unseen"] == 0.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--noise-sigma", "-1"])


def test_version_and_top_level_help_read_as_a_users(capsys):
    from napari_svi import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"napari-svi {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "other modules" not in text and "subcommands" not in text
    for command in ("degrade", "restore", "info", "train", "benchmark", "batch"):
        assert f"\n    {command}" in text
    assert "napari-svi restore movie.tif" in text  # an example


def _all_parsers(parser, path=("napari-svi",)):
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help and choice.help.strip(), f"{' '.join(path)} {choice.dest} has no help"
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


def test_every_option_of_every_command_has_help():
    from napari_svi.cli import build_parser

    parsers = list(_all_parsers(build_parser()))
    names = {" ".join(path) for path, _ in parsers}
    assert {"napari-svi restore", "napari-svi batch", "napari-svi benchmark quality", "napari-svi train"} <= names
    for path, parser in parsers:
        assert "``" not in (parser.description or ""), " ".join(path)
        for action in parser._actions:
            if action.help == "==SUPPRESS==" or action.__class__.__name__ == "_SubParsersAction":
                continue
            where = f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{where} has no help text"
            assert "``" not in action.help, where
    threads = {" ".join(path) for path, parser in parsers
               if any("--threads" in a.option_strings for a in parser._actions)}
    assert {"napari-svi restore", "napari-svi degrade", "napari-svi train", "napari-svi batch"} <= threads


def test_restore_progress_shows_every_stage_from_the_start(tmp_path, clean_tif, tiny_prior_dir, capsys, monkeypatch):
    """The bar names each stage before it runs: the first report comes before the input is read."""
    import napari_svi.io as io

    err_parts, seen_at_read = [], []
    real_read = io.read_stack

    def read_stack(*args, **kwargs):
        err_parts.append(capsys.readouterr().err)
        seen_at_read.append(err_parts[-1])
        return real_read(*args, **kwargs)

    monkeypatch.setattr(io, "read_stack", read_stack)
    out = tmp_path / "restored.tif"
    assert main(["restore", str(clean_tif), "-o", str(out), "--prior", str(tiny_prior_dir), "--steps", "2",
                 "--temporal-psf", "uniform:3", "--window", "2", "--device", "cpu", "--threads", "1"]) == 0
    err_parts.append(capsys.readouterr().err)
    assert "reading clean.tif" in seen_at_read[0]
    err = "".join(err_parts)
    positions = [err.find(text) for text in ("reading clean.tif", "estimating the noise", "loading the prior",
                                            "planning windows", "sampling, window 1/", "sampling, window 2/",
                                            "writing restored.tif")]
    assert -1 not in positions and positions == sorted(positions), (positions, err)
    _, info = read_stack(out)
    assert info.metadata["threads"] == 1 and info.metadata["cpu_cores_usable"] >= 1


@pytest.mark.parametrize("command", ["restore", "degrade"])
def test_threads_flag_is_checked(tmp_path, clean_tif, command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, str(clean_tif), "-o", str(tmp_path / "o.tif"), "--threads", "0"])
    assert exit_.value.code == 2
    assert "--threads: must be a whole number >= 1, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists()


def test_restore_progress_is_whole_lines_in_a_log_and_a_bar_on_a_terminal(tmp_path, clean_tif, capsys, monkeypatch):
    """Piped to a file, stderr gets one line per stage and the error on its own line (no bar fragments)."""
    import sys

    args = ["restore", str(clean_tif), "-o", str(tmp_path / "o.tif"), "--prior", str(tmp_path / "missing")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("napari-svi restore: reading clean.tif")
    assert any(line.startswith("napari-svi restore: loading the prior (") for line in lines)
    assert lines[-1].startswith("napari-svi restore: error: prior") and len(lines) == len(set(lines))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(args) == 2
    assert "\r" in capsys.readouterr().err  # a terminal keeps the live bar
