"""What the benchmarks share: the machine's description and writing their section of
docs/PERFORMANCE.md (replaced in place, other sections kept)."""

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PERFORMANCE = ROOT / "docs" / "PERFORMANCE.md"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def section_write(*, heading: str, lines: list[str]) -> None:
    """Put `lines` under `heading` (a '## ' line that starts them) in docs/PERFORMANCE.md."""
    section = "\n".join(lines)
    text = (
        PERFORMANCE.read_text()
        if PERFORMANCE.exists()
        else "# Performance\n\nFigures printed by the scripts in `bench/`.\n\n"
    )
    start = text.find(heading)
    if start == -1:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section.rstrip() + ("\n\n" + text[end + 1 :] if end != -1 else "")
    PERFORMANCE.write_text(text.rstrip() + "\n")
    print(f"wrote {PERFORMANCE.relative_to(ROOT)}")


def visits_write(rows) -> None:
    """Write (visit id, row) pairs through ingestion's own upsert, 5,000 to a transaction."""
    from django.db import transaction

    from visits.ingest.pages import visits_upsert

    batch: dict[int, dict] = {}
    for visit_id, row in rows:
        batch[visit_id] = row
        if len(batch) == 5000:
            with transaction.atomic():
                visits_upsert(rows=batch)
            batch = {}
    if batch:
        with transaction.atomic():
            visits_upsert(rows=batch)
