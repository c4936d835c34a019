"""What "Restore time-lapse" restores: the region (whole frames, the current view, a Shapes rectangle) and frames.

A microscopist restores a part first. :class:`RegionFields` holds the fields and follows what
they depend on: the canvas for "current view", and the chosen Shapes layer, whose first rectangle
may be moved or edited after it was chosen. :class:`Crop` is the part in the layer's pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from magicgui.widgets import ComboBox, SpinBox

from ._common import Message, open_ranges

#: A restored region must hold at least this many pixels per side (the noise estimate needs 8 x 8).
MIN_REGION = 8


@dataclass(frozen=True)
class Crop:
    """Frames ``t0 .. t1 - 1`` and pixels ``[y0, y1) x [x0, x1)`` of a layer's (T, Y, X) stack."""

    t0: int
    t1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.t1 - self.t0, self.y1 - self.y0, self.x1 - self.x0)

    def is_whole(self, shape: tuple[int, int, int]) -> bool:
        return (self.t0, self.y0, self.x0) == (0, 0, 0) and self.shape == tuple(shape)

    def slices(self, ndim: int, time_axis: int) -> tuple[slice, ...]:
        index = [slice(None)] * ndim
        index[time_axis] = slice(self.t0, self.t1)
        index[-2], index[-1] = slice(self.y0, self.y1), slice(self.x0, self.x1)
        return tuple(index)

    def crop_mask(self, mask):
        """A mask at the measurement's resolution, (Y, X) or (T, Y, X), cut to this crop."""
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.ndim == 3:
            return mask[self.t0 : self.t1, self.y0 : self.y1, self.x0 : self.x1]
        return mask[self.y0 : self.y1, self.x0 : self.x1]

    def record(self) -> dict:
        return {"frames": [self.t0, self.t1 - 1], "rows": [self.y0, self.y1], "cols": [self.x0, self.x1]}


