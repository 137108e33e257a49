"""docs/architecture.md and the tree agree: every module of service/ has its row in the map, and
every service/ path the page names exists."""

from __future__ import annotations

import re

from tests.support.processes import REPO

DOC = REPO / "docs" / "architecture.md"


def test_every_module_is_on_the_map_and_every_path_on_it_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    modules = {str(p.relative_to(REPO)) for p in (REPO / "service").rglob("*.py")
               if p.name != "__init__.py"}
    named = set(re.findall(r"`(service/[\w/]+\.py)`", text))
    assert modules - named == set(), "modules missing from docs/architecture.md"
    mentioned = set(re.findall(r"\b(service/[\w/]+\.py)\b", text)) | named
    assert {p for p in mentioned if not (REPO / p).is_file()} == set()
