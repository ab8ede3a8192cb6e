"""In a real headless Chromium (Debian's), against a real `evtrack serve` on loopback: the tracker,
CORS from a page of another origin, and the live dashboard. Screenshots go to docs/screenshots/
(dashboard.png is docs/browser.md's).

Pages of "another origin" are served by a plain static HTTP server on another loopback port.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import rjsmin

from . import reference
from .conftest import FIXTURE, ROOT
from .served import Served, evtrack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "docs" / "screenshots"
TRACKER = ROOT / "evtrack" / "web" / "tracker.js"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
YEAR_2023 = {"start_date": "2023-01-01 00:00:00", "end_date": "2023-12-31 23:59:59"}


def test_tracker_is_at_most_2_5_kb_minified_and_gzipped():
    minified = rjsmin.jsmin(TRACKER.read_text(encoding="utf-8")).encode()
    size = len(gzip.compress(minified, 9))
    assert size <= 2560, f"tracker.js is {size} bytes minified and gzipped"


# -- the browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """evtrack serve on a store with the project deployed and the fixture sent."""
    store = tmp_path_factory.mktemp("browser") / "store"
    for args in (("deploy",), ("send", str(FIXTURE))):
        done = evtrack("--data", str(store), *args)
        assert done.returncode == 0, done.stdout + done.stderr
    served = Served(store)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def other_origin(tmp_path_factory):
    """A static site on another loopback port: another origin than the server's."""
    folder = tmp_path_factory.mktemp("site")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()