def pixel_box(world_corners: np.ndarray, layer, shape: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the layer pixels that a rectangle in world coordinates (the last two axes) covers.

    ``world_corners`` are points of the rectangle, shape ``(N, 2)`` (Y, X) in world units. A pixel
    is inside when its centre is; the box is clipped to the frame.
    """
    scale = np.asarray(layer.scale, dtype=float)[-2:]
    translate = np.asarray(layer.translate, dtype=float)[-2:]
    data = (np.asarray(world_corners, dtype=float) - translate) / scale
    low, high = data.min(axis=0), data.max(axis=0)
    y0, x0 = (int(max(0, math.ceil(v - 0.5))) for v in low)
    y1 = int(min(shape[1], math.floor(high[0] + 0.5)))
    x1 = int(min(shape[2], math.floor(high[1] + 0.5)))
    return y0, max(y0, y1), x0, max(x0, x1)


def check_crop(crop: Crop, shape: tuple[int, int, int]) -> str | None:
    """Why a crop cannot be restored, or ``None``."""
    t = shape[0]
    if not 0 <= crop.t0 < t or not crop.t0 < crop.t1 <= t:
        return f"Frames must run from 0 to {t - 1}, first before last; got {crop.t0} to {crop.t1 - 1}."
    h, w = crop.shape[1:]
    if h < MIN_REGION or w < MIN_REGION:
        return f"The region covers {h} × {w} pixels of the layer; choose at least {MIN_REGION} × {MIN_REGION}."
    return None


def camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


#: what moves a chosen rectangle in world coordinates: its vertices, or its layer's transform
SHAPES_EVENTS = ("data", "scale", "translate", "rotate", "shear", "affine")


class RegionFields:
    """The *Region*, *First frame* and *Last frame* fields, and the :class:`Crop` they describe.

    ``on_moved`` is called when the region moved without a field changing: the canvas (for
    "current view") or the chosen Shapes layer's rectangle (moved, resized, replaced, or its layer
    transformed). Field changes reach the owner through the fields' own ``changed`` signals.
    """

    def __init__(self, viewer, on_moved: Callable[[], None]):
        self._viewer = viewer
        self._on_moved = on_moved
        self.region = ComboBox(label="Region", choices=self._choices)
        self.region.tooltip = "Restore a part first: the current view, or the first rectangle of a Shapes layer"
        self.first_frame = SpinBox(label="First frame", value=0)
        self.last_frame = SpinBox(label="Last frame", value=0)
        self.msg = Message()
        open_ranges(self.first_frame, self.last_frame)
        self._frames_of = None  # the layer whose frame count the frame range was set for
        self._shapes = None  # the Shapes layer whose rectangle is followed
        camera(viewer).events.center.connect(self._on_view)
        camera(viewer).events.zoom.connect(self._on_view)
        self.region.changed.connect(self._follow)

    @property
    def widgets(self) -> list:
        return [self.region, self.first_frame, self.last_frame, self.msg]

    def disconnect(self) -> None:
        """Stop following the viewer (the widget is going away)."""
        camera(self._viewer).events.center.disconnect(self._on_view)
        camera(self._viewer).events.zoom.disconnect(self._on_view)
        self._listen(None)

    def _choices(self, _widget=None) -> list:
        import napari

        shapes = [(f"rectangle in {layer.name!r}", layer) for layer in self._viewer.layers
                  if isinstance(layer, napari.layers.Shapes)]
        return [("whole frames", "whole"), ("current view", "view"), *shapes]

    def _on_view(self, *_):
        if self.region.value == "view":
            self._on_moved()

    def _follow(self, *_) -> None:
        """Listen to the chosen Shapes layer, and no longer to the one chosen before."""
        choice = self.region.value
        self._listen(None if choice is None or isinstance(choice, str) else choice)

    def _listen(self, layer) -> None:
        if layer is self._shapes:
            return
        for name in SHAPES_EVENTS:
            if self._shapes is not None and hasattr(self._shapes.events, name):
                getattr(self._shapes.events, name).disconnect(self._on_shapes)
            if layer is not None and hasattr(layer.events, name):
                getattr(layer.events, name).connect(self._on_shapes)
        self._shapes = layer

    def _on_shapes(self, event=None) -> None:
        # a drag emits "changing" before it moves the vertices and "changed" after: the second counts
        if str(getattr(event, "action", "")).endswith("ing"):
            return
        if self.region.value is self._shapes:
            self._on_moved()

    def reset_frames(self, layer, shape: tuple[int, int, int] | None, force: bool = False) -> None:
        """A new input layer (or time axis): the frame range is all of its frames."""
        if (layer is self._frames_of and not force) or shape is None:
            return
        self._frames_of = layer
        with self.first_frame.changed.blocked(), self.last_frame.changed.blocked():
            self.first_frame.value = 0
            self.last_frame.value = shape[0] - 1

    def crop(self, layer, shape: tuple[int, int, int]) -> Crop:
        """Frames and pixels of ``layer`` (its stack is ``shape``, (T, H, W)) to restore; ValueError says why not."""
        t, h, w = shape
        t0, t1 = int(self.first_frame.value), int(self.last_frame.value) + 1
        choice = self.region.value
        if choice == "view":
            y0, y1, x0, x1 = pixel_box(self._view_corners(), layer, shape)
        elif choice in (None, "whole"):
            y0, y1, x0, x1 = 0, h, 0, w
        else:
            if choice.ndim < 2 or len(choice.data) == 0:
                raise ValueError(f"Draw a rectangle in {choice.name!r} (the first shape sets the region).")
            vertices = np.asarray(choice.data[0], dtype=float)
            world = np.asarray([choice.data_to_world(v) for v in vertices])
            y0, y1, x0, x1 = pixel_box(world[:, -2:], layer, shape)
        crop = Crop(t0, t1, y0, y1, x0, x1)
        problem = check_crop(crop, shape)
        if problem:
            raise ValueError(problem)
        return crop

    def _view_corners(self) -> np.ndarray:
        """Corners (Y, X) of the canvas in world coordinates."""
        try:
            from napari._qt.qt_viewer import QtViewer

            # through Qt's own tree from this dock: napari's private window attributes warn in plugins
            height, width = self.region.native.window().findChild(QtViewer).canvas.size
        except (ImportError, AttributeError, TypeError, ValueError):
            raise ValueError("The current view is not available; draw a rectangle in a Shapes layer instead.") from None
        cam = camera(self._viewer)
        zoom = float(cam.zoom)
        cy, cx = (float(v) for v in cam.center[-2:])
        hy, hx = height / 2 / zoom, width / 2 / zoom
        return np.array([[cy - hy, cx - hx], [cy + hy, cx + hx]])
