"""What a wheel holds: pyproject.toml lists kb's packages one by one, so a new subpackage must be listed too.

An editable install (`pip install -e .`) finds every subpackage from its folder, so the suite would pass while
`pip install .` left one out (kb.stores was missing from the list once: a wheel had no store layer)."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject():
    tools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(tools["packages"])
    found = set()
    for name, folder in tools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" not in parts:
                found.add(".".join((name, *parts)))
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == set(), "pyproject.toml lists packages that have no folder"
