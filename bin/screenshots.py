"""Takes the README's screenshots from a running visitsdash (e.g. one started by bin/demo).

    .venv/bin/python bin/screenshots.py --url http://127.0.0.1:8000 --password <demo admin password>

`--only status --save-as status-incident` takes one page under another name (the README's status
page with an open incident: `manage.py demo_fault refuse-token on` first, and wait for the check).
`--username central-manager --password demo-central --only overview --save-as overview-manager`
takes a regional manager's overview (their team only).

Uses Debian's Chromium (CHROMIUM_PATH to override); writes docs/screenshots/*.png.
"""

import argparse
import os
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
THE_MAP = "window[Object.keys(window).find(k => /^map_[0-9a-f]+$/.test(k))]"  # folium names it map_<hex>
PAGES = {
    "overview": "/",
    "reps": "/reports/reps/?sort=-too_far_rate",
    "matrix": "/reports/matrix/",
    "teams": "/reports/teams/",
    "visits": "/visits/",
    "map": "/map/",  # as the map opens: on every visit, in the server's clusters
    "map-world": "/map/",  # the whole world (zoom 2) on the offline basemap
    "map-city": "/map/",  # the biggest cluster clicked into: a city
    "review": "/review/",
    "review-day": "/review/",
    "addresses": "/review/addresses/",
    "status": "/status/",
    "rejected": "/status/rejected/",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", required=True)
    parser.add_argument("--only", choices=sorted(PAGES), help="take this page alone")
    parser.add_argument("--save-as", help="with --only: the file's name, without .png")
    args = parser.parse_args()
    if args.save_as and not args.only:
        parser.error("--save-as needs --only")
    pages = {args.only: PAGES[args.only]} if args.only else PAGES
    out = ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"), args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(f"{args.url}/accounts/login/")
        page.fill("#id_username", args.username)
        page.fill("#id_password", args.password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{args.url}/")
        for name, path in pages.items():
            page.goto(args.url + path)
            if name == "map":  # wait for the clusters or markers inside the map's frame
                page.frame_locator("iframe.map").locator(".visit-cluster, path.leaflet-interactive").first.wait_for()
                page.wait_for_timeout(500)
            if name == "map-world":
                frame = page.frames[1]
                frame.wait_for_function("() => window.visitsdashLoaded === true")
                frame.evaluate(f"() => {{ {THE_MAP}.setView([25, -30], 2); }}")
                page.wait_for_timeout(800)
                frame.wait_for_function("() => !window.visitsdashPending")
            if name == "map-city":  # the biggest cluster (the server lists them largest first), twice over
                frame = page.frames[1]
                frame.wait_for_function("() => window.visitsdashLoaded === true")
                frame.evaluate(f"() => {{ {THE_MAP}.setView([20, 0], 2); }}")
                for _ in range(4):
                    page.wait_for_timeout(800)
                    frame.wait_for_function("() => !window.visitsdashPending")
                    if frame.evaluate("() => window.visitsdashDrawn") != "clusters":
                        break
                    page.frame_locator("iframe.map").locator(".visit-cluster").first.click()
                page.wait_for_timeout(800)
                frame.wait_for_function("() => !window.visitsdashPending")
            if name == "review":  # the ranked queue: its first cards, from the count down
                # the decide bar stays at the window's foot (sticky): put it back at the form's end
                page.evaluate("document.querySelector('fieldset.decide').style.position = 'static'")
                top = page.locator("form.review-form").bounding_box()
                assert top is not None
                clip = {"x": 0, "y": top["y"] - 8, "width": 1366, "height": 1150}
                page.screenshot(path=out / f"{name}.png", full_page=True, clip=clip)
                print(f"wrote docs/screenshots/{name}.png")
                continue
            if name == "review-day":  # the first card: its flags and the rep's day, drawn
                page.evaluate("document.querySelector('fieldset.decide').style.position = 'static'")
                page.locator("article.review-item").first.screenshot(path=out / f"{name}.png")
                print(f"wrote docs/screenshots/{name}.png")
                continue
            saved = args.save_as or name
            page.screenshot(path=out / f"{saved}.png", full_page=True)
            print(f"wrote docs/screenshots/{saved}.png")
        browser.close()


if __name__ == "__main__":
    main()
