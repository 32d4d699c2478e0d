"""The teacher stand-in for training on a teacher cache: its taps' metadata, no model.

`kdistill.data.cache_teacher_outputs` runs the teacher once and writes its outputs with a
manifest; `CachedTeacher` carries what objectives need from that manifest (tap shapes, numbers of
layers and heads), so `kdistill.Distiller(CachedTeacher(directory), student, ...)` builds its
objectives and projections as with the live teacher, and trains on `load_teacher_cache` batches.
It lives next to the teachers, not under `kdistill.data`, so that `import kdistill.distiller`
does not import the data pipeline (TFDS, augmentation); `kdistill.data.CachedTeacher` is the same
class.
"""

import keras


@keras.saving.register_keras_serializable(package="kdistill")
class CachedTeacher:
    """Stands in for the teacher when training on a teacher cache.

    Carries what objectives need from the teacher without running it: the cached taps, their
    shapes, the number of layers and heads (so layer maps and projections are built as with the
    live teacher). Pass it as `Distiller(teacher=CachedTeacher(directory), ...)`; the teacher
    targets then come from the batches of `load_teacher_cache`. `teacher=None` is the same with
    no metadata, enough for logits-only objectives.

    Args:
        directory: str or None. A cache directory (its manifest is read).
        manifest: dict or None. A manifest, instead of `directory`.

    Example:
    >>> teacher = CachedTeacher(manifest={"taps": ["logits"], "teacher": {
    ...     "output_shapes": {"logits": [None, 3]}, "num_layers": None, "num_heads": None}})
    >>> teacher.output_shapes()
    {'logits': (None, 3)}
    """

    def __init__(self, directory=None, manifest=None):
        if directory is not None and manifest is not None:
            raise ValueError("Pass a cache directory or a manifest, not both.")
        if directory is not None:
            # Imported here: `kdistill.data` imports TFDS and the augmentation module, which a
            # Distiller that only reads teacher metadata does not need.
            from kdistill.data.teacher_cache import read_manifest

            manifest = read_manifest(directory)
        self.directory = directory
        meta = dict((manifest or {}).get("teacher") or {})
        self.taps = None if manifest is None else tuple(manifest["taps"])
        self.name = meta.get("name", "cached_teacher")
        self.fingerprint = meta.get("fingerprint")
        self.num_layers = meta.get("num_layers")
        self.num_heads = meta.get("num_heads")
        self._shapes = meta.get("output_shapes") or {}

    @property
    def names(self):
        """The cached taps (an empty tuple when unknown)."""
        return self.taps or ()

    def output_shapes(self):
        """Static tap shapes `{tap: shape or [shapes]}` as `kdistill.taps.Taps` returns them."""
        def as_tuple(shape):
            if shape and isinstance(shape[0], list):
                return [tuple(s) for s in shape]
            return None if shape is None else tuple(shape)

        return {tap: as_tuple(shape) for tap, shape in self._shapes.items()}

    def get_config(self):
        """Metadata only (not the directory), so a saved Distiller does not depend on the path."""
        manifest = None
        if self.taps is not None:
            manifest = {"taps": list(self.taps), "teacher": {
                "name": self.name, "fingerprint": self.fingerprint,
                "num_layers": self.num_layers, "num_heads": self.num_heads,
                "output_shapes": self._shapes}}
        return {"manifest": manifest}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
