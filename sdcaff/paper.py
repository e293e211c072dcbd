"""The published numbers this suite reproduces, each with its source (../shared/spec/sdcaff.md)."""

from __future__ import annotations

import dataclasses
from typing import Mapping

from sdcaff.errors import SdcaffError


@dataclasses.dataclass(frozen=True)
class Reported:
    name: str  # what the row is, as a reader would say it
    corpus: str
    experiment: str  # the params.yaml experiment that reproduces it: check and the report's table both read it
    protocol: str  # the suite's protocol under which it was obtained
    wa: float  # percent
    ua: float  # percent
    how: str  # how the authors computed it: which aggregation each number is
    source: str
    wa_key: str = "wa.pooled"  # the metrics.json entry computed the same way
    ua_key: str = "ua.pooled"


# [abs] = the paper's abstract; [code] = confusion matrices in the authors' repository, pooled over
# the 5 test folds, WA/UA recomputed from the matrices (spec, "Headline numbers").
REPORTED: tuple[Reported, ...] = (
    Reported("SD-CAFF, IEMOCAP (headline)", "iemocap", "iemocap-authors", "iemocap-authors", 75.78, 74.89,
             "fold mean of per-fold maxima over epochs (most likely; WA/UA maxima taken separately)",
             "[abs]", "authors.wa", "authors.ua"),
    Reported("SD-CAFF, MSP-IMPROV (headline)", "msp-improv", "msp-improv-authors", "msp-improv-authors",
             56.77, 56.30, "fold mean of per-fold maxima over epochs (most likely)", "[abs]", "authors.wa",
             "authors.ua"),
    Reported("SD-CAFF (AFF_CRNN) confusion matrix", "iemocap", "iemocap-authors", "iemocap-authors",
             75.78, 74.21, "pooled over the 5 test folds (2,234 of 2,948 correct)", "[code]"),
    Reported("CNN branch only, confusion matrix", "iemocap", "cnn-iemocap-authors", "iemocap-authors",
             73.78, 72.46, "pooled over the 5 test folds", "[code]"),
    Reported("CNN + LSTM concatenated (CRNN), confusion matrix", "iemocap", "crnn-iemocap-authors",
             "iemocap-authors", 74.05, 72.30, "pooled over the 5 test folds", "[code]"),
    Reported("LSTM branch only (RNN), confusion matrix", "iemocap", "lstm-iemocap-authors", "iemocap-authors",
             68.86, 67.26, "pooled over the 5 test folds", "[code]"),
)


@dataclasses.dataclass(frozen=True)
class Published:
    """A published IEMOCAP result near SD-CAFF's (4 classes, audio only), for context: not reproduced here."""

    system: str
    protocol: str  # in the paper's own words
    wa: float | None  # percent; None where the paper gives none
    ua: float | None


# spec "Nearby results, for context": random utterance splits and test-set selection add several points
# over leave-one-session-out, and published comparisons rarely say which they used.
NEARBY: tuple[Published, ...] = (
    Published("Head Fusion (Xu et al. 2021)", "improvised, random 80/20", 76.18, 76.36),
    Published("Multiscale area attention (Xu et al. 2021)", "improvised, random", 79.34, 77.54),
    Published("GLAM (Zhu et al. 2022)", "improvised, random", 76.09, 73.87),
    Published("SpeechBrain ECAPA-TDNN recipe (Fbank 80)", "random split", 65.7, None),
    Published("emotion2vec + linear (2024)", "leave-one-session-out", 71.79, None),
    Published("EmoBox, Whisper-large-v3 (2024)", "leave-one-session-out", 72.86, 73.54),
    Published("TIM-Net (2023)", "10-fold", 68.29, None),
)


def reproduction(rep: Reported, records: Mapping[str, Mapping]) -> Mapping | None:
    """Returns the record of the experiment reproducing `rep` (None when it has not run); raises if run otherwise."""
    record = records.get(rep.experiment)
    if record is not None and record.get("protocol") != rep.protocol:
        # A renamed or re-pointed experiment would otherwise be compared with a number obtained another way.
        raise SdcaffError(f"{rep.experiment}.json: protocol {record.get('protocol')!r}, but the paper's "
                          f"'{rep.name}' was obtained under '{rep.protocol}'")
    return record
