"""The cut: how an engine divides a model across processes, and what that does to its ties.

- :func:`check_shard_plan` (FSDP2 ``fully_shard`` plans) and :func:`fixed_plan`.
"""

from __future__ import annotations

from .fsdp import check_shard_plan, fixed_plan

__all__ = ["check_shard_plan", "fixed_plan"]
