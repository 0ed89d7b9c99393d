"""Database rules that survive migrations: every trigger the app relies on is declared once
(visits/triggers.py), put back after every `migrate` even when a migration rebuilt its table, and
missed loudly by the check visits.E001; the migrations themselves use no live app code."""

import ast
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import DatabaseError, connection, models, transaction

from visits import triggers
from visits.checks import triggers_check
from visits.models import Decision, Rep, Visit
from visits.review import immutable

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = sorted((ROOT / "visits" / "migrations").glob("0*.py"))


def registered() -> set[str]:
    """The triggers of every set whose tables the database holds (migrated far enough for it)."""
    return {
        name
        for s in triggers.trigger_sets()
        if triggers.trigger_set_due(connection=connection, trigger_set=s)
        for name in s.names(connection.vendor)
    }


def database_triggers() -> set[str]:
    """Every trigger in the database, on any table, found without the registry's help."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return {row[0] for row in cursor.fetchall()}


def named_in(errors) -> list[str]:
    """The trigger each visits.E001 error names, as the registry spells them."""
    names = registered()
    return sorted(word for e in errors for word in e.msg.split() if word in names)


def decision_make() -> Decision:
    at = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)
    rep = Rep.objects.create(id=1, name="A")
    visit = Visit.objects.create(
        id=7, rep=rep, resource_type="lead", visited_at=at, created_at=at, verification_status="verified",
        sequence=1, event_time=at, local_day=at.date(),
    )  # fmt: skip
    reviewer = User.objects.create_user("reviewer")
    return Decision.objects.create(visit=visit, kind="follow_up", note="ask", decided_by=reviewer)


def note_set(decision: Decision, note: str) -> None:
    """Raw SQL, past the model's own refusal: only the database's triggers stand in the way."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE visits_decision SET note = %s WHERE id = %s", [note, decision.id])


