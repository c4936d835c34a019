"""The linear-operator interface shared by every forward model, plus identity, crop and composition.

A stack is a torch tensor of shape ``(T, C, H, W)`` (frames as the batch axis). An operator maps
tensors of shape ``in_shape`` to tensors of shape ``out_shape`` and knows its exact adjoint, so that
``<A x, y> = <x, A^T y>`` holds to float precision (checked for every operator in
``tests/test_operators.py``).

Operators keep their data (kernels, matrices, masks) as float64 CPU "master" tensors and convert
them lazily to the device and dtype of the input they are applied to (one cached copy per device
and dtype). ``op.to(device, dtype)`` converts eagerly and is only an optimisation: any operator
accepts inputs of any float dtype on any device.
"""

from __future__ import annotations

import copy

import torch

Shape = tuple[int, int, int, int]


def as_shape(shape, name: str) -> Shape:
    """Validate a ``(T, C, H, W)`` shape: four positive integers."""
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"{name} must be a (T, C, H, W) tuple of 4 positive integers, got {shape!r}") from None
    if len(out) != 4 or any(s < 1 for s in out) or any(int(s) != s for s in shape):
        raise ValueError(f"{name} must be a (T, C, H, W) tuple of 4 positive integers, got {shape!r}")
    return out  # type: ignore[return-value]


def _resolve_device(device) -> torch.device:
    """``"cuda"`` -> ``cuda:<current>``, so that cached data match ``tensor.device`` of inputs."""
    device = torch.device(device)
    if device.type != "cpu" and device.index is None:
        device = torch.empty(0, device=device).device
    return device


