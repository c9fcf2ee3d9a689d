"""Every requirement ID and seed label cited anywhere in the repository is defined in
docs/requirements.md, and that catalogue is complete."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "docs" / "requirements.md"

# The catalogue: prefix -> highest number (IDs run from 1).
CATALOGUE = {"PAY": 15, "API": 7, "ESC": 11, "CR": 3, "OPS": 5, "SEC": 4}
SEEDS = ("000", "001", "002", "003", "004")

CITED_SUFFIXES = (".py", ".md", ".yaml", ".yml")
# Folders that are not the project's own text: environments, generated code, data, caches.
SKIPPED_DIRS = {"gen", "node_modules", "__pycache__"}

_PREFIXES = "|".join(CATALOGUE)
# "PAY-4", and the range form "PAY-4..12".
ID_CITATION = re.compile(rf"\b({_PREFIXES})-(\d+)(?:\.\.(\d+))?\b")
# "seed 004", "seed 000 §11", "seed 000 §11-13", "seed 000 sections 11-13".
SEED_CITATION = re.compile(
    r"\bseeds? (\d{3})\b(?:\s*(?:§\s*|sections?\s+)(\d+)(?:\s*[-\u2013]\s*§?\s*(\d+))?)?",
    re.IGNORECASE,
)
# Definitions in docs/requirements.md: "- **PAY-4 Title.** ...", "### Seed 000 §11 — ...",
# or a table row "| Seed 000 §3 | ...".
ID_DEFINITION = re.compile(rf"^- \*\*(({_PREFIXES})-\d+)\b", re.MULTILINE)
SEED_DEFINITION = re.compile(r"^(?:#+ |\| )Seed (\d{3})(?: §(\d+))?\b", re.MULTILINE)


def cited_ids(text: str) -> Iterator[str]:
    """Every requirement ID a text cites, ranges expanded."""
    for match in ID_CITATION.finditer(text):
        prefix, first, last = match.group(1), int(match.group(2)), match.group(3)
        for number in range(first, int(last or first) + 1):
            yield f"{prefix}-{number}"


def cited_seed_labels(text: str) -> Iterator[str]:
    """Every seed label a text cites ("Seed 004", "Seed 000 §11"), section ranges expanded."""
    for match in SEED_CITATION.finditer(text):
        seed, first, last = match.group(1), match.group(2), match.group(3)
        if first is None:
            yield f"Seed {seed}"
            continue
        for section in range(int(first), int(last or first) + 1):
            yield f"Seed {seed} §{section}"


def defined_ids(doc: str) -> list[str]:
    return [m.group(1) for m in ID_DEFINITION.finditer(doc)]


def defined_seed_labels(doc: str) -> list[str]:
    return [
        f"Seed {m.group(1)}" + (f" §{m.group(2)}" if m.group(2) else "")
        for m in SEED_DEFINITION.finditer(doc)
    ]


def project_files() -> Iterator[Path]:
    """The repository's own .py/.md/.yaml files (no virtualenv, tools, data or generated code)."""
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS]
        for name in files:
            if name.endswith(CITED_SUFFIXES):
                yield Path(root, name)


def citations() -> Iterator[tuple[str, str]]:
    """(where, label) for every ID or seed label cited in the repository."""
    for path in project_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            where = f"{path.relative_to(REPO)}:{number}"
            for label in (*cited_ids(line), *cited_seed_labels(line)):
                yield where, label


def test_every_cited_requirement_is_defined() -> None:
    doc = REQUIREMENTS.read_text(encoding="utf-8")
    defined = set(defined_ids(doc)) | set(defined_seed_labels(doc))
    undefined = sorted(f"{where}: {label}" for where, label in citations() if label not in defined)
    assert not undefined, "cited but not defined in docs/requirements.md:\n" + "\n".join(undefined)


def test_the_catalogue_is_complete_and_each_id_defined_once() -> None:
    doc = REQUIREMENTS.read_text(encoding="utf-8")
    counts = Counter(defined_ids(doc))
    expected = {f"{p}-{n}" for p, last in CATALOGUE.items() for n in range(1, last + 1)}
    assert set(counts) == expected
    assert [i for i, c in counts.items() if c > 1] == []
    assert {f"Seed {s}" for s in SEEDS} <= set(defined_seed_labels(doc))


def test_citation_forms_are_read_as_written() -> None:
    line = "seed 000 sections 11-13, SPEC PAY-4..6, Seed 004 and seed 000 §11 (SEC-2)"
    assert list(cited_ids(line)) == ["PAY-4", "PAY-5", "PAY-6", "SEC-2"]
    assert list(cited_seed_labels(line)) == [
        "Seed 000 §11",
        "Seed 000 §12",
        "Seed 000 §13",
        "Seed 004",
        "Seed 000 §11",
    ]
    assert list(cited_ids("PAYPAL, OPS-, a-PAY-1x")) == []
