"""Fixtures of the jobs tests: the fakes' module is importable from every jobs test folder."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
