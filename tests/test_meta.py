"""The suite's own rules, read from its source: every test that starts a subprocess, drives
Chromium or syncs the full demo team carries the `slow` marker that pytest.ini declares, so
`-m "not slow"` is a quick run that still means something."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
BROWSER_FIXTURES = {"page", "context", "browser", "browser_type", "new_context"}  # pytest-playwright's
HEAVY_FIXTURES = {"full_team"}  # about 25 reps and eight weeks of visits to sync
PROCESS_NAMES = {"subprocess", "Popen", "FetchProcess", "multiprocessing", "fork", "spawn"}


def is_slow_mark(node: ast.AST) -> bool:
    """`pytest.mark.slow` (or `mark.slow`) anywhere in an expression: a decorator or pytestmark."""
    return any(isinstance(n, ast.Attribute) and n.attr == "slow" for n in ast.walk(node))


def is_fixture(node: ast.FunctionDef) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "fixture" for d in node.decorator_list for n in ast.walk(d))


class Module:
    """One file of tests/: its module-level functions, fixtures, imports from other files of
    tests/, and whether its `pytestmark` says slow."""

    def __init__(self, name: str, source: str) -> None:
        tree = ast.parse(source)
        self.name = name
        self.functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        self.fixtures = {name for name, node in self.functions.items() if is_fixture(node)}
        self.imported: dict[str, tuple[str, str]] = {}  # local name -> (module, name there)
        self.slow = False
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                source_module = node.module.removeprefix("tests.") if node.level == 0 else node.module
                if node.level == 1 or node.module.startswith("tests."):
                    for alias in node.names:
                        self.imported[alias.asname or alias.name] = (source_module, alias.name)
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
                self.slow = self.slow or is_slow_mark(node.value)


class SlowAudit:
    """Why each test is slow (the reasons follow helpers, fixtures and imports across tests/)."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.modules = {name: Module(name, source) for name, source in sources.items()}
        self.memo: dict[tuple[str, str], set[str]] = {}

    def reasons(self, module: str, function: str) -> set[str]:
        key = (module, function)
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = set()  # a cycle adds nothing
        mod = self.modules[module]
        node = mod.functions[function]
        found: set[str] = set()
        for arg in node.args.args + node.args.kwonlyargs:
            name = arg.arg
            if name in BROWSER_FIXTURES:
                found.add(f"drives Chromium (fixture {name})")
            elif name in HEAVY_FIXTURES:
                found.add(f"syncs the full team (fixture {name})")
            elif target := self.fixture_of(mod, name):
                found |= self.reasons(*target)
        for n in ast.walk(node):
            word = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else None
            if word in PROCESS_NAMES:
                found.add(f"starts a subprocess ({word})")
            elif isinstance(n, ast.Name) and (target := self.function_of(mod, n.id)) and target != key:
                found |= self.reasons(*target)
        self.memo[key] = found
        return found

    def fixture_of(self, mod: Module, name: str) -> tuple[str, str] | None:
        for candidate in (mod, self.modules.get("conftest")):
            if candidate is not None and name in candidate.fixtures:
                return candidate.name, name
        return None

    def function_of(self, mod: Module, name: str) -> tuple[str, str] | None:
        if name in mod.functions:
            return mod.name, name
        module, original = mod.imported.get(name, (None, None))
        if module in self.modules and original in self.modules[module].functions:
            return module, original
        return None

    def offenders(self) -> list[str]:
        """`file::test reason` for every test with a reason to be slow but no `slow` marker."""
        found = []
        for mod in self.modules.values():
            if not mod.name.startswith("test_"):
                continue
            for name, node in mod.functions.items():
                if not name.startswith("test_") or mod.slow or any(map(is_slow_mark, node.decorator_list)):
                    continue
                for reason in sorted(self.reasons(mod.name, name)):
                    found.append(f"tests/{mod.name}.py::{name} {reason} but is not marked slow")
        return found


def suite_sources() -> dict[str, str]:
    return {path.stem: path.read_text() for path in sorted(TESTS.glob("*.py"))}


def test_every_test_that_starts_a_process_drives_chromium_or_syncs_the_full_team_is_slow():
    offenders = SlowAudit(suite_sources()).offenders()
    assert not offenders, "\n".join(offenders)


def test_the_collected_tests_agree(request):
    """What pytest itself resolved for this run: no test whose fixtures (however deep) include a
    browser or the full team lacks the marker."""
    missing = [
        f"{item.nodeid} uses {sorted(set(item.fixturenames) & (BROWSER_FIXTURES | HEAVY_FIXTURES))}"
        for item in request.session.items
        if set(getattr(item, "fixturenames", ())) & (BROWSER_FIXTURES | HEAVY_FIXTURES)
        and item.get_closest_marker("slow") is None
    ]
    assert not missing, "\n".join(missing)


HELPERS = """
import subprocess
import pytest

def run_it():
    return subprocess.run(["true"])

def indirect():
    return run_it()

@pytest.fixture
def watched(page):
    return page
"""
SAMPLE = """
import pytest
from .helpers import indirect, run_it

@pytest.fixture
def flagged(full_team):
    return full_team

def test_direct():
    import subprocess
    subprocess.Popen(["true"])

def test_through_an_imported_helper():
    indirect()

def test_in_the_browser(page):
    pass

def test_through_a_fixture(flagged):
    pass

def test_through_a_conftest_fixture(watched):
    pass

def test_quick(client, small_team):
    assert small_team

@pytest.mark.slow
def test_marked(page):
    run_it()
"""


def test_the_audit_names_what_it_should():
    """The audit fails a suite that forgets the marker, whichever way the test is slow."""
    sources = {"conftest": HELPERS, "helpers": HELPERS.replace("def watched", "def unused"), "test_sample": SAMPLE}
    assert SlowAudit(sources).offenders() == [
        "tests/test_sample.py::test_direct starts a subprocess (Popen) but is not marked slow",
        "tests/test_sample.py::test_direct starts a subprocess (subprocess) but is not marked slow",
        "tests/test_sample.py::test_through_an_imported_helper starts a subprocess (subprocess) but is not marked slow",
        "tests/test_sample.py::test_in_the_browser drives Chromium (fixture page) but is not marked slow",
        "tests/test_sample.py::test_through_a_fixture syncs the full team (fixture full_team) but is not marked slow",
        "tests/test_sample.py::test_through_a_conftest_fixture drives Chromium (fixture page) but is not marked slow",
    ]
    marked = {"conftest": HELPERS, "test_sample": "import pytest\npytestmark = [pytest.mark.slow]\n" + SAMPLE}
    assert SlowAudit({**marked, "helpers": HELPERS}).offenders() == []
