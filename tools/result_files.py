"""Where a tool's measured results go: ``OUT.json`` (every number) and ``OUT.md`` (the tables),
both written atomically, after the tables are printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wcx.atomic import write_text_atomic


def write_result(out: Path | None, result: dict[str, Any], text: str) -> None:
    """Print ``text``; with ``out``, write ``out.json`` (``result``) and ``out.md`` (``text``)."""
    print(text)
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    write_text_atomic(out.with_suffix(".md"), text)
