"""The bare-machine scripts of compose/bare/ that tests import (they are scripts, not a package)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

BARE = Path(__file__).resolve().parents[1] / "compose" / "bare"


def bare_module(name: str):
    """compose/bare/<name>.py loaded as a module (e.g. "render", "check")."""
    spec = importlib.util.spec_from_file_location(f"stgym_bare_{name}", BARE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