def events_of(server, **params) -> list[dict]:
    response = httpx.get(f"{server.url}/v0/pipes/get_events.json", params={"limit": "1000", **params},
                         headers={"Authorization": f"Bearer {server.admin}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def wait_for_events(page, server, user_id: str, count: int) -> list[dict]:
    """The user's events once there are ``count`` (the tracker batches for a second, the server for 250 ms)."""
    for _ in range(100):
        found = events_of(server, user_id=user_id)
        if len(found) >= count:
            return sorted(found, key=lambda e: (e["timestamp"], json.loads(e["properties"]).get("page", "")))
        page.wait_for_timeout(100)
    raise AssertionError(f"{user_id}: {len(found)} events, expected {count}")


# Every request the page sends to the Events API, recorded in the page as it is made, and marked handled
# once the tracker's own callback has run (the record's second microtask comes after it).
RECORDER = """
window.__sent = [];
const record = (url) => { const r = {url: String(url), handled: false}; window.__sent.push(r); return r; };
const fetch_ = window.fetch.bind(window), beacon_ = navigator.sendBeacon.bind(navigator);
window.fetch = (url, init) => {
  const answer = fetch_(url, init), r = String(url).includes('/v0/events') ? record(url) : {};
  const done = () => Promise.resolve().then(() => { r.handled = true; });
  answer.then(done, done);
  return answer;
};
navigator.sendBeacon = (url, body) => { if (String(url).includes('/v0/events')) record(url).handled = true;
                                        return beacon_(url, body); };
"""


def sent_once_idle(page, at_least: int = 0) -> list[str]:
    """The Events API requests the page has made, once each answer has been handled and every timer the
    tracker may have set (a batch, a retry: 30 s at most) has fired on the page's clock."""
    page.wait_for_function(f"window.__sent.length >= {at_least} && window.__sent.every(r => r.handled)",
                           polling=50)
    page.clock.run_for(60_000)
    return page.evaluate("window.__sent.map(r => r.url)")


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


# -- the tracker ------------------------------------------------------------------------------
def test_tracker_sends_page_views_and_custom_events_that_land_in_events(page, server, other_origin):
    folder, origin = other_origin
    for name in ("shop", "pricing"):
        (folder / f"{name}.html").write_text(
            f'<!doctype html><title>Shop</title><h1>Shop</h1>'
            f'<script src="{server.url}/tracker.js" data-token="{server.token("tracker")}" data-app-version="2.4.0"></script>')
    page.goto(f"{origin}/shop.html")
    user = page.evaluate("localStorage.getItem('evtrack_anon')")
    assert user.startswith("anon_")
    page.evaluate("evtrack.track('signup', {plan: 'pro'}); history.pushState({}, '', '/pricing.html'); evtrack.flush()")
    first, second, third = wait_for_events(page, server, user, 3)
    shot(page, "tracker-page.png")

    assert {e["event_type"] for e in (first, second, third)} == {"page_view", "signup"}
    by_type = {(e["event_type"], json.loads(e["properties"]).get("page")): e for e in (first, second, third)}
    view, pricing, signup = by_type[("page_view", "/shop.html")], by_type[("page_view", "/pricing.html")], by_type[("signup", None)]
    assert json.loads(signup["properties"]) == {"plan": "pro"}
    assert json.loads(view["properties"]) == {"page": "/shop.html", "url": f"{origin}/shop.html", "title": "Shop", "referrer": ""}
    assert json.loads(pricing["properties"])["referrer"] == f"{origin}/shop.html"
    for event in (view, pricing, signup):
        assert UUID.match(event["event_id"]), event["event_id"]
        assert UUID.match(event["session_id"]) and event["session_id"] == view["session_id"]
        assert (event["platform"], event["device_type"], event["os"], event["app_version"]) == ("web", "desktop", "Linux", "2.4.0")
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", event["timestamp"])
    assert len({e["event_id"] for e in (view, pricing, signup)}) == 3

    page.reload()  # /pricing.html, in the same browser: the same anonymous user and session (within 30 minutes)
    page.evaluate("evtrack.identify('user_shop_1'); evtrack.track('add_to_cart', {sku: 'A1'}); evtrack.flush()")
    reloaded = wait_for_events(page, server, user, 4)
    [again] = [e for e in reloaded if e["event_id"] not in {view["event_id"], pricing["event_id"], signup["event_id"]}]
    assert (again["event_type"], again["session_id"]) == ("page_view", view["session_id"])
    assert json.loads(again["properties"])["page"] == "/pricing.html"
    [identified] = wait_for_events(page, server, "user_shop_1", 1)
    assert (identified["event_type"], identified["session_id"]) == ("add_to_cart", view["session_id"])
    # and `evtrack query` shows them (through the running server)
    shown = evtrack("--data", str(server.data), "query", "get_events", "--user-id", user, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert {e["event_id"] for e in json.loads(shown.stdout)["data"]} == {e["event_id"] for e in reloaded}


@pytest.mark.parametrize("status, headers, body", [
    (503, {}, "Service temporarily unavailable, no data ingested, please retry again\n"),
    (429, {"Retry-After": "1", "X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"},
     "Too many requests\n"),
], ids=["503-unavailable", "429-rate-limited"])
def test_tracker_retries_a_refused_batch_and_each_event_lands_once(page, server, other_origin, status, headers, body):
    """The first POST is answered as Tinybird answers an overloaded or rate-limited API (in the browser,
    before it reaches the server); the tracker sends the same batch again, and it is stored once."""
    folder, origin = other_origin
    (folder / f"retry{status}.html").write_text(
        f'<!doctype html><title>Retry</title>'
        f'<script src="{server.url}/tracker.js" data-token="{server.token("tracker")}"></script>')
    refused: list[str] = []

    def answer(route):
        if not refused:
            refused.append(route.request.post_data)
            route.fulfill(status=status, body=body, headers={**headers, "Access-Control-Allow-Origin": "*",
                                                              "Access-Control-Expose-Headers": "Retry-After"})
        else:
            route.continue_()

    page.route(re.compile(r".*/v0/events.*"), answer)
    page.clock.install()
    page.add_init_script(RECORDER)
    page.goto(f"{origin}/retry{status}.html")
    user = page.evaluate("localStorage.getItem('evtrack_anon')")
    [stored] = wait_for_events(page, server, user, 1)
    assert len(refused) == 1
    [sent] = [json.loads(line) for line in refused[0].splitlines() if line.strip()]
    assert sent["event_id"] == stored["event_id"] and sent["event_type"] == "page_view"
    # Nothing more goes: the batch went once more, not again and again.
    assert len(sent_once_idle(page, at_least=2)) == 2
    assert len(events_of(server, user_id=user)) == 1


def test_tracker_starts_a_new_session_after_30_minutes_without_events(page, server, other_origin):
    folder, origin = other_origin
    (folder / "idle.html").write_text(
        f'<!doctype html><script src="{server.url}/tracker.js" data-token="{server.token("tracker")}"></script>')
    page.goto(f"{origin}/idle.html")
    before = page.evaluate("localStorage.getItem('evtrack_session')")
    page.evaluate("localStorage.setItem('evtrack_session_at', String(Date.now() - 31 * 60 * 1000))")
    page.evaluate("evtrack.track('click'); evtrack.flush()")
    user = page.evaluate("localStorage.getItem('evtrack_anon')")
    sessions = {e["event_type"]: e["session_id"] for e in wait_for_events(page, server, user, 2)}
    assert sessions["page_view"] == before and sessions["click"] != before and UUID.match(sessions["click"])


def test_tracker_honours_do_not_track_and_stops_on_a_refused_token(browser, server, other_origin):
    folder, origin = other_origin
    (folder / "dnt.html").write_text(
        f'<!doctype html><script src="{server.url}/tracker.js" data-token="{server.token("tracker")}" '
        f'data-do-not-track="true"></script>')
    (folder / "bad.html").write_text(
        f'<!doctype html><script src="{server.url}/tracker.js" data-token="p.not-a-token"></script>')
    context = browser.new_context()
    context.add_init_script("Object.defineProperty(navigator, 'doNotTrack', {get: () => '1'})")
    context.add_init_script(RECORDER)
    context.clock.install()
    page = context.new_page()
    page.set_default_timeout(15_000)
    sent = []
    page.on("request", lambda request: sent.append(request.url) if "/v0/events" in request.url else None)
    page.goto(f"{origin}/dnt.html")
    page.evaluate("evtrack.track('click'); evtrack.flush()")
    assert sent_once_idle(page) == []
    warnings = []
    page.on("console", lambda message: warnings.append(message.text) if message.type == "warning" else None)
    with page.expect_console_message(lambda message: message.type == "warning"):
        page.goto(f"{origin}/bad.html")  # no do-not-track attribute: sends, gets 403, stops
    page.evaluate("evtrack.track('click'); evtrack.flush()")
    assert len(sent_once_idle(page)) == 1
    assert len(sent) == 1 and warnings == ["evtrack: events refused, 403 Invalid token"]
    context.close()


# -- CORS ---------------------------------------------------------------------------------------
def test_a_page_of_another_origin_reads_endpoints_through_cors(page, server, other_origin, rows):
    folder, origin = other_origin
    jwt = evtrack("--data", str(server.data), "token", "jwt", "--pipe", "user_activity", "--fixed", "user_id=user_abc")
    assert jwt.returncode == 0, jwt.stderr
    (folder / "report.html").write_text("""<!doctype html><pre id="out"></pre><script>
      async function read(path, token) {
        const r = await fetch('%(host)s' + path, {headers: {Authorization: 'Bearer ' + token}});
        return {status: r.status, body: await r.json()};
      }
      Promise.all([
        read('/v0/pipes/event_stats.json?start_date=2023-01-01 00:00:00&end_date=2023-12-31 23:59:59', '%(dashboard)s'),
        read('/v0/pipes/user_activity.json?user_id=user_0001', '%(jwt)s'),
        read('/v0/pipes/event_stats.json', '%(tracker)s'),
      ]).then(r => { document.getElementById('out').textContent = JSON.stringify(r); },
              e => { document.getElementById('out').textContent = 'failed: ' + e; });
    </script>""" % {"host": server.url, "dashboard": server.token("dashboard"), "jwt": jwt.stdout.strip(),
                    "tracker": server.token("tracker")})
    page.goto(f"{origin}/report.html")
    page.wait_for_function("document.getElementById('out').textContent !== ''")
    stats, activity, refused = json.loads(page.text_content("#out"))
    assert (stats["status"], stats["body"]["data"]) == (200, reference.event_stats(rows, **YEAR_2023))
    assert (activity["status"], activity["body"]["data"]) == (200, reference.user_activity(rows, "user_abc"))
    assert (refused["status"], refused["body"]["error"]) == (
        403, "The token you have provided doesn't have access to this resource")


# -- the dashboard ------------------------------------------------------------------------------
def test_dashboard_shows_a_newly_sent_event_within_seconds(page, server):
    page.goto(f"{server.url}/")
    page.wait_for_selector("#events tr >> nth=1")
    assert page.input_value("#token") == server.token("dashboard")  # found through /tokens on loopback
    probe = '{"event_type": "live_probe", "user_id": "probe_user", "platform": "web", "timestamp": "%s"}'
    now = page.evaluate("new Date().toISOString().slice(0, 19).replace('T', ' ')")
    sent = httpx.post(f"{server.url}/v0/events?name=events&token={server.token('tracker')}", content=probe % now)
    assert sent.status_code == 202, sent.text
    page.wait_for_function("document.getElementById('events').textContent.includes('probe_user')", timeout=8_000)
    page.wait_for_function("document.getElementById('legend').textContent.includes('live_probe')", timeout=8_000)
    assert "live_probe" in page.text_content("#stats")
    shot(page, "dashboard-live.png")


def test_dashboard_shows_the_api_error_message(page, server):
    page.goto(f"{server.url}/?start_date=2023-07-01")
    page.wait_for_function("document.getElementById('chart-error').textContent !== ''")
    expected = "400: Template Syntax Error: Error validating '2023-07-01' to type DateTime"
    for panel in ("chart", "stats", "events"):
        assert page.text_content(f"#{panel}-error") == expected
    page.fill("#token", "p.wrong")
    page.dispatch_event("#token", "change")
    page.wait_for_function("document.getElementById('stats-error').textContent.startsWith('403')")
    assert page.text_content("#stats-error") == "403: invalid authentication token"
    shot(page, "dashboard-error.png")


def test_dashboard_screenshot_from_the_fixture(page, server, rows):
    july = {"start_date": "2023-07-01 00:00:00", "end_date": "2023-07-31 23:59:59"}
    page.goto(f"{server.url}/?" + "&".join(f"{k}={v}" for k, v in july.items()) + "&granularity=day&lookup=user_abc")
    page.wait_for_selector("#user tr >> nth=1")
    page.wait_for_selector("#legend span")
    page.wait_for_selector("#stats tr >> nth=1")  # each panel answers on its own
    stats = page.eval_on_selector_all("#stats tr", "rows => rows.slice(1).map(r => r.cells[0].textContent + ' ' + r.cells[1].textContent)")
    assert stats == [f"{s['event_type']} {s['event_count']}" for s in reference.event_stats(rows, **july)]
    # a line for each type, up to the 8 most frequent
    assert page.eval_on_selector_all("#chart polyline", "lines => lines.length") == min(8, len(stats))
    shot(page, "dashboard.png")


def test_dashboard_shows_ingestion_and_endpoint_health_and_the_last_errors(page, server):
    """Health, from the service datasources through the metrics and ingest_errors pipes: two lines
    quarantined of five sent here, endpoint calls with their latency, and a refused delete's reason."""
    probe = '{"event_type": "health_probe", "user_id": "hp", "timestamp": "2024-05-01 00:00:00"}'
    sent = httpx.post(f"{server.url}/v0/events?name=events&wait=true&token={server.token('tracker')}",
                      content="\n".join([probe] * 3 + ["not json", '{"event_type": "x", "timestamp": "never"}']))
    assert sent.status_code == 200 and sent.json()["quarantined_rows"] == 2, sent.text
    refused = httpx.post(f"{server.url}/v0/datasources/events/delete", data={"delete_condition": "no_such_column = 1"},
                         headers={"Authorization": f"Bearer {server.admin}"})
    assert refused.status_code == 400, refused.text
    page.goto(f"{server.url}/")
    # each panel renders when its own call answers: wait for the refresh that has all of them
    page.wait_for_function("document.getElementById('failures').textContent.includes('no_such_column') && "
                           "[...document.querySelectorAll('#ingest tr')].some(r => r.cells[0].textContent === 'events' "
                           "&& +r.cells[3].textContent >= 1) && "
                           "document.getElementById('endpoints').textContent.includes('get_events')", timeout=15_000)
    ingest = page.eval_on_selector_all("#ingest tr", "rows => rows.slice(1).map(r => [...r.cells].map(c => c.textContent))")
    [events] = [row for row in ingest if row[0] == "events"]
    # at least this test's 3 stored and 2 quarantined in the hour (the fixture's send came before)
    assert float(events[1]) >= 0.99 * 3 / 3600 and float(events[2]) >= 0.99 * 2 / 3600, ingest
    assert int(events[3]) >= 1, ingest  # the refused delete
    endpoints = page.eval_on_selector_all("#endpoints tr", "rows => rows.slice(1).map(r => [...r.cells].map(c => c.textContent))")
    [calls] = [row for row in endpoints if row[0] == "get_events"]
    assert int(calls[1]) >= 1 and float(calls[3]) > 0 and float(calls[4]) >= float(calls[3]), endpoints
    shot(page, "dashboard-health.png")
