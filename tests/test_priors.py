"""Priors: loading every checkpoint family, the ADM architecture, channel adapters, tiling."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from torch import nn

from napari_svi.priors import (
    ADMConfig,
    ADMUNet,
    DiffusionPrior,
    GaussianPrior,
    TiledPrior,
    UNet,
    UNetConfig,
    adapt_channels,
    load_prior,
    loading,
    resolve_device,
)
from napari_svi.priors.adm import AttentionBlock, infer_adm_config
from napari_svi.schedules import alphas_cumprod, cosine_betas
from napari_svi.training import PRIOR_FORMAT, TrainConfig, save_prior
from napari_svi.windows import blend_weights, spread_starts

ABAR = alphas_cumprod("linear")
TINY_UNET = UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1)
# a tiny ADM: 3 levels, attention at ds 2 and 4, learned sigma, heads of 16 channels
TINY_ADM = ADMConfig(
    in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1,
    attention_resolutions=(2, 4), channel_mult=(1, 2, 2), num_head_channels=16,
)  # fmt: skip


def randomise(module: nn.Module, std: float | None = None, seed: int = 0) -> nn.Module:
    """Give zero-initialised layers (output convolutions) weights, so outputs are not trivially 0."""
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            if std is None:
                m.reset_parameters()
            else:
                nn.init.normal_(m.weight, std=std)
                nn.init.normal_(m.bias, std=std)
    return module.eval()


def unet_prior(config: UNetConfig = TINY_UNET, seed: int = 0) -> DiffusionPrior:
    net = randomise(UNet(config), seed=seed)
    return DiffusionPrior(net, ABAR, channels=config.in_channels, size_multiple=config.size_multiple, name="tiny").eval()


def inputs(b=2, c=1, h=16, w=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g), torch.tensor([10, 700, 300, 999][:b])


# ---------------------------------------------------------------- devices

def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "mps:1", "metal", "", 3, None])
def test_resolve_device_rejects_unknown_names(bad):
    with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"):
        resolve_device(bad)


@pytest.mark.parametrize(("cuda", "mps", "expected"), [(True, True, "cuda"), (True, False, "cuda"),
                                                       (False, True, "mps"), (False, False, "cpu")])
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    """The selection logic without the hardware: what torch reports is patched."""
    from napari_svi.priors import loading

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(loading, "mps_available", lambda: mps)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device("cpu") == torch.device("cpu")
    if mps:
        assert resolve_device("MPS") == torch.device("mps")


def test_mps_without_apple_gpu_is_a_clear_error(monkeypatch):
    from napari_svi.priors import loading

    monkeypatch.setattr(loading, "mps_available", lambda: False)
    with pytest.raises(ValueError, match="sees no Apple MPS GPU"):
        resolve_device("mps")


def test_mps_available_reads_torch_backends(monkeypatch):
    from napari_svi.priors import loading

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert loading.mps_available() is True
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert loading.mps_available() is False


def test_schedule_stays_on_the_cpu_in_float64_when_the_prior_moves():
    """Apple's MPS has no float64: the schedule is a CPU master, not a buffer that .to() would move."""
    prior = GaussianPrior(0.0, 0.5, alphas_cumprod("linear"))
    moved = prior.to(torch.float32)
    assert moved.alphas_cumprod.dtype == torch.float64 and moved.alphas_cumprod.device.type == "cpu"
    x = torch.randn(3, 1, 4, 4)
    t = torch.tensor([10, 500, 990])
    assert moved.predict_noise(x, t).dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_resolve_device_cuda_without_cuda_is_a_clear_error(name):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device(name)


def test_load_prior_rejects_bad_device(tmp_path):
    with pytest.raises(ValueError, match="device must be one of"):
        load_prior(GaussianPrior(0.0, 0.5, ABAR), device="tpu")


# ---------------------------------------------------------------- the project's format

def test_missing_bundled_prior_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "DEFAULT_PRIOR_DIR", tmp_path / "default")
    with pytest.raises(FileNotFoundError, match="bundled default prior is missing"):
        load_prior("default")


@pytest.mark.skipif(not (loading.DEFAULT_PRIOR_DIR / "config.json").is_file(), reason="default prior not bundled yet")
def test_bundled_prior_loads_and_predicts():
    prior = load_prior("default")
    x = torch.zeros(1, prior.channels, 2 * prior.size_multiple, 2 * prior.size_multiple)
    with torch.no_grad():
        assert prior.predict_noise(x, torch.tensor([500])).shape == x.shape


