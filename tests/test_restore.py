"""``restore`` as the widget, the CLI and scripts call it: units, axes, lazy input, zarr output, resume, errors."""

import json
import sys

import dask.array as da
import numpy as np
import pytest
import torch

from napari_svi.operators import OperatorSpec
from napari_svi.priors.base import GaussianPrior
from napari_svi.restore import RestoreCancelled, iter_restore, restore
from napari_svi.schedules import alphas_cumprod

lazy_module = sys.modules["napari_svi.lazy"]


@pytest.fixture(scope="module")
def prior():
    return GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))


class MultiplePrior(GaussianPrior):
    """Gaussian prior that, like a UNet, only accepts frames whose sides are multiples of 8."""

    def __init__(self):
        super().__init__(0.0, 0.5, alphas_cumprod("linear"))
        self.size_multiple = 8
        self.shapes = []

    def predict_noise(self, x, t):
        assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0, x.shape
        self.shapes.append(tuple(x.shape))
        return super().predict_noise(x, t)


class ExplodingPrior(GaussianPrior):
    """Fails if anyone runs it: bad inputs must be rejected before the sampler starts."""

    def predict_noise(self, x, t):
        raise AssertionError("the sampler ran although the input was invalid")


def _stack(t=20, h=16, w=16, seed=0, dtype=np.uint16):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    frames = [1000 + 3000 * np.exp(-((yy - 8 - 3 * np.sin(k / 3)) ** 2 + (xx - 8) ** 2) / 20) for k in range(t)]
    noisy = np.stack(frames) + rng.normal(0, 30, (t, h, w))
    return noisy.astype(dtype)


KW = dict(steps=3, noise_sigma=30.0, device="cpu", start="noise")  # the sampler path itself (warm start: test_warm_start.py)


def test_input_never_modified_and_result_float32_in_input_units(prior):
    data = _stack()
    before = data.copy()
    result = restore(data, OperatorSpec(temporal_psf="uniform:3"), prior=prior, window=8, **KW)
    np.testing.assert_array_equal(data, before)
    assert result.restored.dtype == np.float32 and result.restored.shape == data.shape
    # denoised, in the input's units (offset 1000, peak about 4000), not on the [0, 1] scale
    assert abs(np.median(result.restored) - np.median(data)) < 0.05 * np.median(data)
    assert result.restored.max() > 3000
    assert result.metadata["windows"] > 1 and result.metadata["intensity_scale"][0][0] > 900


def test_extra_axes_are_restored_one_stack_at_a_time(prior):
    a, b = _stack(seed=1), _stack(seed=2) // 2
    data = np.stack([a, b], axis=0)  # (C, T, Y, X)
    result = restore(data, None, prior=prior, time_axis=1, window=8, **KW)
    assert result.restored.shape == data.shape
    alone = restore(b, None, prior=prior, window=8, **{**KW, "noise_sigma": 15.0})
    # channel 1 alone, with its own percentiles and noise: the same restore
    assert result.metadata["intensity_scale"][1] == alone.metadata["intensity_scale"][0]
    moved = restore(np.moveaxis(data, 1, 0), None, prior=prior, time_axis=0, window=8, **KW)  # (T, C, Y, X)
    np.testing.assert_allclose(np.moveaxis(moved.restored, 0, 1), result.restored, atol=1e-3)


