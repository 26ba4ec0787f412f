/* Breadbox hosted link page. Plain ES2020, no build step, no inline code (CSP). */
(() => {
  'use strict';

  const SDKS = {
    plaid: { src: 'https://cdn.plaid.com/link/v2/stable/link-initialize.js', global: 'Plaid' },
    teller: { src: 'https://cdn.teller.io/connect/connect.js', global: 'TellerConnect' },
  };
  const ENDED = {
    INVALID_TOKEN: ["This link isn't valid", 'Check that you opened the whole link, or ask for a new one.'],
    EXPIRED: ['This link has expired — ask for a new one', 'For your safety, links only work for a short time. You can close this window.'],
    CONSUMED: ['This link was already used', 'You can close this window.'],
    GONE: ['This link is no longer active', 'You can close this window.'],
  };
  const GENERIC = 'Something went wrong. Please try again.';

  const $ = (id) => document.getElementById(id);
  const st = {
    session: null, providers: [], linked: [], expiresAt: NaN, skew: 0, timer: 0,
    warned: false, finished: false, inflight: 0, attempt: 0, widget: null, retry: null,
  };

  // The token is the last path segment after /link/; the API lives at /_link/<token>/.
  const match = location.pathname.match(/^(.*)\/link\/([^/]+)\/?$/);
  const apiBase = match ? `${match[1]}/_link/${match[2]}/` : null;

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }
  const isConsumed = (err) => err instanceof ApiError && err.status === 410 && err.code === 'CONSUMED';

  async function api(method, path, body) {
    const opts = { method, headers: { Accept: 'application/json' }, cache: 'no-store', credentials: 'same-origin' };
    if (method !== 'GET') {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body || {});
    }
    st.inflight++;
    let res;
    try {
      res = await fetch(apiBase + path, opts);
    } catch (_) {
      throw new ApiError(0, 'NETWORK', "We couldn't reach the server. Check your connection and try again.");
    } finally {
      st.inflight--;
    }
    noteServerClock(res);
    if (res.status === 204) return null;
    let data = null;
    try { data = await res.json(); } catch (_) { /* not JSON */ }
    if (res.ok) {
      if (data && typeof data === 'object') return data;
      throw new ApiError(res.status, 'BAD_RESPONSE', GENERIC);
    }
    const e = (data && data.error) || {};
    throw new ApiError(res.status, e.code || `HTTP_${res.status}`, e.message || GENERIC);
  }

  // Correct the countdown for a phone whose clock is off (Date header, 1 s resolution).
  function noteServerClock(res) {
    const server = Date.parse(res.headers.get('Date') || '');
    if (Number.isNaN(server)) return;
    const skew = server - Date.now();
    st.skew = Math.abs(skew) > 5000 ? skew : 0;
  }

  function logEvent(ev) {
    api('POST', 'events', ev).catch((err) => { handleEnded(err); });
  }

  function showScreen(name, status, kind) {
    for (const s of document.querySelectorAll('main > section')) s.hidden = s.id !== `screen-${name}`;
    document.body.dataset.state = name;
    setBusy(false);
    const h = document.querySelector(`#screen-${name} h1`);
    if (h) {
      document.title = `${h.textContent} · Breadbox`;
      h.focus();
    }
    say(status || '', kind);
  }

  function say(text, kind) {
    const el = $('status');
    el.dataset.kind = kind || 'info';
    if (text && el.textContent === text) {
      // Same message again: clear first so screen readers announce it again.
      el.textContent = '';
      setTimeout(() => { el.textContent = text; }, 100);
    } else {
      el.textContent = text;
    }
  }

  function setBusy(on) {
    // No aria-busy here: it would mute the status region inside <main>.
    for (const b of document.querySelectorAll('main button')) b.disabled = on;
  }

  function showLoading(text) {
    $('loading-title').textContent = text;
    showScreen('loading');
  }

  function renderList(id, names) {
    $(id).replaceChildren(...names.map((n) => Object.assign(document.createElement('li'), { textContent: n })));
  }

  const instName = (n) => (typeof n === 'string' && n.trim()) || 'Your bank';

  // 401 INVALID_TOKEN or any 410 ends the page. Returns true when handled.
  function handleEnded(err) {
    if (!(err instanceof ApiError)) return false;
    if (err.code === 'INVALID_TOKEN') { showEnded('INVALID_TOKEN'); return true; }
    if (err.status === 410) { showEnded(ENDED[err.code] ? err.code : 'GONE'); return true; }
    return false;
  }

  function fail(err, retry, opts = {}) {
    if (st.finished || handleEnded(err)) return;
    if (!(err instanceof ApiError)) console.error(err);
    st.retry = retry;
    const msg = opts.message || (err instanceof ApiError && err.message) || GENERIC;
    $('error-message').textContent = msg;
    $('retry').textContent = opts.label || 'Try again';
    showScreen('error');
  }

  function finish() {
    st.finished = true;
    clearInterval(st.timer);
    destroyWidget();
  }

  function showEnded(code) {
    if (st.finished) return;
    finish();
    const [title, message] = ENDED[code] || ENDED.GONE;
    $('ended-title').textContent = title;
    $('ended-message').textContent = message;
    showScreen('ended');
  }

  const pad = (n) => String(n).padStart(2, '0');

  function tick() {
    if (st.finished || Number.isNaN(st.expiresAt)) return;
    const left = Math.max(0, Math.ceil((st.expiresAt - (Date.now() + st.skew)) / 1000));
    const text = `This link expires in ${pad(Math.floor(left / 60))}:${pad(left % 60)}`;
    for (const el of document.querySelectorAll('.countdown')) {
      if (el.textContent !== text) el.textContent = text;
    }
    if (left > 0 && left <= 60 && !st.warned) {
      st.warned = true;
      say('This link expires in less than a minute.');
    }
    // Let a request that is already on its way finish: the server has the last word.
    if (left === 0 && st.inflight === 0) showEnded('EXPIRED');
  }

  function startCountdown() {
    clearInterval(st.timer);
    tick();
    st.timer = setInterval(tick, 500);
  }

  async function load() {
    if (!apiBase) { showEnded('INVALID_TOKEN'); return; }
    try {
      const s = await api('GET', 'session');
      if (s.status === 'expired') { showEnded('EXPIRED'); return; }
      if (s.status === 'completed' || s.status === 'consumed') { showEnded('CONSUMED'); return; }
      if (s.status === 'failed') { showEnded('GONE'); return; }
      st.session = s;
      st.expiresAt = Date.parse(s.expires_at);
      st.linked = (Array.isArray(s.connections) ? s.connections : []).map((c) => instName(c.institution_name));
      const p = await api('GET', 'providers');
      st.providers = Array.isArray(p.providers) ? p.providers : [];
      renderProviders();
      startCountdown();
      showWelcome();
    } catch (err) {
      fail(err, () => { showLoading('Getting things ready…'); load(); }, {
        label: 'Retry',
        message: err instanceof ApiError && err.code === 'NETWORK' ? err.message
          : "We couldn't open your link right now. Please try again in a moment.",
      });
    }
  }

  const isRelink = () => st.session && st.session.action === 'relink';

  function renderProviders() {
    const box = $('providers');
    box.textContent = '';
    const verb = isRelink() ? 'Reconnect' : 'Connect';
    for (const p of st.providers) {
      const b = Object.assign(document.createElement('button'), {
        type: 'button', id: `provider-${p.name}`, className: 'btn btn-primary',
        textContent: `${verb} with ${p.display_name || p.name}`,
      });
      b.addEventListener('click', () => startProvider(p));
      box.append(b);
    }
    $('no-providers').hidden = st.providers.length > 0;
  }

  function showWelcome(status, kind) {
    if (st.finished) return;
    const s = st.session;
    $('welcome-title').textContent = isRelink() ? 'Reconnect your bank' : 'Connect your bank';
    $('welcome-label').textContent = s.label || '';
    $('welcome-label').hidden = !s.label;
    renderList('linked', st.linked);
    $('linked-box').hidden = st.linked.length === 0;
    // Once something is linked, finishing (not declining) is the way out.
    const canFinish = !isRelink() && st.linked.length > 0;
    $('welcome-done').hidden = !canFinish;
    $('cancel').hidden = canFinish;
    closeConfirm(false);
    showScreen('welcome', status, kind);
    tick();
  }

  function openConfirm() {
    $('cancel').hidden = true;
    $('cancel').setAttribute('aria-expanded', 'true');
    $('cancel-confirm').hidden = false;
    $('cancel-question').focus();
  }

  function closeConfirm(focusBack) {
    $('cancel-confirm').hidden = true;
    $('cancel').setAttribute('aria-expanded', 'false');
    if (!(st.session && !isRelink() && st.linked.length > 0)) $('cancel').hidden = false;
    if (focusBack) $('cancel').focus();
  }

  async function declineLink() {
    showLoading('One moment…');
    try {
      await api('POST', 'cancel', { reason: 'declined by the person' });
      finish();
      showScreen('canceled');
    } catch (err) {
      fail(err, () => showWelcome());
    }
  }

  const sdkLoads = {};

  function loadSdk(name, display) {
    const sdk = SDKS[name];
    if (window[sdk.global]) return Promise.resolve(window[sdk.global]);
    if (!sdkLoads[name]) {
      sdkLoads[name] = new Promise((resolve, reject) => {
        const failed = () => {
          s.remove();
          reject(new ApiError(0, 'SDK_LOAD', `We couldn't load ${display}. Check your connection (or any content blocker) and try again.`));
        };
        const timer = setTimeout(failed, 30000);
        const s = document.createElement('script');
        s.src = sdk.src;
        s.addEventListener('load', () => {
          clearTimeout(timer);
          if (window[sdk.global]) resolve(window[sdk.global]); else failed();
        });
        s.addEventListener('error', () => { clearTimeout(timer); failed(); });
        document.head.append(s);
      }).catch((e) => { delete sdkLoads[name]; throw e; });
    }
    return sdkLoads[name];
  }

  function destroyWidget() {
    const w = st.widget;
    st.widget = null;
    try { if (w && typeof w.destroy === 'function') w.destroy(); } catch (_) { /* already gone */ }
  }

  async function startProvider(p) {
    const display = p.display_name || p.name;
    const attempt = ++st.attempt;
    setBusy(true);
    say(`Opening ${display}…`);
    try {
      const cfg = await api('POST', `providers/${encodeURIComponent(p.name)}/start`, {});
      if (attempt !== st.attempt || st.finished) return;
      // Each callback set may settle once, and only for the latest attempt.
      let settled = false;
      const once = (fn) => (...args) => {
        if (settled || attempt !== st.attempt || st.finished) return;
        settled = true;
        fn(...args);
      };
      if (p.name === 'plaid') await openPlaid(cfg, display, once);
      else if (p.name === 'teller') await openTeller(cfg, display, once);
      else throw new ApiError(0, 'UNSUPPORTED', `This page can't open ${display} yet.`);
    } catch (err) {
      if (attempt === st.attempt) fail(err, () => showWelcome());
    }
  }

  async function openPlaid(cfg, display, once) {
    const Plaid = await loadSdk('plaid', display);
    destroyWidget();
    st.widget = Plaid.create({
      token: cfg.link_token,
      onSuccess: once((publicToken, metadata) => {
        if (isRelink()) { reauthComplete(); return; }
        const meta = metadata || {}, inst = meta.institution || {};
        saveConnection({
          provider: 'plaid',
          credentials: {
            public_token: publicToken,
            institution_id: inst.institution_id || '',
            institution_name: inst.name || '',
            accounts: Array.isArray(meta.accounts) ? meta.accounts : [],
          },
        });
      }),
      onExit: once((err) => {
        const message = (err && (err.display_message || err.error_message)) || '';
        logEvent({ type: err ? 'error' : 'exit', provider: 'plaid', code: (err && err.error_code) || '', message });
        if (err) showWelcome(message || `${display} ran into a problem. You can try again.`, 'error');
        else showWelcome(`You closed ${display}. You can try again.`);
      }),
    });
    st.widget.open();
  }

  async function openTeller(cfg, display, once) {
    const TellerConnect = await loadSdk('teller', display);
    const opts = {
      applicationId: cfg.application_id,
      onSuccess: once((enrollment) => {
        if (isRelink()) { reauthComplete(); return; }
        const e = enrollment || {}, en = e.enrollment || {}, inst = en.institution || {};
        saveConnection({
          provider: 'teller',
          credentials: {
            access_token: e.accessToken,
            enrollment_id: en.id,
            institution_id: inst.id || '',
            institution_name: inst.name || '',
            accounts: [],
          },
        });
      }),
      onExit: once(() => {
        logEvent({ type: 'exit', provider: 'teller', code: '', message: '' });
        showWelcome(`You closed ${display}. You can try again.`);
      }),
      onFailure: once((f) => {
        const failure = f || {};
        const message = failure.message || '';
        logEvent({ type: 'error', provider: 'teller', code: failure.code || failure.type || '', message });
        showWelcome(message || `${display} ran into a problem. You can try again.`, 'error');
      }),
    };
    if (cfg.environment) opts.environment = cfg.environment;
    if (cfg.enrollment_id) opts.enrollmentId = cfg.enrollment_id;
    destroyWidget();
    st.widget = TellerConnect.setup(opts);
    st.widget.open();
  }

  async function saveConnection(body) {
    showLoading('Saving your connection…');
    try {
      const r = await api('POST', 'connections', body);
      const raw = r.institution_name || body.credentials.institution_name;
      st.linked.push(instName(raw));
      if (r.session_status === 'consumed' || r.session_status === 'completed') {
        showFinal(r.session_status);
        return;
      }
      $('result-title').textContent = `Connected ${instName(raw) === 'Your bank' ? 'your bank' : raw.trim()}`;
      renderList('result-linked', st.linked);
      showScreen('result');
      tick();
    } catch (err) {
      if (isConsumed(err)) showFinal('consumed');
      else if (err instanceof ApiError && err.status === 502) showWelcome(err.message, 'error');
      else fail(err, () => showWelcome());
    }
  }

  async function reauthComplete() {
    showLoading('Finishing up…');
    try {
      await api('POST', 'reauth-complete', {});
      showFinal('consumed');
    } catch (err) {
      if (isConsumed(err)) showFinal('consumed');
      else fail(err, reauthComplete);
    }
  }

  async function complete() {
    showLoading('Finishing up…');
    try {
      await api('POST', 'complete', {});
    } catch (err) {
      // A second "I'm done" gets 410 CONSUMED: it is already done.
      if (!isConsumed(err)) { fail(err, complete); return; }
    }
    showFinal('completed');
  }

  function redirectTarget(status) {
    const raw = st.session && st.session.redirect_url;
    if (!raw) return null;
    let url;
    try { url = new URL(raw); } catch (_) { return null; }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
    url.searchParams.set('breadbox_session', st.session.short_id);
    url.searchParams.set('status', status);
    return url.href;
  }

  function showFinal(status) {
    if (st.finished) return;
    finish();
    $('final-title').textContent = isRelink() ? 'Bank reconnected' : 'Thank you';
    renderList('final-linked', st.linked);
    $('final-linked-box').hidden = st.linked.length === 0;
    const target = redirectTarget(status);
    if (target) {
      $('final-message').textContent = 'All set. Taking you back…';
      $('final-link').href = target;
      $('final-redirect').hidden = false;
      showScreen('final');
      location.assign(target);
    } else {
      $('final-message').textContent = 'All set, you can close this window.';
      showScreen('final');
    }
  }

  function init() {
    $('cancel').addEventListener('click', openConfirm);
    $('cancel-no').addEventListener('click', () => closeConfirm(true));
    $('cancel-yes').addEventListener('click', declineLink);
    $('cancel-confirm').addEventListener('keydown', (e) => { if (e.key === 'Escape') closeConfirm(true); });
    $('welcome-done').addEventListener('click', complete);
    $('done').addEventListener('click', complete);
    $('another').addEventListener('click', () => showWelcome());
    $('retry').addEventListener('click', () => { const r = st.retry; st.retry = null; if (r) r(); });
    load();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