def test_project_folder_round_trip(tmp_path):
    config = TrainConfig(schedule="cosine", patch_size=16, unet=TINY_UNET)
    net = randomise(UNet(TINY_UNET))
    save_prior(net, tmp_path / "my-prior", config, step=3, seconds=1.0)
    prior = load_prior(tmp_path / "my-prior")
    x, t = inputs()
    with torch.no_grad():
        torch.testing.assert_close(prior.predict_noise(x, t), net(x, t), rtol=0, atol=0)
    assert (prior.name, prior.channels, prior.size_multiple) == ("my-prior", 1, 2)
    torch.testing.assert_close(prior.alphas_cumprod, torch.cumprod(1 - cosine_betas(), 0))
    assert prior.info["format"] == PRIOR_FORMAT == loading.PRIOR_FORMAT
    assert not any(p.requires_grad for p in prior.parameters()) and not prior.training
    # the weights file stands for its folder
    assert load_prior(tmp_path / "my-prior" / "weights.safetensors").name == "my-prior"


def test_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_prior(tmp_path / "nothing-here")


def test_folder_without_known_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_prior(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a napari-svi prior config"):
        load_prior(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not readable JSON"):
        load_prior(tmp_path)


# ---------------------------------------------------------------- guided-diffusion (ADM)

def test_adm_256_uncond_layout_matches_the_official_checkpoint():
    """Key names and shapes of ``256x256_diffusion_uncond.pt`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = ADMUNet(ADMConfig())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == 566
    assert sum(p.numel() for p in model.parameters()) == 552_814_086  # "552.81 M" as usually quoted
    expected = {
        "time_embed.0.weight": (1024, 256),
        "time_embed.2.weight": (1024, 1024),
        "input_blocks.0.0.weight": (256, 3, 3, 3),
        "input_blocks.1.0.in_layers.0.weight": (256,),
        "input_blocks.1.0.emb_layers.1.weight": (512, 1024),
        "input_blocks.1.0.out_layers.3.weight": (256, 256, 3, 3),
        "input_blocks.3.0.in_layers.2.weight": (256, 256, 3, 3),  # first downsampling ResBlock
        "input_blocks.7.0.skip_connection.weight": (512, 256, 1, 1),
        "input_blocks.10.1.qkv.weight": (1536, 512, 1),  # first attention, 32x32 at ds 8
        "input_blocks.10.1.proj_out.weight": (512, 512, 1),
        "middle_block.1.norm.weight": (1024,),
        "middle_block.2.out_layers.3.weight": (1024, 1024, 3, 3),
        "output_blocks.0.0.in_layers.0.weight": (2048,),
        "output_blocks.2.2.in_layers.2.weight": (1024, 1024, 3, 3),  # upsampling ResBlock
        "output_blocks.17.0.skip_connection.weight": (256, 512, 1, 1),
        "out.0.weight": (256,),
        "out.2.weight": (6, 256, 3, 3),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    assert not any(k.endswith((".op.weight", ".conv.weight")) or k.startswith("label_emb") for k in shapes)
    assert infer_adm_config(model.state_dict()) == ADMConfig()


@pytest.mark.parametrize(
    "config",
    [
        TINY_ADM,
        ADMConfig(in_channels=1, model_channels=32, out_channels=1, num_res_blocks=2, attention_resolutions=(4,),
                  channel_mult=(1, 2, 3), num_heads=2, num_head_channels=-1, resblock_updown=False,
                  use_scale_shift_norm=False),
        ADMConfig(in_channels=3, model_channels=64, out_channels=6, num_res_blocks=1, attention_resolutions=(),
                  channel_mult=(0.5, 1), num_classes=10),
    ],
    ids=["updown-attention", "conv-resample-heads", "half-width-classes"],
)  # fmt: skip
def test_infer_adm_config_round_trip(config):
    with torch.device("meta"):
        model = ADMUNet(config)
    heads = {"num_heads": config.num_heads, "num_head_channels": config.num_head_channels}
    assert infer_adm_config(model.state_dict(), **heads) == config


@pytest.mark.parametrize("new_order", [False, True])
def test_adm_attention_against_the_formula(new_order):
    """softmax(q^T k / sqrt(d)) v per head, with guided-diffusion's two qkv channel layouts."""
    torch.manual_seed(0)
    block = randomise(AttentionBlock(64, heads=2, new_order=new_order), std=0.2)
    x = torch.randn(2, 64, 3, 5)
    b, c, n, heads, d = 2, 64, 15, 2, 32
    qkv = block.qkv(block.norm(x.reshape(b, c, n)))
    if new_order:  # [q of all heads, k of all heads, v of all heads]
        q, k, v = (p.reshape(b, heads, d, n) for p in qkv.chunk(3, dim=1))
    else:  # per head [q, k, v]
        q, k, v = qkv.reshape(b, heads, 3 * d, n).split(d, dim=2)
    weights = torch.softmax(torch.einsum("bhct,bhcs->bhts", q, k) / math.sqrt(d), dim=-1)
    a = torch.einsum("bhts,bhcs->bhct", weights, v).reshape(b, c, n)
    expected = x + block.proj_out(a).reshape(x.shape)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def _save_adm(tmp_path, config=TINY_ADM, how="pt", name="tiny_adm", sidecar=None):
    model = randomise(ADMUNet(config), std=0.05)
    state = model.state_dict()
    if how == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / f"{name}.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / f"{name}.pt"
        if how == "wrapped":  # a training checkpoint of a DataParallel model
            state = {"step": torch.tensor(5), "state_dict": {f"module.{k}": v for k, v in state.items()}}
        torch.save(state, path)
    settings = {"num_head_channels": config.num_head_channels, **(sidecar or {})}
    path.with_suffix(".json").write_text(json.dumps(settings))
    return model, path


@pytest.mark.parametrize("how", ["pt", "safetensors", "wrapped"])
def test_adm_checkpoint_loads_and_matches_the_module(tmp_path, how):
    model, path = _save_adm(tmp_path, how=how)
    prior = load_prior(path)
    x, t = inputs(c=3)
    with torch.no_grad():
        expected = model(x, t)[:, :3]  # learned sigma: the first C channels are eps
        torch.testing.assert_close(prior.predict_noise(x, t), expected, rtol=0, atol=0)
    assert (prior.channels, prior.size_multiple, prior.name) == (3, 4, "tiny_adm")
    torch.testing.assert_close(prior.alphas_cumprod, ABAR)
    assert prior.info["adm"]["attention_resolutions"] == [2, 4]


def test_adm_sidecar_sets_schedule_and_class_label(tmp_path):
    config = ADMConfig(**{**TINY_ADM.to_dict(), "num_classes": 4})
    model, path = _save_adm(tmp_path, config, sidecar={"noise_schedule": "cosine", "class_label": 2})
    prior = load_prior(path)
    x, t = inputs(c=3)
    with torch.no_grad():
        expected = model(x, t, torch.tensor([2, 2]))[:, :3]
        torch.testing.assert_close(prior.predict_noise(x, t), expected, rtol=0, atol=0)
    torch.testing.assert_close(prior.alphas_cumprod, alphas_cumprod("cosine"))


def test_adm_class_conditional_without_label_is_rejected(tmp_path):
    _, path = _save_adm(tmp_path, ADMConfig(**{**TINY_ADM.to_dict(), "num_classes": 4}))
    with pytest.raises(ValueError, match="class-conditional .*class_label"):
        load_prior(path)


def test_adm_sidecar_with_unknown_setting_is_rejected(tmp_path):
    _, path = _save_adm(tmp_path, sidecar={"num_channels": 32})
    with pytest.raises(ValueError, match=r"tiny_adm.json: unknown settings \['num_channels'\]"):
        load_prior(path)


class NotATensor:
    pass


def test_adm_bad_files_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(ValueError, match="corrupt.pt is not a readable tensor checkpoint"):
        load_prior(corrupt)

    arbitrary = tmp_path / "objects.pt"  # weights_only refuses arbitrary classes
    torch.save({"model": NotATensor()}, arbitrary)
    with pytest.raises(ValueError, match="objects.pt is not a readable tensor checkpoint"):
        load_prior(arbitrary)

    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(ValueError, match="other.pt is not a guided-diffusion .*'time_embed.0.weight' is missing"):
        load_prior(other)

    ours = tmp_path / "checkpoint.pt"
    torch.save({"ema": UNet(TINY_UNET).state_dict(), "step": 3}, ours)
    with pytest.raises(ValueError, match="napari-svi training checkpoint"):
        load_prior(ours)

    bad_safetensors = tmp_path / "broken.safetensors"
    bad_safetensors.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ValueError, match="broken.safetensors is corrupt"):
        load_prior(bad_safetensors)


def test_adm_shape_mismatch_names_the_parameter(tmp_path):
    model = ADMUNet(TINY_ADM)
    state = model.state_dict()
    state["middle_block.0.in_layers.2.weight"] = torch.zeros(64, 64, 1, 1)
    del state["output_blocks.0.0.in_layers.0.bias"]
    path = tmp_path / "mismatch.pt"
    torch.save(state, path)
    path.with_suffix(".json").write_text(json.dumps({"num_head_channels": 16}))
    with pytest.raises(ValueError, match=r"mismatch.pt does not match .*missing \(1\): output_blocks.0.0.in_layers.0.bias.*"
                                         r"shape mismatch \(1\): middle_block.0.in_layers.2.weight: file \(64, 64, 1, 1\)"):  # fmt: skip
        load_prior(path)


# ---------------------------------------------------------------- diffusers

def _tiny_diffusers_unet(in_channels=1, out_channels=1):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=16, in_channels=in_channels, out_channels=out_channels, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8,
    ).eval()  # fmt: skip


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_diffusers_folder_loads(tmp_path, prediction):
    unet = randomise(_tiny_diffusers_unet(out_channels=2))  # learned_range: 2 C outputs
    unet.save_pretrained(tmp_path / "unet")
    sched = {"_class_name": "DDPMScheduler", "beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000,
             "prediction_type": prediction, "variance_type": "learned_range"}  # fmt: skip
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    for spec in (tmp_path, tmp_path / "unet"):  # a pipeline folder or its unet folder
        prior = load_prior(spec)
        x, t = inputs()
        a = alphas_cumprod("cosine")[t].float().reshape(-1, 1, 1, 1)
        with torch.no_grad():
            out = unet(x, t).sample[:, :1]
            eps = prior.predict_noise(x, t)
        expected = {
            "epsilon": out,
            "v_prediction": a.sqrt() * out + (1 - a).sqrt() * x,
            "sample": (x - a.sqrt() * out) / (1 - a).sqrt(),
        }[prediction]
        torch.testing.assert_close(eps, expected, rtol=1e-5, atol=1e-5)
        assert (prior.channels, prior.size_multiple) == (1, 2)
        torch.testing.assert_close(prior.alphas_cumprod, alphas_cumprod("cosine"))


