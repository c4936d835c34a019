"""Forward operators (the physics): ``y = A x`` on ``(T, C, H, W)`` stacks, with exact adjoints.

Composition order, from the true stack to the data: temporal PSF (+ subsampling) -> spatial PSF ->
downsampling -> mask. :class:`OperatorSpec` builds the whole chain from user-level settings.
"""

from .base import ComposedOperator, Crop, Identity, LinearOperator
from .spatial import Downsample, Mask, SpatialConvolution
from .spec import OperatorSpec
from .temporal import TemporalOperator, temporal_matrix

__all__ = [
    "ComposedOperator",
    "Crop",
    "Downsample",
    "Identity",
    "LinearOperator",
    "Mask",
    "OperatorSpec",
    "SpatialConvolution",
    "TemporalOperator",
    "temporal_matrix",
]
