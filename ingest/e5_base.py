"""What the modules that build kb's default embedder share: its name, the error for a missing build
dependency, and how the folder's JSON files are written.

A leaf (it imports only kb.errors), so that e5_build, e5_tokenizer and e5_onnx all import it at the top
level and none of them has to import another to reach these. The build itself is kb.ingest.e5_build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kb.errors import ModelError

NAME = "multilingual-e5-small"


def missing(package: str, what: str) -> ModelError:
    """The error for a dependency of kb's default embedder that is not installed (a broken install)."""
    return ModelError(f"{what} needs the package '{package}', a dependency of kb that is not installed: "
                      f"pip install '{package}' (or reinstall kb), or set embedding.model to another model")


def write_json(path: Path, data: Any) -> None:
    """`data` as UTF-8 JSON at `path`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
