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


class CommandError(PathologyError):
    """A command-line usage problem found after parsing (reported like any other error)."""


class InferenceError(PathologyError):
    """Prediction over a slide failed; the run is marked failed and keeps its committed patches."""


class TrainingError(PathologyError):
    """A training run cannot start or go on: bad cohort, missing split, inconsistent resume state."""


class EvaluationError(PathologyError):
    """The evaluation's inputs are inconsistent (missing slides, bad labels, bad predictions)."""


class EvaluationWarning(UserWarning):
    """An input oddity the evaluation works around, saying how (e.g. ignored predictions)."""


class ExplainError(PathologyError):
    """An explanation or a look inside the network cannot be made with these inputs."""


class ExportError(PathologyError):
    """An export cannot be made: unknown slide or model, no predictions, bad option, unwritable file."""


class CohortError(PathologyError):
    """A data folder's cohort table, slide or annotation lookup is malformed or inconsistent."""


class FileWriteError(PathologyError):
    """A file cannot be written where asked: the destination is a device, FIFO, directory or symbolic link."""


class UploadError(PathologyError):
    """An upload cannot be stored (quota, bad name, unwritable folder)."""
