"""Server-drawn SVG charts: a few polylines and bars need no charting library and no script."""

import math
from datetime import date

from django.utils.safestring import SafeString, mark_safe

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


DAY_WIDTH, DAY_HEIGHT, DAY_PAD = 320, 200, 18
KM_PER_DEGREE = 111.195  # along a meridian (and along the equator): the picture's scale, not a distance
MIN_SPAN_KM = 0.3  # a day spent in one car park is drawn at a street's scale, not blown up to metres
SCALE_STEPS_KM = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def day_picture(
    *, points: list[tuple[float, float] | None], reviewed: int, customer: tuple[float, float] | None
) -> dict:
    """A rep's day drawn flat (an equirectangular projection around the day's middle, enough for a
    city): the positions (latitude, longitude; None without one) joined in order by a line,
    numbered from 1, the `reviewed` one (an index of `points`) marked, the customer's point, a
    dashed line from the reviewed visit to it, and a scale bar. Numbers come as text, as the SVG
    writes them (a template localising each of a page's thousand numbers took longer than the
    drawing). Without any point: {"empty": True}."""
    placed = [(i, p) for i, p in enumerate(points) if p is not None]
    every = [p for _, p in placed] + ([customer] if customer is not None else [])
    if not every:
        return {"empty": True, "width": DAY_WIDTH, "height": DAY_HEIGHT}
    mid_lat = (min(p[0] for p in every) + max(p[0] for p in every)) / 2
    squeeze = max(math.cos(math.radians(mid_lat)), 0.01)

    def km_xy(p: tuple[float, float]) -> tuple[float, float]:
        return p[1] * KM_PER_DEGREE * squeeze, p[0] * KM_PER_DEGREE

    flat = [km_xy(p) for p in every]
    xs, ys = [x for x, _ in flat], [y for _, y in flat]
    span_x, span_y = max(max(xs) - min(xs), MIN_SPAN_KM), max(max(ys) - min(ys), MIN_SPAN_KM)
    scale = min((DAY_WIDTH - 2 * DAY_PAD) / span_x, (DAY_HEIGHT - 2 * DAY_PAD) / span_y)  # pixels a km
    centre_x, centre_y = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2

    def xy(p: tuple[float, float]) -> tuple[str, str]:
        """Pixels, as text: the template writes them as they are (no localisation of each float)."""
        x, y = km_xy(p)
        return f"{DAY_WIDTH / 2 + (x - centre_x) * scale:.1f}", f"{DAY_HEIGHT / 2 - (y - centre_y) * scale:.1f}"

    def stop(i: int, p: tuple[float, float]) -> dict:
        x, y = xy(p)
        return {"x": x, "y": y, "number": str(i + 1), "reviewed": i == reviewed, "r": "11" if i == reviewed else "8",
                "text_y": f"{float(y) + 4:.1f}"}  # fmt: skip

    stops = [stop(i, p) for i, p in placed]
    here = points[reviewed] if 0 <= reviewed < len(points) else None
    ordered = sorted(stops, key=lambda s: s["reviewed"])  # the reviewed visit last, on top of the others
    drawn: dict = {
        "empty": False, "width": str(DAY_WIDTH), "height": str(DAY_HEIGHT),
        "route": " ".join(f"{s['x']},{s['y']}" for s in stops) if len(stops) > 1 else "",
        "stops": ordered,
        # written at once: five template variables a stop, a few hundred stops a page
        "stops_svg": stops_svg(ordered),
        "customer": None, "to_customer": None,
    }  # fmt: skip
    if customer is not None:
        cx, cy = xy(customer)
        drawn["customer"] = {"x": cx, "y": cy, "left": f"{float(cx) - 6:.1f}", "top": f"{float(cy) - 6:.1f}"}
        if here is not None:
            hx, hy = xy(here)
            drawn["to_customer"] = {"x1": hx, "y1": hy, "x2": cx, "y2": cy}
    bar_km = max([s for s in SCALE_STEPS_KM if s * scale <= DAY_WIDTH / 3] or [SCALE_STEPS_KM[0]])
    bar_end = DAY_PAD + bar_km * scale
    drawn["scale"] = {
        "x1": str(DAY_PAD), "x2": f"{bar_end:.1f}", "y": str(DAY_HEIGHT - 6), "label_x": f"{bar_end + 4:.1f}",
        "label_y": str(DAY_HEIGHT - 3), "label": f"{bar_km * 1000:.0f} m" if bar_km < 1 else f"{bar_km:g} km",
    }  # fmt: skip
    return drawn


def stops_svg(stops: list[dict]) -> SafeString:
    """A day picture's stops as SVG: numbers this module formatted and constant classes only, so
    nothing to escape (format_html_join's escaping of every number was most of the drawing)."""
    return mark_safe(  # noqa: S308 (numbers and constants, see above)
        "".join(
            f'<g class="{"stop reviewed" if s["reviewed"] else "stop"}"><circle cx="{s["x"]}" cy="{s["y"]}" '
            f'r="{s["r"]}"/><text x="{s["x"]}" y="{s["text_y"]}" text-anchor="middle">{s["number"]}</text></g>'
            for s in stops
        )
    )


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
