/* evtrack tracker: page views and custom events, sent to Tinybird's Events API (or evtrack serve).
 *
 * <script src="https://HOST/tracker.js" data-token="APPEND_TOKEN" data-host="https://HOST"
 *         data-app-version="1.2.3" data-datasource="events" data-do-not-track="true" defer></script>
 *
 * evtrack.track('signup', {plan: 'pro'}); evtrack.identify('user_abc'); evtrack.flush();
 *
 * Plain JavaScript, no build step. Events are batched and sent as NDJSON with the token in the
 * query string, so a send is a "simple" cross-origin request (no preflight) and works with
 * navigator.sendBeacon when the page is hidden. Each event has a UUID event_id, so a retry is
 * deduplicated by the datasource.
 */
(function (w, d) {
  var script = d.currentScript || d.querySelector('script[data-token]');
  if (!script || w.evtrack) return;
  var attr = function (name) { return script.getAttribute('data-' + name); };
  var nav = w.navigator, store = w.localStorage, ua = nav.userAgent;
  var host = (attr('host') || new URL(script.src, w.location.href).origin).replace(/\/+$/, '');
  var url = host + '/v0/events?name=' + encodeURIComponent(attr('datasource') || 'events') +
    '&token=' + encodeURIComponent(attr('token') || '');
  var SESSION_MS = 30 * 60 * 1000, BATCH = 20, queue = [], timer = 0, tries = 0, stopped = false;
  // With data-do-not-track, a browser asking not to be tracked (DNT or Global Privacy Control) is not.
  var off = attr('do-not-track') != null && attr('do-not-track') !== 'false' &&
    (nav.doNotTrack === '1' || w.doNotTrack === '1' || nav.globalPrivacyControl === true);

  function get(key) { try { return store.getItem('evtrack_' + key); } catch (e) { return null; } }
  function set(key, value) { try { store.setItem('evtrack_' + key, value); } catch (e) { /* private mode */ } }

  function uuid() {
    if (w.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = crypto.getRandomValues(new Uint8Array(16)), h = '';
    b[6] = b[6] & 15 | 64; b[8] = b[8] & 63 | 128;
    for (var i = 0; i < 16; i++) h += (b[i] + 256).toString(16).slice(1) + ([3, 5, 7, 9].indexOf(i) >= 0 ? '-' : '');
    return h;
  }

  function user() {
    var id = get('user') || get('anon');
    if (!id) set('anon', id = 'anon_' + uuid());
    return id;
  }

  function session() {  // rotates after 30 minutes without events
    var now = Date.now(), id = get('session'), last = +get('session_at') || 0;
    if (!id || now - last > SESSION_MS) set('session', id = uuid());
    set('session_at', now);
    return id;
  }

  var os = /Windows/.test(ua) ? 'Windows' : /iPhone|iPad|iPod/.test(ua) ? 'iOS' : /Mac OS X/.test(ua) ? 'macOS' :
    /Android/.test(ua) ? 'Android' : /CrOS/.test(ua) ? 'ChromeOS' : /Linux/.test(ua) ? 'Linux' : 'Other';
  var device = /iPad|Tablet/.test(ua) || (/Android/.test(ua) && !/Mobile/.test(ua)) ? 'tablet' :
    /Mobi|iPhone|iPod/.test(ua) ? 'mobile' : 'desktop';

  function track(name, props) {
    if (off || stopped) return;
    queue.push(JSON.stringify({
      event_id: uuid(), event_type: String(name), user_id: user(), session_id: session(),
      timestamp: new Date().toISOString(), platform: 'web', app_version: attr('app-version') || '',
      device_type: device, os: os, properties: props || {}
    }));
    if (queue.length >= BATCH) flush(); else if (!timer) timer = setTimeout(flush, 1000);
  }

  function retry(batch, wait) {
    queue = batch.concat(queue);
    tries++;
    timer = setTimeout(flush, wait || Math.min(30000, 500 * Math.pow(2, tries)) * (0.5 + Math.random() / 2));
  }

  function flush(leaving) {
    clearTimeout(timer); timer = 0;
    if (!queue.length || stopped) return;
    var batch = queue.splice(0, BATCH * 5), body = batch.join('\n') + '\n';
    if (leaving === true && nav.sendBeacon && nav.sendBeacon(url, body)) return;
    fetch(url, {method: 'POST', body: body, keepalive: leaving === true}).then(function (r) {
      if (r.ok) { tries = 0; if (queue.length) flush(); return; }
      if (r.status == 429 || r.status >= 500) return retry(batch, 1000 * r.headers.get('Retry-After'));
      stopped = true; queue = [];  // another 4xx will not get better: a bad token, a missing datasource
      r.text().then(function (t) { console.warn('evtrack: events refused, ' + r.status + ' ' + t.trim()); });
    }, function () { retry(batch); });
  }

  var lastPage;
  function page() {
    var from = lastPage;
    if (w.location.href === from) return;
    lastPage = w.location.href;
    track('page_view', {page: w.location.pathname, url: lastPage, title: d.title, referrer: from || d.referrer});
  }

  ['pushState', 'replaceState'].forEach(function (name) {  // single-page-app navigation
    var original = history[name];
    history[name] = function () { var out = original.apply(this, arguments); page(); return out; };
  });
  w.addEventListener('popstate', page);
  w.addEventListener('pagehide', function () { flush(true); });
  d.addEventListener('visibilitychange', function () { if (d.visibilityState === 'hidden') flush(true); });

  w.evtrack = {
    track: track,
    identify: function (id) { set('user', String(id)); },
    flush: flush,
    page: page
  };
  page();
})(window, document);
