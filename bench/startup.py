"""Start-up: how long `manage.py sync_visits` takes when there is nothing to fetch, and which
of the map stack (folium, branca, jinja2, numpy) a sync and a worker's checks import.

    .venv/bin/python bench/startup.py                     # this tree
    .venv/bin/python bench/startup.py --compare main      # beside another commit, interleaved
    .venv/bin/python bench/startup.py --compare main --write   # also update docs/PERFORMANCE.md

A demo Firehose (a small team) runs in this process on 127.0.0.1; each tree gets its own SQLite
database, migrated and synced once, then every run is a fresh `manage.py` process that finds
nothing new (wall time, median of --runs, the trees taking turns so that the machine's drift
weighs on both alike). `--compare REF` measures the commit REF from a `git archive` of it. The
commands' `--skip-checks` rows show what Django's system checks cost. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import machine, section_write  # noqa: E402 (after the path is set)

TOKEN = "bench-token"
MAP_STACK = ("folium", "branca", "jinja2", "numpy")
# Runs manage.py as the command line does, then names the modules of the map stack it imported.
MODULES_AFTER = (
    "import json, runpy, sys\n"
    "sys.argv = ['manage.py', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_path('manage.py', run_name='__main__')\n"
    "finally:\n"
    f"    print(json.dumps(sorted(set({MAP_STACK!r}) & set(sys.modules))))\n"
)
COMMANDS = {
    "`sync_visits`, nothing to fetch": ("sync_visits", "--quiet"),
    "`sync_visits --skip-checks`": ("sync_visits", "--quiet", "--skip-checks"),
    "`check` (every check, as `qcluster` and `runserver` start)": ("check",),
    "for reference: `python -c pass`": None,
}


class Tree:
    """A checkout to run manage.py in, with its own database."""

    def __init__(self, *, label: str, path: Path, database: Path, firehose_url: str) -> None:
        self.label = label
        self.path = path
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "SQLITE_"))},
            "DATABASE_URL": f"sqlite:///{database}",
            "SELL_API_URL": firehose_url,
            "SELL_ACCESS_TOKEN": TOKEN,
            "SELL_RATE_LIMIT": "0",  # start-up time, not Sell's 10 requests a second
            "SECRET_KEY": "bench-startup-" + "x" * 40,
            "DJANGO_SETTINGS_MODULE": "visitsdash.settings",
        }

    def run(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(args, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise SystemExit(f"{self.label}: {' '.join(args)} failed:\n{result.stderr}")
        return result

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "manage.py", *args)

    def seconds(self, command: tuple[str, ...] | None) -> float:
        started = time.perf_counter()
        result = self.manage(*command) if command else self.run(sys.executable, "-c", "pass")
        seconds = time.perf_counter() - started
        if command and command[0] == "sync_visits" and " 0 applied" not in result.stdout:
            raise SystemExit(f"{self.label}: the sync found something to fetch: {result.stdout}")
        return seconds

    def map_stack(self, *command: str) -> list[str]:
        result = self.run(sys.executable, "-c", MODULES_AFTER, *command)
        return json.loads(result.stdout.strip().splitlines()[-1])


def tree_export(*, ref: str, into: Path) -> Path:
    """The files of commit `ref`, as `git archive` gives them."""
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", ref], cwd=ROOT, stdout=out, check=True)
    path = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(path, filter="data")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--compare", metavar="REF", help="a commit to measure beside this tree, e.g. main")
    parser.add_argument("--write", action="store_true", help="update the start-up section of docs/PERFORMANCE.md")
    args = parser.parse_args()

    from visits.demo.generator import team_generate
    from visits.demo.server import DemoFirehose

    data = team_generate(seed=11, reps=6, weeks=1, now=datetime(2026, 1, 20, 15, 30, tzinfo=UTC))
    with tempfile.TemporaryDirectory() as tmp, DemoFirehose(data, token=TOKEN) as firehose:
        trees = []
        if args.compare:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", args.compare], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
            path = tree_export(ref=args.compare, into=Path(tmp))
            trees.append(Tree(label=f"{args.compare} ({commit})", path=path, database=Path(tmp) / "before.sqlite3",
                              firehose_url=firehose.url))  # fmt: skip
        trees.append(
            Tree(label="this tree", path=ROOT, database=Path(tmp) / "after.sqlite3", firehose_url=firehose.url)
        )
        for tree in trees:
            tree.manage("migrate", "-v0")
            tree.manage("sync_visits", "--quiet")  # everything there is; later runs find nothing new
        times: dict[tuple[str, str], list[float]] = {(t.label, name): [] for t in trees for name in COMMANDS}
        for _ in range(args.runs):
            for name, command in COMMANDS.items():
                for tree in trees:
                    times[(tree.label, name)].append(tree.seconds(command))
        stacks = {
            (tree.label, name): tree.map_stack(*command)
            for tree in trees
            for name, command in COMMANDS.items()
            if command
        }
    figures = {key: (statistics.median(v), min(v), max(v)) for key, v in times.items()}
    for (label, name), (median, low, high) in figures.items():
        stack = stacks.get((label, name))
        shown = "" if stack is None else f"  map stack imported: {', '.join(stack) or 'none'}"
        print(f"{label:22} {name:60} median {median * 1000:5.0f} ms  ({low * 1000:.0f}-{high * 1000:.0f}){shown}")
    if args.write:
        write_report(trees=[t.label for t in trees], figures=figures, stacks=stacks, runs=args.runs)


def write_report(*, trees: list[str], figures: dict, stacks: dict, runs: int) -> None:
    lines = [
        "## Start-up (`bench/startup.py`)",
        "",
        f"Measured {datetime.now().date().isoformat()} on {machine()}.",
        f"Wall time of a fresh `manage.py` process, median of {runs} runs (lowest-highest), the trees taking turns;"
        " SQLite, the demo Firehose on 127.0.0.1 with nothing new to fetch. Map stack: which of"
        f" {', '.join(MAP_STACK)} the process had imported when it ended.",
        "",
        "| command | " + " | ".join(f"{label}: ms | map stack" for label in trees) + " |",
        "|---|" + "---:|---|" * len(trees),
    ]
    for name in COMMANDS:
        cells = []
        for label in trees:
            median, low, high = figures[(label, name)]
            stack = stacks.get((label, name))
            cells.append(f"{median * 1000:,.0f} ({low * 1000:,.0f}-{high * 1000:,.0f})")
            cells.append("" if stack is None else ", ".join(stack) or "none")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Target: `sync_visits` with nothing to fetch within 350 ms, importing nothing of the map stack.", ""]
    section_write(heading="## Start-up (", lines=lines)


if __name__ == "__main__":
    main()
