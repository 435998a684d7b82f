"""The cut: how an engine divides a model across processes, and what that does to its ties.

- :func:`check_shard_plan` (FSDP2 ``fully_shard`` plans) and :func:`fixed_plan`;
- :func:`check_stage_split` (pipeline stages: ties whose ends land on different stages);
- :func:`check_zero3` (DeepSpeed ZeRO-3: ties held by several Parameter objects, which partitioning splits).
"""

from __future__ import annotations

from ._fsdp import check_shard_plan, fixed_plan
from ._pipeline import check_stage_split
from ._zero import check_zero3

__all__ = ["check_shard_plan", "check_stage_split", "check_zero3", "fixed_plan"]
