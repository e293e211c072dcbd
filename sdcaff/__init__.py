"""sdcaff: a reproducibility benchmark suite for speech emotion recognition around SD-CAFF."""

__version__ = "0.1.0"
