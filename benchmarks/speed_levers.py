"""CPU levers for one network evaluation, timed in turn and compared with the float32 default's eps.

    OMP_NUM_THREADS=1 python benchmarks/speed_levers.py default channels_last ort --rounds 6
    OMP_NUM_THREADS=1 python benchmarks/speed_levers.py default bfloat16 --frames 1 --rounds 1
    OMP_NUM_THREADS=1 python benchmarks/speed_levers.py --nnpack

Each variant evaluates the default prior on a ``--frames`` x ``--size`` x ``--size`` stack (in
chunks of 65536 pixels, as ``restore`` does on a CPU; ``chunk16k`` and ``whole`` change that) at
t = 500. The variants run in turn, the order reversed every other round so the machine's load
falls on all alike; printed: every round, the median and best seconds, the ratio to the first
variant and the largest absolute difference of eps from it. ``ort`` needs ``onnxruntime`` and
``onnx`` (not dependencies of napari-svi). ``--nnpack`` times NNPACK's convolution against
oneDNN's on the UNet's 3 x 3 layer shapes instead. Results: ``results/speed/levers.md``.
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import time

import torch
from torch.nn import functional as F


def _prior():
    from napari_svi.priors.loading import load_prior

    return load_prior("default", "cpu", channels=1)


def _chunked(fn, x, t, per):
    def run():
        with torch.inference_mode():
            return torch.cat([fn(x[i : i + per], t[i : i + per]) for i in range(0, x.shape[0], per)])
    return run


def make_variant(name: str, x: torch.Tensor, t: torch.Tensor):
    """A callable evaluating eps of ``x`` at ``t`` the way lever ``name`` does."""
    from napari_svi.priors.tiling import TiledPrior

    per = max(1, 65536 // (x.shape[-2] * x.shape[-1]))
    if name in ("default", "chunk16k", "whole"):
        pixels = {"default": 65536, "chunk16k": 16384, "whole": x[0].numel() * x.shape[0]}[name]
        tiled = TiledPrior(_prior(), max_pixels_per_batch=pixels)
        return lambda: tiled.predict_noise(x, t)
    sized = re.fullmatch(r"(chunk|cl)(\d+)k", name)
    if sized:  # TiledPrior as restore runs it, at chunks of N x 1024 pixels, channels-last for "cl"
        tiled = TiledPrior(_prior(), max_pixels_per_batch=int(sized[2]) * 1024,
                           channels_last=sized[1] == "cl")
        return lambda: tiled.predict_noise(x, t)
    net = _prior().network.eval()
    if name == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        return _chunked(lambda a, b: net(a.contiguous(memory_format=torch.channels_last), b).contiguous(), x, t, per)
    if name in ("bfloat16", "float16"):
        dtype = getattr(torch, name)

        def half(a, b):
            with torch.autocast("cpu", dtype=dtype):
                return net(a, b).float()
        return _chunked(half, x, t, per)
    if name == "jit_freeze":
        with torch.no_grad():
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, (x[:per], t[:per]))))
        return _chunked(frozen, x, t, per)
    if name == "compile":
        compiled = torch.compile(net)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(x[:per], t[:per])
        print(f"compile: first call {time.perf_counter() - t0:.1f} s", flush=True)
        return _chunked(compiled, x, t, per)
    if name == "inplace":
        from napari_svi.priors.unet import ResBlock

        def forward(self, h_in, emb):
            h = self.conv1(F.silu(self.norm1(h_in)))
            scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            h = torch.addcmul(shift, self.norm2(h), 1 + scale)
            return self.conv2(self.dropout(F.silu(h, inplace=True))).add_(self.skip(h_in))
        for module in net.modules():
            if isinstance(module, ResBlock):
                module.forward = forward.__get__(module)
        return _chunked(net, x, t, per)
    if name == "nnpack_top":  # 3 x 3 convolutions on frames of 128 px or more through NNPACK, the others oneDNN
        torch._nnpack_available()

        def conv(self, h):
            if self.kernel_size == (3, 3) and self.stride == (1, 1) and h.shape[-1] >= 128:
                return torch._nnpack_spatial_convolution(h, self.weight, self.bias, [1, 1])
            return F.conv2d(h, self.weight, self.bias, self.stride, self.padding)
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d) and module.padding == (1, 1):
                module.forward = conv.__get__(module)
        return _chunked(net, x, t, per)
    if name == "ort":
        import onnxruntime as rt

        buf = io.BytesIO()
        with torch.no_grad():
            torch.onnx.export(net, (x[:per], t[:per]), buf, input_names=["x", "t"], output_names=["eps"],
                              dynamic_axes={"x": {0: "b"}, "t": {0: "b"}, "eps": {0: "b"}}, opset_version=17,
                              dynamo=False)
        options = rt.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = rt.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
        return _chunked(lambda a, b: torch.from_numpy(session.run(None, {"x": a.numpy(), "t": b.numpy()})[0]), x, t, per)
    raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}, chunkNk, clNk (N x 1024 pixels)")


VARIANTS = ("default", "chunk16k", "whole", "channels_last", "bfloat16", "float16", "jit_freeze", "compile", "inplace",
            "nnpack_top", "ort")


def nnpack_layers(rounds: int = 3) -> None:
    """NNPACK's against oneDNN's 3 x 3 convolution on the UNet's layer shapes (4 frames per call)."""
    if not torch._nnpack_available():  # the check also initialises NNPACK, which its convolution needs first
        raise SystemExit("this PyTorch has no NNPACK")
    torch.manual_seed(0)
    for ch, px in ((32, 128), (64, 64), (96, 32), (128, 16)):
        x, w, b = torch.randn(4, ch, px, px), torch.randn(ch, ch, 3, 3) * 0.05, torch.randn(ch)
        calls = {"onednn": lambda x=x, w=w, b=b: F.conv2d(x, w, b, padding=1),
                 "nnpack": lambda x=x, w=w, b=b: torch._nnpack_spatial_convolution(x, w, b, [1, 1])}
        best = {}
        with torch.inference_mode():
            ref = calls["onednn"]()
            for name, fn in calls.items():
                fn()
                best[name] = min(_seconds(fn) for _ in range(rounds))
            err = float((calls["nnpack"]() - ref).abs().max() / ref.abs().max())
        print(f"{ch} ch at {px} px: oneDNN {1e3 * best['onednn']:.1f} ms, NNPACK {1e3 * best['nnpack']:.1f} ms "
              f"({best['onednn'] / best['nnpack']:.2f}x), relative error {err:.1e}")


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="*", default=["default", "channels_last"], help=f"of {', '.join(VARIANTS)}")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nnpack", action="store_true", help="time NNPACK against oneDNN per layer instead")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.nnpack:
        nnpack_layers(args.rounds)
        return 0
    x = torch.randn(args.frames, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    t = torch.full((args.frames,), 500)
    runs = {}
    for name in args.variants:
        t0 = time.perf_counter()
        runs[name] = make_variant(name, x, t)
        print(f"set up {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    first = args.variants[0]
    ref = runs[first]()
    for fn in runs.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {n: [] for n in runs}
    diff = {}
    for r in range(args.rounds):
        for name in args.variants if r % 2 == 0 else args.variants[::-1]:
            t0 = time.perf_counter()
            out = runs[name]()
            times[name].append(time.perf_counter() - t0)
            diff[name] = float((out.float() - ref).abs().max())
            print(f"round {r + 1} {name:14s} {times[name][-1]:7.2f} s", flush=True)
    for name in args.variants:
        med, best = statistics.median(times[name]), min(times[name])
        print(f"{name:14s} median {med:7.2f} s ({statistics.median(times[first]) / med:.2f}x), best {best:7.2f} s "
              f"({min(times[first]) / best:.2f}x), max abs diff {diff[name]:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
