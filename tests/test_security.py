"""Text from Sell never reaches a template engine or a script; the Content-Security-Policy on
every response; no inline script, style or event handler in our templates."""

import base64
import hashlib
import re
import uuid
from datetime import UTC
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.utils.html import escape

from visits.ingest.pages import visits_upsert
from visits.models import Outcome, Rep
from visits.review.flags import flags_rebuild
from visits.security.csp import tiles_source

from .test_maps import map_data, row

pytestmark = pytest.mark.django_db

TEMPLATES = Path(django_settings.BASE_DIR) / "templates"


@pytest.fixture
def admin_client(client, cast):
    """The test client as the cast's superuser."""
    client.force_login(cast.superuser)
    return client


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split("; ")}


def hostile_visits_make(*, marker: Path) -> dict[str, str]:
    """A rep, an outcome and summaries whose text is Jinja2 (one would run a shell command)."""
    texts = {
        "rep": "{{ lipsum.__globals__.os.popen('touch " + str(marker) + "').read() }}",
        "outcome": "Bob {{ unclosed",
        "summary": "{{7*7}} {% for x in range(3) %}{{x}}{% endfor %}",
        "second": "{% raw %}{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}",
    }
    Rep.objects.create(id=900, name=texts["rep"])
    Outcome.objects.create(id=90, name=texts["outcome"])
    rows = {}
    for i in range(3):
        rows[1000 + i] = row(at=row_time(i), status="resource_location_too_far", lat=41.0 + i / 1000, lng=-87.0)
        rows[1000 + i]["summary"] = texts["summary" if i else "second"]
    with transaction.atomic():
        visits_upsert(rows=rows)
    flags_rebuild()  # too far: in the review queue too
    return texts


def row_time(i: int):
    from datetime import datetime

    return datetime(2026, 10, 5, 15, i, tzinfo=UTC)


def test_template_syntax_from_sell_is_never_evaluated_on_maps(admin_client, settings, tmp_path):
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    texts = hostile_visits_make(marker=marker)
    settings.MAP_TILES_URL = ""
    for url in ("/map/frame/", "/map/frame/?rep=900"):  # the map of many: no visit in the document
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert texts["rep"] not in response.content.decode(), url
    for url in ("/visits/1000/map/", "/visits/1001/map/"):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        _, lookups, _ = map_data(response.content.decode())
        assert lookups["reps"] == [texts["rep"]] and lookups["outcomes"] == [texts["outcome"]], url
    for query in ("", "&rep=900"):  # the visits in view: JSON, the text as written
        lookups = admin_client.get(f"/map/points.json?bbox=-180,-90,180,90&zoom=13{query}").json()["lookups"]
        assert lookups["reps"] == [texts["rep"]] and lookups["outcomes"] == [texts["outcome"]], query
    assert not marker.exists(), "a rep's name ran a shell command"
    for url in ("/visits/1001/", "/visits/1000/", "/reports/reps/900/", "/visits/", "/review/?review=all"):
        page = admin_client.get(url).content.decode()
        assert escape(texts["rep"]) in page, url  # shown as written, as text
        # The summary's loop, run, would write 012; the marker's own path (a uuid, a temporary
        # folder) may hold those digits, so it is taken out first.
        assert "012" not in page.replace(str(marker), "") and not marker.exists(), url
    assert escape(texts["summary"]) in admin_client.get("/visits/1001/").content.decode()
    assert admin_client.get("/visits/1001/summary.json").json()["summary"] == texts["summary"]


def test_every_page_sends_the_policy(admin_client):
    for url in ("/", "/reports/reps/", "/map/", "/visits/", "/review/", "/status/", "/admin/", "/accounts/login/",
                "/no-such-page/"):  # fmt: skip
        response = admin_client.get(url)
        directives = policy(response)
        assert directives["script-src"] == ["'self'"], url
        assert directives["style-src"] == ["'self'"], url
        assert directives["default-src"] == ["'self'"] and directives["object-src"] == ["'none'"], url
        assert directives["frame-ancestors"] == ["'none'"] and directives["base-uri"] == ["'none'"], url
        assert "sandbox" not in directives, url


def test_only_debug_error_pages_go_without_the_policy(admin_client, settings):
    assert "Content-Security-Policy" in admin_client.get("/no-such-page/")
    settings.DEBUG = True  # the technical 404 page styles itself inline
    assert "Content-Security-Policy" not in admin_client.get("/no-such-page/")
    assert "Content-Security-Policy" in admin_client.get("/")


def test_a_map_document_may_run_only_its_own_inline_code(admin_client, settings, tmp_path):
    hostile_visits_make(marker=tmp_path / "never")
    settings.MAP_TILES_URL = "https://{s}.tiles.example.com/{z}/{x}/{y}.png"
    for url in ("/map/frame/", "/visits/1000/map/"):
        response = admin_client.get(url)
        directives = policy(response)
        html = response.content.decode()
        inline = re.findall(r"<script>(.*?)</script>", html, re.S)
        styles = re.findall(r"<style>(.*?)</style>", html, re.S)
        assert inline and styles
        for code, directive in [(c, "script-src") for c in inline] + [(s, "style-src") for s in styles]:
            digest = base64.b64encode(hashlib.sha256(code.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in directives[directive], (url, code[:60])
        hashes = [s for s in directives["script-src"] if s.startswith("'sha256-")]
        assert len(hashes) == len(set(hashes)) == len(set(inline))  # nothing else may run
        assert "'unsafe-inline'" not in directives["script-src"] + directives["style-src"]
        assert "https://*.tiles.example.com" in directives["img-src"]
        assert directives["frame-ancestors"] == ["'self'"]
        assert directives["sandbox"] == ["allow-scripts", "allow-top-navigation-by-user-activation"]
        assert response["X-Frame-Options"] == "SAMEORIGIN"
    page = admin_client.get("/visits/1000/").content.decode()
    assert 'sandbox="allow-scripts allow-top-navigation-by-user-activation"' in page


@pytest.mark.parametrize(
    "url, source",
    [
        ("", None), ("/tiles/{z}/{x}/{y}.png", None), ("https://tile.example.org/{z}/{x}/{y}.png", "https://tile.example.org"),
        ("https://{s}.tile.example.org/{z}/{x}/{y}.png", "https://*.tile.example.org"),
        ("http://tiles.example.org:8080/{z}/{x}/{y}.png", "http://tiles.example.org:8080"),
        ("https://{r}.example.org/{z}/{x}/{y}.png", "https:"),
    ],
)  # fmt: skip
def test_the_tile_source_follows_the_setting(url, source):
    assert tiles_source(url) == source


def test_no_template_has_inline_script_style_or_handler():
    found = []
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text()
        for pattern in (r"<script(?![^>]*\bsrc=)[^>]*>", r"\sstyle=", r"\son[a-z]+\s*=", r"<style", r"javascript:"):
            found += [f"{path.relative_to(TEMPLATES)}: {m.group(0)!r}" for m in re.finditer(pattern, text, re.I)]
    assert not found, found


def test_the_legend_colours_are_the_map_colours():
    from visits.reports.maps import STATUS_COLORS

    css = (Path(django_settings.BASE_DIR) / "static/css/app.css").read_text()
    for status, colour in STATUS_COLORS.items():
        assert re.search(rf"\.swatch-{status} {{ background:{colour}; }}", css), status
