"""Exception types of Pathology Explorer: one per kind of bad input, each with a message a person understands."""


class PathologyError(Exception):
    """Base class of every error core raises on purpose; the CLI prints its message and exits 2."""


class SlideError(PathologyError):
    """A slide cannot be found, opened or decoded."""


class AnnotationError(PathologyError):
    """An annotation file cannot be read or is malformed."""


class StoreError(PathologyError):
    """The results database cannot be opened or holds inconsistent data."""


class CheckpointError(PathologyError):
    """A model checkpoint is missing, corrupt, unsafe or of another architecture."""


class DataPathError(PathologyError):
    """A path lies outside the configured data folders."""
