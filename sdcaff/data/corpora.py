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
    from sdcaff.errors import SdcaffError

    var = ENV_VARS[corpus]
    if var in os.environ:
        env = os.environ[var].strip()
        # Set but empty is a mistake (a typo'd path variable, `export SDCAFF_IEMOCAP=$UNSET`): falling back
        # to the synthetic corpus would report synthetic numbers as the licensed corpus's.
        if not env:
            raise SdcaffError(
                f"${var} is set but empty; set it to the licensed {corpus} folder, or unset it "
                f"(`unset {var}`) to use params corpora.{corpus}.root or the synthetic corpus"
            )
        return Path(env)
    configured = params.get(corpus)
    if configured is not None and configured.root:
        return Path(configured.root)
    return None


def configured_roots(params: dict[str, CorpusParams]) -> list[tuple[str, Path]]:
    """Returns (where it is set, path) of every licensed corpus root an environment variable or params.yaml names."""
    from sdcaff.params import params_path

    roots = []
    for corpus in CORPORA:
        # Both, not only the one in effect: params' root may still be a real copy the variable overrides.
        env = os.environ.get(ENV_VARS[corpus], "").strip()
        if env:
            roots.append((f"${ENV_VARS[corpus]}", Path(env)))
        configured = params.get(corpus)
        if configured is not None and configured.root:
            roots.append((f"{params_path()}: corpora.{corpus}.root", Path(configured.root)))
    return roots


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