def assert_decision_unchangeable(decision: Decision) -> None:
    with pytest.raises(DatabaseError, match="never edited"), transaction.atomic():
        note_set(decision, "changed")
    with pytest.raises(DatabaseError, match="never deleted"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM visits_decision WHERE id = %s", [decision.id])
    assert Decision.objects.get(id=decision.id).note == "ask"


# --- The check ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_migrated_database_holds_exactly_the_registered_triggers_and_the_check_passes():
    assert {s.table for s in triggers.trigger_sets()} == {
        "visits_visit", "visits_decision", "visits_addressmark", "visits_accesslogentry",
    }  # fmt: skip
    assert database_triggers() == registered()  # migrations and post_migrate made them: none unknown
    assert triggers_check(databases=["default"]) == []
    assert triggers_check(databases=None) == []  # a plain `manage.py check` looks at the default database
    call_command("check", databases=["default"], verbosity=0)
    call_command("check", verbosity=0)


@pytest.mark.django_db
def test_the_check_names_each_missing_trigger_and_says_to_migrate():
    triggers.triggers_drop(connection=connection, table="visits_visit", names=["visits_tally_insert"])
    triggers.triggers_drop(connection=connection, table="visits_decision", names=["visits_decision_immutable"])
    for databases in (["default"], None):
        errors = triggers_check(databases=databases)
        assert [e.id for e in errors] == ["visits.E001", "visits.E001"]
        assert named_in(errors) == ["visits_decision_immutable", "visits_tally_insert"]
        assert all(e.is_serious() and "manage.py migrate" in e.hint for e in errors)
    assert triggers_check(databases=["default"], app_configs=[]) == []  # `check auth` is not about them
    for options in ({"databases": ["default"]}, {}):
        with pytest.raises(SystemCheckError, match=r"visits\.E001.*visits_tally_insert"):
            call_command("check", **options)


@pytest.mark.django_db
def test_migrate_runs_though_its_own_checks_see_triggers_missing():
    """`migrate` checks before it migrates, and it is the cure: visits.E001 must not stop it."""
    triggers.triggers_drop(connection=connection, table="visits_decision", names=["visits_decision_undeletable"])
    call_command("migrate", skip_checks=False, verbosity=0)
    assert database_triggers() == registered()


# --- Re-installed after every migrate ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_rebuilt_decisions_table_gets_its_triggers_back_after_migrate():
    decision = decision_make()
    kind = Decision._meta.get_field("kind")
    wider = models.CharField(max_length=kind.max_length + 1, choices=kind.choices)
    wider.set_attributes_from_name("kind")
    wider.model = Decision
    with connection.schema_editor() as editor:  # as a migration altering Decision.kind would
        editor.alter_field(Decision, kind, wider, strict=True)
    if connection.vendor == "sqlite":  # SQLite rebuilt the table, and dropped its triggers with it
        assert triggers.triggers_on(connection=connection, table="visits_decision") == set()
    else:  # PostgreSQL alters in place: drop them, as a rebuild would
        immutable.decision_triggers_drop()
    with connection.schema_editor() as editor:
        editor.alter_field(Decision, wider, kind, strict=True)
    assert named_in(triggers_check(databases=["default"])) == sorted(immutable.names(vendor=connection.vendor))
    note_set(decision, "edited while unguarded")  # the harm the triggers are there to stop
    note_set(decision, "ask")
    call_command("migrate", verbosity=0)
    assert database_triggers() == registered()
    assert triggers_check(databases=["default"]) == []
    assert_decision_unchangeable(decision)


@pytest.mark.django_db(transaction=True)
def test_migrating_back_and_forth_keeps_every_trigger():
    call_command("migrate", "visits", "0005", verbosity=0)  # undoes 0006; post_migrate installs the live set
    # but not the tallies' sets, which need 0019's distance tally
    tally_sets = {
        name
        for s in triggers.trigger_sets()
        if s.label in ("tally", "distance tally")
        for name in s.names(connection.vendor)
    }
    assert database_triggers() == registered() - tally_sets
    call_command("migrate", verbosity=0)  # 0006 again, on a table that has its triggers already
    assert database_triggers() == registered()
    call_command("migrate", "visits", "0004", verbosity=0)  # before the tallies and decisions existed
    assert database_triggers() == set()
    assert triggers_check(databases=["default"]) == []  # not migrated far enough to lack anything
    call_command("migrate", verbosity=0)
    assert database_triggers() == registered()
    assert_decision_unchangeable(decision_make())


@pytest.mark.slow
def test_manage_py_check_on_a_new_database_then_a_broken_one(tmp_path):
    """Before the first migrate the check has nothing to say (and creates no database file);
    after it, a dropped trigger fails `check` by name until `migrate` puts it back."""
    database = tmp_path / "fresh.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
    env["DATABASE_URL"] = f"sqlite:///{database}"

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )

    result = manage("check")
    assert result.returncode == 0 and "no issues" in result.stdout, result.stderr
    assert not database.exists()
    result = manage("check", "--database", "default")  # Django's own database checks connect (and create it)
    assert result.returncode == 0 and "no issues" in result.stdout, result.stderr
    assert manage("migrate", "-v0").returncode == 0
    with sqlite3.connect(database) as db:
        db.execute("DROP TRIGGER visits_decision_immutable")
    result = manage("check")
    assert result.returncode != 0
    assert "visits.E001" in result.stderr and "visits_decision_immutable" in result.stderr
    result = manage("migrate", "-v0")  # with its checks: they must let it run
    assert result.returncode == 0, result.stderr
    result = manage("check", "--database", "default")
    assert result.returncode == 0 and "no issues" in result.stdout, result.stderr


# --- Migrations use no live app code ----------------------------------------------------------


def imported_modules(path: Path) -> list[str]:
    """Every module a migration imports, at the top or inside a function; relative ones as '.'."""
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules.append("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
            "import_module", "__import__"
        ):  # fmt: skip
            modules.append("<dynamic import>")
    return modules


def test_migrations_import_only_django_and_the_standard_library():
    """An old migration must do what it did when written, whatever the app's code becomes: the
    historical models come from `apps`, everything else is copied into the migration."""
    assert {"0003_groups.py", "0005_tallies_flags_review.py"} <= {p.name for p in MIGRATIONS}
    allowed = set(sys.stdlib_module_names) | {"django"}
    for path in MIGRATIONS:
        wrong = [m for m in imported_modules(path) if m.split(".")[0] not in allowed]
        assert not wrong, f"{path.name} imports {wrong}"
