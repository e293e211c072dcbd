"""The project's error types. `sdcaff` prints their message and exits non-zero; others are bugs."""


class SdcaffError(Exception):
    """Base class: an error the user can fix (bad input, bad setting, missing file)."""


class ParamsError(SdcaffError):
    """A params.yaml key is unknown, mistyped or missing; the message names file and line."""


class CorpusFormatError(SdcaffError):
    """A corpus file does not follow the published layout; the message names file and line."""


class AudioError(SdcaffError):
    """A wav file is missing, empty, truncated, corrupt or not in a usable format."""


class ManifestError(SdcaffError):
    """A manifest or split file is inconsistent (missing or duplicated utterance, bad column)."""