def test_diffusers_folder_without_scheduler_is_linear(tmp_path):
    unet = _tiny_diffusers_unet()
    unet.save_pretrained(tmp_path)
    prior = load_prior(tmp_path)
    torch.testing.assert_close(prior.alphas_cumprod, ABAR)  # 1e-4 .. 0.02 over 1000 steps


def test_diffusers_other_class_and_missing_package(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ValueError, match="'UNet2DConditionModel' is not supported"):
        load_prior(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    with pytest.raises(ImportError, match=r"pip install napari-svi\[diffusers\]"):
        load_prior(tmp_path)


# ---------------------------------------------------------------- channel adapters

class PerChannelScale(nn.Module):
    """eps = x * (1, 2, 3)[c] + t / 1000: pixel-wise, with a known answer for every adapter."""

    def forward(self, x, t):
        scale = torch.arange(1, x.shape[1] + 1, dtype=x.dtype).reshape(1, -1, 1, 1)
        return x * scale + t.reshape(-1, 1, 1, 1) / 1000


def toy_prior(channels):
    return DiffusionPrior(PerChannelScale(), ABAR, channels=channels, size_multiple=1, name="toy")


def test_gray_stack_on_rgb_prior_repeats_in_and_averages_out():
    prior = adapt_channels(toy_prior(3), 1)
    x, t = inputs(c=1)
    torch.testing.assert_close(prior.predict_noise(x, t), x * 2 + t.reshape(-1, 1, 1, 1) / 1000)
    assert prior.channels == 1 and prior.info["adapted_from_channels"] == 3


def test_multichannel_stack_on_gray_prior_runs_channels_as_batch():
    prior = adapt_channels(toy_prior(1), 3)
    x, t = inputs(c=3)
    torch.testing.assert_close(prior.predict_noise(x, t), x + t.reshape(-1, 1, 1, 1) / 1000)


def test_adapt_channels_identity_and_errors():
    p = toy_prior(3)
    assert adapt_channels(p, 3) is p
    with pytest.raises(ValueError, match="cannot use a 3-channel prior on 2-channel data"):
        adapt_channels(p, 2)
    with pytest.raises(ValueError, match="positive integer"):
        adapt_channels(p, 0)


def test_load_prior_applies_channel_adaptation(tmp_path):
    _, path = _save_adm(tmp_path)
    prior = load_prior(path, channels=1)
    x, t = inputs(c=1)
    with torch.no_grad():
        assert prior.predict_noise(x, t).shape == x.shape
    assert load_prior(prior, channels=1) is prior


# ---------------------------------------------------------------- tiling

class PixelwiseNet(nn.Module):
    """A pixel-wise eps network that insists on sizes that are multiples of 4, as a 3-level UNet does."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x, t):
        assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0
        self.calls.append(tuple(x.shape))
        return torch.tanh(x) * (1 + t.reshape(-1, 1, 1, 1) / 1000)


def pixelwise_prior():
    return DiffusionPrior(PixelwiseNet(), ABAR, channels=1, size_multiple=4, name="pixelwise")


@pytest.mark.parametrize("shape", [(37, 45), (16, 16), (64, 20)])
def test_tiling_is_exact_for_pixelwise_priors(shape):
    x, t = inputs(b=3, h=shape[0], w=shape[1])
    gauss = GaussianPrior(0.1, 0.5, ABAR)
    torch.testing.assert_close(TiledPrior(gauss, 16, overlap=6).predict_noise(x, t), gauss.predict_noise(x, t))
    prior = pixelwise_prior()
    tiled = TiledPrior(prior, 16, overlap=6, max_pixels_per_batch=2 * 16 * 16)
    expected = torch.tanh(x) * (1 + t.reshape(-1, 1, 1, 1) / 1000)
    torch.testing.assert_close(tiled.predict_noise(x, t), expected, rtol=1e-6, atol=1e-6)
    assert all(b <= 2 and h <= 16 and w <= 16 for b, _, h, w in prior.network.calls)


def test_blend_weights_of_neighbours_sum_to_one():
    starts = spread_starts(100, 32, 8)  # the planner TiledPrior uses
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(b - a <= 32 - 8 for a, b in zip(starts[:-1], starts[1:], strict=True))  # overlap >= 8 everywhere
    total = torch.zeros(100)
    for s, w in zip(starts, blend_weights(starts, 32, 100), strict=True):
        assert w.min() > 0
        total[s : s + 32] += torch.from_numpy(w).float()
    torch.testing.assert_close(total, torch.ones(100))  # a partition of unity: no seams by construction


def test_frame_chunking_is_exact_for_a_unet():
    prior = unet_prior()
    x, t = inputs(b=4, h=16, w=24)
    with torch.no_grad():
        expected = prior.predict_noise(x, t)
    # exact up to float32 rounding: convolution kernels may sum in another order for another batch size
    tiled = TiledPrior(prior, max_pixels_per_batch=16 * 24)  # one frame per network call
    torch.testing.assert_close(tiled.predict_noise(x, t), expected, rtol=1e-4, atol=1e-5)
    # a tile at least as large as the frame is the untiled network
    torch.testing.assert_close(TiledPrior(prior, 32, overlap=8).predict_noise(x, t), expected, rtol=1e-4, atol=1e-5)


def test_unet_tiling_error_is_bounded_and_blending_helps():
    """Tiles of a UNet are an approximation, with error relative to the output norm.

    A tile sees zero padding instead of its neighbours (16 pixels of receptive field per side
    for this 2-level UNet) and GroupNorm normalises with the tile's statistics rather than the
    frame's, so even interior pixels change. Measured for randomly initialised 8-channel UNets
    (seeds 0-3): 0.10-0.16 for 32-pixel tiles with 16 pixels of overlap on 48-pixel frames; the
    bound 0.25 leaves room for platform differences but catches misplaced or mis-weighted tiles
    (which give errors of order 1). Overlapping, blended tiles must also beat a hard split.
    """
    prior = unet_prior(seed=0)
    x, t = inputs(b=2, h=48, w=48)
    with torch.no_grad():
        expected = prior.predict_noise(x, t)

    def rel_error(tiled):
        return float((tiled - expected).norm() / expected.norm())

    assert rel_error(TiledPrior(prior, 32, overlap=16).predict_noise(x, t)) < 0.25
    x64, t64 = inputs(b=2, h=64, w=64)
    with torch.no_grad():
        expected = prior.predict_noise(x64, t64)
    hard = rel_error(TiledPrior(prior, 32, overlap=0).predict_noise(x64, t64))  # 4 disjoint tiles
    blended = rel_error(TiledPrior(prior, 32, overlap=16).predict_noise(x64, t64))
    assert blended < hard


class OutOfMemoryNet(PixelwiseNet):
    """Raises CUDA's out-of-memory error when one call gets more than ``budget`` pixels."""

    def __init__(self, budget):
        super().__init__()
        self.budget = budget

    def forward(self, x, t):
        if x.numel() > self.budget:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(x, t)


def test_out_of_memory_halves_chunks_then_tiles():
    x, t = inputs(b=4, h=32, w=32)
    net = OutOfMemoryNet(budget=16 * 16)
    tiled = TiledPrior(DiffusionPrior(net, ABAR, channels=1, size_multiple=4, name="oom"), min_tile_size=8)
    with pytest.warns(RuntimeWarning, match="out of GPU memory: retrying"):
        eps = tiled.predict_noise(x, t)
    torch.testing.assert_close(eps, PixelwiseNet()(x, t), rtol=1e-6, atol=1e-6)
    assert tiled.tile_size == 16 and tiled.max_pixels_per_batch is not None  # shrunk settings are kept

    hopeless = TiledPrior(DiffusionPrior(OutOfMemoryNet(budget=10), ABAR, channels=1, size_multiple=4, name="oom"), 32, 8)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="out of GPU memory even for one"):
        hopeless.predict_noise(x, t)


