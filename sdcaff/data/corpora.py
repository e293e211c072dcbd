"""Which corpora exist and where each one lives: params.yaml, an environment variable, or synthetic."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

CORPORA = ("iemocap", "msp-improv")
ENV_VARS = {"iemocap": "SDCAFF_IEMOCAP", "msp-improv": "SDCAFF_MSP_IMPROV"}
SYNTHETIC_ROOT = Path("artifacts/corpora")


@dataclasses.dataclass(frozen=True)
class CorpusParams:
    root: str | None = None  # licensed copy (IEMOCAP_full_release/ or MSP-IMPROV/); null = synthetic


def synthetic_root(corpus: str) -> Path:
    """Returns where `sdcaff synth` writes the embedded default for `corpus`."""
    return SYNTHETIC_ROOT / corpus


def real_root(corpus: str, params: dict[str, CorpusParams]) -> Path | None:
    """Returns the licensed corpus path ($SDCAFF_* first, then params.yaml), or None."""
    env = os.environ.get(ENV_VARS[corpus], "").strip()
    if env:
        return Path(env)
    configured = params.get(corpus)
    if configured is not None and configured.root:
        return Path(configured.root)
    return None


def resolve_root(corpus: str, params: dict[str, CorpusParams]) -> tuple[Path, bool]:
    """Returns (root, is_synthetic) for `corpus`."""
    root = real_root(corpus, params)
    return (root, False) if root is not None else (synthetic_root(corpus), True)


def load_params() -> dict[str, CorpusParams]:
    """Returns params.yaml's `corpora` section."""
    from sdcaff import params

    return params.load("corpora", dict[str, CorpusParams])


def check_corpus(corpus: str) -> str:
    """Returns `corpus` if known, else raises with the known names."""
    from sdcaff.errors import SdcaffError

    if corpus not in CORPORA:
        raise SdcaffError(f"unknown corpus '{corpus}'; known: {', '.join(CORPORA)}")
    return corpus
