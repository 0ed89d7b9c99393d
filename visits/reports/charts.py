"""Server-drawn SVG charts: a few polylines and bars need no charting library and no script."""

from datetime import date

from visits.reports.analytics import Counts, HistogramBin

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


def histogram_chart(*, bins: list[HistogramBin]) -> dict:
    """The distance histogram as SVG bars: each bin's too-far visits stacked on its others, bar
    heights relative to the fullest bin; empty (no "bars") when no visit has a distance."""
    tallest = max((b.visits for b in bins), default=0)
    if not tallest:
        return {"bars": [], "width": WIDTH, "height": HEIGHT}
    slot = (WIDTH - 2 * PAD) / len(bins)
    room = HEIGHT - 2 * PAD
    bars = []
    for i, b in enumerate(bins):
        x = PAD + i * slot + slot * 0.1
        other_h, far_h = room * b.other / tallest, room * b.too_far / tallest
        base = HEIGHT - PAD
        bars.append({
            "bin": b, "x": f"{x:.1f}", "width": f"{slot * 0.8:.1f}", "middle": f"{x + slot * 0.4:.1f}",
            "other_y": f"{base - other_h:.1f}", "other_h": f"{other_h:.1f}",
            "far_y": f"{base - other_h - far_h:.1f}", "far_h": f"{far_h:.1f}",
            "count_y": f"{base - other_h - far_h - 4:.1f}",
        })  # fmt: skip
    return {"bars": bars, "width": WIDTH, "height": HEIGHT, "base": HEIGHT - PAD, "label_y": HEIGHT - PAD + 16}
