"""Forward operators: one adjoint test for all of them, references for each, and OperatorSpec."""

import json

import numpy as np
import pytest
import scipy.ndimage as ndi
import tifffile
import torch

from napari_svi.operators import (
    ComposedOperator,
    Crop,
    Downsample,
    Identity,
    LinearOperator,
    Mask,
    OperatorSpec,
    SpatialConvolution,
    TemporalOperator,
    temporal_matrix,
)

DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])


def _rng(seed=0):
    return np.random.default_rng(seed)


def _kernel(n, seed=0):
    k = _rng(seed).random(n) + 0.1
    return k / k.sum()


def _psf(shape, seed=0):
    p = _rng(seed).random(shape) + 0.05  # asymmetric: catches flips and off-by-one centres
    return p / p.sum()


# --------------------------------------------------------------------------------------------------
# one adjoint test over every operator
# --------------------------------------------------------------------------------------------------
def _full_composition():
    shape = (7, 2, 12, 10)
    temporal = TemporalOperator(temporal_matrix(_kernel(4, 1), 7, "symmetric", subsample=3, offset=1), shape)
    blur = SpatialConvolution(_psf((3, 4), 2), temporal.out_shape, boundary="symmetric")
    down = Downsample(2, blur.out_shape)
    mask = Mask(_rng(3).random((2, 6, 5)) > 0.4, down.out_shape)
    return mask @ down @ blur @ temporal


def _spec_operator(**kw):
    spec = OperatorSpec(**kw)
    return spec.build((6, 1, 16, 16), dtype=torch.float64)


