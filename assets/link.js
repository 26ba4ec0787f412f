/* Breadbox hosted link page. Plain ES2020, no build step, no inline code (CSP). */
(() => {
  'use strict';

  const SDKS = {
    plaid: { src: 'https://cdn.plaid.com/link/v2/stable/link-initialize.js', global: 'Plaid' },
    teller: { src: 'https://cdn.teller.io/connect/connect.js', global: 'TellerConnect' },
  };
  // One plain line per provider, shown only when there is a choice to make.
  const ABOUT = {
    plaid: 'Works with thousands of US banks and credit unions, large and small.',
    teller: 'Works with many of the largest US banks, such as Chase, Bank of America and Wells Fargo.',
  };
  const ENDED = {
    INVALID_TOKEN: ["This link isn't valid", 'Part of it may be missing. Open the whole link from the message you were sent, or ask the person who sent it for a new one.'],
    EXPIRED: ['This link has expired', 'For your safety, links only work for a short time. Ask the person who sent it for a new one.'],
    CONSUMED: ['This link was already used', 'Your bank was already connected with it, so there is nothing more to do. You can close this window.'],
    GONE: ['This link is no longer active', 'If you still want to connect a bank, ask the person who sent it for a new link. You can close this window.'],
    NO_RESUME: ["We couldn't pick up where you left off", 'Please go back to the link you were sent and start again from there. You can close this window.'],
  };
  // What the error screen says, by kind. Server messages are never shown as is.
  const PROBLEMS = {
    NETWORK: ["We couldn't reach the server", 'Check that you are online, then try again.', true],
    SDK_LOAD: ["The sign-in window didn't open", 'A weak connection or a content blocker may have stopped it. Check your connection, then try again.', true],
    PROVIDER: ["That didn't work", 'The bank-connection service had a problem. This is often only for a moment. Please try again in a minute.', true],
    RATE_LIMITED: ['Please wait a minute', 'There were too many tries in a short time. Wait a minute, then try again.', true],
    SERVER: ['Something went wrong on our side', 'Please try again in a moment.', true],
    REFUSED: ["This link can't do that", "It wasn't set up for this. Ask the person who sent it for a new link.", false],
    LOAD: ["We couldn't open your link", 'Please try again in a moment.', true],
  };
  const OAUTH_KEY = 'breadbox.plaid-oauth';
  const OAUTH_MAX_AGE_MS = 60 * 60 * 1000;

  const $ = (id) => document.getElementById(id);
  const st = {
    session: null, providers: [], linked: [], expiresAt: NaN, skew: 0, timer: 0,
    warned: false, finished: false, inflight: 0, attempt: 0, widget: null, retry: null,
  };

  // The token is the last path segment after /link/; the API lives at /_link/<token>/.
  // At any other path (the Plaid OAuth return page) the API address comes from
  // what this page stored before it sent the person to their bank.
  const match = location.pathname.match(/^(.*)\/link\/([^/]+)\/?$/);
  const query = new URLSearchParams(location.search);
  const resume = !match && query.has('oauth_state_id') ? readOAuth() : null;
  const apiBase = match ? `${match[1]}/_link/${match[2]}/` : (resume ? resume.api : null);

  class ApiError extends Error {
    constructor(status, code, message, retryable) {
      super(message); this.status = status; this.code = code; this.retryable = retryable;
    }
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
      throw new ApiError(0, 'NETWORK', 'network error', true);
    } finally {
      st.inflight--;
    }
    noteServerClock(res);
    if (res.status === 204) return null;
    let data = null;
    try { data = await res.json(); } catch (_) { /* not JSON */ }
    if (res.ok) {
      if (data && typeof data === 'object') return data;
      throw new ApiError(res.status, 'BAD_RESPONSE', 'not JSON', true);
    }
    const e = (data && data.error) || {};
    throw new ApiError(res.status, e.code || `HTTP_${res.status}`, e.message || '', e.retryable);
  }

  // Correct the countdown for a phone whose clock is off (Date header, 1 s resolution).
  function noteServerClock(res) {
    const server = Date.parse(res.headers.get('Date') || '');
    if (Number.isNaN(server)) return;
    const skew = server - Date.now();
    st.skew = Math.abs(skew) > 5000 ? skew : 0;
  }

  // ---------------------------------------------------------------- Plaid OAuth state

  function readOAuth() {
    try {
      const s = JSON.parse(localStorage.getItem(OAUTH_KEY) || 'null');
      if (s && typeof s.api === 'string' && typeof s.link_token === 'string'
          && Date.now() - (s.saved_at || 0) < OAUTH_MAX_AGE_MS) return s;
      // Left behind by an abandoned attempt: the token in it must not linger.
      if (s) localStorage.removeItem(OAUTH_KEY);
    } catch (_) { /* storage blocked or bad JSON */ }
    return null;
  }

  function saveOAuth(linkToken) {
    try {
      localStorage.setItem(OAUTH_KEY, JSON.stringify({
        api: new URL(apiBase, location.href).href, link_token: linkToken, saved_at: Date.now(),
      }));
    } catch (_) { /* private mode: the popup flow still works */ }
  }

  function clearOAuth() {
    try {
      const s = readOAuth();
      if (!s || s.api === new URL(apiBase, location.href).href) localStorage.removeItem(OAUTH_KEY);
    } catch (_) { /* nothing stored */ }
  }

  // ---------------------------------------------------------------- screens

  function logEvent(ev) {
    api('POST', 'events', ev).catch((err) => { handleEnded(err); });
  }

  const LIVE = ['welcome', 'result', 'duplicate', 'error'];

  function showScreen(name, status, kind) {
    for (const s of document.querySelectorAll('main > section')) s.hidden = s.id !== `screen-${name}`;
    document.body.dataset.state = name;
    setBusy(false);
    showLeave(name);
    updateQr();
    const h = document.querySelector(`#screen-${name} h1`);
    if (h) {
      document.title = `${h.textContent} · Breadbox`;
      h.focus();
    }
    say(status || '', kind);
  }

  // Declining (or finishing, once something is connected) stays possible on
  // the welcome and error screens.
  function showLeave(name) {
    const on = (name === 'welcome' || name === 'error') && !st.finished && !!st.session;
    $('leave').hidden = !on;
    if (!on) return;
    const canFinish = !isRelink() && st.linked.length > 0;
    $('welcome-done').hidden = !canFinish;
    closeConfirm(false);
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

  const instName = (n) => (typeof n === 'string' && n.trim()) || 'Your bank';

  // One entry of the "connected so far" list: the bank and its accounts.
  function linkedEntry(name, accounts) {
    const list = (Array.isArray(accounts) ? accounts : [])
      .filter((a) => a && typeof a === 'object')
      .map((a) => ({
        name: (typeof a.name === 'string' && a.name.trim()) || (typeof a.subtype === 'string' && a.subtype) || 'Account',
        mask: typeof a.mask === 'string' ? a.mask : '',
      }));
    return { name: instName(name), accounts: list };
  }

  // "Chase — Checking ••1234, Savings ••5678"; a screen reader hears "ending in 1234".
  function renderList(id, entries) {
    $(id).replaceChildren(...entries.map((e) => {
      const li = document.createElement('li');
      li.append(e.name);
      e.accounts.forEach((a, i) => {
        // One box per account keeps "Checking ••1234" together while it fits.
        const acct = Object.assign(document.createElement('span'), { className: 'account', textContent: a.name });
        if (a.mask) {
          const sr = Object.assign(document.createElement('span'), { className: 'sr-only', textContent: ' ending in ' });
          const dots = Object.assign(document.createElement('span'), { textContent: ' ••' });
          dots.setAttribute('aria-hidden', 'true');
          acct.append(sr, dots, a.mask);
        }
        li.append(i === 0 ? ' — ' : ', ', acct);
      });
      return li;
    }));
  }

  // 401 INVALID_TOKEN or any 410 ends the page. Returns true when handled.
  function handleEnded(err) {
    if (!(err instanceof ApiError)) return false;
    if (err.code === 'INVALID_TOKEN') { showEnded('INVALID_TOKEN'); return true; }
    if (err.status === 410) { showEnded(ENDED[err.code] ? err.code : 'GONE'); return true; }
    return false;
  }

  function problemOf(err) {
    if (!(err instanceof ApiError)) return 'SERVER';
    if (err.code === 'NETWORK' || err.code === 'SDK_LOAD') return err.code;
    if (err.status === 429) return 'RATE_LIMITED';
    if (err.status === 502 || err.code === 'PROVIDER_ERROR') return 'PROVIDER';
    if (err.status >= 400 && err.status < 500) return 'REFUSED';
    return 'SERVER';
  }

  function fail(err, retry, kind) {
    if (st.finished || handleEnded(err)) return;
    if (!(err instanceof ApiError)) console.error(err);
    const [title, message, retryable] = PROBLEMS[kind || problemOf(err)];
    showProblem(title, message, retryable ? retry : null);
  }

  function showProblem(title, message, retry, next) {
    st.retry = retry;
    $('error-title').textContent = title;
    $('error-message').textContent = message;
    $('error-next').textContent = next || '';
    $('error-next').hidden = !next;
    $('retry').hidden = !retry;
    $('alternatives').replaceChildren();
    showScreen('error');
  }

  // A provider failure trying again can't fix: say so, say the sender knows,
  // and offer any other provider (a different service may still work).
  function showProviderRefused(p) {
    st.retry = null;
    const others = st.providers.filter((o) => o.name !== p.name);
    showProblem(
      "We can't connect your bank this way right now",
      "The bank-connection service turned this request down, and trying again won't help. The person who sent you this link has been told, so you don't need to tell them.",
      null,
      others.length ? 'You can try the other way below, or stop here.' : 'There is nothing more you need to do. You can close this window.',
    );
    const box = $('alternatives');
    for (const o of others) box.append(providerChoice(o, 'Try'));
  }

  function finish() {
    st.finished = true;
    clearInterval(st.timer);
    destroyWidget();
    clearOAuth();
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

  // ---------------------------------------------------------------- "continue on your phone"

  const wide = window.matchMedia('(min-width: 56rem)');

  let qrLoad = null;

  function updateQr() {
    const show = wide.matches && !!apiBase && !st.finished && !!st.session
      && LIVE.includes(document.body.dataset.state);
    // Drawn as a data: URL so the token never sits in the page's markup.
    if (show && !qrLoad) {
      qrLoad = fetch(`${apiBase}qr.svg`, { cache: 'no-store', credentials: 'same-origin' })
        .then((r) => (r.ok ? r.text() : Promise.reject(new Error(`QR ${r.status}`))))
        .then((svg) => {
          $('qr').src = `data:image/svg+xml;base64,${btoa(svg)}`;
          updateQr();
        })
        .catch(() => { qrLoad = null; });
    }
    const ready = show && !!$('qr').getAttribute('src');
    $('qr-box').hidden = !ready;
    document.body.classList.toggle('has-qr', ready);
  }

  // ---------------------------------------------------------------- loading

  async function load() {
    if (!apiBase) { showEnded(match ? 'INVALID_TOKEN' : 'NO_RESUME'); return; }
    try {
      const s = await api('GET', 'session');
      if (s.status === 'expired') { showEnded('EXPIRED'); return; }
      if (s.status === 'completed' || s.status === 'consumed') { showEnded('CONSUMED'); return; }
      if (s.status === 'failed') { showEnded('GONE'); return; }
      st.session = s;
      st.expiresAt = Date.parse(s.expires_at);
      st.linked = (Array.isArray(s.connections) ? s.connections : [])
        .map((c) => linkedEntry(c.institution_name, c.accounts));
      const p = await api('GET', 'providers');
      st.providers = Array.isArray(p.providers) ? p.providers : [];
      renderProviders();
      startCountdown();
      if (resume) resumePlaid();
      else showWelcome();
    } catch (err) {
      const kind = problemOf(err);
      fail(err, () => { showLoading('Getting things ready…'); load(); },
        kind === 'NETWORK' || kind === 'RATE_LIMITED' ? kind : 'LOAD');
    }
  }

  const isRelink = () => st.session && st.session.action === 'relink';
  const displayName = (p) => p.display_name || p.name;

  function providerChoice(p, verb) {
    const wrap = Object.assign(document.createElement('div'), { className: 'choice' });
    const b = Object.assign(document.createElement('button'), {
      type: 'button', id: `${verb === 'Try' ? 'try' : 'provider'}-${p.name}`, className: 'btn btn-primary',
      textContent: `${verb} with ${displayName(p)}`,
    });
    b.addEventListener('click', () => startProvider(p));
    wrap.append(b);
    const about = ABOUT[p.name];
    if (about && st.providers.length > 1) {
      const line = Object.assign(document.createElement('p'), { id: `${b.id}-about`, textContent: about });
      b.setAttribute('aria-describedby', line.id);
      wrap.append(line);
    }
    return wrap;
  }

  function renderProviders() {
    const verb = isRelink() ? 'Reconnect' : 'Connect';
    $('providers').replaceChildren(...st.providers.map((p) => providerChoice(p, verb)));
    $('no-providers').hidden = st.providers.length > 0;
    $('choose-hint').hidden = st.providers.length < 2;
    const names = st.providers.map(displayName);
    const who = names.length ? ` in a window from ${names.join(' or ')}` : '';
    $('footer-text').textContent = names.length
      ? `You sign in to your bank${who}, not on this page. This site never sees your bank password.`
      : 'This site never sees your bank password.';
  }

  function showWelcome(status, kind) {
    if (st.finished) return;
    const s = st.session;
    $('welcome-title').textContent = isRelink() ? 'Reconnect your bank' : 'Connect your bank';
    $('welcome-lead').textContent = isRelink()
      ? 'Your bank needs you to sign in again so the connection keeps working. You do that in a secure window from a bank-connection service. This site never sees your bank password.'
      : "You'll sign in to your bank in a secure window from a bank-connection service. This site never sees your bank password.";
    const name = typeof s.for_name === 'string' ? s.for_name.trim() : '';
    $('for-name').textContent = name;
    $('for-name-again').textContent = name;
    $('for-box').hidden = !name;
    $('welcome-label').textContent = s.label || '';
    $('welcome-label').hidden = !s.label;
    renderList('linked', st.linked);
    $('linked-box').hidden = st.linked.length === 0;
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
    $('cancel').hidden = !$('welcome-done').hidden;
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

  // ---------------------------------------------------------------- provider widgets

  const sdkLoads = {};

  function loadSdk(name) {
    const sdk = SDKS[name];
    if (window[sdk.global]) return Promise.resolve(window[sdk.global]);
    if (!sdkLoads[name]) {
      sdkLoads[name] = new Promise((resolve, reject) => {
        const failed = () => {
          s.remove();
          reject(new ApiError(0, 'SDK_LOAD', 'script did not load', true));
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

  // Each callback set may settle once, and only for the latest attempt.
  function settleOnce(attempt) {
    let settled = false;
    return (fn) => (...args) => {
      if (settled || attempt !== st.attempt || st.finished) return;
      settled = true;
      fn(...args);
    };
  }

  async function startProvider(p) {
    const display = displayName(p);
    const attempt = ++st.attempt;
    setBusy(true);
    say(`Opening ${display}…`);
    try {
      const cfg = await api('POST', `providers/${encodeURIComponent(p.name)}/start`, {});
      if (attempt !== st.attempt || st.finished) return;
      const once = settleOnce(attempt);
      if (p.name === 'plaid') await openPlaid(cfg, display, once);
      else if (p.name === 'teller') await openTeller(cfg, display, once);
      else throw new ApiError(0, 'UNSUPPORTED', 'unsupported provider', false);
    } catch (err) {
      if (attempt !== st.attempt) return;
      if (err instanceof ApiError && err.status === 502 && err.retryable === false) showProviderRefused(p);
      else fail(err, () => showWelcome());
    }
  }

  function plaidCallbacks(display, once) {
    return {
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
        clearOAuth();
        logEvent({
          type: err ? 'error' : 'exit', provider: 'plaid', code: (err && err.error_code) || '',
          message: (err && (err.error_message || err.display_message)) || '',
        });
        // Only Plaid's display_message is meant for people; error_message is for developers.
        const shown = err && typeof err.display_message === 'string' ? err.display_message : '';
        if (err) showWelcome(shown || `${display} ran into a problem. You can try again.`, 'error');
        else showWelcome(`You closed the ${display} window. You can try again whenever you're ready.`);
      }),
    };
  }

  async function openPlaid(cfg, display, once) {
    const Plaid = await loadSdk('plaid');
    destroyWidget();
    // Banks that sign in on their own site send the person back to the OAuth
    // return page, perhaps in a new tab: keep what it needs to carry on.
    saveOAuth(cfg.link_token);
    st.widget = Plaid.create({ token: cfg.link_token, ...plaidCallbacks(display, once) });
    st.widget.open();
  }

  // Back from the bank's own site: re-open Plaid where it left off.
  async function resumePlaid() {
    const p = st.providers.find((x) => x.name === 'plaid') || { name: 'plaid', display_name: 'Plaid' };
    const display = displayName(p);
    const attempt = ++st.attempt;
    showLoading('Finishing your bank connection…');
    try {
      const Plaid = await loadSdk('plaid');
      destroyWidget();
      st.widget = Plaid.create({
        token: resume.link_token,
        receivedRedirectUri: location.href,
        ...plaidCallbacks(display, settleOnce(attempt)),
      });
      st.widget.open();
    } catch (err) {
      fail(err, () => showWelcome());
    }
  }

  async function openTeller(cfg, display, once) {
    const TellerConnect = await loadSdk('teller');
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
        showWelcome(`You closed the ${display} window. You can try again whenever you're ready.`);
      }),
      onFailure: once((f) => {
        const failure = f || {};
        logEvent({ type: 'error', provider: 'teller', code: failure.code || failure.type || '', message: failure.message || '' });
        showWelcome(`${display} ran into a problem. You can try again.`, 'error');
      }),
    };
    if (cfg.environment) opts.environment = cfg.environment;
    if (cfg.enrollment_id) opts.enrollmentId = cfg.enrollment_id;
    destroyWidget();
    st.widget = TellerConnect.setup(opts);
    st.widget.open();
  }

  // ---------------------------------------------------------------- results

  async function saveConnection(body) {
    const provider = st.providers.find((p) => p.name === body.provider) || { name: body.provider };
    showLoading('Saving your connection…');
    try {
      const r = await api('POST', 'connections', body);
      clearOAuth();
      const name = instName(r.institution_name || body.credentials.institution_name);
      const ended = r.session_status === 'consumed' || r.session_status === 'completed';
      if (r.duplicate === true) {
        if (ended) { showFinal(r.session_status, `${name} was already connected, so there was nothing more to do.`); return; }
        showDuplicate(name);
        return;
      }
      st.linked.push(linkedEntry(name, Array.isArray(r.accounts) ? r.accounts : body.credentials.accounts));
      if (ended) { showFinal(r.session_status); return; }
      $('result-title').textContent = name === 'Your bank' ? 'Your bank is connected' : `${name} is connected`;
      renderList('result-linked', st.linked);
      showScreen('result');
      tick();
    } catch (err) {
      if (isConsumed(err)) showFinal('consumed');
      else if (err instanceof ApiError && err.status === 502 && err.retryable === false) showProviderRefused(provider);
      else fail(err, () => showWelcome());
    }
  }

  function showDuplicate(name) {
    $('duplicate-title').textContent = name === 'Your bank' ? 'This bank is already connected' : `${name} is already connected`;
    $('duplicate-message').textContent = "It was connected before, so there's nothing more to do for it, and nothing new was saved.";
    showScreen('duplicate');
    tick();
  }

  async function reauthComplete() {
    showLoading('Finishing up…');
    try {
      await api('POST', 'reauth-complete', {});
      showFinal('consumed');
    } catch (err) {
      if (isConsumed(err)) showFinal('consumed');
      else if (err instanceof ApiError && err.status === 502 && err.retryable === false) showProviderRefused({ name: 'plaid' });
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

  function showFinal(status, note) {
    if (st.finished) return;
    finish();
    $('final-title').textContent = isRelink() ? 'Your bank is reconnected' : 'Thank you';
    renderList('final-linked', st.linked);
    $('final-linked-box').hidden = st.linked.length === 0;
    const target = redirectTarget(status);
    const lead = note || (st.linked.length || isRelink() ? 'All set. Your bank is connected.' : 'All set.');
    if (target) {
      $('final-message').textContent = `${lead} Taking you back…`;
      $('final-link').href = target;
      $('final-redirect').hidden = false;
      showScreen('final');
      location.assign(target);
    } else {
      $('final-message').textContent = `${lead} You can close this window.`;
      showScreen('final');
    }
  }

  // Another tab (the OAuth return page) finished this link: catch up.
  async function otherTabChanged(e) {
    if (e.key !== OAUTH_KEY || e.newValue !== null || st.finished || !st.session) return;
    try {
      const s = await api('GET', 'session');
      const now = (Array.isArray(s.connections) ? s.connections : [])
        .map((c) => linkedEntry(c.institution_name, c.accounts));
      if (now.length <= st.linked.length) return;
      st.attempt++;
      destroyWidget();
      st.linked = now;
      $('result-title').textContent = 'Your bank is connected';
      renderList('result-linked', st.linked);
      showScreen('result', 'Finished in your other tab.');
      tick();
    } catch (err) {
      if (!isConsumed(err)) { handleEnded(err); return; }
      // The other tab already went on to any redirect.
      st.session.redirect_url = '';
      showFinal('consumed', 'Your bank was connected in your other tab.');
    }
  }

  function init() {
    $('cancel').addEventListener('click', openConfirm);
    $('cancel-no').addEventListener('click', () => closeConfirm(true));
    $('cancel-yes').addEventListener('click', declineLink);
    $('cancel-confirm').addEventListener('keydown', (e) => { if (e.key === 'Escape') closeConfirm(true); });
    $('welcome-done').addEventListener('click', complete);
    $('done').addEventListener('click', complete);
    $('duplicate-done').addEventListener('click', complete);
    $('another').addEventListener('click', () => showWelcome());
    $('duplicate-another').addEventListener('click', () => showWelcome());
    $('retry').addEventListener('click', () => { const r = st.retry; st.retry = null; if (r) r(); });
    wide.addEventListener('change', updateQr);
    window.addEventListener('storage', otherTabChanged);
    load();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
