// spctl's live status page: polls /api/status every second and draws one row per extension,
// the front and the supervisor. Every piece of data goes in through textContent or SVG
// attributes, never innerHTML (an extension's reason is untrusted text). Actions POST with
// "Authorization: Bearer <token>"; the token comes from the URL fragment (#token=…, never sent
// to a server) or the paste field, and is kept in sessionStorage (this tab only), never a cookie.
"use strict";

(function () {
  const POLL_MS = 1000;
  const KEY = "spctl-page-token";
  const ACTIONS = ["restart", "stop", "start"];
  const SVG = "http://www.w3.org/2000/svg";
  let token = null;
  let canAct = false;
  let busy = false;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function takeToken() {
    const m = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (m) {
      sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
      // the token leaves the address bar (and the history) at once
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    token = sessionStorage.getItem(KEY);
  }

  function headers() {
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function percent(cores) {
    return cores === null || cores === undefined ? "–" : (cores * 100).toFixed(1) + " %";
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24;
    const m = Math.floor(s / 60) % 60, sec = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + sec + "s";
    return sec + "s";
  }

  function spark(values, title) {
    const w = 90, h = 20;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", String(w));
    svg.setAttribute("height", String(h));
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    const t = document.createElementNS(SVG, "title");
    t.textContent = title;
    svg.appendChild(t);
    const known = (values || []).filter((v) => typeof v === "number");
    if (known.length < 2) return svg;
    // from the lowest to the highest value of the window; a flat series is a line in the middle
    const lo = Math.min.apply(null, known), hi = Math.max.apply(null, known);
    const step = w / Math.max(values.length - 1, 1);
    const pts = [];
    values.forEach((v, i) => {
      if (typeof v === "number") {
        const y = hi > lo ? h - 2 - ((v - lo) / (hi - lo)) * (h - 4) : h / 2;
        pts.push((i * step).toFixed(1) + "," + y.toFixed(1));
      }
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.appendChild(line);
    return svg;
  }

  function cell(row, text, cls) {
    const td = el("td", cls, text);
    row.appendChild(td);
    return td;
  }

  function reasonOf(e) {
    if (e.error && e.error.message) return e.error.message;
    return e.reason || e.last_exit || "";
  }

  function row(e, series, own) {
    const tr = el("tr", own ? "own" : "");
    tr.dataset.name = e.name || "";
    const usage = e.usage || {};
    cell(tr, e.name, "name");
    cell(tr, e.kind || "–", "kind");
    const st = cell(tr, e.state || "–", "state state-" + (e.state || "unknown"));
    st.dataset.state = e.state || "";
    cell(tr, e.pid || "–", "pid num");
    cell(tr, duration(e.uptime), "uptime num");
    cell(tr, e.restarts === undefined ? "–" : e.restarts, "restarts num");
    cell(tr, reasonOf(e), "reason");
    cell(tr, bytes(usage.rss), "memory num");
    cell(tr, "", "spark-rss").appendChild(spark(series && series.rss, "memory, last minutes"));
    cell(tr, percent(usage.cpu), "cpu num");
    cell(tr, "", "spark-cpu").appendChild(spark(series && series.cpu, "CPU, last minutes"));
    const acts = cell(tr, "", "actions");
    if (!own && e.kind !== undefined) {
      ACTIONS.forEach((action) => {
        const b = el("button", "act-" + action, action);
        b.type = "button";
        b.disabled = !canAct || busy;
        b.title = canAct ? action + " " + e.name : "read-only: actions need the token";
        b.addEventListener("click", () => act(e.name, action));
        acts.appendChild(b);
      });
    }
    return tr;
  }

  function last(series, key) {
    const values = series && series[key];
    return values && values.length ? values[values.length - 1] : null;
  }

  function render(data) {
    const status = data.status || {};
    const hist = data.history || { series: {} };
    const sup = status.supervisor || {};
    canAct = data.actions === true;
    const mode = document.getElementById("mode");
    mode.textContent = canAct ? "actions enabled" : "read-only";
    mode.className = "badge " + (canAct ? "actions" : "readonly");
    const rows = [];
    (status.extensions || []).forEach((e) => rows.push(row(e, hist.series[e.name], false)));
    const front = sup.mcp_front;
    if (front) {
      const measured = { rss: last(hist.front, "rss"), cpu: last(hist.front, "cpu") };
      rows.push(row(Object.assign({}, front, { usage: measured }), hist.front, true));
    }
    const own = {
      name: "spctl (supervisor)", kind: "supervisor", state: "running", pid: sup.pid,
      uptime: sup.uptime, reason: sup.version ? "version " + sup.version : "",
      usage: { rss: sup.rss, cpu: last(hist.supervisor, "cpu") },
    };
    rows.push(row(own, hist.supervisor, true));
    document.getElementById("rows").replaceChildren(...rows);
    const exts = status.extensions || [];
    const running = exts.filter((e) => e.state === "running").length;
    document.getElementById("summary").textContent =
      running + " of " + exts.length + " extensions running · limits: " +
      (sup.limits_enforcement || "–");
    document.getElementById("updated").textContent =
      "updated " + new Date().toLocaleTimeString();
  }

  function showError(text) {
    const p = document.getElementById("error");
    p.textContent = text || "";
    p.hidden = !text;
  }

  async function poll() {
    try {
      const r = await fetch("/api/status", { headers: headers(), cache: "no-store",
        credentials: "omit" });
      if (r.status === 401) {
        showError("this front requires its token to read the status: paste it above");
      } else if (!r.ok) {
        const body = await r.json().catch(() => ({}));
        showError(body.error || ("status: HTTP " + r.status));
      } else {
        showError("");
        render(await r.json());
      }
    } catch (err) {
      showError("the spctl front does not answer (" + err + ")");
    }
    setTimeout(poll, POLL_MS);
  }

  async function act(name, action) {
    const msg = document.getElementById("message");
    busy = true;
    msg.textContent = action + " " + name + "…";
    try {
      const r = await fetch("/api/extensions/" + encodeURIComponent(name) + "/" + action, {
        method: "POST", headers: headers(), cache: "no-store", credentials: "omit",
      });
      const body = await r.json().catch(() => ({}));
      msg.textContent = r.ok
        ? action + " " + name + ": " + ((body.extension && body.extension.state) || "done")
        : action + " " + name + " refused (HTTP " + r.status + "): " + (body.error || "");
    } catch (err) {
      msg.textContent = action + " " + name + " failed: " + err;
    } finally {
      busy = false;
    }
  }

  function start() {
    takeToken();
    document.getElementById("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = document.getElementById("token");
      const given = input.value.trim();
      input.value = "";
      if (given) sessionStorage.setItem(KEY, given);
      token = sessionStorage.getItem(KEY);
    });
    document.getElementById("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      token = null;
    });
    poll();
  }

  start();
})();
