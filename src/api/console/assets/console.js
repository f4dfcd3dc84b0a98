// The nomnom operator console: pages drawn from the console port's JSON endpoints.
// Every value from the server is put in the page as text (textContent), never as markup, so a
// message body can show `<script>` but never run it. No dependencies, no build step.
"use strict";

const KEY_STORE = "nomnom-admin-key";
const main = () => document.getElementById("main");
let refreshTimer = null;

// h("tag.class", {attrs}, child…): an element; strings become text nodes.
function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag);
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Puts a page in place, marked with the address it shows (`data-view`), so that a reader (the
// browser test) can tell it from the page before.
function show(...nodes) {
  const m = main();
  m.replaceChildren(...nodes.flat().filter(Boolean));
  m.setAttribute("data-view", location.hash || "#/overview");
}

function fmtTime(t) {
  if (!t) return "—";
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function fmtNum(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// A request to the console's endpoints, with the operator's key when one was given.
async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    credentials: "same-origin",
  });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (response.status === 401) throw new NeedKey(data && data.error);
  if (!response.ok) {
    const message = (data && (data.error || data.message)) || `HTTP ${response.status}`;
    const err = new Error(message);
    err.status = response.status;
    err.data = data;
    throw err;
  }
  return data;
}

class NeedKey extends Error {}

function keyForm(message) {
  const input = h("input", { type: "password", placeholder: "API key with the admin scope", size: 40, id: "key" });
  return h("div.panel", {},
    h("h1", {}, "Sign in"),
    h("p", {}, message || "This api requires an API key with the admin scope."),
    h("form.row", {
      onsubmit: (e) => {
        e.preventDefault();
        sessionStorage.setItem(KEY_STORE, input.value.trim());
        route();
      },
    }, input, h("button.primary", { type: "submit" }, "Use key")));
}

function failure(err) {
  if (err instanceof NeedKey) return keyForm(err.message);
  return h("div.notice.bad", {}, err.message || String(err));
}

function badge(text, kind) {
  return h(`span.badge${kind ? "." + kind : ""}`, {}, text);
}

function classBadge(cls) {
  const kind = { invalid: "warn", refused_by_database: "bad", unknown_entity: "warn", undecodable: "bad", max_deliveries: "bad" }[cls];
  return badge(cls, kind);
}

function table(headers, rows) {
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h(cls ? `th.${cls}` : "th", {}, label)))),
    h("tbody", {}, rows));
}

function params() {
  const [, query] = location.hash.split("?");
  return new URLSearchParams(query || "");
}

function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

// ---- Overview ----------------------------------------------------------------------------

