// The dashboard's session: who is logged in, the CSRF token on every change, 401 -> login page,
// role-aware controls (switch over, log out) in the header. Loaded before app.js.
(() => {
  "use strict";
  const API = "/api/v1";
  const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);
  const ACTIVITY_EVERY_MS = 60_000; // a person using the page keeps the login alive
  const nativeFetch = window.fetch.bind(window);
  let csrf = null;
  let redirecting = false;

  function toLogin() {
    if (redirecting) return;
    redirecting = true;
    location.replace("/login");
  }

  // Every request of the page goes through here: the CSRF token on changes, and an ended login
  // sends the person to the login page instead of leaving a dashboard that silently fails.
  window.fetch = async (input, init = {}) => {
    const method = (init.method || "GET").toUpperCase();
    const headers = new Headers(init.headers || {});
    if (!SAFE.has(method) && csrf) headers.set("X-CSRF-Token", csrf);
    const response = await nativeFetch(input, { ...init, headers, credentials: "same-origin" });
    if (response.status === 401) toLogin();
    return response;
  };

  // A live stream ends when the login does; EventSource cannot show the 401, so ask.
  const NativeEventSource = window.EventSource;
  window.EventSource = function (url, options) {
    const source = new NativeEventSource(url, options);
    source.addEventListener("error", () => { whoAmI().catch(() => {}); });
    return source;
  };
  window.EventSource.prototype = NativeEventSource.prototype;

  async function whoAmI() {
    const response = await window.fetch(API + "/session", { cache: "no-store" });
    if (!response.ok) throw new Error(`session: HTTP ${response.status}`);
    const info = await response.json();
    csrf = info.csrf_token;
    return info;
  }

  function button(text, testid) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.dataset.testid = testid;
    return b;
  }

  function say(text) {
    const msg = document.getElementById("session-msg");
    if (msg) msg.textContent = text;
  }

  async function switchover() {
    say("switching over…");
    const response = await window.fetch(API + "/switchover", { method: "POST" });
    let body = {};
    try { body = await response.json(); } catch (err) { /* not JSON */ }
    if (response.ok) say(`switchover done: ${body.to || "peer"} is master`);
    else say(`switchover refused: ${body.detail || response.status}`);
  }

  async function logout() {
    await window.fetch(API + "/logout", { method: "POST" });
    toLogin();
  }

  function render(info) {
    const box = document.createElement("div");
    box.className = "session";
    box.dataset.testid = "session";
    const who = document.createElement("span");
    who.className = "who";
    who.dataset.testid = "session-user";
    who.textContent = `${info.user} (${info.role})`;
    const mayOperate = info.role === "operator" || info.role === "admin";
    const sw = button("Switch over", "switchover");
    sw.disabled = !mayOperate;
    sw.title = mayOperate ? "Hand the master role to the peer (no gap, no duplicate)"
      : "Needs the operator role";
    sw.addEventListener("click", () => { switchover().catch((err) => say(String(err))); });
    const out = button("Log out", "logout");
    out.hidden = info.kind !== "session";
    out.addEventListener("click", () => { logout().catch(toLogin); });
    const msg = document.createElement("span");
    msg.id = "session-msg";
    msg.className = "session-msg";
    msg.dataset.testid = "session-msg";
    msg.setAttribute("role", "status");
    box.append(who, sw, out, msg);
    const banner = document.getElementById("banner");
    (banner || document.body).append(box);
  }

  let lastActivity = Date.now();
  function onActivity() {
    if (Date.now() - lastActivity < ACTIVITY_EVERY_MS) return;
    lastActivity = Date.now();
    whoAmI().catch(() => {});
  }
  for (const kind of ["pointerdown", "keydown", "wheel"]) {
    window.addEventListener(kind, onActivity, { passive: true });
  }

  const ready = whoAmI();
  window.tandemSession = ready; // app.js or tests may wait for it
  const whenDom = document.readyState === "loading"
    ? new Promise((resolve) => document.addEventListener("DOMContentLoaded", resolve, { once: true }))
    : Promise.resolve();
  Promise.all([ready, whenDom]).then(([info]) => render(info)).catch(() => {});
})();
