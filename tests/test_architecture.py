"""docs/ARCHITECTURE.md matches the tree: every module of the app is named in its folder's row,
and every path or dotted module the page names exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
APP = ROOT / "visits"
FOLDERS_NAMED_WHOLE = {"migrations", "management", "templatetags"}  # their files are not listed one by one


def folder_rows() -> dict[str, str]:
    """The table's rows by the first path in their first cell: {"visits/sell/": "...row..."}."""
    rows = {}
    for line in DOC.splitlines():
        match = re.match(r"\| `([^`]+)`", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_every_module_of_the_app_is_named_in_its_folders_row():
    rows = folder_rows()
    missing = []
    for module in sorted(APP.rglob("*.py")):
        relative = module.relative_to(ROOT)
        if module.name == "__init__.py" or FOLDERS_NAMED_WHOLE & set(relative.parts):
            continue
        folder = relative.parent.as_posix() + "/"
        row = rows.get(folder)
        if row is None:
            missing.append(f"{relative}: no row for {folder}")
        elif f"`{module.name}`" not in row and f"`{module.name} " not in row:
            missing.append(f"{relative}: not named in the row for {folder}")
    assert not missing, "docs/ARCHITECTURE.md is behind the tree:\n" + "\n".join(missing)


def test_every_folder_of_the_app_has_a_row():
    rows = folder_rows()
    folders = {p.relative_to(ROOT).as_posix() + "/" for p in APP.iterdir() if (p / "__init__.py").exists()}
    named = {f for f in folders if any(f in row for row in rows.values())}
    assert folders - named == set(), f"folders without a row in docs/ARCHITECTURE.md: {sorted(folders - named)}"


def test_every_path_and_module_the_page_names_exists():
    gone = []
    for token in re.findall(r"`([^`\s]+)`", DOC):
        if token.startswith(("visits/", "static/", "templates/", "tests/", "bench/", "bin/", "docs/")):
            if not (ROOT / token.rstrip("/")).exists():
                gone.append(token)
        elif re.fullmatch(r"(sell|ingest|geo|review|reports|security|views)\.[a-z_]+(\.[a-z_]+)?", token) and not (
            token.endswith(".py")
        ):
            package, module, *_ = token.split(".")
            if not (APP / package / f"{module}.py").exists():
                gone.append(token)
    assert not gone, f"docs/ARCHITECTURE.md names what does not exist: {gone}"


def test_every_module_a_row_names_exists_in_that_folder():
    gone = []
    for folder, row in folder_rows().items():
        if not folder.startswith("visits/") or FOLDERS_NAMED_WHOLE & set(folder.split("/")):
            continue
        for name in re.findall(r"`([a-z_]+\.py)`", row):
            if not (ROOT / folder / name).exists():
                gone.append(folder + name)
    assert not gone, f"docs/ARCHITECTURE.md names modules that do not exist: {gone}"
