"""Models over binned spike counts (B, T, N)."""

from mtm.models.ndt1 import NDT1, NDT1Config, NDT1Output, poisson_nll

__all__ = ["NDT1", "NDT1Config", "NDT1Output", "poisson_nll"]
