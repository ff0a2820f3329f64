// Tag writes from the tag table: a write button on each writable tag for operators and
// admins, one small editor above the table, the node's answer shown next to it. Loaded
// after auth.js (its fetch adds the CSRF token) and before tags.js fills rows.
window.TandemWrite = (() => {
  "use strict";
  const API = "/api/v1";
  let writable = new Set(); // "device/group/tag" keys that take writes
  let allowed = false; // operator or admin
  let editor = null;

  const ready = (window.tandemSession || Promise.reject(new Error("no session")))
    .then(async (info) => {
      allowed = info.role === "operator" || info.role === "admin";
      if (!allowed) return;
      await refresh();
      // A tag made writable (or not) in the Configuration tab: buttons follow without a reload.
      window.addEventListener("tandem-config-changed", () => { refresh().catch(() => {}); });
    })
    .catch(() => { allowed = false; });

  async function refresh() {
    const response = await window.fetch(API + "/write/tags", { cache: "no-store" });
    if (!response.ok) return;
    writable = new Set((await response.json()).tags);
    for (const tr of document.querySelectorAll("#tags tr[data-key]")) {
      const button = tr.children[2] && tr.children[2].querySelector(".write-btn");
      if (button && !writable.has(tr.dataset.key)) button.remove();
      decorate(tr); // rows filled before the answer came get their buttons now
    }
  }

  function parse(text, kind) {
    const t = text.trim();
    if (kind === "bool") {
      if (/^(true|1|on)$/i.test(t)) return true;
      if (/^(false|0|off)$/i.test(t)) return false;
      throw new Error("true or false");
    }
    if (kind === "number") {
      const n = Number(t);
      if (t === "" || !Number.isFinite(n)) throw new Error("a number");
      return n;
    }
    return text;
  }

  function build() {
    const box = document.createElement("form");
    box.className = "write-editor";
    box.dataset.testid = "write-editor";
    box.hidden = true;
    box.innerHTML =
      '<span class="write-target" data-testid="write-target"></span>' +
      '<input class="write-value" data-testid="write-value" aria-label="Value to write" autocomplete="off">' +
      '<button type="submit" data-testid="write-send">Write</button>' +
      '<button type="button" class="write-cancel">Cancel</button>' +
      '<span class="write-result" data-testid="write-result" role="status"></span>';
    const panel = document.querySelector("section.tags .tag-filters");
    panel.after(box);
    box.querySelector(".write-cancel").addEventListener("click", () => { box.hidden = true; });
    box.addEventListener("submit", (ev) => { ev.preventDefault(); send().catch((err) => say(String(err))); });
    return box;
  }

  function say(text, ok) {
    const out = editor.querySelector(".write-result");
    out.textContent = text;
    out.classList.toggle("ok", ok === true);
  }

  async function send() {
    const t = editor.dataset;
    let value;
    try {
      value = parse(editor.querySelector(".write-value").value, t.kind);
    } catch (err) {
      say(`needs ${err.message}`);
      return;
    }
    say("writing…");
    const response = await window.fetch(API + "/write", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ node: t.device, group: t.group, tag: t.tag, value }),
    });
    let body = {};
    try { body = await response.json(); } catch (err) { /* not JSON */ }
    if (body.error === 0) say(`written (${JSON.stringify(value)})`, true);
    else say(`error ${body.error ?? response.status}: ${body.message || body.detail || ""}`);
  }

  function open(tr) {
    const row = tr.dataset; // read at click time: the table reuses rows for other tags
    editor = editor || build();
    Object.assign(editor.dataset, { device: row.device, group: row.group, tag: row.tag, kind: row.kind });
    editor.querySelector(".write-target").textContent = `${row.key} =`;
    const input = editor.querySelector(".write-value");
    input.value = tr.children[3].textContent;
    say("");
    editor.hidden = false;
    input.focus();
    input.select();
  }

  // Called by the tag table whenever a row starts showing another tag (its text is reset).
  function decorate(tr) {
    const key = tr.dataset.key;
    const cell = tr.children[2];
    if (!allowed || !writable.has(key) || cell.querySelector(".write-btn")) return;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "write-btn";
    b.textContent = "✎";
    b.title = `Write ${key}`;
    b.dataset.testid = "write-btn";
    b.addEventListener("click", (ev) => { ev.stopPropagation(); open(tr); });
    cell.append(b);
  }

  return { decorate, ready };
})();