async function overview() {
  let stats;
  try { stats = await api("/stats"); } catch (e) { return show(h("h1", {}, "Overview"), failure(e)); }
  const totals = stats.entities.reduce((t, e) => ({
    committed: t.committed + e.committed,
    dead: t.dead + e.dead_lettered,
    recent: t.recent + e.committed_recent,
    waiting: e.waiting === null || t.waiting === null ? null : t.waiting + e.waiting,
  }), { committed: 0, dead: 0, recent: 0, waiting: 0 });
  const minutes = Math.round(stats.recent_window_seconds / 60);
  const db = stats.database;
  const dbState = db.up && db.workers_reporting_down === 0
    ? badge("up", "ok")
    : badge(db.up ? `down for ${db.workers_reporting_down} worker(s)` : "down", "bad");
  const cards = h("div.cards", {},
    card("Committed", fmtNum(totals.committed), `${fmtNum(totals.recent)} in the last ${minutes} min`),
    card("Dead letters kept", fmtNum(stats.dead_letters_kept), `${fmtNum(totals.dead)} dead-lettered in all`),
    card("Waiting in the stream", fmtNum(totals.waiting),
      `${fmtNum(stats.stream.undelivered)} undelivered · ${fmtNum(stats.stream.in_progress)} in progress`),
    card("Oldest waiting", fmtAge(stats.stream.oldest_waiting_seconds), `consumer ${stats.stream.consumer}`),
    card("Workers alive", String(stats.workers.length), stats.workers_error ? stats.workers_error : "reporting every 5 s"),
    h("div.card", {}, h("div.label", {}, "Database"), h("div.value", {}, dbState),
      h("div.sub", {}, db.longest_outage_seconds ? `longest outage ${fmtAge(db.longest_outage_seconds)}` : "no outage reported")));
  const entityRows = stats.entities.map((e) => h("tr.clickable", { onclick: () => go(`#/dead-letters?entity=${encodeURIComponent(e.entity)}`) },
    h("td", {}, e.entity),
    h("td.num", {}, fmtNum(e.accepted)),
    h("td.num", {}, fmtNum(e.committed)),
    h("td.num", {}, fmtNum(e.committed_recent)),
    h("td.num", {}, fmtNum(e.dead_lettered)),
    h("td.num", {}, fmtNum(e.dead_lettered_recent)),
    h("td.num", {}, fmtNum(e.waiting))));
  const workerRows = stats.workers.map((w) => h("tr", {},
    h("td.mono", {}, w.id),
    h("td", {}, w.version),
    h("td.time", {}, fmtTime(w.started_at)),
    h("td", {}, w.database_up ? badge("up", "ok") : badge(`down ${fmtAge(w.database_down_seconds)}`, "bad")),
    h("td.num", {}, fmtNum(w.committed)),
    h("td.num", {}, fmtNum(w.dead_lettered)),
    h("td.time", {}, fmtTime(w.at))));
  show(
    h("h1", {}, "Overview"),
    stats.stream.error ? h("div.notice.bad", {}, `JetStream: ${stats.stream.error}`) : null,
    cards,
    h("div.panel", {},
      h("h2", {}, "Messages per entity"),
      table([["Entity"], ["Accepted", "num"], ["Committed", "num"], [`last ${minutes} min`, "num"], ["Dead-lettered", "num"], [`last ${minutes} min`, "num"], ["Waiting", "num"]], entityRows)),
    h("div.panel", {},
      h("h2", {}, "Workers"),
      workerRows.length
        ? table([["Worker"], ["Version"], ["Started"], ["Database"], ["Committed", "num"], ["Dead-lettered", "num"], ["Reported"]], workerRows)
        : h("p.muted", {}, "No worker has reported in the last 20 seconds.")),
    h("p.muted", {}, `api ${stats.version} · up ${fmtAge(stats.uptime_seconds)} · read ${fmtTime(stats.at)} · refreshes every 5 s`));
  refreshTimer = setTimeout(() => { if (page() === "overview") overview(); }, 5000);
}

function card(label, value, sub) {
  return h("div.card", {}, h("div.label", {}, label), h("div.value", {}, value), h("div.sub", {}, sub));
}

// ---- Dead letters ------------------------------------------------------------------------

const CLASSES = ["invalid", "refused_by_database", "unknown_entity", "undecodable", "max_deliveries", "unclassified"];

function filterFrom(p) {
  const f = {};
  for (const k of ["entity", "class", "reason", "since"]) if (p.get(k)) f[k] = p.get(k);
  return f;
}