def test_dask_and_zarr_input_read_window_by_window(prior, tmp_path, monkeypatch):
    import zarr

    data = _stack(t=40)
    spec = OperatorSpec(temporal_psf="uniform:3")
    kw = dict(prior=prior, window=8, **KW)
    ref = restore(data, spec, **kw).restored
    reads = []
    real_read = lazy_module.read_frames
    counting = lambda stack, frames, *a: reads.append(len(frames)) or real_read(stack, frames, *a)  # noqa: E731
    monkeypatch.setattr(lazy_module, "read_frames", counting)  # the noise estimate's read (first)
    monkeypatch.setattr(sys.modules["napari_svi.pieces"], "read_frames", counting)  # every piece's
    lazy = restore(da.from_array(data, chunks=(1, 16, 16)), spec, **kw)
    assert max(reads[1:]) <= 8 + 2 * 2  # a window and its margins, never the whole stack
    store = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=data.shape, chunks=(1, 16, 16), dtype=data.dtype)
    store[:] = data
    from_zarr = restore(zarr.open_array(str(tmp_path / "in.zarr"), mode="r"), spec, **kw)
    # percentiles of lazy input come from a strided subsample; here (small) that is every value
    np.testing.assert_allclose(lazy.restored, ref, rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(from_zarr.restored, lazy.restored, rtol=1e-6)


def test_frames_padded_to_the_prior_size_multiple():
    prior = MultiplePrior()
    data = _stack(t=6, h=13, w=19)
    result = restore(data, OperatorSpec(spatial_psf="gaussian:1.0"), prior=prior, window=None, **KW)
    assert result.restored.shape == (6, 13, 19)
    assert set(prior.shapes) == {(6, 1, 16, 24)}
    assert np.all(np.isfinite(result.restored))


def test_out_array_and_samples(prior):
    data = _stack(t=20)
    kw = dict(prior=prior, window=8, samples=2, **KW)
    ref = restore(data, None, **kw)
    assert ref.std.shape == data.shape and ref.samples.shape == (2, *data.shape)
    out = np.full(data.shape, np.nan, dtype=np.float32)
    written = restore(data, None, out=out, **kw)
    assert written.restored is out
    np.testing.assert_allclose(out, ref.restored, rtol=1e-6)


def test_zarr_output_resumes_to_the_identical_result(prior, tmp_path):
    import zarr

    data = np.stack([_stack(t=30, seed=3), _stack(t=30, seed=4)], axis=1)  # (T, C, Y, X)
    spec = OperatorSpec(temporal_psf="uniform:5", temporal_boundary="circular")
    kw = dict(prior=prior, window=8, window_overlap=3, samples=2, time_axis=0, **KW)
    full = restore(data, spec, out=str(tmp_path / "full.zarr"), **kw)
    assert isinstance(full.restored, zarr.Array) and not np.isnan(full.restored[:]).any()
    np.testing.assert_allclose(full.restored[:], restore(data, spec, **kw).restored, rtol=1e-6)

    gen = iter_restore(data, spec, out=str(tmp_path / "cut.zarr"), **kw)
    for info in gen:
        if info["stack"] == 1 and info["window"] == 2:  # interrupted in the middle of the second stack
            break
    gen.close()
    group = zarr.open_group(str(tmp_path / "cut.zarr"), mode="r")
    progress = group.attrs["napari_svi_progress"]
    assert progress["next"] == [1, 2] and not progress["complete"]
    assert np.isnan(group["restored"][-1, 1]).all()  # not written yet
    steps = []
    resumed = restore(data, spec, out=str(tmp_path / "cut.zarr"), callback=steps.append, **kw)
    n_windows = resumed.metadata["windows"]
    steps = [s for s in steps if s["stage"] == "sampling"]
    assert len(steps) == (n_windows - 2) * 2 * 3  # only the unfinished windows ran
    for name in ("restored", "std", "samples"):
        np.testing.assert_array_equal(getattr(resumed, name)[:], getattr(full, name)[:])
    assert "_pending" not in zarr.open_group(str(tmp_path / "cut.zarr"), mode="r")

    # a finished store with the same parameters: nothing to do; other parameters: refused
    again = []
    restore(data, spec, out=str(tmp_path / "cut.zarr"), callback=again.append, **kw)
    assert [s["stage"] for s in again] == ["estimating noise", "loading prior", "planning windows"]
    with pytest.raises(ValueError, match="other parameters.*seed"):
        restore(data, spec, out=str(tmp_path / "cut.zarr"), **{**kw, "seed": 1})
    restore(data, spec, out=str(tmp_path / "cut.zarr"), overwrite=True, **{**kw, "seed": 1})


def test_progress_preview_and_cancel(prior):
    data = _stack(t=20)
    seen = []
    result = restore(data, None, prior=prior, window=8, preview_every=2, callback=seen.append, **KW)
    windows = result.metadata["windows"]
    assert [s["stage"] for s in seen[:3]] == ["estimating noise", "loading prior", "planning windows"]
    seen = [s for s in seen if s["stage"] == "sampling"]
    assert [s["step"] for s in seen] == list(range(1, windows * 3 + 1))
    assert all(s["total"] == windows * 3 for s in seen)
    previews = [s["estimate"] for s in seen if s["estimate"] is not None]
    assert previews and all(p.shape == data.shape and p.dtype == np.float32 for p in previews)
    with pytest.raises(RestoreCancelled):
        restore(data, None, prior=prior, window=8, callback=lambda s: s["step"] == 4, **KW)


@pytest.mark.parametrize(
    "data,kwargs,message",
    [
        (np.zeros((4, 8)), {}, "time axis and two image axes"),
        (np.full((4, 8, 8), np.nan), {}, "NaN"),
        (np.ones((4, 8, 8)), {}, "constant"),
        (_stack(t=4), {"time_axis": 1}, "time_axis"),
        (_stack(t=4), {"window": 4, "window_overlap": 4}, "window_overlap"),
        (_stack(t=4), {"window": -1}, "window"),
        (_stack(t=4), {"window_margin": -2}, "window_margin"),
        (_stack(t=4), {"memory_budget": "a lot"}, "memory_budget"),
        (_stack(t=4), {"memory_budget": 100}, "memory_budget"),
        (_stack(t=4), {"tile_size": 4}, "tile_size"),
        (_stack(t=4), {"out": np.zeros((3, 16, 16), np.float32)}, "out has shape"),
        (_stack(t=4), {"out": np.zeros((4, 16, 16), np.uint8)}, "floating point"),
        (_stack(t=4), {"out": "result.tif"}, "zarr path"),
        (_stack(t=4), {"steps": 0}, "steps"),
        (_stack(t=4), {"operator": OperatorSpec(downsample=3)}, None),  # fine: 16 x 16 measured -> 48 x 48
        (_stack(t=4), {"operator": OperatorSpec(mask=np.zeros((5, 5)))}, "mask"),
    ],
)
def test_bad_input_is_rejected_before_heavy_work(data, kwargs, message):
    kwargs = dict(kwargs)
    spec = kwargs.pop("operator", None)
    call = lambda: restore(data, spec, prior=ExplodingPrior(0.0, 0.5, alphas_cumprod("linear")),  # noqa: E731
                           **{**KW, **kwargs})
    if message is None:
        with pytest.raises(AssertionError, match="sampler ran"):
            call()
        return
    with pytest.raises(ValueError, match=message):
        call()


def test_stages_are_reported_in_order_and_before_their_work(tiny_prior_dir, monkeypatch):
    """The first report comes before the prior is loaded; each stage is reported before its work runs."""
    import napari_svi.noise as noise_module
    import napari_svi.priors.loading as loading

    events = []
    real_load, real_estimate = loading.load_prior, noise_module.estimate_noise_sigma

    def load_prior(*args, **kwargs):
        events.append("work: load prior")
        return real_load(*args, **kwargs)

    def estimate_noise_sigma(*args, **kwargs):
        events.append("work: estimate noise")
        return real_estimate(*args, **kwargs)

    def prior_forward(self, *args, **kwargs):
        if events[-1] != "work: network":
            events.append("work: network")
        return real_predict(self, *args, **kwargs)

    from napari_svi.priors.tiling import TiledPrior

    real_predict = TiledPrior.predict_noise
    monkeypatch.setattr(loading, "load_prior", load_prior)
    monkeypatch.setattr(noise_module, "estimate_noise_sigma", estimate_noise_sigma)
    monkeypatch.setattr(TiledPrior, "predict_noise", prior_forward)

    def report(info):
        stage = info["stage"]
        if not events or events[-1] != f"stage: {stage}":
            events.append(f"stage: {stage}")

    result = restore(_stack(t=20), OperatorSpec(temporal_psf="uniform:3"), prior=str(tiny_prior_dir), window=8,
                     steps=2, noise_sigma="auto", device="cpu", callback=report)
    # the noise is estimated before the prior loads: bad data are refused before the heavy work
    assert events[:7] == ["stage: estimating noise", "work: estimate noise", "stage: loading prior", "work: load prior",
                          "stage: planning windows", "stage: window", "work: network"]
    assert events[7:10] == ["stage: sampling", "work: network", "stage: sampling"]  # step 1 reported, step 2
    assert events.count("stage: window") == result.metadata["windows"] > 1


def test_threads_are_set_checked_and_recorded(prior, monkeypatch):
    threads = torch.get_num_threads()
    try:
        result = restore(_stack(t=8), None, prior=prior, window=None, threads=2, **KW)
        assert result.metadata["threads"] == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert restore(_stack(t=8), None, prior=prior, window=None, **KW).metadata["threads"] == 1
        assert torch.get_num_threads() == 1
        assert result.metadata["cpu_cores_usable"] >= 1
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="threads must be None .* or an integer >= 1, got 0"):
        restore(_stack(t=8), None, prior=ExplodingPrior(0.0, 0.5, alphas_cumprod("linear")), threads=0, **KW)


