"""Server-drawn SVG charts: a few polylines need no charting library and no script."""

from datetime import date

from visits.reports.analytics import Counts

WIDTH, HEIGHT, PAD = 720, 220, 32


def rates_chart(*, trend: list[tuple[date, Counts]]) -> dict:
    """Weekly verified and too-far rates as SVG polyline points, with axis labels."""
    if not trend:
        return {"weeks": [], "width": WIDTH, "height": HEIGHT}
    step = (WIDTH - 2 * PAD) / max(len(trend) - 1, 1)

    def points(rate_of) -> str:
        return " ".join(
            f"{PAD + i * step:.1f},{HEIGHT - PAD - (rate_of(counts) or 0) * (HEIGHT - 2 * PAD):.1f}"
            for i, (_, counts) in enumerate(trend)
        )

    label_every = max(1, len(trend) // 8)
    return {
        "weeks": trend,
        "width": WIDTH,
        "height": HEIGHT,
        "verified": points(lambda c: c.verified_rate),
        "too_far": points(lambda c: c.too_far_rate),
        "labels": [(PAD + i * step, week) for i, (week, _) in enumerate(trend) if i % label_every == 0],
        "gridlines": [(HEIGHT - PAD - f * (HEIGHT - 2 * PAD), f) for f in (0, 0.25, 0.5, 0.75, 1.0)],
        "pad": PAD,
    }