async function deadLetters() {
  const p = params();
  const filter = filterFrom(p);
  const query = new URLSearchParams(filter);
  if (p.get("after")) query.set("after", p.get("after"));
  query.set("limit", "50");
  let groups, list;
  try {
    [groups, list] = await Promise.all([api("/admin/dead-letters/groups"), api(`/admin/dead-letters?${query}`)]);
  } catch (e) { return show(h("h1", {}, "Dead letters"), failure(e)); }
  const notice = h("div", { id: "result" });
  const groupRows = groups.groups.map((g) => h("tr.clickable", {
    onclick: () => go(`#/dead-letters?entity=${encodeURIComponent(g.entity)}&class=${g.reason_class}`),
  }, h("td", {}, g.entity), h("td", {}, classBadge(g.reason_class)), h("td.num", {}, fmtNum(g.count)),
    h("td.time", {}, fmtTime(g.first_seen)), h("td.time", {}, fmtTime(g.last_seen))));
  const inputs = {
    entity: h("input", { name: "entity", value: filter.entity || "", placeholder: "any", size: 14 }),
    class: h("select", { name: "class" }, h("option", { value: "" }, "any"),
      CLASSES.map((c) => h("option", { value: c, selected: filter.class === c }, c))),
    reason: h("input", { name: "reason", value: filter.reason || "", placeholder: "text in the reason", size: 22 }),
    since: h("input", { name: "since", value: filter.since || "", placeholder: "30m, 2h, 7d or a time", size: 20 }),
  };
  const form = h("form.filters", {
    onsubmit: (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const [k, el] of Object.entries(inputs)) if (el.value.trim()) q.set(k, el.value.trim());
      go(`#/dead-letters?${q}`);
    },
  }, h("label", {}, "Entity", inputs.entity), h("label", {}, "Reason class", inputs.class),
  h("label", {}, "Reason contains", inputs.reason), h("label", {}, "Since", inputs.since),
  h("button.primary", { type: "submit" }, "Filter"),
  h("button", { type: "button", onclick: () => go("#/dead-letters") }, "Clear"));
  const checks = [];
  const rows = list.items.map((d) => {
    const box = h("input", { type: "checkbox", "data-id": d.message_id, "aria-label": `select ${d.message_id}` });
    checks.push(box);
    return h("tr", {},
      h("td", {}, box),
      h("td.mono", {}, h("a", { href: `#/dead-letters/${d.message_id}` }, d.message_id)),
      h("td", {}, d.entity),
      h("td", {}, classBadge(d.reason_class)),
      h("td", {}, h("span.clip", { title: d.reason }, d.reason)),
      h("td.num", {}, fmtNum(d.attempts)),
      h("td.time", {}, fmtTime(d.first_seen)));
  });
  const selected = () => checks.filter((c) => c.checked).map((c) => c.getAttribute("data-id"));
  const act = async (what, body, confirmText) => {
    if (confirmText && !window.confirm(confirmText)) return;
    notice.replaceChildren(h("div.notice", {}, "Working…"));
    try {
      const r = await api(`/admin/dead-letters/${what}`, { method: "POST", body });
      notice.replaceChildren(h("div.notice.good", { id: `${what}-result` }, what === "dry-run"
        ? `Dry run: ${r.would_pass} of ${r.total} would pass validation now.` +
          (r.refusals.length ? ` Refused: ${r.refusals.map((x) => `${x.reason} (${x.count})`).join("; ")}` : "")
        : `Replayed ${r.replayed} message(s)` + (r.skipped.length ? `; skipped ${r.skipped.length}` : "") +
          ". They leave this list once the worker stores them."));
    } catch (e) { notice.replaceChildren(failure(e)); }
  };
  const described = `${Object.keys(filter).length ? "matching the filter" : "(every dead letter)"} · ${fmtNum(list.total)}`;
  const actions = h("div.row", {},
    h("button", { type: "button", id: "dry-run-all", onclick: () => act("dry-run", { filter }) }, `Dry run all ${described}`),
    h("button", { type: "button", id: "replay-selected", onclick: () => {
      const ids = selected();
      if (!ids.length) return notice.replaceChildren(h("div.notice", {}, "Select dead letters first."));
      act("replay", { ids }, `Replay ${ids.length} selected message(s)?`);
    } }, "Replay selected"),
    h("button.primary", { type: "button", id: "replay-all", onclick: () => act("replay", { filter }, `Replay every dead letter ${described}?`) }, `Replay all ${described}`));
  const pager = h("div.pager", {},
    p.get("after") ? h("a", { href: `#/dead-letters?${new URLSearchParams(filter)}` }, "First page") : null,
    list.next ? h("a", { href: `#/dead-letters?${new URLSearchParams({ ...filter, after: list.next })}` }, "Next page") : null,
    h("span.muted", {}, `${fmtNum(list.total)} match · ${list.items.length} on this page`));
  show(
    h("h1", {}, "Dead letters"),
    h("div.panel", {}, h("h2", {}, "By entity and reason class"),
      groupRows.length ? table([["Entity"], ["Reason class"], ["Count", "num"], ["First seen"], ["Last seen"]], groupRows)
        : h("p.muted", {}, "No dead letters are kept.")),
    h("div.panel", {}, form),
    notice,
    h("div.panel", {}, actions,
      rows.length ? table([[""], ["Message"], ["Entity"], ["Class"], ["Reason"], ["Deliveries", "num"], ["First seen"]], rows)
        : h("p.muted", {}, "None match."),
      pager));
}

