"""Brain-region labels from Allen CCF ids, offline (iblatlas ships its mapping tables)."""

from __future__ import annotations

import functools

import numpy as np

MAPPINGS = ("Allen", "Beryl", "Cosmos")


@functools.lru_cache(maxsize=1)
def brain_regions():
    from iblatlas.regions import BrainRegions

    return BrainRegions()


class AtlasStub:
    """What ibllib's SpikeSortingLoader needs from an atlas (`.regions`), without the Allen volumes.

    Passing `atlas=None` makes the loader instantiate AllenAtlas(), which downloads hundreds of MB
    and fails offline.
    """

    @property
    def regions(self):
        return brain_regions()


def region_labels(atlas_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Allen, Beryl and Cosmos acronyms for CCF 2017 atlas ids (0 = void, 997 = root)."""
    ids = np.asarray(atlas_ids, dtype=np.int64)
    br = brain_regions()
    return {mapping.lower(): np.asarray(br.id2acronym(ids, mapping=mapping), dtype=object) for mapping in MAPPINGS}
