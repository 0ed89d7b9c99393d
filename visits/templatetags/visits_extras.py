"""Small display helpers for the pages."""

from datetime import datetime

from django import template
from django.conf import settings
from django.contrib.humanize.templatetags.humanize import intcomma
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince

from visits import access
from visits.geo.distance import distance_text
from visits.models import AcceptReason
from visits.reports.maps import BASEMAP_FILE
from visits.security.csp import MAP_SANDBOX

register = template.Library()


@register.filter
def ago(value: datetime | None) -> str:
    """'just now', '3 minutes ago', '2 days, 4 hours ago'; an empty string for no time."""
    if value is None:
        return ""
    if (timezone.now() - value).total_seconds() < 60:
        return "just now"
    return f"{timesince(value)} ago"


@register.simple_tag(takes_context=True)
def query_with(context, **changes) -> str:
    """The current query string with some parameters replaced (None removes one); for links."""
    query = context["request"].GET.copy()
    for where in ("after", "before", "page"):  # a new sort or filter starts again at the first page
        query.pop(where, None)
    for key, value in changes.items():
        query.pop(key, None)
        if value is not None:
            query[key] = value
    encoded = query.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.simple_tag(takes_context=True)
def filter_options(context, name: str) -> SafeString:
    """The <option>s of the filter bar's select `name` (team, rep, outcome), those in the query string
    selected: written at once, value and label escaped (the template's loop, two filters and an
    `if` an option, was a large share of every report page at 200 reps)."""
    chosen = set(context["request"].GET.getlist(name))
    return mark_safe(  # noqa: S308 (every value and label escaped here)
        "".join(
            f'<option value="{escape(value)}"{" selected" if str(value) in chosen else ""}>{escape(label)}</option>'
            for value, label in context["filters"].fields[name].choices
        )
    )


@register.filter
def percent(rate: float | None) -> str:
    """0.1234 -> '12.3%'; no visits -> '–'."""
    return "–" if rate is None else f"{rate * 100:.1f}%"


@register.filter
def attr(obj, name: str):
    return getattr(obj, name)


SHADE_STEPS = 10  # static/css/app.css has a class per step


@register.filter
def shade(rate: float | None) -> str:
    """A class shading a too-far rate: white at 0%, deep red from 40% up ("shade-0" to
    "shade-10"; classes, as the Content-Security-Policy allows no inline style)."""
    if not isinstance(rate, (int, float)):  # no visits (None), or an empty cell ("")
        return "shade-none"
    return f"shade-{round(min(max(rate, 0) / 0.4, 1.0) * SHADE_STEPS)}"


@register.filter
def getlist(query, key: str) -> list[str]:
    return query.getlist(key)


@register.filter
def share_rate(part: int, whole: int) -> float | None:
    """part / whole, or None when whole is 0 (for shading)."""
    return part / whole if whole else None


@register.filter
def share(part: int, whole: int) -> str:
    """part / whole as a percentage: '12.3%'."""
    return percent(share_rate(part, whole))


@register.filter
def offset_text(minutes: float) -> str:
    """-97.0 -> '1 hour 37 minutes before'; 63 -> '1 hour 3 minutes after'."""
    from visits.review.rules import duration_text

    if abs(minutes) < 1:
        return "the same minute"
    return f"{duration_text(abs(minutes))} {'after' if minutes > 0 else 'before'}"


@register.simple_tag
def map_frame_attrs() -> str:
    """A map iframe's sandbox, and where the page fetches a summary, the offline basemap and the
    visits in view for it (static/js/app.js)."""
    return format_html(
        'sandbox="{}" data-summary-url="{}" data-basemap-url="{}" data-clusters-url="{}" data-points-url="{}"',
        MAP_SANDBOX,
        reverse("visits:visit_summary", args=[0]),
        static(BASEMAP_FILE),
        reverse("visits:map_clusters"),  # the clusters and points in view (reports/maps.py's server_data)
        reverse("visits:map_points"),
    )


@register.simple_tag
def privacy_notice() -> str:
    """PRIVACY_NOTICE, for every page's footer (escaped: simple_tag output is). A tag, not a
    context processor, so that the 500 page, rendered without a request, shows it too."""
    return settings.PRIVACY_NOTICE


@register.simple_tag
def scope_line(user) -> str:
    """Whose data a Manager sees, for the page header ("Patricia Holloway's reporting line: 14
    reps"); empty for everyone else. Escaped (simple_tag output is)."""
    return access.scope_described(user)


@register.simple_tag
def accept_reasons() -> list[tuple[str, str]]:
    """An accept's reasons (value, label), for the decide forms wherever they are included."""
    return AcceptReason.choices


@register.filter
def metres(value: float | None) -> str:
    """A distance in metres as '250 m' or '3.2 km'; '–' when unknown (geo.distance.distance_text)."""
    return distance_text(value)


@register.filter
def thousands(value) -> str:
    """An integer with thousands separators, 12345 -> '12,345' (as humanize's intcomma says it in
    English, a fifth of its cost: a reps report formats some 2,000 numbers); anything else as
    intcomma has it."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return intcomma(value)