async function deadLetter(id) {
  let d;
  try { d = await api(`/admin/dead-letters/${encodeURIComponent(id)}`); } catch (e) {
    return show(h("h1", {}, "Dead letter"), failure(e), h("p", {}, h("a", { href: `#/trace/${encodeURIComponent(id)}` }, "See the message's trace")));
  }
  const notice = h("div", { id: "result" });
  const note = h("input", { id: "discard-note", placeholder: "why it is discarded (kept in the audit)", size: 48 });
  const replay = async () => {
    notice.replaceChildren(h("div.notice", {}, "Replaying…"));
    try {
      const r = await api("/admin/dead-letters/replay", { method: "POST", body: { ids: [d.message_id] } });
      notice.replaceChildren(h("div.notice.good", { id: "replay-result" }, `Replayed ${r.replayed} message(s). `,
        h("a", { href: `#/trace/${d.message_id}` }, "Follow it on the trace page")));
    } catch (e) { notice.replaceChildren(failure(e)); }
  };
  const discard = async () => {
    if (!note.value.trim()) return notice.replaceChildren(h("div.notice.bad", {}, "Say why it is discarded."));
    if (!window.confirm("Set this dead letter aside? It is kept among the discarded ones, not replayed.")) return;
    try {
      await api(`/admin/dead-letters/${d.message_id}/discard`, { method: "POST", body: { note: note.value.trim() } });
      notice.replaceChildren(h("div.notice.good", {}, "Discarded (kept with your note)."));
    } catch (e) { notice.replaceChildren(failure(e)); }
  };
  const errors = d.field_errors_now.length
    ? table([["Field"], ["Error"]], d.field_errors_now.map((e) => h("tr", {}, h("td.mono", {}, e.field || "—"), h("td", {}, e.error))))
    : h("p", {}, badge("passes validation now", "ok"), " ", h("span.muted", {}, "(the cause may have been the database: replay to try again)"));
  show(
    h("h1", {}, "Dead letter"),
    notice,
    h("div.panel", {}, h("dl.fields", {},
      h("dt", {}, "Message id"), h("dd.mono", {}, d.message_id),
      h("dt", {}, "Entity"), h("dd", {}, d.entity),
      h("dt", {}, "Reason class"), h("dd", {}, classBadge(d.reason_class)),
      h("dt", {}, "Reason"), h("dd", { id: "reason" }, d.reason),
      h("dt", {}, "Deliveries"), h("dd", {}, `${d.attempts} (dead-lettered ${d.times} time(s))`),
      h("dt", {}, "First seen"), h("dd", {}, fmtTime(d.first_seen)),
      h("dt", {}, "Last seen"), h("dd", {}, fmtTime(d.last_seen)),
      h("dt", {}, "Stream position"), h("dd", {}, `epoch ${d.position.epoch}, sequence ${d.position.sequence}`))),
    h("div.panel", {}, h("div.row", {},
      h("button.primary", { type: "button", id: "replay-one", onclick: replay }, "Replay"),
      note, h("button.danger", { type: "button", id: "discard", onclick: discard }, "Discard"),
      h("a", { href: `#/trace/${d.message_id}` }, "Trace"))),
    h("div.panel", {}, h("h2", {}, "Field errors now"), errors),
    h("div.panel", {}, h("h2", {}, `Body (${fmtNum(d.body_bytes)} bytes${d.body_truncated ? ", first 64 KiB shown" : ""})`),
      h("pre", { id: "body" }, d.body_pretty)));
}

// ---- Trace -------------------------------------------------------------------------------

