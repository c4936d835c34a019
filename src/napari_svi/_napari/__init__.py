"""The napari plugin: dock widgets, sample data and a writer, reached only through ``napari.yaml``.

This is the only part of napari-svi that imports napari (and, through it, Qt). It translates
layers and widget values into calls of the Qt-free core (:func:`napari_svi.restore.iter_restore`,
:func:`napari_svi.degrade.degrade`, :func:`napari_svi.training.train`) and results back into
layers; it holds no algorithm of its own.
"""
