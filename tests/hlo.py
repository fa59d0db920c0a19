"""What a compiled sharded function moves between devices: the collectives in its HLO text."""

import collections
import re

_COLLECTIVE = re.compile(
    r" (all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(")
# shard_map's region in lowered StableHLO: Shardy's, or GSPMD's custom call.
_MANUAL = re.compile(r"sdy\.manual_computation|SPMDFullToShardShape")


def collectives(hlo: str) -> collections.Counter:
    """Collective instructions of a compiled module (`.compile().as_text()`), by kind."""
    return collections.Counter(_COLLECTIVE.findall(hlo))


def per_device_regions(lowered: str) -> int:
    """shard_map regions (code run per device) in a lowered module (`.lower().as_text()`)."""
    return len(_MANUAL.findall(lowered))
