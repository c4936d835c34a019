"""The installed version of napari-svi (its own module, so that any module can import it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-svi")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
