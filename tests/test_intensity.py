"""Intensity normalisation: percentiles of the (lightly smoothed) data, never in place."""

import dask.array as da
import numpy as np
import pytest

from napari_svi.intensity import measurement_scale, percentile_scale


def _dim_noisy_field(seed=0):
    """A mostly empty field: background 100, one faint blob +40, Gaussian noise of 20 (T, Y, X)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    blob = 40.0 * np.exp(-((yy - 48) ** 2 + (xx - 48) ** 2) / (2 * 6.0**2))
    clean = np.broadcast_to(100.0 + blob, (8, 96, 96))
    return clean, clean + rng.normal(0, 20, clean.shape)


def test_smoothing_keeps_noise_from_setting_the_range():
    clean, noisy = _dim_noisy_field()
    raw = percentile_scale(noisy)
    smooth = measurement_scale(noisy)
    truth = percentile_scale(clean)
    # without smoothing the 0.1th percentile sits about 3 noise deviations (60) below the background
    assert raw.low < 60
    assert abs(smooth.low - truth.low) < 12 and abs(smooth.high - truth.high) < 15
    assert smooth.span < raw.span / 2


def test_smoothing_does_not_touch_the_input_and_handles_dask_and_single_frames():
    _, noisy = _dim_noisy_field(1)
    before = noisy.copy()
    a = percentile_scale(noisy, smooth=2.0)
    np.testing.assert_array_equal(noisy, before)
    b = percentile_scale(da.from_array(noisy, chunks=(2, 96, 96)), smooth=2.0)
    assert (a.low, a.high) == pytest.approx((b.low, b.high))
    c = percentile_scale(noisy[0], smooth=2.0)  # a single 2-D frame
    assert c.span > 0
    with pytest.raises(ValueError, match="smooth"):
        percentile_scale(noisy, smooth=-1)
    with pytest.raises(ValueError, match="constant"):
        percentile_scale(np.full((4, 16, 16), 3.0), smooth=2.0)


def test_large_stacks_are_scaled_from_a_bounded_subset_of_whole_frames(monkeypatch):
    from napari_svi import intensity

    seen = []
    real = intensity._smoothed_frames

    def spy(a, sigma, max_values=2**24):
        out = real(a, sigma, max_values=4096)
        seen.append(out.shape)
        return out

    monkeypatch.setattr(intensity, "_smoothed_frames", spy)
    rng = np.random.default_rng(2)
    stack = rng.normal(100, 5, (64, 32, 32))
    percentile_scale(stack, smooth=1.0)
    assert seen == [(4, 32, 32)]  # 4 evenly spaced whole frames of 32 x 32 = 4096 values