async function trace(id) {
  const input = h("input", { value: id || "", placeholder: "message id", size: 40, id: "trace-id" });
  const form = h("form.row", { onsubmit: (e) => { e.preventDefault(); go(`#/trace/${encodeURIComponent(input.value.trim())}`); } },
    h("label", {}, "Message id", input), h("button.primary", { type: "submit" }, "Trace"));
  if (!id) return show(h("h1", {}, "Message trace"), h("div.panel", {}, form));
  let t;
  try { t = await api(`/messages/${encodeURIComponent(id)}/trace`); } catch (e) {
    return show(h("h1", {}, "Message trace"), h("div.panel", {}, form), failure(e));
  }
  const outcome = { stored: badge("stored", "ok"), dead_lettered: badge("dead-lettered", "bad"), discarded: badge("discarded", "warn"), waiting: badge("waiting in the stream", "warn"), unknown: badge("unknown", "") }[t.outcome];
  const s = t.status;
  const facts = [h("dt", {}, "Outcome"), h("dd", { id: "outcome" }, outcome)];
  if (s) {
    facts.push(h("dt", {}, "Entity"), h("dd", {}, s.entity),
      h("dt", {}, "Accepted"), h("dd", {}, fmtTime(s.received_at)),
      h("dt", {}, s.status === "processed" ? "Committed" : "Dead-lettered"), h("dd", {}, fmtTime(s.processed_at)),
      h("dt", {}, "Deliveries"), h("dd", {}, String(s.attempts)),
      h("dt", {}, "Rows written"), h("dd", {}, String(s.row_count)));
    if (s.error) facts.push(h("dt", {}, "Reason"), h("dd", {}, s.error));
  } else if (t.waiting) {
    facts.push(h("dt", {}, "Entity"), h("dd", {}, t.waiting.entity),
      h("dt", {}, "Stream sequence"), h("dd", {}, String(t.waiting.stream_sequence)),
      h("dt", {}, "Status"), h("dd.muted", {}, "Accepted, not yet committed by a worker (this page refreshes)."));
  } else {
    facts.push(h("dt", {}, "Status"), h("dd.muted", {}, "Neither the store nor the stream has it: never accepted, or the id is mistyped."));
  }
  if (t.position) facts.push(h("dt", {}, "Stream position"), h("dd", {}, `epoch ${t.position.epoch}, sequence ${t.position.sequence}`));
  if (t.dead_letter) {
    facts.push(h("dt", {}, "Dead letter"), h("dd", {}, classBadge(t.dead_letter.reason_class), " ", h("a", { href: `#/dead-letters/${t.message_id}` }, "open")));
  }
  if (t.discarded) facts.push(h("dt", {}, "Discarded"), h("dd", {}, `by ${t.discarded.by} at ${fmtTime(t.discarded.at)}: ${t.discarded.note}`));
  const rows = t.rows.map((r) => h("tr", {}, h("td", {}, r.table),
    h("td.mono", {}, Object.entries(r.key).map(([k, v]) => `${k}=${v}`).join("  "))));
  show(h("h1", {}, "Message trace"), h("div.panel", {}, form),
    h("div.panel", {}, h("dl.fields", {}, h("dt", {}, "Message id"), h("dd.mono", {}, t.message_id), facts)),
    h("div.panel", {}, h("h2", {}, "Rows it last wrote"),
      rows.length ? table([["Table"], ["Key"]], rows) : h("p.muted", { id: "no-rows" }, "None (not stored, or later messages overwrote them)."),
      t.rows_truncated ? h("p.muted", {}, `Only the first ${t.rows_per_table_shown} rows per table are shown.`) : null));
  if (t.outcome === "waiting" || (t.outcome === "dead_lettered" && t.dead_letter)) {
    refreshTimer = setTimeout(() => { if (page() === "trace") trace(id); }, 3000);
  }
}

// ---- Schema ------------------------------------------------------------------------------

