// The bff demo SPA: no framework, no build step, no token. Every call goes to this origin; bff does the rest.
"use strict";

const CSRF = { "X-CSRF": "1" };
// The call to retry after a step-up login (RFC 9470), kept across the login's navigations in this tab only.
const STEP_UP_RETRY = "bff-demo-step-up-retry";
const POLL_MS = 5000;

// Every error code the SPA can get, from bff ({"error", "message"}) or from the demo API through bff
// ({"error", "error_description"}), with what it means for the user.
const ERRORS = {
  unauthenticated:
    "You are not logged in, or your session was ended elsewhere (log out everywhere, a changed password, an " +
    "admin). Log in to call the API.",
  session_expired:
    "Your session has ended: you were logged out elsewhere, your password was changed, the refresh token was " +
    "revoked or reused, or the session timed out. Log in again.",
  csrf: "bff refused the request: it lacked the X-CSRF header or came from another site (CSRF protection).",
  temporarily_unavailable: "The identity provider or the session store is unavailable. Try again shortly.",
  not_ready: "bff is starting and not ready yet. Try again shortly.",
  bad_gateway: "The API could not be reached through bff.",
  upstream_timeout: "The API did not answer in time.",
  not_found: "No such endpoint.",
  method_not_allowed: "This method is not allowed on this route.",
  payload_too_large: "The request body is too large for this route.",
  invalid_path: "bff refused a suspicious request path.",
  bad_request: "bff refused a malformed request.",
  login_failed: "The login failed. Try again.",
  idp_error: "The identity provider refused the login.",
  invalid_state: "The login took too long or was started in another browser. Try again.",
  invalid_id_token: "The identity provider sent an ID token bff could not accept.",
  invalid_token: "The API refused the access token (bff has already tried one refresh).",
  insufficient_scope: "You are logged in, but your role may not do this (admin only).",
  missing_token: "The API got no access token.",
  step_up_required:
    "The API asks for a stronger or more recent login (a second factor). The page logs you in again with it and " +
    "then retries the call.",
  step_up_failed:
    "The new login did not reach the level the API asked for (or was another user); you are still logged in as before.",
  insufficient_user_authentication: "The API still finds the login not strong or recent enough.",
  internal_error: "Something went wrong inside bff.",
  network: "The request did not reach bff (network error).",
};

let user = null;
let lastExpiry = null;
let ticksAbort = null;
let pollTimer = null;

const $ = (id) => document.getElementById(id);
const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });

function showError(code, message, status, retryAfter) {
  const box = $("error");
  box.replaceChildren();
  box.dataset.code = code;
  const title = document.createElement("strong");
  title.textContent = status ? `${code} (HTTP ${status})` : code;
  const meaning = document.createElement("p");
  meaning.textContent = ERRORS[code] || "Unexpected error.";
  box.append(title, meaning);
  if (message && message !== code) {
    const detail = document.createElement("p");
    detail.className = "detail";
    detail.textContent = message + (retryAfter ? ` (retry after ${retryAfter} s)` : "");
    box.append(detail);
  }
  if (code === "unauthenticated" || code === "session_expired") {
    const again = document.createElement("button");
    again.type = "button";
    again.textContent = "Log in again";
    again.addEventListener("click", login);
    box.append(again);
  }
  box.hidden = false;
}

function clearError() {
  const box = $("error");
  box.hidden = true;
  box.replaceChildren();
  delete box.dataset.code;
}

async function readError(response) {
  try {
    const body = await response.json();
    return { error: body.error || `http_${response.status}`, message: body.message || body.error_description };
  } catch {
    return { error: `http_${response.status}`, message: response.statusText };
  }
}

function login() {
  location.assign("/bff/login?returnTo=" + encodeURIComponent(location.pathname + location.search));
}

// POST ends the session at once and answers a one-time same-origin URL; navigating to it takes the browser on to the
// IdP's logout. The IdP URL holds the ID token, so bff never puts it in a body this script could read.
// (A plain link to user.logout_url works too, e.g. without JavaScript.)
async function logout() {
  if (!user) return;
  clearError();
  let response;
  try {
    response = await fetch("/bff/logout", { method: "POST", headers: CSRF, cache: "no-store" });
  } catch (exc) {
    showError("network", exc.message, 0);
    return;
  }
  if (!response.ok) {
    const err = await readError(response);
    showError(err.error, err.message, response.status, response.headers.get("Retry-After"));
    return;
  }
  location.assign((await response.json()).redirect);
}