class LinearOperator:
    """A linear map ``A`` from stacks of shape ``in_shape`` to stacks of shape ``out_shape``.

    Subclasses implement :meth:`_forward` and :meth:`_adjoint` (the public methods add shape checks)
    and register their float64 data with :meth:`_register`.

    Attributes
    ----------
    in_shape : tuple of int
        ``(T, C, H, W)`` of the input (the true stack for a full forward model).
    out_shape : tuple of int
        ``(T_out, C, H_out, W_out)`` of the output (the measurement).
    """

    in_shape: Shape
    out_shape: Shape

    def __init__(self, in_shape, out_shape):
        self.in_shape = as_shape(in_shape, "in_shape")
        self.out_shape = as_shape(out_shape, "out_shape")
        self._masters: dict[str, torch.Tensor] = {}
        self._cache: dict[tuple, torch.Tensor] = {}
        # where to() last put the data; inputs on any other device or of any other float dtype also work
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    # -- data held by the operator --------------------------------------------------------------
    def _register(self, name: str, tensor: torch.Tensor) -> None:
        """Keep ``tensor`` (float64/complex128/int64, CPU; float32 where its values are exact in it, as 0/1
        masks) as a master copy under ``name``."""
        self._masters[name] = tensor.detach().cpu()

    def _buffer(self, name: str, device, dtype: torch.dtype) -> torch.Tensor:
        """The master tensor ``name`` on ``device``; real data in ``dtype``, complex data in the matching
        complex dtype, integer data (indices) unchanged. Cached per (device, dtype)."""
        master = self._masters[name]
        if master.is_complex():
            target = {torch.float64: torch.complex128}.get(dtype, torch.complex64)
        elif master.is_floating_point():
            target = dtype
        else:
            target = master.dtype
        key = (name, _resolve_device(device), target)
        cached = self._cache.get(key)
        if cached is None:
            cached = master.to(device=device, dtype=target)
            self._cache[key] = cached
        return cached

    # -- public interface ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``: ``x`` of shape ``in_shape`` -> a new tensor of shape ``out_shape`` (same dtype, device)."""
        self._check(x, self.in_shape, "forward", "in_shape")
        return self._forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y``: ``y`` of shape ``out_shape`` -> a new tensor of shape ``in_shape``."""
        self._check(y, self.out_shape, "adjoint", "out_shape")
        return self._adjoint(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^T A x`` (the normal operator used by conjugate gradient)."""
        return self.adjoint(self.forward(x))

    def observed(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` with the entries this operator never produces set to zero (masked pixels).

        Those entries hold no measurement, whatever a file stores there; every residual
        ``y - A x`` must leave them out. Here: every entry is observed, ``y`` is returned as it is.
        """
        return y

    __call__ = forward

    def __matmul__(self, other: LinearOperator) -> ComposedOperator:
        """``(A @ B).forward(x) == A.forward(B.forward(x))``; its adjoint runs ``B.adjoint(A.adjoint(y))``."""
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return ComposedOperator(self, other)

    def to(self, device=None, dtype: torch.dtype | None = None) -> LinearOperator:
        """A copy whose data are already converted to ``device`` and ``dtype`` (``None``: keep the current).

        Only an optimisation (every operator converts lazily to the input's device and dtype), but it
        moves the conversion cost out of the first call of a sampling loop. New operators start on the
        CPU in float32 (attributes ``device`` and ``dtype``).
        """
        device = self.device if device is None else _resolve_device(device)
        dtype = self.dtype if dtype is None else dtype
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point torch dtype, got {dtype}")
        out = copy.copy(self)
        out._cache = {}
        out.device, out.dtype = device, dtype
        for name in out._masters:
            out._buffer(name, device, dtype)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_shape} -> {self.out_shape})"

    # -- to implement ----------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check(self, x, shape: Shape, method: str, attribute: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__}.{method} expects a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape) != shape:
            raise ValueError(
                f"{type(self).__name__}.{method} expects a tensor of shape {attribute}={shape}, got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}.{method} expects a floating point tensor, got {x.dtype}")


class ComposedOperator(LinearOperator):
    """``A_1 A_2 ... A_n``: applies ``operators[-1]`` first (mathematical order, as ``A @ B``).

    Parameters
    ----------
    *operators : LinearOperator
        At least one; ``operators[i].in_shape`` must equal ``operators[i + 1].out_shape``. Nested
        compositions are flattened.
    """

    def __init__(self, *operators: LinearOperator):
        flat: list[LinearOperator] = []
        for op in operators:
            if not isinstance(op, LinearOperator):
                raise TypeError(f"ComposedOperator takes LinearOperator instances, got {type(op).__name__}")
            flat.extend(op.operators if isinstance(op, ComposedOperator) else (op,))
        if not flat:
            raise ValueError("ComposedOperator needs at least one operator")
        for outer, inner in zip(flat[:-1], flat[1:], strict=True):
            if outer.in_shape != inner.out_shape:
                raise ValueError(
                    f"cannot compose {outer!r} @ {inner!r}: in_shape {outer.in_shape} != out_shape {inner.out_shape}"
                )
        super().__init__(flat[-1].in_shape, flat[0].out_shape)
        self.operators: tuple[LinearOperator, ...] = tuple(flat)

    def _forward(self, x):
        for op in reversed(self.operators):
            x = op.forward(x)
        return x

    def _adjoint(self, y):
        for op in self.operators:
            y = op.adjoint(y)
        return y

    def observed(self, y):
        return self.operators[0].observed(y)  # the outermost part decides which entries exist

    def to(self, device=None, dtype=None) -> ComposedOperator:
        out = ComposedOperator(*(op.to(device, dtype) for op in self.operators))
        out.device, out.dtype = out.operators[0].device, out.operators[0].dtype
        return out

    def __repr__(self) -> str:
        return " @ ".join(repr(op) for op in self.operators)


class Identity(LinearOperator):
    """``A = I`` on stacks of ``shape`` ``(T, C, H, W)``; returns a copy (never the input itself)."""

    def __init__(self, shape):
        super().__init__(shape, shape)

    def _forward(self, x):
        return x.clone()

    def _adjoint(self, y):
        return y.clone()


class Crop(LinearOperator):
    """Keep the top-left ``(H, W)`` of frames of size ``(Hp, Wp)``; the adjoint zero-pads bottom and right.

    Lets the sampler work on frames padded to the network's size multiple: the forward model of the
    padded problem is ``A @ Crop(padded_shape, true_shape)``.

    Parameters
    ----------
    in_shape : tuple of int
        ``(T, C, Hp, Wp)``, the padded stack.
    out_shape : tuple of int
        ``(T, C, H, W)`` with ``H <= Hp`` and ``W <= Wp``; ``T`` and ``C`` unchanged.
    """

    def __init__(self, in_shape, out_shape):
        super().__init__(in_shape, out_shape)
        (t, c, hp, wp), (t2, c2, h, w) = self.in_shape, self.out_shape
        if (t, c) != (t2, c2) or h > hp or w > wp:
            raise ValueError(
                f"Crop keeps T and C and needs out_shape H <= Hp, W <= Wp; got in_shape {self.in_shape}, "
                f"out_shape {self.out_shape}"
            )

    def _forward(self, x):
        h, w = self.out_shape[2:]
        return x[..., :h, :w].clone()

    def _adjoint(self, y):
        hp, wp = self.in_shape[2:]
        h, w = self.out_shape[2:]
        return torch.nn.functional.pad(y, (0, wp - w, 0, hp - h))
