// Tandem dashboard: the tag table. The node filters and sorts its whole tag list; the page
// shows a window of it, virtualized (only rows on screen exist in the DOM), and tells the node
// which window it shows, so the event stream carries changes of those rows only.
"use strict";

window.TandemTags = (() => {
  const ROW_H = 28; // px, the fixed row height in style.css (.tag-table tbody tr)
  const OVERSCAN = 8; // rows kept in the DOM above and below the visible ones
  const FETCH_SCREENS = 1; // screens of rows fetched (and watched) beyond the visible ones
  const MAX_WINDOW = 500; // the node's limit per request
  const SEARCH_DEBOUNCE_MS = 200;

  // Server time as last seen and when: ages and the trend run on the node's clock, so a
  // skewed browser clock cannot push the data off screen.
  const clock = {
    ts: 0,
    at: 0,
    note(ts) {
      if (ts > this.ts) { this.ts = ts; this.at = performance.now(); }
    },
    now() { return this.ts ? this.ts + (performance.now() - this.at) : Date.now(); },
  };

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
  const fmtInt = (n) => Number(n).toLocaleString("en-US");
  function fmtAge(ms) {
    if (ms < 0) ms = 0;
    const s = ms / 1000;
    if (s < 10) return `${s.toFixed(1)} s`;
    if (s < 60) return `${Math.floor(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
    return `${Math.floor(s / 3600)}h ${Math.floor(s / 60) % 60}m`;
  }
  const groupOf = (key) => key.split("/", 2).join("/");

  function cell(cls) {
    const td = document.createElement("td");
    td.className = cls;
    return td;
  }

  function mount({ getJson, putJson, trend }) {
    const $ = (id) => document.getElementById(id);
    const scroller = $("tag-scroll"), body = $("tags"), head = $("tag-head");
    const search = $("tag-search"), deviceSel = $("tag-device"), groupSel = $("tag-group");
    const errorSel = $("tag-error");

    const st = {
      query: { search: "", device: null, group: null, error: "any", sort: "device", desc: false },
      sid: null,
      seq: 0, // of the newest request; pages and rows of older ones are stale
      total: 0,
      catalogTotal: null,
      offset: 0,
      keys: [], // keys[i] is row offset + i of the filtered list
      rows: new Map(), // key -> row of the fetched window
      groups: new Map(), // "device/group" -> {timestamp_ms, slot} of its newest poll
      inflight: false,
      again: false,
      facets: "",
      shown: new Map(), // key -> <tr> now on screen
      marked: new Set(), // value cells marked as just changed
      renderQueued: false,
    };

    // Two spacer rows stand in for the rows above and below the rendered ones, so the
    // scrollbar is that of the whole filtered list.
    const spacer = () => {
      const tr = document.createElement("tr");
      tr.className = "pad";
      tr.setAttribute("aria-hidden", "true");
      const td = document.createElement("td");
      td.colSpan = 7;
      tr.append(td);
      return tr;
    };
    const padTop = spacer(), padBottom = spacer();
    body.replaceChildren(padTop, padBottom);
    const pool = [];

    function newRow() {
      const tr = document.createElement("tr");
      tr.append(cell("c-device"), cell("c-group"), cell("tag"), cell("value"), cell("error"),
        cell("slot num"), cell("age num"));
      tr.addEventListener("click", (ev) => {
        const key = tr.dataset.key;
        const row = key && st.rows.get(key);
        if (row) trend.choose(row.key, row.kind, ev.ctrlKey || ev.metaKey || ev.shiftKey);
      });
      return tr;
    }

    // ---------------------------------------------------------------- rendering
    function fill(tr, row, index) {
      const c = tr.children;
      tr.dataset.index = String(index);
      if (!row) {
        if (tr.dataset.key) {
          delete tr.dataset.key; delete tr.dataset.tag; delete tr.dataset.device;
          for (const td of c) td.textContent = "";
          tr.className = "loading";
        }
        return;
      }
      if (tr.dataset.key !== row.key) {
        tr.dataset.key = row.key;
        tr.dataset.tag = row.tag;
        tr.dataset.device = row.device;
        tr.dataset.group = row.group;
        tr.dataset.kind = row.kind;
        c[0].textContent = row.device;
        c[1].textContent = row.group;
        c[2].textContent = row.tag;
        c[2].title = row.key;
        if (window.TandemWrite) window.TandemWrite.decorate(tr);
        tr.className = "";
        c[3].textContent = "";
        c[3].classList.remove("changed");
      }
      tr.classList.toggle("selected", trend.has(row.key));
      tr.style.setProperty("--series", trend.colorOf(row.key) || "transparent");
      fillState(tr, row, false);
      fillPoll(tr, row);
    }

    // Writing the same text again still replaces the text node and invalidates layout.
    function setText(td, text) {
      if (td.textContent !== text) td.textContent = text;
    }

    // A changed value is marked until the next update or tick; no CSS transition, which
    // would make the browser paint 60 frames a second while values change four times.
    function fillState(tr, row, changed) {
      const c = tr.children;
      const text = row.error ? "—" : fmtValue(row.value);
      if (c[3].textContent !== text) {
        c[3].textContent = text;
        if (changed) { c[3].classList.add("changed"); st.marked.add(c[3]); }
      }
      const err = row.error ? String(row.error) : "";
      if (tr.dataset.error !== err) {
        tr.dataset.error = err;
        c[4].textContent = err;
      }
    }

    // Slot and age of the group's newest poll: once a second, not with every value.
    function fillPoll(tr, row) {
      const c = tr.children;
      const fresh = st.groups.get(groupOf(row.key));
      setText(c[5], fresh ? String(fresh.slot) : row.slot == null ? "" : String(row.slot));
      const ts = fresh ? fresh.timestamp_ms : row.timestamp_ms;
      setText(c[6], ts == null ? "–" : fmtAge(clock.now() - ts));
    }

    function unmark() {
      for (const td of st.marked) td.classList.remove("changed");
      st.marked.clear();
    }

    function headerHeight() {
      return head.offsetHeight || 0;
    }

    function render() {
      st.renderQueued = false;
      const top = Math.max(0, scroller.scrollTop - headerHeight());
      const h = scroller.clientHeight;
      const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
      const last = Math.min(st.total, Math.ceil((top + h) / ROW_H) + OVERSCAN);
      padTop.firstChild.style.height = `${first * ROW_H}px`;
      padBottom.firstChild.style.height = `${Math.max(0, st.total - last) * ROW_H}px`;
      const count = Math.max(0, last - first);
      while (pool.length < count) pool.push(newRow());
      // Rows in the DOM: exactly the pool's first `count`, between the two pads.
      const live = body.children.length - 2;
      if (live !== count) {
        const frag = document.createDocumentFragment();
        for (let i = 0; i < count; i++) frag.append(pool[i]);
        for (let i = count; i < pool.length; i++) pool[i].remove();
        body.insertBefore(frag, padBottom);
      }
      st.shown.clear();
      for (let i = 0; i < count; i++) {
        const index = first + i;
        const key = st.keys[index - st.offset];
        const row = key === undefined ? null : st.rows.get(key);
        fill(pool[i], row, index);
        if (row) st.shown.set(row.key, pool[i]);
      }
      const visFirst = Math.floor(top / ROW_H), visLast = Math.min(st.total, Math.ceil((top + h) / ROW_H));
      const covered = visFirst >= st.offset && visLast <= st.offset + st.keys.length;
      if (!covered && st.total > 0) requestView();
    }

    function queueRender() {
      if (!st.renderQueued) { st.renderQueued = true; requestAnimationFrame(render); }
    }

    function windowFor() {
      const top = Math.max(0, scroller.scrollTop - headerHeight());
      const screen = Math.ceil((scroller.clientHeight || 600) / ROW_H) + 1;
      const visFirst = Math.floor(top / ROW_H);
      const offset = Math.max(0, visFirst - screen * FETCH_SCREENS);
      return { offset, limit: Math.min(MAX_WINDOW, screen * (1 + 2 * FETCH_SCREENS)) };
    }

    // ---------------------------------------------------------------- the node's view
    function viewRequest() {
      const q = st.query;
      const body = { search: q.search, error: q.error, sort: q.sort, desc: q.desc, ...windowFor() };
      if (q.device) body.device = q.device;
      if (q.group) body.group = q.group;
      return body;
    }

    async function fetchPage(req, seq) {
      if (st.sid) {
        const path = `/live/${encodeURIComponent(st.sid)}`;
        const page = await putJson(path, { ...req, seq, trend: trend.keys() });
        if (page) return page;
        st.sid = null; // the stream ended; until it is back, plain pages
      }
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(req)) params.set(k, String(v));
      return getJson(`/tags/page?${params}`);
    }

    // The first screen: the unfiltered top of the list, already asked for by early.js.
    async function loadFirst() {
      if (!window.TandemEarly || st.seq !== 0) return requestView();
      const seq = ++st.seq;
      try {
        const page = await getJson(TandemEarly.FIRST_TAGS);
        if (seq === st.seq) applyPage(page, { now: true });
      } catch (err) {
        console.warn(err);
      }
      if (st.sid) requestView(); // the stream came first: tell the node what is shown
    }

    async function requestView() {
      if (st.inflight) { st.again = true; return; }
      st.inflight = true;
      try {
        do {
          st.again = false;
          const seq = ++st.seq;
          const page = await fetchPage(viewRequest(), seq);
          if (seq === st.seq) applyPage(page);
        } while (st.again);
      } catch (err) {
        console.warn(err);
      } finally {
        st.inflight = false;
      }
    }

    function applyPage(page, { now = false } = {}) {
      st.total = page.total;
      st.catalogTotal = page.catalog_total;
      st.offset = page.offset;
      st.keys = page.rows.map((r) => r.key);
      st.rows = new Map(page.rows.map((r) => [r.key, r]));
      for (const r of page.rows) if (r.timestamp_ms != null) clock.note(r.timestamp_ms);
      renderFacets(page);
      renderCount();
      if (now) render(); else queueRender();
      // After the rows are on screen: building the chart is the slower part of the first frame.
      setTimeout(() => trend.offerDefault(page.default_trend), 0);
    }

    function renderFacets(page) {
      const sig = JSON.stringify([page.devices, page.groups]);
      if (sig === st.facets) return;
      st.facets = sig;
      const options = (sel, values, all) => {
        const current = sel.value;
        const opts = [new Option(all, "")].concat(values.map((v) => new Option(v, v)));
        sel.replaceChildren(...opts);
        sel.value = values.includes(current) ? current : "";
      };
      options(deviceSel, page.devices, "All devices");
      options(groupSel, page.groups, "All groups");
    }

    function renderCount() {
      const total = st.total, all = st.catalogTotal ?? 0;
      $("tag-count").textContent = all === 0 ? "" : total === all ? fmtInt(all) : `${fmtInt(total)} of ${fmtInt(all)}`;
      const empty = $("tags-empty");
      empty.hidden = total > 0 || st.catalogTotal === null;
      empty.textContent = all === 0 ? "No tags configured." : "No tags match the filter.";
    }

    // ---------------------------------------------------------------- live updates
    function onRows(data) {
      unmark();
      for (const g of data.groups || []) {
        st.groups.set(`${g.device}/${g.group}`, g);
        clock.note(g.timestamp_ms);
      }
      for (const u of data.rows || []) {
        const row = st.rows.get(u.key);
        if (!row || (row.timestamp_ms != null && u.timestamp_ms < row.timestamp_ms)) continue;
        row.value = u.value;
        row.error = u.error;
        row.timestamp_ms = u.timestamp_ms;
        const tr = st.shown.get(u.key);
        if (tr) fillState(tr, row, true);
      }
    }

    function onPage(page) {
      if (page.seq === st.seq) applyPage(page);
    }

    function tick() {
      unmark();
      for (const [key, tr] of st.shown) {
        const row = st.rows.get(key);
        if (row) fillPoll(tr, row); // else a new window is fetched and not yet drawn
      }
    }

    // ---------------------------------------------------------------- controls
    function requery() {
      scroller.scrollTop = 0;
      st.keys = [];
      st.rows = new Map();
      st.offset = 0;
      requestView();
    }
    let searchTimer = 0;
    search.addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => { st.query.search = search.value.trim(); requery(); }, SEARCH_DEBOUNCE_MS);
    });
    deviceSel.addEventListener("change", () => { st.query.device = deviceSel.value || null; requery(); });
    groupSel.addEventListener("change", () => { st.query.group = groupSel.value || null; requery(); });
    errorSel.addEventListener("change", () => { st.query.error = errorSel.value; requery(); });
    for (const th of head.querySelectorAll("th[data-sort]")) {
      th.addEventListener("click", () => {
        const column = th.dataset.sort;
        st.query.desc = st.query.sort === column ? !st.query.desc : false;
        st.query.sort = column;
        for (const other of head.querySelectorAll("th[data-sort]")) other.removeAttribute("aria-sort");
        th.setAttribute("aria-sort", st.query.desc ? "descending" : "ascending");
        requery();
      });
    }
    scroller.addEventListener("scroll", queueRender, { passive: true });
    new ResizeObserver(queueRender).observe(scroller);

    return {
      // A new event stream: tell the node what this page shows, so its rows follow.
      attach(sid) {
        st.sid = sid;
        if (st.seq > 0) requestView(); // else the first page's answer will
      },
      detach() { st.sid = null; },
      load: loadFirst,
      // The trend's tags changed: only a live view (with a stream) watches them.
      refreshView() { if (st.sid) requestView(); },
      repaint: queueRender,
      onRows,
      onPage,
      tick,
    };
  }

  return { mount, clock, fmtValue, fmtInt, fmtAge, ROW_H };
})();
