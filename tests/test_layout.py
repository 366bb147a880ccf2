"""Where code lives: common/ holds what families share, each family its own code, no family's copy of another's.

Read from the source (ast), so it runs in milliseconds and names the file at fault."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("genie", "diamond", "oasis")


def modules(folder: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py below ROOT / folder."""
    return {
        ".".join(p.relative_to(ROOT).with_suffix("").parts): p
        for p in sorted((ROOT / folder).rglob("*.py"))
        if p.name != "__init__.py"
    }


def imported(path: Path) -> set[str]:
    """The modules a file imports (absolute imports, at any depth: lazy imports inside functions count)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def defines_network(path: Path) -> bool:
    """The file defines an nn.Module subclass."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            if any(ast.unparse(b) in ("nn.Module", "torch.nn.Module", "Module") for b in node.bases):
                return True
    return False


def family_imports() -> dict[str, set[str]]:
    return {fam: set().union(*(imported(p) for p in modules(fam).values())) for fam in FAMILIES}


def test_common_networks_are_shared_by_two_families():
    """A network module in common/ is imported by two families or more; one family's network lives in it."""
    users = family_imports()
    single = {}
    for name, path in modules("common").items():
        if defines_network(path):
            fams = [fam for fam in FAMILIES if name in users[fam]]
            if len(fams) == 1:
                single[path.relative_to(ROOT).as_posix()] = fams[0]
    assert not single, f"used by one family only, move into it: {single}"


def test_no_family_imports_another():
    for fam, names in family_imports().items():
        others = sorted(n for n in names if n.split(".")[0] in set(FAMILIES) - {fam})
        assert not others, f"{fam}/ imports {others}: shared code goes to common/"


# the uint8 <-> [-1, 1] scalings of common/frames.py, as each family wrote them before they shared it
OWN_FRAME_SCALING = re.compile(r"127\.5|\.div\(255\)\.mul\(2\)\.sub\(1\)|\.mul\(255\)\.round\(\)")


def test_families_convert_frames_with_common_frames():
    copies = [
        f"{p.relative_to(ROOT).as_posix()}:{i}"
        for fam in FAMILIES
        for p in modules(fam).values()
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if OWN_FRAME_SCALING.search(line)
    ]
    assert not copies, f"frames scaled by hand (use common.frames.to_signed / to_uint8): {copies}"


def test_a_family_defines_each_class_once():
    """Two classes of one name in one family are one layer written twice (Oasis had two Mlp, two PatchEmbed)."""
    for fam in FAMILIES:
        where: dict[str, list[str]] = {}
        for path in modules(fam).values():
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef):
                    where.setdefault(node.name, []).append(path.relative_to(ROOT).as_posix())
        twice = {name: files for name, files in where.items() if len(files) > 1}
        assert not twice, f"{fam}/ defines these classes more than once: {twice}"
