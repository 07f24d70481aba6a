"""Models over binned spike counts (B, T, N) -> log rates (B, T, N): the backbones MtM trains.

Both take the same forward arguments and share the multi-session interface (add_session,
remove_session, session_parameters, init_readout_bias, token_units, flops_per_sample), so
training, evaluation and the workflow treat them alike; `BACKBONES` names them.
"""

from mtm.models.backbone import Backbone
from mtm.models.layers import ModelOutput, poisson_nll
from mtm.models.ndt1 import NDT1, NDT1Config
from mtm.models.ndt2 import NDT2, NDT2Config

BACKBONES = {"ndt1": (NDT1, NDT1Config), "ndt2": (NDT2, NDT2Config)}

__all__ = ["BACKBONES", "NDT1", "NDT2", "Backbone", "ModelOutput", "NDT1Config", "NDT2Config", "poisson_nll"]