def test_metadata_is_json_and_complete(prior):
    result = restore(_stack(t=20), OperatorSpec(temporal_psf="uniform:3"), prior=prior, window=8, **KW)
    record = json.loads(json.dumps(result.metadata))
    for key in ("operator", "seed", "window", "window_overlap", "window_margin", "windows", "tiles", "gamma"):
        assert key in record
    assert record["window_margin"] == 2 and record["tiles"] == [1, 1]


def test_gamma_is_one_per_window_by_default_and_one_per_piece_on_request(prior):
    data = _stack(t=6, h=16, w=80)  # wider than one 64-px window: two windows overlapping by half
    spec = OperatorSpec(temporal_psf="uniform:3")
    windows = restore(data, spec, prior=prior, window=None, **KW)
    piece = restore(data, spec, prior=prior, window=None, gamma="piece", **KW)
    assert windows.metadata["gamma"][0]["region_px"] == 64
    assert piece.metadata["gamma"][0]["region_px"] is None
    assert not np.allclose(windows.restored, piece.restored)
    with pytest.raises(ValueError, match="'auto', 'piece'"):
        restore(data, spec, prior=prior, window=None, gamma="everywhere", **KW)


def test_cli_restore_zarr_in_and_out(prior, tmp_path, monkeypatch):
    import zarr

    from napari_svi import cli

    data = _stack(t=24)
    zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=data.shape, chunks=(1, 16, 16), dtype=data.dtype)[:] = data
    import napari_svi.priors.loading as loading

    monkeypatch.setattr(loading, "load_prior", lambda spec, device, channels=None: prior)
    argv = ["restore", str(tmp_path / "in.zarr"), "-o", str(tmp_path / "out.zarr"), "--temporal-psf", "uniform:3",
            "--steps", "2", "--window", "8", "--noise-sigma", "30", "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert group["restored"].shape == data.shape and not np.isnan(group["restored"][:]).any()
    assert group.attrs["napari_svi"]["axes"] == "TYX" and group.attrs["napari_svi_progress"]["complete"]
    assert cli.main(argv) == 0  # finished: resumes to nothing, same result
    assert cli.main([*argv[:-1], "--seed", "3", "--quiet"]) == 2  # other parameters: refused without --overwrite
    torch.manual_seed(0)


def test_noise_estimate_is_the_rms_of_signal_dependent_noise():
    """Poisson noise on mostly dark background with bright blobs: the estimate is the root mean
    variance over pixels (the noise energy), not the dark background's (much smaller) sigma."""
    from napari_svi.noise import estimate_noise_sigma

    yy, xx = np.mgrid[:96, :96]
    blobs = [(20, 30), (60, 70), (75, 20), (30, 75)]
    clean = 0.02 + sum(0.9 * np.exp(-((yy - a) ** 2 + (xx - b) ** 2) / (2 * 7.0**2)) for a, b in blobs)
    clean = np.broadcast_to(clean, (4, 96, 96))  # smooth nuclei-like blobs on dark background
    rng = np.random.default_rng(1)
    photons = 200.0
    y = rng.poisson(clean * photons) / photons
    rms = float(np.sqrt(np.mean(clean / photons)))
    assert estimate_noise_sigma(y) == pytest.approx(rms, rel=0.15)
    assert estimate_noise_sigma(y) > 2 * np.sqrt(0.02 / photons)  # the background's sigma


def test_noise_estimate_of_a_flat_scene_is_not_low():
    """A static, flat stack: the time residual is binned by a level uncorrelated with it. Binned by the two
    neighbours' mean (correlated with the residual), the same stack read 0.82 of its noise."""
    from napari_svi.noise import estimate_noise_sigma

    rng = np.random.default_rng(0)
    for sigma in (0.01, 0.05):
        y = 0.3 + sigma * rng.standard_normal((10, 64, 64))
        assert estimate_noise_sigma(y) == pytest.approx(sigma, rel=0.05)


def test_noise_estimate_needs_no_pywavelets():
    from napari_svi.noise import estimate_noise_sigma

    yy, xx = np.mgrid[:64, :64]
    clean = 0.5 + 0.3 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    rng = np.random.default_rng(0)
    for sigma in (0.005, 0.02, 0.08):
        y = clean[None] + rng.normal(0, sigma, (4, 64, 64))
        assert estimate_noise_sigma(y) == pytest.approx(sigma, rel=0.1)
        assert estimate_noise_sigma(y, np.ones((64, 64))) == pytest.approx(sigma, rel=0.15)
    with pytest.raises(ValueError, match="8 x 8"):
        estimate_noise_sigma(np.zeros((2, 4, 4)))


def test_fill_unseen_is_a_recorded_parameter(prior):
    # frame interpolation: every second frame measured; the pull towards the interpolation of the
    # measured neighbours is restore's fill_unseen, recorded, and 0 leaves those frames to the prior
    data = _stack(t=9)
    spec = OperatorSpec(temporal_subsample=2)
    kw = dict(prior=prior, **KW)
    on = restore(data, spec, **kw)
    off = restore(data, spec, fill_unseen=0, **kw)
    assert on.metadata["fill_unseen"] == 4.0 and off.metadata["fill_unseen"] == 0.0
    assert not np.allclose(on.restored[1::2], off.restored[1::2])
    np.testing.assert_allclose(on.restored[::2], off.restored[::2], rtol=1e-4, atol=1.0)
    with pytest.raises(ValueError, match="fill_unseen"):
        restore(data, spec, fill_unseen=-1, **kw)
