// Tandem dashboard: the trend. Up to eight numeric or boolean tags, each on its own scale,
// seeded from the node's recent buffer and extended by the page's live updates from load on.
"use strict";

window.TandemTrend = (() => {
  const MAX_TAGS = 8;
  const KEEP_MS = 30 * 60_000; // history a page keeps per tag, from the node's buffer and load
  // At most two redraws a second: on a two-minute axis a pixel is ~0.15 s, and every redraw
  // repaints the whole canvas (in software, on most edge boxes).
  const REDRAW_MS = 500;
  const PALETTE = ["--accent", "--info", "--ok", "--bad", "#b07be0", "#3fb5b0", "#e08a4a", "#8a94a3"];

  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const colour = (i) => (PALETTE[i].startsWith("--") ? cssVar(PALETTE[i]) : PALETTE[i]);
  const groupOf = (key) => key.split("/", 2).join("/");
  const fmtClock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

  function numeric(v) {
    if (typeof v === "number" && Number.isFinite(v)) return v;
    if (typeof v === "boolean") return v ? 1 : 0;
    return null;
  }

  // uPlot is evaluated only when the first trend is drawn, after the tag table is on screen
  // (index.html preloads the file, so it is already here by then).
  let chartLibrary = null;
  function loadChartLibrary() {
    if (window.uPlot) return Promise.resolve();
    if (!chartLibrary) {
      chartLibrary = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = "/static/uplot.iife.min.js";
        script.onload = resolve;
        script.onerror = () => { chartLibrary = null; reject(new Error("chart library did not load")); };
        document.head.append(script);
      });
    }
    return chartLibrary;
  }

  // First index with t[i] >= ts (t sorted ascending).
  function lowerBound(t, ts) {
    let lo = 0, hi = t.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (t[mid] < ts) lo = mid + 1; else hi = mid; }
    return lo;
  }

  function mount({ getJson, clock, onChange }) {
    const $ = (id) => document.getElementById(id);
    const host = $("trend"), chips = $("trend-tags"), windowSel = $("trend-window");
    const st = {
      keys: [], // the trended tags, in the order they were added
      colours: new Map(), // key -> palette index
      series: new Map(), // key -> {t: [ms], v: [number|null], kind}
      groups: new Map(), // "device/group" -> newest poll timestamp, to extend flat lines to now
      chosen: false, // the user picked (or cleared) the tags: no more default
      windowMs: Number(windowSel.value) * 1000,
      plot: null,
      dirty: true,
      lastDraw: 0,
    };

    // ---------------------------------------------------------------- choosing tags
    function has(key) { return st.colours.has(key); }
    function colorOf(key) { return st.colours.has(key) ? colour(st.colours.get(key)) : null; }

    function add(key, kind) {
      if (has(key) || st.keys.length >= MAX_TAGS) return;
      const used = new Set(st.colours.values());
      st.colours.set(key, [...PALETTE.keys()].find((i) => !used.has(i)));
      st.keys.push(key);
      if (!st.series.has(key)) st.series.set(key, { t: [], v: [], kind });
      else st.series.get(key).kind = kind;
      seed(key);
    }

    function remove(key) {
      st.keys = st.keys.filter((k) => k !== key);
      st.colours.delete(key);
    }

    // Click: chart this tag alone; with Ctrl/Shift/Cmd: add it to (or take it off) the trend.
    function choose(key, kind, additive) {
      if (kind === "text") return;
      st.chosen = true;
      if (additive) {
        if (has(key)) remove(key); else add(key, kind);
      } else {
        for (const k of [...st.keys]) if (k !== key) remove(k);
        add(key, kind);
      }
      changed();
    }

    function offerDefault(key) {
      if (st.chosen || st.keys.length || !key) return;
      st.chosen = true;
      add(key, "number");
      changed();
    }

    function changed() {
      renderChips();
      rebuild();
      onChange();
    }

    function renderChips() {
      chips.replaceChildren(...st.keys.map((key) => {
        const li = document.createElement("li");
        li.dataset.key = key;
        li.style.setProperty("--series", colorOf(key));
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = key;
        const last = document.createElement("span");
        last.className = "last";
        const x = document.createElement("button");
        x.type = "button";
        x.textContent = "×";
        x.title = `remove ${key} from the trend`;
        x.addEventListener("click", () => { st.chosen = true; remove(key); changed(); });
        li.append(name, last, x);
        return li;
      }));
      $("trend-hint").hidden = st.keys.length > 0;
    }

    // ---------------------------------------------------------------- data
    async function seed(key) {
      try {
        const [series] = await getJson(`/tags/history?key=${encodeURIComponent(key)}`);
        if (!series) return;
        const s = st.series.get(key);
        // The node's buffer first, then whatever this page has seen itself.
        const first = s.t.length ? s.t[0] : Infinity;
        const t = [], v = [];
        for (let i = 0; i < series.t.length && series.t[i] < first; i++) { t.push(series.t[i]); v.push(series.v[i]); }
        s.t = t.concat(s.t);
        s.v = v.concat(s.v);
        if (t.length) clock.note(t[t.length - 1]);
        st.dirty = true;
        redraw(false);
      } catch (err) {
        console.warn(err);
      }
    }

    function onRows(data) {
      for (const g of data.groups || []) st.groups.set(`${g.device}/${g.group}`, g.timestamp_ms);
      for (const u of data.rows || []) {
        const s = st.series.get(u.key);
        if (!s || !has(u.key)) continue;
        if (s.t.length && u.timestamp_ms <= s.t[s.t.length - 1]) continue;
        s.t.push(u.timestamp_ms);
        s.v.push(u.error ? null : numeric(u.value));
        const cut = lowerBound(s.t, u.timestamp_ms - KEEP_MS);
        if (cut > 0) { s.t.splice(0, cut); s.v.splice(0, cut); }
        st.dirty = true;
      }
      redraw(false);
    }

    // ---------------------------------------------------------------- chart
    function rebuild() {
      if (st.plot) { st.plot.destroy(); st.plot = null; }
      host.dataset.tags = st.keys.join(" ");
      if (!st.keys.length) return;
      if (!window.uPlot) {
        loadChartLibrary().then(rebuild, console.warn);
        return;
      }
      const axisStyle = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--line"), width: 1 }, ticks: { stroke: cssVar("--line") } };
      const timeAxis = { ...axisStyle, values: (u, splits) => splits.map((s) => fmtClock(s * 1000)) };
      const series = [{}], axes = [timeAxis];
      const scales = { x: { time: true } };
      st.keys.forEach((key, i) => {
        const s = st.series.get(key);
        const scale = `y${i}`;
        scales[scale] = { auto: true };
        series.push({
          label: key.split("/").pop(),
          scale,
          stroke: colorOf(key),
          width: 1.75,
          spanGaps: false,
          paths: s.kind === "bool" ? uPlot.paths.stepped({ align: 1 }) : undefined,
          value: (u, v) => (v == null ? "—" : TandemTags.fmtValue(v)),
        });
        if (i < 2) axes.push({ ...axisStyle, scale, side: i === 0 ? 3 : 1, size: 56, stroke: colorOf(key), grid: { show: i === 0, stroke: cssVar("--line"), width: 1 } });
      });
      const { width, height } = host.getBoundingClientRect();
      st.plot = new uPlot({
        width: Math.max(200, width), height: Math.max(120, height),
        series, axes, scales,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
      }, [[]].concat(st.keys.map(() => [])), host);
      st.dirty = true;
      draw();
    }

    // The visible window of every series on one time axis (uPlot wants aligned columns).
    function aligned(from, to) {
      const tables = st.keys.map((key) => {
        const s = st.series.get(key);
        const lo = Math.max(0, lowerBound(s.t, from) - 1);
        const t = s.t.slice(lo), v = s.v.slice(lo);
        // A value that has not changed is still the value: extend it to the newest poll.
        const newest = st.groups.get(groupOf(key));
        if (t.length && newest && newest > t[t.length - 1] && v[v.length - 1] !== null) {
          t.push(Math.min(newest, to)); v.push(v[v.length - 1]);
        }
        return [t.map((ms) => ms / 1000), v];
      });
      if (tables.length === 1) return [tables[0][0], tables[0][1]];
      return uPlot.join(tables);
    }

    function draw() {
      if (!st.plot) return;
      const now = clock.now();
      const from = now - st.windowMs;
      st.plot.batch(() => {
        st.plot.setData(aligned(from, now), false);
        st.plot.setScale("x", { min: from / 1000, max: now / 1000 });
      });
      st.dirty = false;
      st.lastDraw = performance.now();
      for (const li of chips.children) {
        const s = st.series.get(li.dataset.key);
        const last = s && s.v.length ? s.v[s.v.length - 1] : null;
        li.querySelector(".last").textContent = last === null ? "" : TandemTags.fmtValue(last);
      }
    }

    // Redraws ride on the page's other updates, so they share its frames: with new rows (at
    // most every REDRAW_MS) and on the page's once-a-second tick, which scrolls the time axis.
    function redraw(force) {
      if (document.hidden || !st.plot) return;
      const since = performance.now() - st.lastDraw;
      if (force ? since >= REDRAW_MS : st.dirty && since >= REDRAW_MS) draw();
    }
    windowSel.addEventListener("change", () => { st.windowMs = Number(windowSel.value) * 1000; draw(); });
    new ResizeObserver(() => {
      if (!st.plot) return;
      const { width, height } = host.getBoundingClientRect();
      st.plot.setSize({ width: Math.max(200, width), height: Math.max(120, height) });
    }).observe(host);
    renderChips();

    return {
      keys: () => st.keys.slice(), has, colorOf, choose, offerDefault, onRows,
      tick: () => redraw(true),
    };
  }

  return { mount };
})();
