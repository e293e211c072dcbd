"""Comparison models that are not SD-CAFF switches: SpeechBrain's ECAPA-TDNN and an MFCC-statistics floor.

Each module exposes a params dataclass and build(params) -> nn.Module whose forward(static, dynamic)
returns sdcaff.model.ModelOutput, so `sdcaff train` runs it under every protocol (sdcaff.train.MODELS, model_entry).
"""
