"""Comparison models that are not SD-CAFF switches: SpeechBrain's ECAPA-TDNN and an MFCC-statistics floor.

Each module is a model file (docs/adding-a-model.md): a params dataclass `Params` and build(params) -> nn.Module
whose forward(static, dynamic) returns sdcaff.model.ModelOutput. An experiment names it by path in
params.yaml (`model: baselines/ecapa.py`), so `sdcaff train` runs it under every protocol.
"""