async function schema(name) {
  let s;
  try { s = await api("/admin/schema"); } catch (e) { return show(h("h1", {}, "Schema"), failure(e)); }
  const entity = s.entities.find((e) => e.name === name) || s.entities[0];
  if (!entity) return show(h("h1", {}, "Schema"), h("p.muted", {}, "No entity is posted directly."));
  const tabs = h("div.tabs", {}, s.entities.map((e) => h(e.name === entity.name ? "a.active" : "a", { href: `#/schema/${e.name}` }, e.name)));
  const tables = entity.tables.map((t) => h("div", {},
    h("h2", {}, `Table ${t.table}`, t.entity !== entity.name ? ` (${t.entity}, derived)` : ""),
    h("p.muted", {}, `unique key: ${t.unicity_fields.length ? t.unicity_fields.join(", ") : "none (append-only)"}`,
      ` · version field: ${t.version_field || "none (later messages win)"} · surrogate key ${t.id_column}`),
    table([["Column"], ["Type"], ["SQL type"], ["Nullable"]], t.columns.map((c) => h("tr", {},
      h("td.mono", {}, c.name), h("td", {}, c.type), h("td.mono", {}, c.sql_type), h("td", {}, c.nullable ? "yes" : "no"))))));
  const body = h("textarea", { id: "validate-body", spellcheck: "false" });
  body.value = JSON.stringify(entity.example, null, 2);
  const result = h("div", { id: "validate-result" });
  const validate = async () => {
    result.replaceChildren();
    const key = sessionStorage.getItem(KEY_STORE);
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (key) headers.Authorization = `Bearer ${key}`;
    const snake = entity.route.split("/").pop();
    const r = await fetch(`/ingest/validate/${snake}`, { method: "POST", headers, body: body.value });
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    if (r.ok) result.replaceChildren(h("div.notice.good", {}, `Valid: /ingest/message/${snake} would accept it (nothing was published).`));
    else {
      const details = (data && data.details) || [];
      result.replaceChildren(h("div.notice.bad", {}, `${r.status}: ${(data && data.error) || "refused"}`),
        ...(details.length ? [table([["Field"], ["Error"]], details.map((e) => h("tr", {}, h("td.mono", {}, e.field), h("td", {}, e.error))))] : []));
    }
  };
  show(h("h1", {}, "Schema"), tabs,
    h("div.panel", {}, h("p", {}, "Posted to ", h("span.mono", {}, entity.route)), tables),
    h("div.panel", {}, h("h2", {}, "Validate a body"), body,
      h("div.row", {}, h("button.primary", { type: "button", id: "validate", onclick: validate }, "Validate")), result),
    h("div.panel", {}, h("h2", {}, "JSON Schema"), h("pre", {}, JSON.stringify(entity.json_schema, null, 2))),
    h("div.panel", {}, h("h2", {}, "Example"), h("pre", {}, JSON.stringify(entity.example, null, 2))));
}

// ---- Audit -------------------------------------------------------------------------------

// The dead letters an action concerned: the filter's conditions, or "every dead letter".
function which(target) {
  const parts = Object.entries(target || {}).filter(([, v]) => v !== null && v !== "").map(([k, v]) => `${k}=${v}`);
  return parts.length ? parts.join("  ") : "every dead letter";
}

async function audit() {
  let a;
  try { a = await api("/admin/actions?limit=100"); } catch (e) { return show(h("h1", {}, "Audit"), failure(e)); }
  const rows = a.actions.map((x) => h("tr", {}, h("td.time", {}, fmtTime(x.at)), h("td", {}, x.who), h("td", {}, x.action),
    h("td.mono", {}, h("span.clip", {}, which(x.target))), h("td.num", {}, fmtNum(x.count)), h("td", {}, x.note || "")));
  show(h("h1", {}, "Audit"), h("div.panel", {}, rows.length
    ? table([["When"], ["Who"], ["Action"], ["Which"], ["How many", "num"], ["Note"]], rows)
    : h("p.muted", {}, "No action yet.")));
}

// ---- Routing -----------------------------------------------------------------------------

function page() {
  const path = location.hash.replace(/^#\/?/, "").split("?")[0];
  return path.split("/")[0] || "overview";
}

function route() {
  clearTimeout(refreshTimer);
  const path = location.hash.replace(/^#\/?/, "").split("?")[0];
  const [name, arg] = [path.split("/")[0] || "overview", decodeURIComponent(path.split("/").slice(1).join("/"))];
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("data-page") === name);
  const who = document.getElementById("who");
  who.textContent = sessionStorage.getItem(KEY_STORE) ? "signed in with a key" : "";
  const pages = {
    overview: () => overview(),
    "dead-letters": () => (arg ? deadLetter(arg) : deadLetters()),
    trace: () => trace(arg),
    schema: () => schema(arg),
    audit: () => audit(),
  };
  (pages[name] || pages.overview)();
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
