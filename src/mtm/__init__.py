"""MtM (multi-task masking) on IBL Neuropixels data: data pipeline, model, evaluation."""

__version__ = "0.1.0"
