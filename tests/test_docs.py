"""The repository stands alone: its docs and code refer to nothing outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tracked_text_files():
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not names:  # not a git checkout (an unpacked sdist): every file under the root
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]
    for name in names:
        path = ROOT / name
        if path.suffix in (".py", ".md", ".yaml", ".toml", ".sh", ".txt") or name in ("Makefile", ".ci/run"):
            yield name, path.read_text(errors="replace")


def test_nothing_refers_to_files_outside_the_repository():
    outside = re.compile(r"\.\./shared/|/work/shared")  # the developers' own notes, which do not ship
    hits = [f"{name}:{text[:m.start()].count(chr(10)) + 1}" for name, text in _tracked_text_files()
            if name != "tests/test_docs.py" for m in outside.finditer(text)]
    assert hits == []


def test_readme_sections_that_the_code_cites_exist():
    headings = [line.lstrip("#").strip() for line in (ROOT / "README.md").read_text().splitlines()
                if line.startswith("#")]
    cited = [(name, m.group(1)) for name, text in _tracked_text_files() if name != "tests/test_docs.py"
             for m in re.finditer(r'README section "([^"]+)"', text)]
    assert cited, "the check found no citation to verify"
    missing = [(name, title) for name, title in cited if not any(h.startswith(title) for h in headings)]
    assert missing == []


def _readme_row(field: str) -> str:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(f"| `{field}` |")]
    assert len(rows) == 1, rows
    return rows[0]


def test_readme_config_table_lists_every_registered_method():
    from speq_search.config import METHODS
    from speq_search.space import NAMES

    accepted = _readme_row("speq.method").split("|")[3]
    assert re.findall(r"`([a-z-]+)`", accepted.split("(")[0]) == list(METHODS.names())
    assert NAMES["method"].help == " | ".join(METHODS.names())


def test_readme_space_example_lists_every_sampler_preset():
    from speq_search.samplers import SAMPLERS

    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip().startswith("sampler: tpe")]
    assert len(lines) == 1 and lines[0].split("#", 1)[1].split(",")[0].strip() == SAMPLERS.choices()