FACTORIES = {
    "identity": lambda: Identity((3, 2, 5, 4)),
    "crop": lambda: Crop((3, 1, 8, 9), (3, 1, 5, 7)),
    "temporal_symmetric_odd": lambda: TemporalOperator(temporal_matrix(_kernel(5), 8, "symmetric"), (8, 2, 3, 4)),
    "temporal_circular_odd": lambda: TemporalOperator(temporal_matrix(_kernel(5), 8, "circular"), (8, 2, 3, 4)),
    "temporal_symmetric_even": lambda: TemporalOperator(temporal_matrix(_kernel(4), 6, "symmetric"), (6, 1, 3, 4)),
    "temporal_circular_even_subsample_offset": lambda: TemporalOperator(
        temporal_matrix(_kernel(4), 9, "circular", subsample=2, offset=1), (9, 1, 3, 4)
    ),
    "temporal_symmetric_longer_than_stack": lambda: TemporalOperator(
        temporal_matrix(_kernel(11), 3, "symmetric"), (3, 1, 2, 3)
    ),
    "temporal_subsample_only": lambda: TemporalOperator(temporal_matrix(np.ones(1), 7, subsample=3), (7, 1, 2, 2)),
    "spatial_symmetric_direct_odd": lambda: SpatialConvolution(_psf((5, 3)), (2, 2, 9, 8), "symmetric", "direct"),
    "spatial_symmetric_fft_odd": lambda: SpatialConvolution(_psf((5, 3)), (2, 2, 9, 8), "symmetric", "fft"),
    "spatial_circular_direct_odd": lambda: SpatialConvolution(_psf((5, 3)), (2, 2, 9, 8), "circular", "direct"),
    "spatial_circular_fft_odd": lambda: SpatialConvolution(_psf((5, 3)), (2, 2, 9, 8), "circular", "fft"),
    "spatial_symmetric_direct_even": lambda: SpatialConvolution(_psf((4, 6)), (2, 1, 9, 8), "symmetric", "direct"),
    "spatial_symmetric_fft_even": lambda: SpatialConvolution(_psf((4, 6)), (2, 1, 9, 8), "symmetric", "fft"),
    "spatial_circular_direct_even": lambda: SpatialConvolution(_psf((4, 6)), (2, 1, 9, 8), "circular", "direct"),
    "spatial_circular_fft_even": lambda: SpatialConvolution(_psf((4, 6)), (2, 1, 9, 8), "circular", "fft"),
    "spatial_auto_large_psf": lambda: SpatialConvolution(_psf((17, 16)), (2, 1, 20, 19), "symmetric", "auto"),
    "spatial_psf_larger_than_frame_fft": lambda: SpatialConvolution(_psf((9, 8)), (1, 1, 5, 6), "circular", "fft"),
    "downsample_2": lambda: Downsample(2, (2, 2, 6, 8)),
    "downsample_3": lambda: Downsample(3, (2, 1, 6, 9)),
    "mask_2d": lambda: Mask(_rng(1).random((5, 4)) > 0.5, (3, 2, 5, 4)),
    "mask_3d": lambda: Mask(_rng(1).random((3, 5, 4)) > 0.5, (3, 2, 5, 4)),
    "composed_two": lambda: Downsample(2, (4, 1, 6, 6)) @ SpatialConvolution(_psf((3, 3)), (4, 1, 6, 6)),
    "full_composition": _full_composition,
    "full_composition_with_crop": lambda: _full_composition() @ Crop((7, 2, 16, 16), (7, 2, 12, 10)),
    "spec_full_circular": lambda: _spec_operator(
        temporal_psf="uniform:3",
        temporal_boundary="circular",
        temporal_subsample=2,
        spatial_psf=_psf((5, 4)),
        spatial_boundary="circular",
        downsample=2,
        mask=_rng(4).random((8, 8)) > 0.3,
    ),
    "spec_full_symmetric_3d_mask_airy": lambda: _spec_operator(
        temporal_psf="gaussian:0.8",
        temporal_subsample=2,
        spatial_psf="airy:1.0,500,150",
        downsample=2,
        mask=_rng(5).random((3, 8, 8)) > 0.3,
    ),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_adjoint(name, device):
    """<A x, y> == <x, A^T y> in float64, and shapes, dtype and the normal operator are right."""
    op = FACTORIES[name]().to(device, torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(op.in_shape, generator=gen, dtype=torch.float64).to(device)
    y = torch.randn(op.out_shape, generator=gen, dtype=torch.float64).to(device)
    ax, aty = op.forward(x), op.adjoint(y)
    assert ax.shape == op.out_shape and aty.shape == op.in_shape
    assert ax.dtype == aty.dtype == torch.float64
    lhs, rhs = float(torch.sum(ax * y)), float(torch.sum(x * aty))
    assert abs(lhs - rhs) <= 1e-10 * max(abs(lhs), abs(rhs), 1e-300)
    torch.testing.assert_close(op.normal(x), op.adjoint(op.forward(x)), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# base: composition, identity, crop, dtype/device handling, shape errors
# --------------------------------------------------------------------------------------------------
def test_composition_order_and_flattening():
    a = Downsample(2, (2, 1, 4, 4))
    b = SpatialConvolution(_psf((3, 3)), (2, 1, 4, 4), method="direct")
    c = Mask(np.eye(4), (2, 1, 4, 4))
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    y = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    ab = a @ b
    assert isinstance(ab, ComposedOperator) and ab.in_shape == (2, 1, 4, 4) and ab.out_shape == (2, 1, 2, 2)
    torch.testing.assert_close(ab.forward(x), a.forward(b.forward(x)), rtol=0, atol=0)
    torch.testing.assert_close(ab.adjoint(y), b.adjoint(a.adjoint(y)), rtol=0, atol=0)
    abc = ab @ c
    assert abc.operators == (a, b, c)
    torch.testing.assert_close(abc(x), a.forward(b.forward(c.forward(x))), rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot compose"):
        _ = b @ a


def test_crop_keeps_top_left_and_adjoint_zero_pads():
    op = Crop((1, 1, 4, 5), (1, 1, 2, 3))
    x = torch.arange(20.0).reshape(1, 1, 4, 5)
    assert op.forward(x)[0, 0].tolist() == [[0, 1, 2], [5, 6, 7]]
    padded = op.adjoint(torch.ones(1, 1, 2, 3))
    assert padded.sum() == 6 and padded[0, 0, :2, :3].eq(1).all()
    with pytest.raises(ValueError, match="Crop"):
        Crop((1, 1, 4, 5), (1, 1, 5, 5))
    with pytest.raises(ValueError, match="Crop"):
        Crop((1, 1, 4, 5), (2, 1, 4, 5))


def test_identity_returns_a_copy():
    x = torch.ones(1, 1, 2, 2)
    out = Identity((1, 1, 2, 2)).forward(x)
    out += 1
    assert x.eq(1).all()


def test_wrong_input_shape_is_a_clear_error():
    op = Downsample(2, (2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"in_shape=\(2, 1, 4, 4\)"):
        op.forward(torch.zeros(2, 1, 4, 6))
    with pytest.raises(ValueError, match="out_shape"):
        op.adjoint(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="in_shape"):
        Identity((2, 0, 3, 3))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_any_float_dtype_and_device_lazily(dtype, device):
    op = _full_composition()  # built once (float64 masters), applied in other dtypes
    x64 = torch.randn(op.in_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = op.forward(x64)
    out = op.forward(x64.to(device, dtype))
    assert out.dtype == dtype and out.device.type == device
    tol = {torch.float16: 2e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(out.double().cpu(), ref, rtol=tol, atol=tol)
    moved = op.to(device, dtype)
    assert moved.dtype == dtype and moved.device.type == device
    torch.testing.assert_close(moved.forward(x64.to(device, dtype)), out, rtol=0, atol=0)
    assert moved.adjoint(out).dtype == dtype
    assert moved.to(dtype=torch.float64).device == moved.device  # None keeps the current device


# --------------------------------------------------------------------------------------------------
# temporal
# --------------------------------------------------------------------------------------------------
def _temporal_reference(kernel, x, boundary, subsample=1, offset=0):
    """numpy.pad + numpy.convolve: y[t] = sum_j k[j] x_ext[t + c - j], c = len // 2."""
    n, c = kernel.size, kernel.size // 2
    mode = {"symmetric": "symmetric", "circular": "wrap"}[boundary]
    padded = np.pad(x, (n - 1 - c, c), mode=mode)
    return np.convolve(padded, kernel, mode="valid")[offset::subsample]


@pytest.mark.parametrize("boundary", ["symmetric", "circular"])
@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 8, 13])
@pytest.mark.parametrize(("subsample", "offset"), [(1, 0), (2, 0), (3, 2)])
def test_temporal_matrix_matches_numpy_pad_reference(boundary, length, subsample, offset):
    kernel = _kernel(length, seed=length)
    x = _rng(1).random(6)
    m = temporal_matrix(kernel, 6, boundary, subsample, offset)
    assert m.shape == (int(np.ceil((6 - offset) / subsample)), 6) and m.dtype == np.float64
    np.testing.assert_allclose(m @ x, _temporal_reference(kernel, x, boundary, subsample, offset), rtol=1e-13)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-13)  # a normalised kernel keeps intensities


def test_temporal_matrix_known_values_and_convolution_direction():
    # symmetric box of 3 over 4 frames: edge frames repeated
    np.testing.assert_allclose(
        temporal_matrix(np.ones(3) / 3, 4) * 3,
        [[2, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 2]],
    )
    np.testing.assert_allclose(
        temporal_matrix(np.ones(3) / 3, 4, "circular") * 3,
        [[1, 1, 0, 1], [1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 1]],
    )
    # true convolution: kernel [a, b, c] gives y[t] = a x[t+1] + b x[t] + c x[t-1]
    m = temporal_matrix(np.array([0.5, 0.3, 0.2]), 5, "circular")
    np.testing.assert_allclose(m[2], [0, 0.2, 0.3, 0.5, 0])
    # even length: index len // 2 weights the frame itself; a bright frame spreads 2 frames back, 1 forward
    m = temporal_matrix(np.array([0.1, 0.2, 0.3, 0.4]), 6, "circular")
    np.testing.assert_allclose(m[3], [0, 0, 0.4, 0.3, 0.2, 0.1])
    np.testing.assert_allclose(m[:, 3], [0, 0.1, 0.2, 0.3, 0.4, 0])
    # kernel longer than the stack: repeated mirroring, as numpy.pad
    np.testing.assert_allclose(temporal_matrix(np.ones(7) / 7, 2) * 7, [[3, 4], [4, 3]])  # x1 x1 x0 [x0] x1 x1 x0


def test_temporal_matrix_bad_arguments():
    with pytest.raises(ValueError, match="boundary"):
        temporal_matrix(np.ones(3), 4, "reflect")
    with pytest.raises(ValueError, match="subsample"):
        temporal_matrix(np.ones(3), 4, subsample=0)
    with pytest.raises(ValueError, match="offset"):
        temporal_matrix(np.ones(3), 4, subsample=2, offset=4)
    with pytest.raises(ValueError, match="n_frames"):
        temporal_matrix(np.ones(3), 0)
    with pytest.raises(ValueError, match="1-D"):
        temporal_matrix(np.ones((3, 1)), 4)
    with pytest.raises(ValueError, match="columns"):
        TemporalOperator(np.ones((2, 3)), (4, 1, 2, 2))


def test_temporal_operator_applies_matrix_over_frames():
    m = temporal_matrix(_kernel(3), 5, subsample=2)
    x = torch.randn(5, 2, 3, 4, dtype=torch.float64)
    expected = np.einsum("ot,tchw->ochw", m, x.numpy())
    np.testing.assert_allclose(TemporalOperator(m, x.shape).forward(x).numpy(), expected, rtol=1e-13)


# --------------------------------------------------------------------------------------------------
# spatial
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("psf_shape", [(3, 3), (5, 2), (4, 6), (1, 4)])
@pytest.mark.parametrize(("boundary", "scipy_mode"), [("symmetric", "reflect"), ("circular", "wrap")])
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_spatial_convolution_matches_scipy(psf_shape, boundary, scipy_mode, method):
    psf = _psf(psf_shape, seed=7)
    x = _rng(2).random((2, 2, 9, 11))
    op = SpatialConvolution(psf, x.shape, boundary=boundary, method=method)
    out = op.forward(torch.from_numpy(x)).numpy()
    for t in range(2):
        for c in range(2):
            expected = ndi.convolve(x[t, c], psf, mode=scipy_mode)
            np.testing.assert_allclose(out[t, c], expected, rtol=1e-12, atol=1e-14)


def test_spatial_convolution_is_a_true_convolution_centred_at_size_over_two():
    psf = np.arange(1.0, 13.0).reshape(3, 4)  # asymmetric, even width: centre (1, 2)
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    x[0, 0, 4, 4] = 1
    for method in ("direct", "fft"):
        out = SpatialConvolution(psf, x.shape, method=method).forward(x)[0, 0].numpy()
        np.testing.assert_allclose(out[3:6, 2:6], psf, atol=1e-12)  # point source images to the PSF
        assert abs(out.sum() - psf.sum()) < 1e-10


@pytest.mark.parametrize("boundary", ["symmetric", "circular"])
@pytest.mark.parametrize("psf_shape", [(3, 5), (16, 17), (12, 9)])
def test_fft_and_direct_agree(boundary, psf_shape):
    psf = _psf(psf_shape, seed=3)
    x = torch.from_numpy(_rng(4).random((2, 1, 10, 12)))
    y = torch.from_numpy(_rng(5).random((2, 1, 10, 12)))
    direct = SpatialConvolution(psf, x.shape, boundary, "direct")
    fft = SpatialConvolution(psf, x.shape, boundary, "fft")
    torch.testing.assert_close(direct.forward(x), fft.forward(x), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(direct.adjoint(y), fft.adjoint(y), rtol=1e-12, atol=1e-13)


def test_spatial_auto_method_switches_at_15_pixels():
    assert SpatialConvolution(_psf((15, 15)), (1, 1, 20, 20)).method == "direct"
    assert SpatialConvolution(_psf((3, 16)), (1, 1, 20, 20)).method == "fft"


def test_spatial_convolution_bad_arguments():
    with pytest.raises(ValueError, match="boundary"):
        SpatialConvolution(_psf((3, 3)), (1, 1, 5, 5), boundary="reflect")
    with pytest.raises(ValueError, match="method"):
        SpatialConvolution(_psf((3, 3)), (1, 1, 5, 5), method="fast")
    with pytest.raises(ValueError, match="2-D"):
        SpatialConvolution(np.ones(3), (1, 1, 5, 5))
    with pytest.raises(ValueError, match="NaN"):
        SpatialConvolution(np.full((3, 3), np.nan), (1, 1, 5, 5))


def test_downsample_known_values():
    x = torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4)
    op = Downsample(2, x.shape)
    np.testing.assert_allclose(op.forward(x)[0, 0].numpy(), [[2.5, 4.5], [10.5, 12.5]])
    spread = op.adjoint(torch.tensor([[[[4.0, 8.0], [0.0, 0.0]]]], dtype=torch.float64))[0, 0].numpy()
    np.testing.assert_allclose(spread, [[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match="divide"):
        Downsample(3, (1, 1, 4, 6))
    with pytest.raises(ValueError, match="downsample"):
        Downsample(0, (1, 1, 4, 4))


def test_mask_keeps_observed_pixels():
    mask = np.array([[1, 0], [0, 2]])
    x = torch.full((2, 3, 2, 2), 5.0)
    out = Mask(mask, x.shape).forward(x)
    assert out[:, :, 0, 0].eq(5).all() and out[:, :, 1, 1].eq(5).all() and out[:, :, 0, 1].eq(0).all()
    per_frame = np.zeros((2, 2, 2))
    per_frame[1, 0, 1] = 1
    out = Mask(per_frame, x.shape).forward(x)
    assert out.sum() == 15 and out[1, :, 0, 1].eq(5).all()
    with pytest.raises(ValueError, match=r"mask must have shape \(H, W\) = \(2, 2\) or \(T, H, W\) = \(2, 2, 2\)"):
        Mask(np.ones((3, 2, 2)), x.shape)


# --------------------------------------------------------------------------------------------------
# OperatorSpec
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("subsample", "downsample"), [(1, 1), (2, 1), (3, 2), (4, 4)])
@pytest.mark.parametrize("frames", [1, 5, 8, 9])
def test_spec_shapes_round_trip(subsample, downsample, frames):
    spec = OperatorSpec(temporal_subsample=subsample, downsample=downsample)
    true = (frames, 8, 16)
    measured = spec.measurement_shape(true)
    assert measured == (int(np.ceil(frames / subsample)), 8 // downsample, 16 // downsample)
    assert spec.true_shape(measured, true_frames=frames) == true
    default = spec.true_shape(measured)
    assert default[0] == (measured[0] - 1) * subsample + 1 and spec.measurement_shape(default) == measured
    assert spec.measurement_shape((frames, 3, 8, 16)) == (measured[0], 3, *measured[1:])
    op = spec.build((frames, 1, 8, 16), dtype=torch.float64)
    assert op.out_shape == (measured[0], 1, *measured[1:])


def test_spec_true_frames_must_map_to_measured_frames():
    spec = OperatorSpec(temporal_subsample=3)
    with pytest.raises(ValueError, match=r"true_frames=10 .* allowed 4\.\.6"):
        spec.true_shape((2, 4, 4), true_frames=10)


def test_spec_build_order_matches_numpy_reference():
    rng = _rng(9)
    kernel, psf = _kernel(3, 2), _psf((3, 4), 5)
    mask = rng.random((3, 4, 5)) > 0.3
    spec = OperatorSpec(temporal_psf=kernel, temporal_subsample=2, spatial_psf=psf, downsample=2, mask=mask)
    x = rng.random((5, 1, 8, 10))
    out = spec.build(x.shape, dtype=torch.float64).forward(torch.from_numpy(x)).numpy()
    ref = np.einsum("ot,tchw->ochw", temporal_matrix(kernel, 5, "symmetric", 2), x)
    ref = np.stack([[ndi.convolve(f, psf, mode="reflect") for f in frame] for frame in ref])
    ref = ref.reshape(3, 1, 4, 2, 5, 2).mean(axis=(3, 5)) * mask[:, None]
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spec_build_dtypes(dtype):
    spec = OperatorSpec(temporal_psf="uniform:3", spatial_psf="gaussian:0.7", downsample=2, mask=np.eye(4))
    op = spec.build((4, 1, 8, 8), dtype=dtype)
    x = torch.from_numpy(_rng(0).random((4, 1, 8, 8)))
    out = op.forward(x.to(dtype))
    assert out.dtype == dtype and out.shape == (4, 1, 4, 4)
    ref = spec.build((4, 1, 8, 8), dtype=torch.float64).forward(x)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


def test_spec_identity_and_trivial_parts_are_skipped():
    assert OperatorSpec().is_identity
    assert isinstance(OperatorSpec().build((2, 1, 4, 4)), Identity)
    trivial = OperatorSpec(temporal_psf="uniform:1", spatial_psf=np.ones((1, 1)), mask=np.ones((4, 4)))
    assert trivial.is_identity and isinstance(trivial.build((2, 1, 4, 4)), Identity)
    assert not OperatorSpec(temporal_subsample=2).is_identity
    assert isinstance(OperatorSpec(temporal_subsample=2).build((3, 1, 4, 4)), TemporalOperator)
    assert not OperatorSpec(mask=np.eye(4)).is_identity
    assert isinstance(OperatorSpec(spatial_psf="gaussian:1").build((2, 1, 12, 12)), LinearOperator)


def test_spec_to_dict_from_dict_round_trip(tmp_path):
    mask_path = tmp_path / "mask.tif"
    tifffile.imwrite(mask_path, (_rng(1).random((3, 4, 4)) > 0.5).astype(np.uint8))
    spec = OperatorSpec(
        temporal_psf="gaussian:1.5",
        temporal_boundary="circular",
        temporal_subsample=2,
        spatial_psf="airy:1.2,600,120",
        downsample=2,
        mask=str(mask_path),
    )
    record = json.loads(json.dumps(spec.to_dict()))
    assert record["temporal_psf"] == "gaussian:1.5" and record["spatial_psf"] == "airy:1.2,600,120"
    assert record["mask"]["shape"] == [3, 4, 4] and record["mask"]["path"] == str(mask_path)
    assert isinstance(record["description"], str)
    again = OperatorSpec.from_dict(record)
    assert again.to_dict() == record

    arrays = OperatorSpec(temporal_psf=np.array([1.0, 2.0, 1.0]), spatial_psf=_psf((3, 2)), mask=np.eye(4))
    record = json.loads(json.dumps(arrays.to_dict()))
    assert record["temporal_psf"] == [0.25, 0.5, 0.25]
    assert np.array(record["spatial_psf"]).shape == (3, 2)
    assert record["mask"] == {"shape": [4, 4], "observed_fraction": 0.25}
    with pytest.raises(ValueError, match="mask"):
        OperatorSpec.from_dict(record)  # only a summary of the mask: it must be passed
    again = OperatorSpec.from_dict(record, mask=np.eye(4))
    np.testing.assert_allclose(again.spatial_kernel(), arrays.spatial_kernel(), rtol=1e-5)
    assert again.to_dict()["temporal_psf"] == record["temporal_psf"]
    with pytest.raises(ValueError, match="unknown operator fields"):
        OperatorSpec.from_dict({"temporal_psfs": "uniform:3"})


def test_spec_describe():
    assert "identity" in OperatorSpec().describe()
    text = OperatorSpec(temporal_psf="uniform:7", spatial_psf="gaussian:1", downsample=2).describe()
    assert "uniform:7" in text and "7 frames" in text and "9x9" in text and "x2" in text and "\n" not in text


_BAD_SPECS = {
    "temporal_boundary": dict(temporal_boundary="reflect"),
    "spatial_boundary": dict(spatial_boundary="mirror"),
    "temporal_subsample": dict(temporal_subsample=0),
    "temporal_subsample ": dict(temporal_subsample=1.5),
    "downsample": dict(downsample=-2),
    "temporal_psf": dict(temporal_psf=[0.5, -0.1, 0.5]),
    "temporal_psf ": dict(temporal_psf="box:3"),
    "temporal_psf  ": dict(temporal_psf=[0.0, 0.0]),
    "temporal_psf   ": dict(temporal_psf="uniform:7", temporal_boundary="circular"),  # longer than 4 frames
    "spatial_psf": dict(spatial_psf=np.zeros((3, 3))),
    "spatial_psf ": dict(spatial_psf=np.array([[1.0, np.nan], [0.0, 1.0]])),
    "spatial_psf  ": dict(spatial_psf=-np.ones((3, 3))),
    "spatial_psf   ": dict(spatial_psf=np.ones((9, 3))),  # larger than the 8 x 8 frame
    "mask": dict(mask=np.ones((5, 4, 4))),
    "mask ": dict(mask=np.zeros((4, 4))),
    "mask  ": dict(mask="missing_mask.tif"),
}


@pytest.mark.parametrize("parameter", sorted(_BAD_SPECS))
def test_spec_validate_names_the_parameter(parameter):
    spec = OperatorSpec(**_BAD_SPECS[parameter])
    with pytest.raises(ValueError, match=parameter.strip()):
        spec.validate((4, 4, 4) if "downsample" not in parameter else (4, 8, 8))


def test_spec_validate_accepts_long_symmetric_kernel_and_lists_mask_shapes():
    OperatorSpec(temporal_psf="uniform:9").validate((3, 4, 4))
    with pytest.raises(ValueError, match=r"4 x 4 \(Y x X, one mask for every frame\) or 3 x 4 x 4 \(T x Y x X\)"):
        OperatorSpec(mask=np.ones((4, 5))).validate((3, 4, 4))
    OperatorSpec(mask=np.ones((3, 4, 4))).validate((3, 4, 4))
    with pytest.raises(ValueError, match="downsample"):
        OperatorSpec(downsample=3).measurement_shape((2, 8, 8))


def test_a_separable_psf_is_two_1d_convolutions_with_the_same_result():
    from napari_svi.operators.spatial import SpatialConvolution
    from napari_svi.psf import gaussian_psf

    shape = (3, 1, 20, 24)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(shape, generator=g, dtype=torch.float64), torch.rand(shape, generator=g, dtype=torch.float64)
    psf = gaussian_psf(1.5)
    sep = SpatialConvolution(psf, shape, method="direct")
    full = SpatialConvolution(psf, shape, method="direct")
    full.separable = False
    assert sep.separable
    torch.testing.assert_close(sep.forward(x), full.forward(x))
    torch.testing.assert_close(sep.adjoint(y), full.adjoint(y))
    rng = np.random.default_rng(1)
    assert not SpatialConvolution(rng.random((5, 5)), shape, method="direct").separable  # not rank 1


def test_a_mask_holds_one_float32_copy_for_the_solver():
    """A piece holds a mask per held-out fold: a float64 master plus its float32 copy was 12 bytes per entry."""
    mask = np.random.default_rng(0).random((4, 16, 16)) > 0.3
    op = Mask(mask, (4, 1, 16, 16))
    used = op._buffer("mask", "cpu", torch.float32)
    assert used.data_ptr() == op._masters["mask"].data_ptr()  # the master itself, no second array
    x = torch.rand(4, 1, 16, 16, dtype=torch.float64)
    np.testing.assert_array_equal(op.forward(x).numpy(), x.numpy() * mask[:, None])  # exact in float64 too
