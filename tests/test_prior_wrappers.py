"""The GPU levers' prior wrappers on the CPU: batched calls from threads, and the CUDA-graph wrapper's fall-through."""

import threading

import numpy as np
import pytest
import torch

from napari_svi.operators import OperatorSpec
from napari_svi.priors.base import DiffusionPrior
from napari_svi.priors.batching import BatchedPrior
from napari_svi.priors.graphs import CUDAGraphPrior
from napari_svi.priors.tiling import TiledPrior
from napari_svi.priors.unet import UNet, UNetConfig
from napari_svi.restore import restore
from napari_svi.schedules import alphas_cumprod


class CountingPrior(DiffusionPrior):
    """A small random UNet (GroupNorm per frame) that counts its calls and the frames it saw."""

    def __init__(self):
        torch.manual_seed(0)
        cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4)
        net = UNet(cfg)
        for p in net.parameters():  # the zero-initialised output layers would make eps 0
            p.data.normal_(0, 0.1)
        super().__init__(net.eval(), alphas_cumprod("linear"), channels=1, size_multiple=cfg.size_multiple, name="count")
        self.calls, self.frames = 0, []

    def predict_noise(self, x, t):
        self.calls += 1
        self.frames.append(x.shape[0])
        return self.network(x, t)


def _clips(k=3, frames=6, size=16):
    rng = np.random.default_rng(1)
    return [rng.random((frames, size, size)).astype(np.float32) * 100 for _ in range(k)]


def _run(y, prior, steps=3):
    return restore(y, OperatorSpec(temporal_psf="uniform:3"), prior=prior, steps=steps, noise_sigma=None, seed=0,
                   device="cpu", threads=1).restored


class Recorder(DiffusionPrior):
    """Passes calls through to ``prior`` and keeps what each call asked and got back."""

    def __init__(self, prior):
        super().__init__(prior, prior.alphas_cumprod, channels=prior.channels, size_multiple=prior.size_multiple,
                         name=prior.name)
        self.seen = []

    def predict_noise(self, x, t):
        eps = self.network.predict_noise(x, t)
        self.seen.append((x.clone(), torch.as_tensor(t).clone(), eps.clone()))
        return eps


def test_batched_prior_gathers_the_calls_of_restores_in_threads():
    clips = _clips()
    alone = [_run(y, TiledPrior(CountingPrior())) for y in clips]
    inner = CountingPrior()
    shared = BatchedPrior(inner, participants=len(clips))
    out = [None] * len(clips)
    recorders = [Recorder(shared) for _ in clips]

    def one(i):
        with shared.participant():
            out[i] = _run(clips[i], TiledPrior(recorders[i]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clips))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert shared.calls == inner.calls == 3  # one network call per step for all three clips
    assert inner.frames == [18, 18, 18]
    # Each participant gets the network's answer for its own frames: a slice of another's batch, or
    # frames mixed across participants, would be off by the size of eps itself.
    for rec in recorders:
        assert len(rec.seen) == 3
        for x, t, eps in rec.seen:
            with torch.inference_mode():
                own = inner.network(x, torch.as_tensor(t).reshape(-1).expand(x.shape[0]))
            torch.testing.assert_close(eps, own, rtol=0, atol=1e-4 * float(own.abs().max()))
    # The whole restore then matches the one run alone. Not to the last bit: a batch of 18 may take
    # another convolution kernel than a batch of 6 (it did on a CI machine: 4e-4 of the range after
    # three steps, as x0 = (x - sqrt(1 - a) eps) / sqrt(a) amplifies eps by ~160 at t = 999), while
    # a mixing bug moves pixels by a sizeable part of the range.
    for a, b in zip(alone, out, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=2e-3 * float(np.abs(a).max()))
    assert shared.active == 0


def test_a_participant_that_leaves_no_longer_holds_up_the_others():
    inner = CountingPrior()
    shared = BatchedPrior(inner, participants=2)
    x = torch.randn(2, 1, 8, 8)
    got = {}
    worker = threading.Thread(target=lambda: got.setdefault("eps", shared.predict_noise(x, torch.tensor(5))))
    worker.start()
    worker.join(timeout=0.2)
    assert worker.is_alive() and inner.calls == 0  # waiting for the second participant
    shared.leave()  # which never comes: the pending call runs now
    worker.join(timeout=30)
    assert inner.calls == 1 and got["eps"].shape == x.shape


def test_batched_prior_hands_an_error_to_every_participant_and_times_out():
    class Broken(CountingPrior):
        def predict_noise(self, x, t):
            raise RuntimeError("network broke")

    shared = BatchedPrior(Broken(), participants=1)
    with pytest.raises(RuntimeError, match="network broke"):
        shared.predict_noise(torch.randn(1, 1, 8, 8), torch.tensor(3))
    lonely = BatchedPrior(CountingPrior(), participants=2, timeout_s=0.1)
    with pytest.raises(RuntimeError, match="waited"):
        lonely.predict_noise(torch.randn(1, 1, 8, 8), torch.tensor(3))
    with pytest.raises(ValueError, match="participants"):
        BatchedPrior(CountingPrior(), participants=0)


def test_cuda_graph_prior_calls_through_off_cuda():
    inner = CountingPrior()
    graphed = CUDAGraphPrior(inner)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 500, 999])
    with torch.inference_mode():
        torch.testing.assert_close(graphed.predict_noise(x, t), inner.network(x, t))
    assert graphed.captures == 0 and graphed.replays == 0 and inner.calls == 1
    assert graphed.size_multiple == inner.size_multiple and torch.equal(graphed.alphas_cumprod, inner.alphas_cumprod)
    with pytest.raises(ValueError, match="precision"):
        CUDAGraphPrior(inner, precision="int8")
    with pytest.raises(ValueError, match="max_graphs"):
        CUDAGraphPrior(inner, max_graphs=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_prior_replays_what_the_network_computes():
    inner = CountingPrior().to("cuda")
    graphed = CUDAGraphPrior(inner)
    x, t = torch.randn(4, 1, 16, 16, device="cuda"), torch.full((4,), 300, device="cuda")
    with torch.inference_mode():
        first = graphed.predict_noise(x, t)
        second = graphed.predict_noise(x * 0.5, t)
        torch.testing.assert_close(second, inner.network(x * 0.5, t), rtol=1e-4, atol=1e-5)
    assert graphed.captures == 1 and graphed.replays == 2 and not torch.equal(first, second)


def test_tiled_prior_channels_last_on_the_cpu_gives_the_same_eps():
    inner = CountingPrior()
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([1, 500, 999])
    plain = TiledPrior(inner, channels_last=False).predict_noise(x, t)
    conv = next(m for m in inner.network.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
                and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous()  # False left the weights as they were
    cl = TiledPrior(inner, channels_last=True)
    torch.testing.assert_close(cl.predict_noise(x, t), plain, rtol=1e-4, atol=1e-5)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    default = TiledPrior(CountingPrior())
    assert default.channels_last is None
    # the default: channels-last on the CPU and CUDA (measured faster on both), not on other devices
    assert default._use_channels_last(x) and default._use_channels_last(torch.empty(1, device="meta")) is False
    torch.testing.assert_close(default.predict_noise(x, t), plain, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="channels_last"):
        TiledPrior(inner, channels_last="yes")
