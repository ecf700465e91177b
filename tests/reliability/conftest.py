"""The reliability suite imports its helpers (bad_inputs, kbproc) from this folder, and tests/scans.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
