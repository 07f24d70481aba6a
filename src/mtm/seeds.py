"""Seeds derived from a base seed and names, so each random stream is independent and reproducible."""

from __future__ import annotations

import hashlib
import json


def derive_seed(seed: int, *keys: str | int) -> int:
    """A 63-bit seed that is a fixed function of (seed, *keys), e.g. (42, eid) or (0, "val")."""
    digest = hashlib.sha256(json.dumps([int(seed), *keys]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
