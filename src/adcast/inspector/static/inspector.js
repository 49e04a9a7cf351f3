// The adcast inspector. Every string the data calls return may come from outside (event text,
// brands, categories, advertiser names, ids): it reaches the page through textContent and
// createElement only, never as HTML. No inline script: the page's CSP forbids it.
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  let fleetTimer = null;

  // An element: `props` sets className, id, textContent (text) or a title; children are elements or
  // text. Nothing else: no attribute that could load or run anything is ever set from data.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "title") node.title = String(value);
      else if (key === "id") node.id = String(value);
      else throw new Error("unexpected property " + key);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    node.replaceChildren();
    return node;
  }

  function utc(ms) {
    if (ms === null || ms === undefined) return "–";
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, seconds);
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 60) return Math.floor(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }

  function percent(p) {
    return p > 0 && p < 0.0005 ? "<0.1%" : (p * 100).toFixed(1) + "%";
  }

  function seconds(x) {
    return x === null || x === undefined ? "–" : x.toFixed(2) + " s";
  }

  async function getJSON(path) {
    const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const error = body && body.error ? body.error.code + ": " + body.error.message : response.statusText;
      throw new Error(response.status + " " + error);
    }
    return body;
  }

  function setAddress(query) {
    const search = query.toString();
    window.history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
  }

  // ---- the user view ----

  function advertiser(id, names) {
    const known = names[id];
    const cell = el("span", { class: "adv" });
    if (known) cell.append(el("span", { class: "adv-name", text: known.name }), " ");
    cell.append(el("span", { class: known ? "adv-id" : "adv-id bare", text: known ? "(" + id + ")" : id }));
    return cell;
  }

  function category(id, names) {
    const known = names[id];
    return known && known.category ? known.category : "–";
  }

  const CHANGE_TEXT = { same: "=", up: "▲", down: "▼", new: "new" };

  function changeCell(row) {
    if (!row.change) return el("td", { class: "change" });
    const title = row.base_rank ? "rank " + row.base_rank + " in the served slot" : "not in the served slot's top-K";
    const text = (CHANGE_TEXT[row.change] || "") + (row.change === "up" || row.change === "down" ? " from #" + row.base_rank : "");
    return el("td", { class: "change change-" + row.change, title: title, text: text });
  }

  function predictionTable(record, names, marked) {
    const head = el("tr", null, el("th", { text: "#" }), el("th", { text: "advertiser" }),
      el("th", { text: "category" }), el("th", { class: "num", text: "probability" }));
    if (marked) head.append(el("th", { text: "vs served" }));
    const body = el("tbody");
    const best = Math.max(...record.top.map((r) => r.probability), 1e-9);
    for (const row of record.top) {
      const bar = el("span", { class: "bar" });
      bar.style.width = Math.max(1, (100 * row.probability) / best).toFixed(1) + "%";
      const tr = el("tr", { class: row.change ? "row-" + row.change : null },
        el("td", { class: "rank", text: row.rank }),
        el("td", null, advertiser(row.advertiser_id, names)),
        el("td", { class: "cat", text: category(row.advertiser_id, names) }),
        el("td", { class: "prob" }, el("span", { class: "track" }, bar), el("span", { class: "pct", text: percent(row.probability) })));
      if (marked) tr.append(changeCell(row));
      body.append(tr);
    }
    return el("table", { class: "top" }, el("thead", null, head), body);
  }

  function column(col, names) {
    const box = el("div", { class: "column" + (col.base ? " base" : "") });
    box.append(el("h3", null, el("span", { class: "slot", text: col.slot }), " ",
      el("span", { class: "role role-" + col.role, text: col.role }),
      col.base ? el("span", { class: "served", text: "served" }) : null));
    const r = col.record;
    if (!r) {
      box.append(el("p", { class: "empty", text: "no prediction in this slot" }));
      return box;
    }
    box.append(el("dl", { class: "meta" },
      el("dt", { text: "version" }), el("dd", { text: r.version + (r.backfill ? " (backfill)" : "") }),
      el("dt", { text: "model" }), el("dd", { text: r.model_version }),
      el("dt", { text: "computed" }), el("dd", { text: utc(r.computed_at) + " (" + age(r.computed_seconds_ago) + " ago)" }),
      el("dt", { text: "age" }), el("dd", { text: age(r.age_seconds) + " since its newest event" })));
    box.append(predictionTable(r, names, !col.base && r.top.some((row) => row.change)));
    if (r.dropped && r.dropped.length) {
      const list = el("p", { class: "dropped" }, "not in this top-K: ");
      r.dropped.forEach((id, i) => list.append(i ? ", " : "", advertiser(id, names)));
      box.append(list);
    }
    return box;
  }

  function eventItem(e, names) {
    const parts = el("div", { class: "event-body" });
    if (e.advertiser_id) parts.append(advertiser(e.advertiser_id, names));
    const facts = [["category", e.category], ["brand", e.brand], ["item", e.item_id]];
    for (const [label, value] of facts) {
      if (value) parts.append(el("span", { class: "fact" }, el("span", { class: "label", text: label }), " ", el("span", { class: "value", text: value })));
    }
    if (e.text) parts.append(el("q", { class: "text", text: e.text }));
    return el("li", { class: "event" }, el("time", { text: utc(e.event_time) }),
      el("span", { class: "type type-" + e.event_type, text: e.event_type }), parts);
  }

  function history(data, names) {
    const box = clear(document.getElementById("history"));
    if (!data.history) {
      box.append(el("p", { class: "unavailable", text: "history unavailable: " + data.history_error }));
      return;
    }
    const h = data.history;
    const p = h.pending;
    const profile = Object.entries(h.profile || {}).map(([k, v]) => k + "=" + v).join(" ") || "–";
    box.append(el("dl", { class: "meta wide" },
      el("dt", { text: "version" }), el("dd", { text: h.version }),
      el("dt", { text: "pending" }), el("dd", { text: p.pending ? "yes, since " + utc(p.since) + (p.due_at ? "; next check " + utc(p.due_at) : "") : "no" }),
      el("dt", { text: "last emitted" }), el("dd", { text: p.emitted_version === null || p.emitted_version < 0 ? "never" : "version " + p.emitted_version + " at " + utc(p.last_emit_at) }),
      el("dt", { text: "profile" }), el("dd", { text: profile }),
      el("dt", { text: "served by" }), el("dd", { text: h.served_by + " (partition " + h.partition + ")" })));
    const events = el("ol", { class: "events", id: "events" });
    h.events.forEach((e) => events.append(eventItem(e, names)));
    box.append(el("h3", { text: h.events.length + " events" }), events);
    const shown = el("ul", { class: "chips" });
    // `now`: shown since the user's newest event (the page they browse), as the prompt marks it.
    h.shown.forEach((ad) => shown.append(el("li", ad.after ? { class: "now", title: "shown since the user's newest event" } : null,
      advertiser(ad.advertiser_id, names), ad.category ? " · " + ad.category : "", ad.after ? " · now" : "")));
    box.append(el("h3", { text: "shown ads" }), h.shown.length ? shown : el("p", { class: "empty", text: "none" }));
    const counters = el("ul", { class: "chips" });
    h.counters.forEach((c) => counters.append(el("li", null, advertiser(c.advertiser_id, names), " " + c.weight.toFixed(2))));
    box.append(el("h3", { text: "advertiser counters" }), h.counters.length ? counters : el("p", { class: "empty", text: "none" }));
  }

  function renderUser(data) {
    const names = data.names || {};
    const summary = clear(document.getElementById("user-summary"));
    const served = data.columns.find((c) => c.base);
    summary.append(el("span", { class: "user", text: data.user_id }));
    if (served) {
      summary.append(el("span", { text: "version " + served.record.version }),
        el("span", { text: "model " + served.record.model_version }),
        el("span", { text: "computed " + utc(served.record.computed_at) }),
        el("span", { class: "age", text: "age " + age(served.record.age_seconds) }));
    } else {
      summary.append(el("span", { class: "empty", text: "no prediction stored in any slot shown" }));
    }
    if (data.names_error) summary.append(el("span", { class: "warn", text: "advertiser names unavailable, ids shown: " + data.names_error }));
    const cols = clear(document.getElementById("columns"));
    data.columns.forEach((c) => cols.append(column(c, names)));
    history(data, names);
    const prompt = document.getElementById("prompt");
    prompt.textContent = data.history ? data.history.prompt + (data.history.truncated ? "\n[cut: the page was over its size limit]" : "") : "unavailable: no history";
    document.getElementById("user-body").hidden = false;
  }

  async function showUser(userId) {
    const status = document.getElementById("user-status");
    document.getElementById("user-body").hidden = true;
    status.textContent = "Loading " + userId + "…";
    status.className = "status";
    status.hidden = false;
    try {
      renderUser(await getJSON("ui/api/user?user_id=" + encodeURIComponent(userId)));
      status.textContent = "";
      status.hidden = true;
    } catch (e) {
      status.hidden = false;
      status.className = "status error";
      status.textContent = "cannot load " + userId + ": " + e.message;
    }
  }

  // ---- the fleet view ----

  function table(headers, rows, className) {
    const head = el("tr");
    headers.forEach((h) => head.append(el("th", { text: h })));
    const body = el("tbody");
    rows.forEach((cells) => body.append(el("tr", null, ...cells.map((c) => (c instanceof Node ? c : el("td", { text: c }))))));
    return el("table", { class: className || "grid" }, el("thead", null, head), body);
  }

  function card(name, title, ...content) {
    return el("div", { class: "card card-" + name }, el("h3", { text: title }), ...content);
  }

  function renderFleet(data) {
    const body = clear(document.getElementById("fleet-body"));
    const p = data.pointer;
    const slots = table(["live", "candidate", "previous", "changed"], [[p.live || "– (default g0)", p.candidate || "–", p.previous || "–", utc(p.updated_at)]]);
    const writers = p.writers.length ? table(["slot", "last heartbeat", "ago", "running"],
      p.writers.map((w) => [w.slot, utc(w.last_seen), age(w.seconds_ago), el("td", { class: w.running ? "ok" : "bad", text: w.running ? "yes" : "no" })])) : el("p", { class: "empty", text: "no writer has reported" });
    body.append(el("div", { class: "cards" }, card("pointer", "Slot pointer", slots), card("writers", "Writers", writers)));

    if (!data.workers) {
      body.append(el("p", { class: "unavailable", text: "no worker metrics: set serve.worker_metrics_urls (ADCAST_SERVE__WORKER_METRICS_URLS) to the workers' /metrics URLs" }));
    } else {
      const w = data.workers;
      const f = data.figures;
      const span = w.window_seconds === null ? "since the workers started (serve has watched them for under 30 s)" : "over the last " + age(w.window_seconds);
      const figure = el("div", { class: "figure" }, el("span", { class: "big", text: f.llm_calls_per_event === null ? "–" : f.llm_calls_per_event.toFixed(3) }),
        el("span", { text: " LLM calls per event (" + f.llm_calls + " calls, " + f.events + " events)" }));
      const fresh = f.freshness.length ? table(["slot", "predictions", "p50", "p99", "LLM calls"],
        f.freshness.map((r) => [r.slot, r.predictions, seconds(r.p50_seconds), seconds(r.p99_seconds), r.llm_calls])) : el("p", { class: "empty", text: "no predictions" });
      const dead = f.dead_letters.length ? table(["stage", "reason", "count"], f.dead_letters.map((d) => [d.stage, d.reason, d.count])) : el("p", { class: "empty", text: "none" });
      body.append(el("p", { class: "hint", text: w.read.length + " of the workers' endpoints read, figures " + span }));
      body.append(el("div", { class: "cards" }, card("cost", "Cost", figure), card("freshness", "Freshness (newest event → Redis)", fresh),
        card("dead-letters", "Dead letters", dead)));
      if (w.errors.length) body.append(card("unreachable", "Unreachable workers", table(["url", "error"], w.errors.map((e) => [e.url, e.error]))));
    }
    const lag = table(["tier", "group", "topic", "lag", "committed", "end"], data.lag.map((r) =>
      r.error ? [r.tier, r.group, r.topic, el("td", { class: "bad", text: r.error }), "", ""] : [r.tier, r.group, r.topic, r.lag, r.committed, r.end]));
    body.append(card("lag", "Consumer lag (from Kafka)", el("p", { class: "hint", text: "end minus committed offsets, summed over partitions" }), lag));
  }

  async function showFleet() {
    const status = document.getElementById("fleet-status");
    try {
      renderFleet(await getJSON("ui/api/fleet"));
      status.textContent = "updated " + utc(Date.now()) + ", every 5 s";
      status.className = "status";
    } catch (e) {
      status.className = "status error";
      status.textContent = "cannot load the fleet view: " + e.message;
    }
  }

  // ---- navigation ----

  function select(view) {
    const fleet = view === "fleet";
    document.getElementById("fleet-view").hidden = !fleet;
    document.getElementById("user-view").hidden = fleet;
    document.getElementById("user-form").hidden = fleet;
    document.getElementById("tab-fleet").classList.toggle("active", fleet);
    document.getElementById("tab-user").classList.toggle("active", !fleet);
    if (fleetTimer) window.clearInterval(fleetTimer);
    fleetTimer = null;
    if (fleet) {
      showFleet();
      fleetTimer = window.setInterval(showFleet, 5000);
    }
  }

  function start() {
    if (params.has("token")) params.delete("token"); // set as a cookie by the server; keep it out of the address
    setAddress(params);
    document.getElementById("tab-user").addEventListener("click", () => {
      params.delete("view");
      setAddress(params);
      select("user");
    });
    document.getElementById("tab-fleet").addEventListener("click", () => {
      params.set("view", "fleet");
      setAddress(params);
      select("fleet");
    });
    document.getElementById("user-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const userId = document.getElementById("user-id").value.trim();
      if (!userId) return;
      params.set("user_id", userId);
      params.delete("view");
      setAddress(params);
      showUser(userId);
    });
    const userId = params.get("user_id");
    if (userId) {
      document.getElementById("user-id").value = userId;
      showUser(userId);
    }
    select(params.get("view") === "fleet" ? "fleet" : "user");
  }

  start();
})();