function renderUser() {
  const box = $("user");
  box.replaceChildren();
  $("login").hidden = user !== null;
  $("logout").hidden = user === null;
  $("cookies").textContent = document.cookie || "(none)";
  if (user === null) {
    box.textContent = "Not logged in.";
    return;
  }
  const name = document.createElement("p");
  name.className = "who";
  name.textContent = `${user.name || user.preferred_username || user.sub}` + (user.role ? ` (role ${user.role})` : "");
  const list = document.createElement("dl");
  const s = user.session;
  const rows = [
    ["sub", user.sub],
    ["email", user.email || "–"],
    ["session started", clock(s.created_at)],
    ["session ends at the latest", clock(s.expires_at)],
    ["idle timeout at", clock(s.idle_expires_at)],
    ["access token valid until", s.access_token_expires_at ? clock(s.access_token_expires_at) : "–"],
    ["login level (acr)", user.acr || "–"],
    ["authenticated at (auth_time)", user.auth_time ? clock(user.auth_time) : "–"],
  ];
  for (const [term, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
  box.append(name, list);
}

// bff refreshes tokens by itself; the SPA only sees the access token's expiry move (never the token).
function noteExpiry(expiresAt) {
  if (lastExpiry !== null && expiresAt !== null && expiresAt !== lastExpiry) {
    const now = clock(Date.now() / 1000);
    $("refreshed").textContent = `Tokens refreshed at ${now}: the access token is now valid until ${clock(expiresAt)}.`;
    $("refreshed").classList.add("flash");
  }
  lastExpiry = expiresAt;
}

// slide=false: polling must not keep an abandoned tab's session alive.
async function loadUser(slide) {
  let response;
  try {
    response = await fetch(slide ? "/bff/user" : "/bff/user?slide=false", { headers: CSRF, cache: "no-store" });
  } catch (exc) {
    showError("network", exc.message, 0);
    return;
  }
  if (response.ok) {
    user = await response.json();
    renderUser();
    noteExpiry(user.session.access_token_expires_at);
    return;
  }
  const wasLoggedIn = user !== null;
  const err = await readError(response);
  user = null;
  lastExpiry = null;
  renderUser();
  // Not being logged in is the normal state on a first visit; anything else (or losing a session) is shown.
  if (err.error !== "unauthenticated" || wasLoggedIn) {
    showError(err.error, err.message, response.status, response.headers.get("Retry-After"));
  }
}

// step_up_required (RFC 9470, docs/step-up.md): navigate to bff's login_url, which comes back to this page; the
// call is then retried once (a second step_up_required is shown, never followed: no loop).
function stepUp(body, method, path, retried) {
  const url = body.login_url;
  if (retried || typeof url !== "string" || !url.startsWith("/bff/login?")) return false;
  sessionStorage.setItem(STEP_UP_RETRY, JSON.stringify({ method, path }));
  location.assign(url + "&returnTo=" + encodeURIComponent(location.pathname));
  return true;
}

async function callApi(path, method = "GET", retried = false) {
  clearError();
  const result = $("result");
  result.textContent = `${method} ${path} …`;
  const started = performance.now();
  let response;
  try {
    response = await fetch(path, { method, headers: CSRF, cache: "no-store" });
  } catch (exc) {
    result.textContent = `${method} ${path}: no answer`;
    showError("network", exc.message, 0);
    return;
  }
  const ms = Math.round(performance.now() - started);
  if (response.ok) {
    const body = await response.json();
    const again = retried ? " (retried after the step-up login)" : "";
    result.textContent = `${method} ${path} → HTTP ${response.status} in ${ms} ms${again}\n${JSON.stringify(body, null, 2)}`;
  } else {
    let body = {};
    try {
      body = await response.clone().json();
    } catch {
      // not JSON: readError below says so
    }
    if (body.error === "step_up_required" && stepUp(body, method, path, retried)) {
      result.textContent = `${method} ${path} → HTTP 401 step_up_required: logging in again…`;
      return;
    }
    const err = await readError(response);
    result.textContent = `${method} ${path} → HTTP ${response.status} ${err.error} in ${ms} ms`;
    showError(err.error, err.message, response.status, response.headers.get("Retry-After"));
  }
  await loadUser(false); // did bff refresh the tokens for this call? did the session end?
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return { event, data: data.join("\n") };
}

function addTick(text) {
  const item = document.createElement("li");
  item.textContent = text;
  $("ticks").append(item);
}

function stopTicks() {
  if (ticksAbort) ticksAbort.abort();
  ticksAbort = null;
}

async function startTicks() {
  stopTicks();
  clearError();
  $("ticks").replaceChildren();
  const controller = new AbortController();
  ticksAbort = controller;
  let response;
  try {
    response = await fetch("/api/ticks?n=10", {
      headers: { ...CSRF, Accept: "text/event-stream" },
      cache: "no-store",
      signal: controller.signal,
    });
  } catch (exc) {
    if (!controller.signal.aborted) showError("network", exc.message, 0);
    return;
  }
  if (!response.ok) {
    const err = await readError(response);
    showError(err.error, err.message, response.status, response.headers.get("Retry-After"));
    await loadUser(false);
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = (buffer + value).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const { event, data } = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event === "tick") {
          const tick = JSON.parse(data);
          addTick(`tick ${tick.tick} of ${tick.of} at ${clock(tick.at)}`);
        } else if (event === "done") {
          addTick("done");
        }
      }
    }
  } catch (exc) {
    if (!controller.signal.aborted) showError("network", `the stream broke: ${exc.message}`, 0);
  } finally {
    if (ticksAbort === controller) ticksAbort = null;
  }
}

