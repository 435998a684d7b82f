"""What the builder accepts besides an ``nn.Module``: the things users hold after compiling a model.

- A ``torch.export.ExportedProgram`` keeps the model's parameters and buffers in its ``state_dict`` (and
  non-persistent buffers in ``constants``) under their original names, ties kept: a tied head is two names
  for one object, a view tie two Parameters over one storage. ``ep.module()`` puts them back in a module
  tree of the same paths, which is what the graph is built from.
- TorchScript modules (``torch.jit.script``, ``torch.jit.trace``) are modules; the walk reads their
  parameters, buffers and children through their own mappings (:func:`tiegraph._walk.walk`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

from torch import nn

if TYPE_CHECKING:
    from torch.export import ExportedProgram


def as_module(obj: Any, caller: str) -> nn.Module:
    """``obj`` itself when it is an ``nn.Module``, an exported program's module tree, else a ``TypeError``.

    An ``ExportedProgram`` is recognised only when ``torch.export`` was imported (whoever made one did).
    """
    if isinstance(obj, nn.Module):
        return obj
    exported = sys.modules.get("torch.export.exported_program")
    program = getattr(exported, "ExportedProgram", None)
    if isinstance(program, type) and isinstance(obj, program):
        return cast("ExportedProgram", obj).module()
    kind = type(obj)
    raise TypeError(
        f"{caller} expects a torch.nn.Module or a torch.export.ExportedProgram, got "
        f"{kind.__module__}.{kind.__qualname__}"
    )
