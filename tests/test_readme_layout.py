"""README's "Where things are" table holds: every file it names exists where it says, every module of
common/ (and of its subfolders) is named in the row of its folder, and every folder it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table() -> dict[str, set[str]]:
    """Folder of each row (a row may name several: `genie/`, `diamond/`) -> the `*.py` names in its cells."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        names = set(re.findall(r"`([\w/]+\.py)`", " ".join(cells[1:])))
        for folder in re.findall(r"`([\w/.]+/)`", cells[0]):
            rows.setdefault(folder, set()).update(names)
    return rows


def test_every_named_folder_and_file_exists():
    rows = table()
    assert "common/" in rows, "README's layout table has no `common/` row"
    missing = [f for f in rows if not (ROOT / f).is_dir()]
    assert not missing, f"README names folders that do not exist: {missing}"
    for folder, names in rows.items():
        absent = sorted(n for n in names if not (ROOT / folder / n).is_file())
        assert not absent, f"README's `{folder}` row names files that are not there: {absent}"


def test_every_common_module_is_in_its_folders_row():
    rows = table()
    for folder in sorted({p.parent for p in (ROOT / "common").rglob("*.py")}):
        if "__pycache__" in folder.parts:
            continue
        key = folder.relative_to(ROOT).as_posix() + "/"
        modules = {p.name for p in folder.glob("*.py") if p.name != "__init__.py"}
        assert key in rows, f"README's layout table has no row for `{key}` ({sorted(modules)})"
        unnamed = sorted(modules - rows[key])
        assert not unnamed, f"README's `{key}` row does not name {unnamed}"
