// Tandem dashboard: a snapshot from the REST API at load, then live server-sent events.
"use strict";

(() => {
  const API = "/api/v1";
  const CHART_WINDOW_MS = 60_000;
  const TIMELINE_MAX = 200;
  const HISTORY_MAX = 4000; // points per tag; far more than 60 s at any sane poll rate

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
    tags: new Map(),      // key -> TagValue
    rows: new Map(),      // key -> <tr>
    history: new Map(),   // key -> [[ts_ms, number], ...]
    selected: null,
    // Server time as last seen and when: the chart scrolls on server time, so a skewed
    // browser clock cannot push the data off screen.
    serverTs: 0,
    serverSeenAt: 0,
    uptime: null,         // [uptime_s, performance.now() when received]
    everConnected: false,
  };

  const keyOf = (t) => `${t.device}/${t.group}/${t.tag}`;
  const serverNow = () => state.serverTs ? state.serverTs + (performance.now() - state.serverSeenAt) : Date.now();

  function fmtValue(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "boolean") return v ? "true" : "false";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      const a = Math.abs(v);
      return a !== 0 && (a < 1e-3 || a >= 1e7) ? v.toExponential(3) : String(+v.toFixed(4));
    }
    return String(v);
  }
  const fmtRate = (r) => (r >= 100 ? r.toFixed(0) : r.toFixed(1));
  const fmtInt = (n) => Number(n).toLocaleString("en-US");
  function fmtDuration(s) {
    s = Math.max(0, Math.floor(s));
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s % 60}s`;
    return `${s}s`;
  }
  function fmtAge(ms) {
    if (ms < 0) ms = 0;
    if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
    return fmtDuration(ms / 1000);
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

  // ---------------------------------------------------------------- tags
  function numeric(v) {
    if (typeof v === "number" && Number.isFinite(v)) return v;
    if (typeof v === "boolean") return v ? 1 : 0;
    return null;
  }

  function rowFor(t, key) {
    let row = state.rows.get(key);
    if (row) return row;
    row = el("tr", { dataset: { key, tag: t.tag, device: t.device, group: t.group } },
      el("td", { class: "c-device", textContent: t.device }),
      el("td", { class: "c-group", textContent: t.group }),
      el("td", { class: "tag", textContent: t.tag }),
      el("td", { class: "value" }),
      el("td", { class: "error" }),
      el("td", { class: "slot num" }),
      el("td", { class: "age num" }));
    row.addEventListener("click", () => select(key));
    state.rows.set(key, row);
    // Keep the table in a stable, readable order however updates arrive.
    const body = $("tags");
    const after = [...state.rows.keys()].sort().find((k) => k > key);
    const next = after !== undefined && after !== key ? state.rows.get(after) : null;
    body.insertBefore(row, next && next.parentNode === body ? next : null);
    return row;
  }

  function upsertTags(list, { flash = true } = {}) {
    for (const t of list) {
      const key = keyOf(t);
      const prev = state.tags.get(key);
      state.tags.set(key, t);
      if (t.timestamp_ms > state.serverTs) {
        state.serverTs = t.timestamp_ms;
        state.serverSeenAt = performance.now();
      }
      const row = rowFor(t, key);
      const cell = row.querySelector("td.value");
      const text = t.error ? "—" : fmtValue(t.value);
      if (cell.textContent !== text) {
        cell.textContent = text;
        if (flash && prev) {
          cell.classList.add("changed");
          requestAnimationFrame(() => requestAnimationFrame(() => cell.classList.remove("changed")));
        }
      }
      row.dataset.error = t.error ? String(t.error) : "";
      const err = row.querySelector("td.error");
      err.replaceChildren(t.error ? el("span", { class: "errcode", textContent: String(t.error) }) : "");
      row.querySelector("td.slot").textContent = String(t.slot);

      const n = t.error ? null : numeric(t.value);
      if (n !== null) {
        let h = state.history.get(key);
        if (!h) state.history.set(key, (h = []));
        if (!h.length || h[h.length - 1][0] < t.timestamp_ms) h.push([t.timestamp_ms, n]);
        if (h.length > HISTORY_MAX) h.splice(0, h.length - HISTORY_MAX);
      }
    }
    $("tag-count").textContent = state.tags.size ? String(state.tags.size) : "";
    $("tags-empty").hidden = state.tags.size > 0;
    tickAges();
    if (!state.selected && state.tags.size) {
      const first = [...state.tags.keys()].sort().find((k) => state.history.has(k));
      if (first) select(first);
    }
    chart.dirty = true;
  }

  function tickAges() {
    const now = serverNow();
    for (const [key, t] of state.tags) {
      state.rows.get(key).querySelector("td.age").textContent = fmtAge(now - t.timestamp_ms);
    }
  }

  function select(key) {
    if (state.selected) state.rows.get(state.selected)?.classList.remove("selected");
    state.selected = key;
    state.rows.get(key)?.classList.add("selected");
    $("chart-title").textContent = key;
    $("chart").dataset.tag = key;
    chart.dirty = true;
  }

  // ---------------------------------------------------------------- chart
  const chart = { dirty: true };

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // Axis bounds and ticks on a 1-2-5 grid, so the labels read as round numbers.
  function niceTicks(min, max, target = 4) {
    if (min === max) { const pad = Math.abs(min) * 0.1 || 1; min -= pad; max += pad; }
    const raw = (max - min) / target;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const lo = Math.floor(min / step) * step, hi = Math.ceil(max / step) * step;
    const ticks = [];
    for (let v = lo; v <= hi + step / 2; v += step) ticks.push(+v.toPrecision(12));
    return { lo, hi, ticks };
  }

  function drawChart() {
    const canvas = $("chart");
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);

    const text = cssVar("--muted"), line = cssVar("--line"), accent = cssVar("--accent");
    const padL = 56, padR = 12, padT = 10, padB = 22;
    const pw = w - padL - padR, ph = h - padT - padB;
    const right = serverNow(), left = right - CHART_WINDOW_MS;
    const x = (ts) => padL + ((ts - left) / CHART_WINDOW_MS) * pw;

    ctx.font = `11px ${cssVar("--mono")}`;
    ctx.fillStyle = text;
    ctx.strokeStyle = line;
    ctx.lineWidth = 1;

    // Time grid every 10 s, aligned to the wall clock so lines scroll rather than jump.
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let t = Math.ceil(left / 10_000) * 10_000; t <= right; t += 10_000) {
      const gx = Math.round(x(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(gx, padT); ctx.lineTo(gx, padT + ph); ctx.stroke();
      if (gx > padL + 24 && gx < padL + pw - 24) ctx.fillText(fmtClock(t), gx, padT + ph + 6);
    }

    const hist = state.selected ? state.history.get(state.selected) : null;
    const pts = hist ? hist.filter(([ts]) => ts >= left - 2000) : [];
    const current = state.selected ? state.tags.get(state.selected) : null;
    $("chart-last").textContent = current ? (current.error ? `error ${current.error}` : fmtValue(current.value)) : "";
    if (!pts.length) {
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(state.selected ? "no numeric data in the last minute" : "select a tag", padL + pw / 2, padT + ph / 2);
      return;
    }

    let min = Infinity, max = -Infinity;
    for (const [, v] of pts) { if (v < min) min = v; if (v > max) max = v; }
    const { lo, hi, ticks } = niceTicks(min, max);
    const y = (v) => padT + ph - ((v - lo) / (hi - lo)) * ph;

    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of ticks) {
      const gy = Math.round(y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(padL, gy); ctx.lineTo(padL + pw, gy); ctx.stroke();
      ctx.fillText(fmtValue(v), padL - 6, gy);
    }

    ctx.save();
    ctx.beginPath();
    ctx.rect(padL, padT, pw, ph);
    ctx.clip();
    // Soft fill under the line, then the line: readable at a glance in both themes.
    ctx.beginPath();
    pts.forEach(([ts, v], i) => (i ? ctx.lineTo(x(ts), y(v)) : ctx.moveTo(x(ts), y(v))));
    ctx.lineTo(x(pts[pts.length - 1][0]), padT + ph);
    ctx.lineTo(x(pts[0][0]), padT + ph);
    ctx.closePath();
    ctx.globalAlpha = 0.12;
    ctx.fillStyle = accent;
    ctx.fill();
    ctx.globalAlpha = 1;
    ctx.beginPath();
    pts.forEach(([ts, v], i) => (i ? ctx.lineTo(x(ts), y(v)) : ctx.moveTo(x(ts), y(v))));
    ctx.strokeStyle = accent;
    ctx.lineWidth = 1.75;
    ctx.lineJoin = "round";
    ctx.stroke();
    const [lts, lv] = pts[pts.length - 1];
    ctx.beginPath();
    ctx.arc(x(lts), y(lv), 3, 0, Math.PI * 2);
    ctx.fillStyle = accent;
    ctx.fill();
    ctx.restore();
  }

  // Redraw a few times a second so the time axis scrolls even when the value is constant.
  setInterval(() => { chart.dirty = true; }, 250);
  (function frame() {
    if (chart.dirty && !document.hidden) { chart.dirty = false; drawChart(); }
    requestAnimationFrame(frame);
  })();
  window.addEventListener("resize", () => { chart.dirty = true; });

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
  async function getJson(path) {
    const r = await fetch(API + path, { cache: "no-store" });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  async function loadSnapshot() {
    const [status, tags, timeline] = await Promise.all([
      getJson("/status"), getJson("/tags"), getJson(`/timeline?limit=${TIMELINE_MAX}`),
    ]);
    renderStatus(status);
    upsertTags(tags, { flash: false });
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
    source.addEventListener("error", () => setLive("reconnecting", "reconnecting…"));
    source.addEventListener("tags", (m) => upsertTags(JSON.parse(m.data)));
    source.addEventListener("status", (m) => renderStatus(JSON.parse(m.data)));
    source.addEventListener("timeline", (m) => addTimeline(JSON.parse(m.data)));
  }

  setInterval(() => { tickUptime(); tickAges(); }, 1000);
  loadSnapshot().catch((err) => { console.warn(err); setLive("reconnecting", "API unreachable"); }).finally(connect);
})();
