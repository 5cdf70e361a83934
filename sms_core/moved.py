"""Modules that moved, importable under their old names for what was written before the move.

Two kinds of artifact name a module by its dotted path and outlive the code that wrote them: a pickled
model (pickle records each class's module) and a Feast registry (Feast keeps an on-demand view's
source text, which imports the feature code, and runs that text again when a store loads the view).
Both are read through `install()`: a finder at the end of `sys.meta_path`, consulted only when the
old path no longer exists, that answers each old name with the module now living elsewhere.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

MOVED = {
    # The model's pipeline pieces (MessageTerms, only_column), pickled in every saved model.
    "sms_assets.defs.training.model": "sms_core.model.pipelines",
    # The feature code an on-demand view's stored source imports.
    "sms_assets.defs.features.compute": "sms_core.features.compute",
    "sms_assets.defs.features.schema": "sms_core.features.schema",
}


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module it answers with is already executed."""


def install() -> None:
    """Make the old names importable in this process (once)."""
    if not any(isinstance(finder, _Moved) for finder in sys.meta_path):
        sys.meta_path.append(_Moved())
