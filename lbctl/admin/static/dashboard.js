// lbctl web dashboard: polls the admin API's /stats every second and draws it; sends the
// operator actions as same-origin POSTs with a JSON body and the bearer token.
// No dependencies, no string-to-code, no HTML parsing of data: every value reaches the page
// as text (textContent), which the CSP's Trusted Types rule would enforce anyway.
"use strict";

(() => {
  const PERIOD_MS = 1000;
  const RATE_SECONDS = 5;            // req/s: mean of the last complete seconds (as lbctl stats)
  const TOKEN_KEY = "lbctl.admin.token";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const STATES = ["up", "slow_start", "down", "ejected", "disabled", "draining", "leaving"];

  const $ = (id) => document.getElementById(id);
  const tokenRequired = () =>
    document.querySelector('meta[name="lbctl-token"]').content === "required" || askedForToken;

  let token = sessionStorage.getItem(TOKEN_KEY) || null;
  let askedForToken = false;         // a 401 arrived though the page thought none was needed
  let timer = null;
  let polling = false;

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // ---- talking to the admin API -------------------------------------------------------

  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);          // relative: works behind a path prefix too
    } catch (err) {
      throw new ApiError(0, "unreachable");
    }
    let doc = null;
    try { doc = await resp.json(); } catch (err) { doc = null; }
    if (!resp.ok) {
      throw new ApiError(resp.status, (doc && doc.error) || resp.statusText || "error");
    }
    return doc;
  }

  function schedule(delay) {
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(poll, delay);
  }

  async function poll() {
    timer = null;
    if (polling) return;
    if (tokenRequired() && !token) {
      needToken("This admin API needs its token to show anything.");
      setConn("wait", "token needed");
      return;                                  // resumes when a token is entered
    }
    polling = true;
    try {
      const doc = await call("GET", "stats");
      render(doc);
      setConn("live", "live");
      stale(false);
    } catch (err) {
      stale(true);
      if (err.status === 401) {
        askedForToken = true;
        forgetToken();
        needToken("The admin API refused the token (401: " + err.message + "). Enter it again.");
        setConn("wait", "token needed");
        return;
      }
      setConn("down", err.status ? "error " + err.status + ", retrying" : "unreachable, retrying");
    } finally {
      polling = false;
    }
    schedule(PERIOD_MS);
  }

  async function act(pool, backend, action, weight) {
    const path = "pools/" + encodeURIComponent(pool) + "/backends/" +
      encodeURIComponent(backend) + "/" + action;
    const what = action === "weight" ? "weight " + weight : action;
    try {
      const doc = await call("POST", path, action === "weight" ? { weight } : {});
      const b = doc.backend;
      say(pool + "/" + backend + ": " + what + " done; now " + b.state.replace("_", " ") +
          ", weight " + num(b.weight) + ", " + b.inflight + " in flight", "ok");
      schedule(0);
    } catch (err) {
      if (err.status === 401) {
        askedForToken = true;
        say(what + " " + pool + "/" + backend + " refused: the admin API needs its token (401: " +
            err.message + ").", "error");
        needToken();
      } else if (err.status === 0) {
        say(what + " " + pool + "/" + backend + " failed: the admin API is unreachable.", "error");
      } else {
        say(what + " " + pool + "/" + backend + " refused (" + err.status + "): " + err.message,
            "error");
      }
    }
  }

  // ---- the token ----------------------------------------------------------------------

  function needToken(text) {
    $("token-form").hidden = false;
    if (text) say(text, "error");
  }

  function forgetToken() {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("forget").hidden = true;
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    $("token-form").hidden = true;
    $("forget").hidden = false;
    say("", "");
    schedule(0);
  });

  $("forget").addEventListener("click", () => {
    forgetToken();
    if (timer !== null) { clearTimeout(timer); timer = null; }
    stale(true);
    needToken("Token forgotten. Enter it to go on.");
    setConn("wait", "token needed");
  });

  // ---- formatting ---------------------------------------------------------------------

  function num(x) {
    if (x === null || x === undefined) return "-";
    return Number.isInteger(x) ? String(x) : String(Number(x.toFixed(2)));
  }

  function ms(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    if (seconds < 0.01) return (seconds * 1000).toFixed(1) + " ms";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    return seconds.toFixed(2) + " s";
  }

  function duration(seconds) {
    let s = Math.floor(seconds);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d) return d + "d" + two(h) + "h" + two(m) + "m";
    if (h) return h + "h" + two(m) + "m" + two(s) + "s";
    return m ? m + "m" + two(s) + "s" : s + "s";
  }

  function rate(history) {
    if (!history) return null;
    const done = history.requests.slice(-RATE_SECONDS - 1, -1);
    if (!done.length) return null;
    return done.reduce((a, b) => a + b, 0) / done.length;
  }

  function errorShare(b) {
    const h = b.history;
    if (h) {
      const requests = h.requests.reduce((a, c) => a + c, 0);
      return requests ? h.errors.reduce((a, c) => a + c, 0) / requests : 0;
    }
    return b.requests ? b.errors / b.requests : 0;
  }

  function clock(epoch) {
    return new Date(epoch * 1000).toLocaleTimeString();
  }

  // ---- drawing ------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setText(node, text) {
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function setConn(kind, text) {
    const node = $("conn");
    node.className = "conn conn-" + kind;
    setText(node, text);
  }

  // The figures on screen are from an earlier poll (unreachable, or no token).
  function stale(on) {
    for (const id of ["instance", "workers", "pools"]) $(id).classList.toggle("stale", on);
  }

  function say(text, kind) {
    const node = $("message");
    node.className = "message" + (kind ? " " + kind : "");
    setText(node, text);
  }

  function spark(className) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "spark" + (className ? " " + className : ""));
    svg.setAttribute("viewBox", "0 0 120 22");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    svg.appendChild(document.createElementNS(SVG_NS, "path"));
    return svg;
  }

  // One path over the series; null (no data that second) breaks the line.
  function drawSpark(svg, values) {
    const path = svg.firstChild;
    if (!values || !values.length) { path.setAttribute("d", ""); return; }
    const top = Math.max(0, ...values.filter((v) => v !== null));
    const step = values.length > 1 ? 120 / (values.length - 1) : 0;
    let d = "";
    let pen = false;
    values.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      const x = (i * step).toFixed(1);
      const y = (21 - (top > 0 ? (v / top) * 20 : 0)).toFixed(1);
      d += (pen ? "L" : "M") + x + " " + y;
      pen = true;
    });
    path.setAttribute("d", d);
  }

  const COLUMNS = [
    ["backend", ""], ["state", ""], ["weight", "num", "effective / configured"],
    ["in-flight", "num"],
    ["req/s", "num"], ["p50", "num"], ["p99", "num"],
    ["errors", "num", "count since the backend joined; share over the last minute"],
    ["ejections", "num", "passive (outlier) ejections since the backend joined"],
    ["requests", "num"], ["req/s 1m", ""], ["p99 1m", ""], ["actions", ""],
  ];

  const poolViews = new Map();        // pool name -> {section, title, sub, tbody, rows}

  function poolView(pool) {
    let view = poolViews.get(pool.name);
    if (view) return view;
    const section = el("section", "pool");
    section.dataset.pool = pool.name;
    const title = el("h2", null, "pool " + pool.name);
    const sub = el("span", "sub");
    title.appendChild(sub);
    const table = el("table");
    const head = el("tr");
    for (const [name, cls, tip] of COLUMNS) {
      const th = head.appendChild(el("th", cls, name));
      if (tip) th.title = tip;
    }
    table.appendChild(el("thead")).appendChild(head);
    const tbody = table.appendChild(el("tbody"));
    const scroll = el("div", "scroll");
    scroll.appendChild(table);
    section.append(title, scroll);
    $("pools").appendChild(section);
    view = { section, sub, tbody, rows: new Map() };
    poolViews.set(pool.name, view);
    return view;
  }

  function backendRow(view, poolName, b) {
    let row = view.rows.get(b.name);
    if (row) return row;
    const tr = el("tr");
    tr.dataset.pool = poolName;
    tr.dataset.backend = b.name;
    const cells = {};
    const cell = (field, cls) => {
      const td = el("td", cls);
      td.dataset.field = field;
      tr.appendChild(td);
      cells[field] = td;
      return td;
    };
    const name = cell("name");
    name.append(el("span", "name", b.name), el("span", "url", b.url));
    cells.state = cell("state").appendChild(el("span", "state"));
    for (const field of ["weight", "inflight", "rate", "p50", "p99"]) cell(field, "num");
    const errors = cell("errors", "num");
    cells.errorCount = errors.appendChild(el("span", "count"));
    errors.append(" ");                            // read and copied as "2 1.0%", not "21.0%"
    cells.errorPct = errors.appendChild(el("span", "pct"));
    cell("ejections", "num");
    cell("requests", "num");
    cells.sparkRate = cell("spark-rate").appendChild(spark(""));
    cells.sparkP99 = cell("spark-p99").appendChild(spark("p99"));
    const controls = cell("actions").appendChild(el("div", "controls"));
    for (const action of ["drain", "disable", "enable"]) {
      const button = el("button", null, action);
      button.type = "button";
      button.dataset.action = action;
      controls.appendChild(button);
    }
    const input = el("input");
    input.type = "number";
    input.min = "0";
    input.step = "any";
    input.placeholder = "weight";
    input.setAttribute("aria-label", "new weight for " + b.name);
    const set = el("button", null, "set");
    set.type = "button";
    set.dataset.action = "weight";
    controls.append(input, set);
    row = { tr, cells, input };
    view.rows.set(b.name, row);
    view.tbody.appendChild(tr);
    return row;
  }

  function renderBackend(row, b) {
    const c = row.cells;
    const state = b.state;
    c.state.className = "state " + (STATES.includes(state) ? "state-" + state : "");
    setText(c.state, state === "slow_start" && b.slow_start_progress !== null
      ? "slow start " + Math.round(b.slow_start_progress * 100) + "%"
      : state.replace("_", " "));
    row.tr.dataset.state = state;
    setText(c.weight, num(b.effective_weight) + " / " + num(b.weight));
    setText(c.inflight, b.inflight);
    const r = rate(b.history);
    setText(c.rate, r === null ? "-" : r.toFixed(1));
    const latency = b.latency || {};
    setText(c.p50, ms(latency.p50));
    setText(c.p99, ms(latency.p99));
    const share = errorShare(b);
    setText(c.errorCount, b.errors);
    setText(c.errorPct, (share * 100).toFixed(1) + "%");
    c.errorPct.className = "pct" + (share > 0.05 ? " bad" : "");
    setText(c.ejections, b.ejections || 0);         // null: never ejected (or no passive checks)
    setText(c.requests, b.requests);
    drawSpark(c.sparkRate, b.history ? b.history.requests : null);
    drawSpark(c.sparkP99, b.history ? b.history.p99 : null);
  }

  function renderPools(doc) {
    const seen = new Set();
    for (const pool of doc.pools) {
      seen.add(pool.name);
      const view = poolView(pool);
      const rates = pool.backends.map((b) => rate(b.history)).filter((r) => r !== null);
      const up = pool.backends.filter((b) => b.state === "up" || b.state === "slow_start").length;
      setText(view.sub, pool.algorithm + ", " + pool.mode + " · " + pool.eligible +
        " eligible, " + up + "/" + pool.backends.length + " up · " +
        rates.reduce((a, b) => a + b, 0).toFixed(1) + " req/s · " + pool.requests +
        " attempts, " + pool.errors + " errors, " + pool.retries + " retries");
      const names = new Set();
      for (const b of pool.backends) {
        names.add(b.name);
        renderBackend(backendRow(view, pool.name, b), b);
      }
      for (const [name, row] of view.rows) {      // a backend removed since the last poll
        if (!names.has(name)) { row.tr.remove(); view.rows.delete(name); }
      }
    }
    for (const [name, view] of poolViews) {
      if (!seen.has(name)) { view.section.remove(); poolViews.delete(name); }
    }
  }

  function renderTotals(doc) {
    const rates = [];
    let attempts = 0;
    let errors = 0;
    let backends = 0;
    let up = 0;
    for (const pool of doc.pools) {
      attempts += pool.requests;
      errors += pool.errors;
      for (const b of pool.backends) {
        backends += 1;
        if (b.state === "up" || b.state === "slow_start") up += 1;
        const r = rate(b.history);
        if (r !== null) rates.push(r);
      }
    }
    const items = [
      ["uptime", duration(doc.uptime)],
      ["req/s", rates.length ? rates.reduce((a, b) => a + b, 0).toFixed(1) : "-"],
      ["attempts", attempts],
      ["errors", errors],
      ["backends up", up + "/" + backends],
    ];
    const front = doc.frontend;
    if (front) {
      items.push(["client requests", front.requests]);
      for (const [cls, count] of Object.entries(front.responses)) {
        if (count || cls === "2xx" || cls === "5xx") items.push([cls, count]);
      }
      items.push(["client aborts", front.client_aborts]);
    }
    items.push(["pid", doc.pid], ["config", doc.config],
               ["loaded", doc.loaded_at ? clock(doc.loaded_at) : "-"]);
    if (doc.metrics === false) items.push(["metrics", "off"]);
    const dl = $("totals");
    if (dl.children.length !== items.length) {
      dl.replaceChildren(...items.map(() => {
        const div = el("div");
        div.append(el("dt"), el("dd"));
        return div;
      }));
    }
    items.forEach(([label, value], i) => {
      const div = dl.children[i];
      div.dataset.field = label;
      setText(div.firstChild, label);
      setText(div.lastChild, value);
    });
  }

  // Per-worker figures: drawn from doc.workers (a list of flat objects, one per worker) once
  // serve runs several workers; until then the instance is one process.
  function renderWorkers(doc) {
    const table = $("workers-table");
    const workers = Array.isArray(doc.workers) ? doc.workers : null;
    if (!workers || !workers.length) {
      table.hidden = true;
      setText($("workers-note"), "One process (pid " + doc.pid + "): the totals above are its " +
        "own. Per-worker figures appear here when serve runs several workers.");
      return;
    }
    setText($("workers-note"), workers.length + " workers; the totals above are the whole " +
      "instance's.");
    const keys = Object.keys(workers[0]).filter((k) => typeof workers[0][k] !== "object");
    const head = el("tr");
    for (const k of keys) head.appendChild(el("th", null, k.replace("_", " ")));
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceChildren(...workers.map((w) => {
      const tr = el("tr");
      for (const k of keys) {
        tr.appendChild(el("td", typeof w[k] === "number" ? "num" : null,
          typeof w[k] === "number" ? num(w[k]) : w[k]));
      }
      return tr;
    }));
    table.hidden = false;
  }

  function render(doc) {
    setText($("version"), doc.version);
    document.title = "lbctl " + doc.version + " dashboard";
    renderTotals(doc);
    renderWorkers(doc);
    renderPools(doc);
  }

  // ---- controls: one listener for every button in every pool ---------------------------

  $("pools").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const tr = button.closest("tr");
    const action = button.dataset.action;
    if (action === "weight") {
      const input = tr.querySelector("input");
      const weight = Number(input.value);
      if (!input.value || !Number.isFinite(weight) || weight <= 0) {
        say("weight " + tr.dataset.pool + "/" + tr.dataset.backend +
            ": enter a number greater than 0", "error");
        return;
      }
      act(tr.dataset.pool, tr.dataset.backend, "weight", weight);
      input.value = "";
    } else {
      act(tr.dataset.pool, tr.dataset.backend, action);
    }
  });

  $("pools").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.matches("input")) {
      event.target.closest("tr").querySelector('button[data-action="weight"]').click();
    }
  });

  $("forget").hidden = !token;
  poll();
})();
