// Tandem dashboard: a snapshot from the REST API at load, then live server-sent events.
// The tag table (tags.js) and the trend (trend.js) are their own modules; this file wires
// them to the event stream and renders status, devices, HA and the timeline.
"use strict";

(() => {
  const API = "/api/v1";
  const TIMELINE_MAX = 200;

  const $ = (id) => document.getElementById(id);
  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "class") node.className = v;
      else node[k] = v;
    }
    for (const child of children) node.append(child);
    return node;
  };

  const state = {
    uptime: null,         // [uptime_s, performance.now() when received]
    everConnected: false,
  };

  const fmtRate = (r) => (r >= 100 ? r.toFixed(0) : r.toFixed(1));
  const fmtInt = TandemTags.fmtInt;
  function fmtDuration(s) {
    s = Math.max(0, Math.floor(s));
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s % 60}s`;
    return `${s}s`;
  }
  const fmtClock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

  // ---------------------------------------------------------------- status
  function renderStatus(s) {
    document.title = `${s.role} · ${s.node} · Tandem`;
    $("node").textContent = s.node;
    // "MASTER (fenced by b, term 4)" is still coloured as a MASTER, with the detail kept.
    const base = String(s.role).split(" ")[0];
    state.role = s.role;
    $("role").textContent = state.stale ? `${s.role} (no contact)` : s.role;
    $("role").dataset.role = base;
    $("banner").dataset.role = base;
    $("term").textContent = String(s.term);
    $("standby-wrap").hidden = !s.standby_mode;
    $("standby").textContent = s.standby_mode || "";
    state.uptime = [s.uptime_s, performance.now()];
    tickUptime();

    $("outbox-depth").textContent = fmtInt(s.outbox.depth);
    $("overflow-dropped").textContent = `${fmtInt(s.outbox.overflow_dropped)} dropped on overflow`;
    const p = s.publisher;
    $("publish-rate").textContent = `${fmtRate(p.publish_rate)}/s`;
    $("values-rate").textContent = `${fmtRate(p.values_rate)} values/s`;
    $("published-total").textContent = fmtInt(p.published_total);
    $("reconnects").textContent = `${fmtInt(p.reconnects)} reconnects`;
    $("broker").textContent = p.connected ? "connected" : "disconnected";
    $("broker").dataset.connected = String(p.connected);
    $("broker-error").textContent = p.last_error || "\u00a0";

    renderDevices(s.devices);
    renderHa(s.ha, s.vrrp);
  }

  function renderDevices(devices) {
    const list = $("devices");
    list.replaceChildren(...devices.map((d) => {
      const groups = el("ul", { class: "groups" }, ...d.groups.map((g) => el("li", {},
        el("span", { class: "gname", textContent: g.name, title: `every ${g.interval} s` }),
        el("span", { textContent: `${fmtInt(g.polls)} polls` }),
        el("span", { class: g.errors ? "bad" : "", textContent: `${fmtInt(g.errors)} err` }),
        el("span", { textContent: g.last_latency_ms == null ? "–" : `${g.last_latency_ms.toFixed(1)} ms` }),
      )));
      const item = el("li", { class: "device", dataset: { device: d.name, connected: String(d.connected) } },
        el("div", { class: "device-head" },
          el("span", { class: "device-name", textContent: d.name }),
          el("span", { class: "device-state", textContent: d.connected ? "connected" : "disconnected" })),
        groups);
      if (d.paths && d.paths.length > 1) {
        const standby = d.paths.filter((p) => !p.active).map((p) => `${p.endpoint} ${p.connected ? "up" : "down"}`);
        item.append(el("div", {
          class: "device-path", dataset: { activePath: d.active_path || "" },
          textContent: `via ${d.active_path}`, title: `other paths: ${standby.join(", ")}; ${d.path_switches} switch(es)`,
        }));
      }
      if (d.last_error && !d.connected) item.append(el("div", { class: "device-error", textContent: d.last_error }));
      return item;
    }));
    const up = devices.filter((d) => d.connected).length;
    $("device-count").textContent = devices.length ? `${up}/${devices.length} up` : "";
    $("devices-empty").hidden = devices.length > 0;
  }

  const HA_LABELS = [
    ["peer", "Peer"], ["peer_state", "Peer state"], ["watermark_lag", "Watermark lag"],
    ["config_version", "Config"], ["peer_config_version", "Peer config"],
  ];
  function renderHa(ha, vrrp) {
    $("ha").hidden = !ha;
    if (!ha) return;
    const rows = [];
    for (const [k, label] of HA_LABELS) {
      if (ha[k] === null || ha[k] === undefined) continue;
      rows.push(el("dt", { textContent: label }), el("dd", { textContent: String(ha[k]) }));
    }
    if (ha.config_version && ha.peer_config_version && ha.config_version !== ha.peer_config_version) {
      rows.push(el("dt", { textContent: "" }), el("dd", { class: "errcode", textContent: "config differs from peer" }));
    }
    if (ha.last_failover) {
      const f = ha.last_failover;
      const when = f.ts_ms ? fmtClock(f.ts_ms) + " " : "";
      const gap = f.gap_ms !== undefined && f.gap_ms !== null ? ` · gap ${f.gap_ms} ms` : "";
      rows.push(el("dt", { textContent: "Last failover" }),
        el("dd", { textContent: when + (f.reason || f.message || JSON.stringify(f)) + gap }));
    }
    if (vrrp && vrrp.priority !== undefined) {
      rows.push(el("dt", { textContent: "VRRP priority" }), el("dd", { textContent: String(vrrp.priority) }));
    }
    $("ha-fields").replaceChildren(...rows);
  }

  function tickUptime() {
    if (!state.uptime) return;
    const [base, at] = state.uptime;
    $("uptime").textContent = fmtDuration(base + (performance.now() - at) / 1000);
  }

  // ---------------------------------------------------------------- timeline
  function timelineItem(e) {
    return el("li", { dataset: { kind: e.kind, ts: String(e.ts_ms) }, title: Object.keys(e.detail || {}).length ? JSON.stringify(e.detail) : "" },
      el("time", { dateTime: new Date(e.ts_ms).toISOString(), textContent: fmtClock(e.ts_ms) }),
      el("span", { class: "kind", dataset: { kind: e.kind }, textContent: e.kind }),
      el("span", { class: "msg", textContent: e.message }));
  }

  function renderTimeline(events) {
    // The API may answer oldest or newest first; the list always shows newest first.
    const sorted = [...events].sort((a, b) => b.ts_ms - a.ts_ms);
    $("timeline").replaceChildren(...sorted.slice(0, TIMELINE_MAX).map(timelineItem));
    $("timeline-empty").hidden = sorted.length > 0;
  }

  function addTimeline(e) {
    const list = $("timeline");
    list.prepend(timelineItem(e));
    while (list.children.length > TIMELINE_MAX) list.lastElementChild.remove();
    $("timeline-empty").hidden = true;
  }

  // ---------------------------------------------------------------- data
  // Every request of the page goes through these two, so their errors are handled alike.
  async function getJson(path) {
    const early = window.TandemEarly && TandemEarly.take(path);
    let r = early && (await early);
    // Asked again through auth.js when the early answer is a refusal: it knows what to do.
    if (!r || r.status === 401) r = await fetch(API + path, { cache: "no-store" });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  // The answer's JSON, or null for 404 (the caller decides what a missing thing means).
  // A change carries the session's CSRF token, which auth.js learns first.
  async function putJson(path, body) {
    if (window.tandemSession) await window.tandemSession.catch(() => null);
    const r = await fetch(API + path, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (r.status === 404) return null;
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  async function loadSnapshot() {
    const [status, timeline] = await Promise.all([
      getJson("/status"), getJson(`/timeline?limit=${TIMELINE_MAX}`), tags.load(),
    ]);
    renderStatus(status);
    renderTimeline(timeline);
  }

  function setLive(mode, text) {
    $("live").dataset.state = mode;
    $("live-text").textContent = text;
    // A dead node's page must not keep shouting MASTER: grey the banner until it answers.
    state.stale = mode !== "live";
    $("banner").dataset.stale = String(state.stale);
    if (state.role) $("role").textContent = state.stale ? `${state.role} (no contact)` : state.role;
  }

  function connect() {
    const source = new EventSource(API + "/events");
    source.addEventListener("open", () => {
      setLive("live", "live");
      // After a reconnect whatever happened in between is only in a fresh snapshot.
      if (state.everConnected) loadSnapshot().catch(console.warn);
      state.everConnected = true;
    });
    source.addEventListener("error", () => { tags.detach(); setLive("reconnecting", "reconnecting…"); });
    source.addEventListener("hello", (m) => tags.attach(JSON.parse(m.data).subscription));
    source.addEventListener("page", (m) => tags.onPage(JSON.parse(m.data)));
    source.addEventListener("rows", (m) => {
      const data = JSON.parse(m.data);
      tags.onRows(data);
      trend.onRows(data);
    });
    source.addEventListener("status", (m) => renderStatus(JSON.parse(m.data)));
    source.addEventListener("timeline", (m) => addTimeline(JSON.parse(m.data)));
  }

  // The trend's tags are part of the view the node is told about: changing them re-sends it.
  const trend = TandemTrend.mount({ getJson, clock: TandemTags.clock, onChange: () => { tags.refreshView(); tags.repaint(); } });
  const tags = TandemTags.mount({ getJson, putJson, trend });

  setInterval(() => { tickUptime(); tags.tick(); trend.tick(); }, 1000);
  loadSnapshot().catch((err) => { console.warn(err); setLive("reconnecting", "API unreachable"); }).finally(connect);
})();
