// The Configuration tab: devices, groups and tags edited over /api/v1/devices, tag CSV, test
// connection, read now, versions with diff and restore. Problems are shown at their field. On a
// backup every control is read-only and the page links to the master. Plain DOM, no framework.
(() => {
  "use strict";
  const API = "/api/v1";
  const POLL_MS = 300; // a backup's page follows the master's config within a second
  const TAG_COLUMNS = ["name", "area", "address", "type", "scale", "offset", "length", "bit",
    "access"];
  const NUMBER_FIELDS = new Set(["port", "unit", "timeout", "interval", "address", "scale",
    "offset", "length", "bit", "precision", "baudrate", "max_length"]);
  const TYPES = ["uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64",
    "bool", "bit", "string"];
  const AREAS = ["holding", "input", "coil", "discrete"];
  const ACCESS = ["read", "write", "read_write"]; // write and read_write tags take writes
  // Shown in empty cells: what the node uses for a field the YAML leaves out.
  const TAG_DEFAULTS = { area: "holding", type: "uint16", scale: "1", offset: "0", access: "read" };

  const ui = { state: null, devices: [], device: null, group: null, lastJson: "", busy: false };

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "testid") node.dataset.testid = v;
      else if (k === "field") node.dataset.field = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  async function call(method, path, body, contentType) {
    const init = { method, headers: {} };
    if (body !== undefined) {
      init.body = typeof body === "string" ? body : JSON.stringify(body);
      init.headers["Content-Type"] = contentType || "application/json";
    }
    const r = await fetch(API + path, init);
    let data = null;
    try { data = await r.json(); } catch (err) { data = null; }
    return { ok: r.ok, status: r.status, data };
  }

  const enc = encodeURIComponent;
  const devicePath = (d) => `/devices/${enc(d)}`;
  const groupPath = (d, g) => `${devicePath(d)}/groups/${enc(g)}`;
  const tagPath = (d, g, t) => `${groupPath(d, g)}/tags/${enc(t)}`;
  // Changes need the admin role and a node that takes them (not a backup).
  const isAdmin = () => ui.role === "admin";
  const readOnly = () => !ui.state || !ui.state.writable || !isAdmin();
  const findDevice = () => ui.devices.find((d) => d.name === ui.device) || null;
  const findGroup = () => {
    const d = findDevice();
    return d ? (d.groups || []).find((g) => g.name === ui.group) || null : null;
  };

  // The last outcome stays across redraws until the next one.
  function say(text, bad = false) {
    ui.msg = { text, bad };
    const msg = document.getElementById("cfg-msg");
    if (!msg) return;
    msg.textContent = text;
    msg.dataset.bad = bad ? "true" : "false";
  }

  // Problems from a 422 next to their inputs (data-field), the rest in the form's general box.
  function showProblems(form, result) {
    for (const e of form.querySelectorAll(".field-error")) e.remove();
    for (const i of form.querySelectorAll("[data-invalid]")) i.removeAttribute("data-invalid");
    const general = form.querySelector(".form-errors");
    if (general) general.textContent = "";
    if (result.ok) return;
    const data = result.data || {};
    const problems = data.problems || [{ field: "", message: data.message || `HTTP ${result.status}` }];
    for (const p of problems) {
      const input = p.field ? form.querySelector(`[data-field="${CSS.escape(p.field)}"]`) : null;
      if (input) {
        input.setAttribute("data-invalid", "true");
        const note = el("span", { class: "field-error", testid: `error-${p.field}`, text: p.message });
        input.after(note);
      } else if (general) {
        const where = p.line ? `line ${p.line}, ${p.column || "row"}: ` : (p.path ? `${p.path}: ` : "");
        general.append(el("div", { text: where + p.message }));
      }
    }
  }

  function input(field, value, opts = {}) {
    const attrs = { field, name: field, value: value ?? "", placeholder: opts.placeholder,
      "aria-label": opts.label || field, testid: opts.testid || `input-${field}`,
      disabled: readOnly(), size: opts.size };
    if (opts.options) {
      const select = el("select", { ...attrs, size: undefined }); // a size makes a list box
      for (const o of opts.options) {
        // The empty choice leaves the field out: it shows the default the node then uses.
        const text = o === "" && opts.placeholder ? `(${opts.placeholder})` : o;
        select.append(el("option", { value: o, text, selected: o === (value ?? "") }));
      }
      return select;
    }
    return el("input", { type: "text", ...attrs });
  }

  function labelled(text, control) {
    return el("label", { class: "cfg-field" }, el("span", { text }), control);
  }

  function valueOf(control) {
    const raw = control.value.trim();
    if (raw === "") return undefined;
    if (NUMBER_FIELDS.has(control.name.split(".").pop().replace(/\[\d+\]$/, ""))) {
      const n = Number(raw);
      return Number.isFinite(n) ? n : raw; // the server names the field if it is no number
    }
    return raw;
  }

  // Form fields onto an object: "serial.port" nests, an empty field removes the key.
  function apply(target, form, prefix = "") {
    for (const control of form.querySelectorAll("[data-field]")) {
      const field = control.dataset.field;
      if (prefix && !field.startsWith(prefix)) continue;
      const parts = field.slice(prefix.length).split(".");
      if (parts.some((p) => p.includes("["))) continue;
      let node = target;
      for (const p of parts.slice(0, -1)) node = node[p] = node[p] || {};
      const v = valueOf(control);
      if (v === undefined) delete node[parts.at(-1)];
      else node[parts.at(-1)] = v;
    }
    return target;
  }

  // ---- loading ----

  // The small editor state is polled; the config itself is fetched only when it changed.
  async function poll() {
    const r = await call("GET", "/config/editor");
    if (!r.ok) return;
    const s = r.data;
    const was = ui.state || {};
    if (s.config !== was.config || s.writable !== was.writable || s.version !== was.version) {
      await load();
    }
  }

  async function load(force = false) {
    const r = await call("GET", "/devices");
    if (!r.ok) { say(`config: HTTP ${r.status}`, true); return; }
    const json = JSON.stringify(r.data);
    if (!force && json === ui.lastJson) return;
    ui.lastJson = json;
    ui.state = r.data.state;
    ui.devices = r.data.devices;
    if (ui.device && !findDevice()) { ui.device = null; ui.group = null; }
    if (!ui.device && ui.devices.length) ui.device = ui.devices[0].name;
    const d = findDevice();
    if (d && (!ui.group || !findGroup())) ui.group = (d.groups || [])[0]?.name || null;
    render();
    await loadVersions();
  }

  function render() {
    const root = document.getElementById("config");
    if (!root) return;
    const keepScroll = root.scrollTop;
    root.replaceChildren(stateBar(), el("div", { class: "cfg-grid" },
      el("div", { class: "cfg-col" }, devicePanel(), groupPanel()),
      el("div", { class: "cfg-col wide" }, deviceForm(), tagPanel(), versionPanel())));
    root.scrollTop = keepScroll;
  }

  function stateBar() {
    const s = ui.state || {};
    const bar = el("div", { class: "cfg-state", testid: "config-state",
      "data-writable": s.writable ? "true" : "false", "data-admin": isAdmin() ? "true" : "false" });
    if (s.writable && isAdmin()) {
      bar.append(el("span", { text: `Editing the config of ${s.node}; changes apply live.` }));
    } else if (s.writable) {
      bar.append(el("span", { text: `Read-only: changing the config of ${s.node} needs the admin role.` }));
    } else {
      const m = s.master || {};
      bar.append(el("span", { text: "Read-only: this node is the backup. Edit on the master " }),
        el("a", { href: m.url ? `${m.url}/#config` : "#", testid: "master-link",
          text: m.node || m.url || "(unknown)" }));
    }
    const msg = ui.msg || { text: "", bad: false };
    bar.append(el("span", { id: "cfg-msg", class: "cfg-msg", role: "status", testid: "config-msg",
      text: msg.text, "data-bad": msg.bad ? "true" : "false" }));
    return bar;
  }

  // ---- devices ----

  function devicePanel() {
    const list = el("ul", { class: "cfg-list", testid: "config-devices" });
    for (const d of ui.devices) {
      const li = el("li", { "data-selected": d.name === ui.device ? "true" : "false",
        testid: `config-device-${d.name}` },
      el("button", { type: "button", class: "link", text: d.name,
        onclick: () => { ui.device = d.name; ui.group = (d.groups || [])[0]?.name || null; render(); } }),
      el("span", { class: "muted", text: ` ${d.protocol || "modbus-tcp"}` }));
      list.append(li);
    }
    const add = el("button", { type: "button", text: "Add device", testid: "add-device",
      disabled: readOnly(), onclick: () => { ui.device = null; ui.group = null; render(); } });
    return el("section", { class: "panel" }, el("h2", { text: "Devices" }), list, add);
  }

  function deviceForm() {
    const d = findDevice();
    const creating = !d;
    const form = el("form", { class: "cfg-form", testid: "device-form" });
    const p = d || { protocol: "modbus-tcp", port: 502, unit: 1 };
    const protocol = creating ? ui.newProtocol || "modbus-tcp" : p.protocol || "modbus-tcp";
    form.append(el("h2", { text: creating ? "New device" : `Device ${d.name}` }),
      labelled("Name", input("name", p.name, { testid: "device-name" })),
      labelled("Protocol", input("protocol", protocol, {
        options: ["modbus-tcp", "modbus-rtu-over-tcp", "modbus-rtu", "opcua"], testid: "device-protocol" })));
    if (protocol === "opcua") {
      form.append(labelled("Endpoint", input("endpoint", p.endpoint, { testid: "device-endpoint", size: 40 })));
    } else if (protocol === "modbus-rtu") {
      form.append(labelled("Serial port", input("serial.port", (p.serial || {}).port, { testid: "device-serial" })),
        labelled("Unit", input("unit", p.unit, { testid: "device-unit", placeholder: "1" })));
    } else {
      form.append(labelled("Host", input("host", p.host, { testid: "device-host" })),
        labelled("Port", input("port", p.port, { testid: "device-port", placeholder: "502" })),
        labelled("Unit", input("unit", p.unit, { testid: "device-unit", placeholder: "1" })));
    }
    form.append(labelled("Timeout (s)", input("timeout", p.timeout, { testid: "device-timeout", placeholder: "1" })));
    if (creating) {
      form.append(el("h3", { text: "First group and tag" }),
        labelled("Group", input("groups[0].name", "", { testid: "new-group-name" })),
        labelled("Interval (s)", input("groups[0].interval", "1", { testid: "new-group-interval" })),
        labelled("Tag", input("groups[0].tags[0].name", "", { testid: "new-tag-name" })),
        labelled("Address", input("groups[0].tags[0].address", "0", { testid: "new-tag-address" })),
        labelled("Type", input("groups[0].tags[0].type", "uint16", { options: TYPES, testid: "new-tag-type" })));
    }
    form.append(el("div", { class: "form-errors", testid: "device-errors" }));
    const buttons = el("div", { class: "cfg-buttons" },
      el("button", { type: "submit", text: creating ? "Create device" : "Save device",
        testid: "save-device", disabled: readOnly() }));
    if (!creating) {
      buttons.append(
        el("button", { type: "button", text: "Duplicate", testid: "duplicate-device", disabled: readOnly(),
          onclick: () => duplicate(devicePath(d.name), d.name, (n) => { ui.device = n; }) }),
        el("button", { type: "button", text: "Delete", class: "danger", testid: "delete-device",
          disabled: readOnly(), onclick: () => remove(devicePath(d.name), `device ${d.name}`) }),
        el("button", { type: "button", text: "Test connection", testid: "test-connection",
          onclick: () => testConnection(d.name) }));
    }
    form.append(buttons, el("div", { class: "cfg-result", id: "device-result", testid: "device-result" }));
    if (creating) {
      // Another protocol has other fields: the form is drawn again for it.
      form.querySelector('[data-field="protocol"]').addEventListener("change", (ev) => {
        ui.newProtocol = ev.target.value;
        render();
      });
    }
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (creating) {
        const body = apply({}, form);
        body.groups = [{ name: form.querySelector('[data-field="groups[0].name"]').value.trim(),
          interval: Number(form.querySelector('[data-field="groups[0].interval"]').value) || 1,
          tags: [{ name: form.querySelector('[data-field="groups[0].tags[0].name"]').value.trim(),
            address: Number(form.querySelector('[data-field="groups[0].tags[0].address"]').value),
            type: form.querySelector('[data-field="groups[0].tags[0].type"]').value }] }];
        const r = await call("POST", "/devices", body);
        showProblems(form, r);
        if (r.ok) { ui.device = body.name; ui.group = body.groups[0].name; done(r, `device ${body.name} created`); }
      } else {
        const body = apply(JSON.parse(JSON.stringify(d)), form);
        const r = await call("PUT", devicePath(d.name), body);
        showProblems(form, r);
        if (r.ok) { ui.device = body.name; done(r, `device ${body.name} saved`); }
      }
    });
    return el("section", { class: "panel" }, form);
  }

  // Drawn again first, then told: whoever acts on the message acts on the new page.
  async function done(r, what) {
    ui.msg = { text: `${what} (version ${r.data.version.id})`, bad: false };
    window.dispatchEvent(new Event("tandem-config-changed")); // e.g. which tags take writes
    await load(true);
    say(ui.msg.text);
  }

  // Registers (or bits) a Modbus tag occupies from its address.
  const WIDTH = { int16: 1, uint16: 1, int32: 2, uint32: 2, int64: 4, uint64: 4, float32: 2,
    float64: 4, bool: 1, bit: 1 };
  const widthOf = (t) => (t.type === "string" ? t.length || 0 : WIDTH[t.type || "uint16"] || 1);

  // A copy of a tag or group at the same registers would overlap the original: the copy is
  // placed right after it (a group's tags all shifted by the group's span), unless changed.
  function shifted(kind, item) {
    if (kind === "tag" && typeof item.address === "number") {
      const at = window.prompt(`Address of the copy of ${item.name}`, String(item.address + widthOf(item)));
      return at === null ? null : { address: Number(at) };
    }
    if (kind === "group" && (item.tags || []).every((t) => typeof t.address === "number")) {
      const starts = item.tags.map((t) => t.address);
      const span = Math.max(...item.tags.map((t) => t.address + widthOf(t))) - Math.min(...starts);
      const by = window.prompt(`Shift the copy's addresses by`, String(span));
      if (by === null) return null;
      return { tags: item.tags.map((t) => ({ ...t, name: t.name, address: t.address + Number(by) })) };
    }
    return {};
  }

  async function duplicate(path, name, select, kind = "device", item = null) {
    const copy = window.prompt(`Name of the copy of ${name}`, `${name}-copy`);
    if (!copy) return;
    const extra = item ? shifted(kind, item) : {};
    if (extra === null) return;
    const r = await call("POST", `${path}/duplicate`, { name: copy, ...extra });
    if (!r.ok) { say(problemText(r), true); return; }
    select(copy);
    await done(r, `${name} duplicated as ${copy}`);
  }

  async function remove(path, what) {
    if (!window.confirm(`Delete ${what}?`)) return;
    const r = await call("DELETE", path);
    if (!r.ok) { say(problemText(r), true); return; }
    await done(r, `${what} deleted`);
  }

  function problemText(r) {
    const data = r.data || {};
    if (data.problems) {
      return data.problems.map((p) => (p.line ? `line ${p.line}, ${p.column}: ` : `${p.path || p.field}: `) + p.message).join("; ");
    }
    return data.message || `HTTP ${r.status}`;
  }

  async function testConnection(name) {
    const out = document.getElementById("device-result");
    out.textContent = "testing…";
    const r = await call("POST", `${devicePath(name)}/test`);
    if (!r.ok) { out.textContent = problemText(r); return; }
    out.textContent = r.data.paths.map((p) => p.ok ? `${p.endpoint}: reachable (${p.latency_ms} ms)`
      : `${p.endpoint}: ${p.error}`).join("; ") || "no endpoint to test";
  }

  // ---- groups ----

  function groupPanel() {
    const d = findDevice();
    const section = el("section", { class: "panel" }, el("h2", { text: "Groups" }));
    if (!d) return section;
    const list = el("ul", { class: "cfg-list", testid: "config-groups" });
    for (const g of d.groups || []) {
      list.append(el("li", { "data-selected": g.name === ui.group ? "true" : "false", testid: `config-group-${g.name}` },
        el("button", { type: "button", class: "link", text: g.name, onclick: () => { ui.group = g.name; render(); } }),
        el("span", { class: "muted", text: ` every ${g.interval ?? 1} s, ${(g.tags || []).length} tags` })));
    }
    const form = el("form", { class: "cfg-form", testid: "group-form" },
      el("h3", { text: "Add group" }),
      labelled("Name", input("name", "", { testid: "group-name" })),
      labelled("Interval (s)", input("interval", "1", { testid: "group-interval" })),
      labelled("First tag", input("tags[0].name", "", { testid: "group-tag-name" })),
      labelled("Address", input("tags[0].address", "0", { testid: "group-tag-address" })),
      el("div", { class: "form-errors", testid: "group-errors" }),
      el("button", { type: "submit", text: "Add group", testid: "add-group", disabled: readOnly() }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { name: form.querySelector('[data-field="name"]').value.trim(),
        interval: valueOf(form.querySelector('[data-field="interval"]')),
        tags: [{ name: form.querySelector('[data-field="tags[0].name"]').value.trim(),
          address: valueOf(form.querySelector('[data-field="tags[0].address"]')) }] };
      const r = await call("POST", `${devicePath(d.name)}/groups`, body);
      showProblems(form, r);
      if (r.ok) { ui.group = body.name; await done(r, `group ${body.name} added`); }
    });
    section.append(list, form);
    return section;
  }

  // ---- tags ----

  function tagPanel() {
    const d = findDevice();
    const g = findGroup();
    const section = el("section", { class: "panel" });
    if (!d || !g) return el("div", { hidden: true });
    const head = el("h2", { text: `Tags of ${d.name} / ${g.name}` });
    const tools = el("div", { class: "cfg-buttons" },
      el("button", { type: "button", text: "Read now", testid: "read-now", onclick: () => readNow(d.name, g.name) }),
      el("a", { href: `${API}${groupPath(d.name, g.name)}/tags.csv`, download: `${d.name}-${g.name}.csv`,
        text: "Export CSV", testid: "export-csv", class: "button" }),
      el("label", { class: "button", hidden: readOnly() }, "Import CSV",
        el("input", { type: "file", accept: ".csv,text/csv", testid: "import-csv", hidden: true,
          onchange: (ev) => importCsv(d.name, g.name, ev.target) })),
      el("button", { type: "button", text: "Duplicate group", testid: "duplicate-group", disabled: readOnly(),
        onclick: () => duplicate(groupPath(d.name, g.name), g.name, (n) => { ui.group = n; }, "group", g) }),
      el("button", { type: "button", text: "Delete group", class: "danger", testid: "delete-group",
        disabled: readOnly(), onclick: () => remove(groupPath(d.name, g.name), `group ${g.name}`) }));
    const table = el("table", { class: "cfg-tags", testid: "config-tags" });
    table.append(el("thead", {}, el("tr", {}, ...TAG_COLUMNS.map((c) => el("th", { text: c })),
      el("th", { text: "value" }), el("th", { text: "" }))));
    const body = el("tbody");
    for (const t of g.tags || []) body.append(tagRow(d, g, t, false));
    if (!readOnly()) body.append(tagRow(d, g, { name: "", address: "" }, true));
    table.append(body);
    section.append(head, tools, el("div", { class: "form-errors", testid: "tags-errors", id: "tags-errors" }),
      el("div", { class: "table-wrap" }, table), el("div", { class: "cfg-result", id: "read-result", testid: "read-result" }));
    return section;
  }

  function tagRow(d, g, t, adding) {
    const row = el("tr", { testid: adding ? "tag-new" : `tag-row-${t.name}` });
    for (const c of TAG_COLUMNS) {
      const opts = { testid: adding ? `new-${c}` : `tag-${t.name}-${c}`, size: c === "name" ? 12 : 7,
        placeholder: TAG_DEFAULTS[c] };
      if (c === "type") opts.options = ["", ...TYPES];
      if (c === "area") opts.options = ["", ...AREAS];
      if (c === "access") opts.options = ["", ...ACCESS];
      row.append(el("td", {}, input(c, t[c], opts)));
    }
    row.append(el("td", { class: "num", testid: adding ? null : `tag-${t.name}-value` }));
    const actions = el("td", { class: "actions" });
    const form = row; // problems are shown in the row's cells
    if (adding) {
      actions.append(el("button", { type: "button", text: "Add", testid: "add-tag", onclick: async () => {
        const body = apply({}, row);
        const r = await call("POST", `${groupPath(d.name, g.name)}/tags`, body);
        showProblems(form, r);
        if (r.ok) await done(r, `tag ${body.name} added`);
      } }));
    } else if (!readOnly()) {
      actions.append(
        el("button", { type: "button", text: "Save", testid: `save-tag-${t.name}`, onclick: async () => {
          const body = apply(JSON.parse(JSON.stringify(t)), row);
          const r = await call("PUT", tagPath(d.name, g.name, t.name), body);
          showProblems(form, r);
          if (r.ok) await done(r, `tag ${body.name} saved`);
        } }),
        el("button", { type: "button", text: "Dup", title: "Duplicate", testid: `duplicate-tag-${t.name}`,
          onclick: () => duplicate(tagPath(d.name, g.name, t.name), t.name, () => {}, "tag", t) }),
        el("button", { type: "button", text: "Del", title: "Delete", class: "danger", testid: `delete-tag-${t.name}`,
          onclick: () => remove(tagPath(d.name, g.name, t.name), `tag ${t.name}`) }));
    }
    row.append(actions);
    return row;
  }

  async function readNow(device, group) {
    const out = document.getElementById("read-result");
    out.textContent = "reading…";
    const r = await call("POST", `${groupPath(device, group)}/read`);
    if (!r.ok) { out.textContent = problemText(r); return; }
    out.textContent = `read in ${r.data.latency_ms} ms`;
    for (const [name, value] of Object.entries(r.data.values)) {
      const cell = document.querySelector(`[data-testid="tag-${CSS.escape(name)}-value"]`);
      if (cell) cell.textContent = String(value);
    }
    for (const [name, code] of Object.entries(r.data.errors)) {
      const cell = document.querySelector(`[data-testid="tag-${CSS.escape(name)}-value"]`);
      if (cell) cell.textContent = `error ${code}`;
    }
  }

  async function importCsv(device, group, fileInput) {
    const file = fileInput.files && fileInput.files[0];
    if (!file) return;
    const text = await file.text();
    const r = await call("PUT", `${groupPath(device, group)}/tags.csv`, text, "text/csv");
    const box = document.getElementById("tags-errors");
    if (!r.ok) { box.textContent = problemText(r); say("CSV import refused", true); return; }
    await done(r, `${file.name} imported`);
  }

  // ---- versions ----

  async function loadVersions() {
    const r = await call("GET", "/config/versions");
    const list = document.getElementById("cfg-versions");
    if (!r.ok || !list) return;
    list.replaceChildren();
    for (const v of r.data.slice(0, 50)) {
      const when = new Date(v.at * 1000).toLocaleString();
      list.append(el("tr", { testid: `version-${v.id}` },
        el("td", { class: "num", text: String(v.id) }), el("td", { text: when }),
        el("td", { text: v.who }), el("td", { text: v.action }),
        el("td", { class: "num", text: `+${v.lines_added} −${v.lines_removed}` }),
        el("td", { class: "actions" },
          el("button", { type: "button", text: "Diff", testid: `diff-${v.id}`, onclick: () => showDiff(v.id) }),
          el("button", { type: "button", text: "Restore", testid: `restore-${v.id}`, disabled: readOnly(),
            onclick: () => restore(v.id) }))));
    }
  }

  async function showDiff(id) {
    const r = await call("GET", `/config/versions/${id}`);
    const pre = document.getElementById("cfg-diff");
    pre.replaceChildren();
    if (!r.ok) { pre.textContent = problemText(r); return; }
    for (const line of (r.data.diff || "(no change)").split("\n")) {
      const kind = line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : "";
      pre.append(el("span", { class: `diff-${kind}`, text: line + "\n" }));
    }
  }

  async function restore(id) {
    if (!window.confirm(`Restore version ${id}? It becomes a new version.`)) return;
    const r = await call("POST", `/config/versions/${id}/restore`);
    if (!r.ok) { say(problemText(r), true); return; }
    await done(r, `version ${id} restored`);
  }

  function versionPanel() {
    return el("section", { class: "panel" }, el("h2", { text: "Versions" }),
      el("div", { class: "table-wrap short" }, el("table", { class: "cfg-versions" },
        el("thead", {}, el("tr", {}, ...["#", "when", "who", "what", "lines", ""].map((t) => el("th", { text: t })))),
        el("tbody", { id: "cfg-versions", testid: "config-versions" }))),
      el("pre", { class: "cfg-diff", id: "cfg-diff", testid: "config-diff" }));
  }

  // ---- the tab ----

  function editing() {
    const a = document.activeElement;
    return a && a.closest && a.closest("#config") && (a.tagName === "INPUT" || a.tagName === "SELECT");
  }

  let timer = null;
  function show(on) {
    const page = document.getElementById("config");
    const main = document.querySelector("main.layout");
    page.hidden = !on;
    if (main) main.hidden = on;
    document.getElementById("tab-config")?.setAttribute("aria-pressed", on ? "true" : "false");
    clearInterval(timer);
    if (!on) return;
    load(true).catch((err) => say(String(err), true));
    // A backup's page follows the master; an editable one refreshes only when not mid-edit.
    timer = setInterval(() => {
      if (document.hidden || editing()) return;
      poll().catch(() => {});
    }, POLL_MS);
  }

  function init() {
    if (window.tandemSession) {
      window.tandemSession.then((info) => { ui.role = info.role; if (ui.state) render(); }).catch(() => {});
    }
    const banner = document.getElementById("banner");
    const page = el("section", { id: "config", class: "config-page", testid: "config-page", hidden: true });
    document.body.insertBefore(page, document.querySelector("main.layout"));
    const tab = el("a", { id: "tab-config", class: "tab", href: "#config", testid: "tab-config", text: "Configuration" });
    const back = el("a", { class: "tab", href: "#", testid: "tab-dashboard", text: "Dashboard" });
    banner?.querySelector(".brand")?.after(el("nav", { class: "tabs" }, back, tab));
    const route = () => show(location.hash === "#config");
    window.addEventListener("hashchange", route);
    route();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init, { once: true });
  else init();
})();