// The WebSocket: same origin, so the browser sends the session cookie and Origin; no token, no X-CSRF.
let live = null;

function addLive(text) {
  const list = $("ws-messages");
  const item = document.createElement("li");
  item.textContent = text;
  list.prepend(item);
  while (list.children.length > 20) list.lastElementChild.remove();
}

function connectLive() {
  if (live) live.close(1000);
  clearError();
  $("ws-messages").replaceChildren();
  const socket = new WebSocket(location.origin.replace(/^http/, "ws") + "/api/live");
  live = socket;
  $("ws-status").textContent = "Connecting…";
  socket.addEventListener("open", () => {
    $("ws-status").textContent = "Connected.";
  });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.tick !== undefined) addLive(`tick ${message.tick} for ${message.for} at ${clock(message.at)}`);
    else if (message.chat !== undefined) addLive(`${message.from}: ${message.chat}`);
  });
  socket.addEventListener("close", (event) => {
    if (live === socket) live = null;
    const why = event.code === 4401 ? " (the session ended)" : event.code === 4408 ? " (idle)" : "";
    $("ws-status").textContent = `Closed with code ${event.code}${why}.`;
    if (event.code === 4401 || event.code === 1006) loadUser(false); // 1006: the handshake was refused (401)
  });
}

function disconnectLive() {
  if (live) live.close(1000);
}

function sendLive() {
  if (live && live.readyState === WebSocket.OPEN) live.send($("ws-text").value);
}

// The IdP's admin page ("log out everywhere", token families) is learnt from the API's public info route
// (a bff route with token = "none"), so this page hard-codes no other origin.
async function linkAdminPage() {
  try {
    const response = await fetch("/api/public/info", { headers: CSRF, cache: "no-store" });
    if (!response.ok) return;
    const info = await response.json();
    for (const id of ["idp-admin", "idp-admin-reuse"]) $(id).href = info.admin_url;
  } catch {
    // the links stay inert; the rest of the page works
  }
}

function listErrorCodes() {
  const list = $("codes");
  for (const [code, meaning] of Object.entries(ERRORS)) {
    const dt = document.createElement("dt");
    const name = document.createElement("code");
    name.textContent = code;
    dt.append(name);
    const dd = document.createElement("dd");
    dd.textContent = meaning;
    list.append(dt, dd);
  }
}

function start() {
  $("login").addEventListener("click", login);
  $("logout").addEventListener("click", logout);
  $("call-me").addEventListener("click", () => callApi("/api/me"));
  $("call-items").addEventListener("click", () => callApi("/api/items"));
  $("call-admin").addEventListener("click", () => callApi("/api/admin/stats"));
  $("call-slow").addEventListener("click", () => callApi("/api/slow?seconds=2"));
  $("call-reports").addEventListener("click", () => callApi("/api/reports/summary"));
  $("call-admin-action").addEventListener("click", () => callApi("/api/admin/actions", "POST"));
  $("start-ticks").addEventListener("click", startTicks);
  $("stop-ticks").addEventListener("click", stopTicks);
  $("ws-connect").addEventListener("click", connectLive);
  $("ws-disconnect").addEventListener("click", disconnectLive);
  $("ws-send").addEventListener("click", sendLive);
  listErrorCodes();
  linkAdminPage();
  loadUser(true);
  const retry = sessionStorage.getItem(STEP_UP_RETRY);
  if (retry !== null) {
    sessionStorage.removeItem(STEP_UP_RETRY);
    const { method, path } = JSON.parse(retry);
    callApi(path, method, true);
  }
  pollTimer = setInterval(() => {
    if (user !== null && document.visibilityState === "visible") loadUser(false);
  }, POLL_MS);
}

start();