def test_tiled_output_is_float32_and_writable():
    prior = unet_prior()
    x, t = inputs()
    eps = TiledPrior(prior, 16, overlap=4).predict_noise(x, t)
    assert eps.dtype == torch.float32 and not eps.requires_grad
    eps.mul_(2)  # not an inference tensor: callers may update it in place


def test_bfloat16_autocast_is_close_to_float32():
    prior = unet_prior()
    x, t = inputs()
    ref = TiledPrior(prior).predict_noise(x, t)
    low = TiledPrior(prior, precision="bfloat16").predict_noise(x, t)
    assert low.dtype == torch.float32
    assert float((low - ref).norm() / ref.norm()) < 0.05  # bfloat16 keeps 8 mantissa bits


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tile_size": 18}, "multiple of 4"),
        ({"tile_size": 16, "overlap": 16}, "overlap"),
        ({"max_pixels_per_batch": 0}, "max_pixels_per_batch"),
        ({"precision": "float64"}, "precision"),
    ],
)
def test_tiled_prior_validates_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TiledPrior(pixelwise_prior(), **kwargs)


def test_tiled_prior_pads_nothing_and_says_so():
    # padding to the network's multiple is the piece's job (A @ Crop); the wrapper reports the network's multiple
    tiled = TiledPrior(pixelwise_prior(), 16, overlap=4)
    assert tiled.size_multiple == 4
    x, t = inputs(b=2, h=10, w=40)  # 10 rows fit in one tile but are not a multiple of 4; 40 columns are tiled
    with pytest.raises(ValueError, match="multiple of 4"):
        tiled.predict_noise(x, t)
    x, t = inputs(b=2, h=12, w=41)  # a side longer than the tile needs no multiple
    torch.testing.assert_close(tiled.predict_noise(x, t), torch.tanh(x) * (1 + t.reshape(-1, 1, 1, 1) / 1000))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_tiling_on_cuda(precision):
    prior = unet_prior().to("cuda")
    x, t = inputs(b=3, h=48, w=40)
    with torch.no_grad():
        ref = prior.predict_noise(x.cuda(), t.cuda()).cpu()
    eps = TiledPrior(prior, 48, overlap=8, precision=precision).predict_noise(x.cuda(), t.cuda()).cpu()
    assert eps.dtype == torch.float32
    assert float((eps - ref).norm() / ref.norm()) < (1e-4 if precision == "float32" else 0.05)
