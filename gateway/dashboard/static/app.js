/* The live trading dashboard (issue 21): plain JS, no framework, no build.
 *
 * Load: the live stream first (GET /api/stream through fetch, so it can carry the Bearer token; its first
 * event, hello, says it follows every stream), then the REST snapshots, each with a limit (never everything),
 * then the events that came meanwhile: rows are keyed by id (order id, fill id, signal id, pair+venue...) and
 * an order's newer version wins, so an event that is also in a snapshot never doubles a row. A drop: the banner
 * shows, the stream reconnects (back-off 250 ms .. 2 s) with Last-Event-ID and gets every stored event after
 * the last one seen, once. Token: asked when the API answers 401, kept in sessionStorage, never in a URL. */
"use strict";

(() => {
  const LW = window.LightweightCharts;
  const TOKEN_KEY = "tbx.apiToken";
  const LIMIT = { orders: 50, working: 100, workingMax: 1000, fills: 100, alerts: 50, signals: 50, equity: 5000, prices: 3000 };
  const KEEP = { fills: 200, orders: 100, alerts: 100, signals: 100 }; // rows kept live (memory bounded)
  const WORKING = ["initialized", "submitted", "accepted", "triggered", "pending_update", "pending_cancel",
    "partially_filled"];
  const WORKING_SET = new Set(WORKING);
  const FINAL_SIGNAL = new Set(["executed", "filtered", "rejected"]);
  const POLL_MS = 10000;
  const STALE_MS = 40000; // the gateway pings every 15 s: nothing for this long is a dead connection
  const BACKOFF_MS = [250, 500, 1000, 2000];

  const $ = (sel) => document.querySelector(sel);
  const st = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    base: "",
    pairs: [],
    prec: new Map(), // pair -> {price, qty}: the most decimals the API showed for the pair
    orders: new Map(),
    fills: new Map(),
    positions: new Map(),
    signals: new Map(),
    alerts: new Map(),
    summary: null,
    perf: null, // /api/performance's currentDrawdownPct / maxDrawdownPct (exact, from the all-time peak)
    summaryTs: 0,
    equity: new Map(), // second -> equity
    ticks: new Map(), // pair -> Map(second -> price)
    pair: "",
    lastEventId: null,
    connected: false,
    loaded: false,
    pending: [],
    events: 0,
    reconnects: 0,
    tradingState: "",
  };

  // ---------------------------------------------------------------- numbers: exact, per the pair's precision
  function plain(v) {
    if (v === null || v === undefined || v === "") return null;
    let s = typeof v === "number" ? (Number.isFinite(v) ? String(v) : "") : String(v).trim();
    if (/e/i.test(s)) {
      const n = Number(s);
      s = Number.isFinite(n) ? n.toLocaleString("en-US", { useGrouping: false, maximumFractionDigits: 20 }) : "";
    }
    return /^-?\d+(\.\d+)?$/.test(s) ? s : null;
  }
  const decimals = (s) => (s.includes(".") ? s.length - s.indexOf(".") - 1 : 0);

  function fixed(v, d, signed = false) {
    const s = plain(v);
    if (s === null) return "–";
    const neg = s.startsWith("-");
    const [ip, fp = ""] = (neg ? s.slice(1) : s).split(".");
    let q;
    if (fp.length <= d) {
      q = BigInt(ip + fp.padEnd(d, "0"));
    } else {
      const n = BigInt(ip + fp);
      const div = 10n ** BigInt(fp.length - d);
      q = n / div;
      if (2n * (n % div) >= div) q += 1n; // half away from zero
    }
    const digits = q.toString().padStart(d + 1, "0");
    const int = digits.slice(0, digits.length - d).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    const body = d > 0 ? `${int}.${digits.slice(digits.length - d)}` : int;
    const sign = q === 0n ? "" : neg ? "-" : signed ? "+" : "";
    return sign + body;
  }
  const prec = (pair) => st.prec.get(pair) || { price: 0, qty: 0 };
  function learn(pair, kind, v) {
    const s = plain(v);
    if (!pair || s === null) return false;
    const p = st.prec.get(pair) || { price: 0, qty: 0 };
    const d = Math.min(decimals(s.replace(/^-/, "")), 12);
    st.prec.set(pair, p);
    if (d <= p[kind]) return false;
    p[kind] = d;
    st.precChanged = true; // every row of the pair is drawn again with as many decimals
    return true;
  }
  const px = (pair, v) => fixed(v, Math.max(2, prec(pair).price));
  const qty = (pair, v) => fixed(v, prec(pair).qty);
  /* Money with the decimals the API gives it (its currency's precision: 0.00041 BTC is not "0.00"), at least 2. */
  const money = (v, signed = false) => fixed(v, Math.max(2, Math.min(12, decimals(plain(v) || ""))), signed);
  const sign = (v) => {
    const s = plain(v);
    return s === null || /^-?0(\.0*)?$/.test(s) ? "" : s.startsWith("-") ? "down" : "up";
  };
  /* A fraction as a percentage, exactly (the decimal point moved two places: no float). */
  function percent(v) {
    const s = plain(v);
    if (s === null) return null;
    const neg = s.startsWith("-");
    const [ip, fp = ""] = (neg ? s.slice(1) : s).split(".");
    const f = fp.padEnd(2, "0");
    const int = `${ip}${f.slice(0, 2)}`.replace(/^0+(?=\d)/, "");
    return (neg ? "-" : "") + int + (f.length > 2 ? `.${f.slice(2)}` : "");
  }
  /* A drawdown (a positive fraction: the fall from the peak) shown as a negative percentage. */
  function drawdownText(v) {
    const p = percent(v);
    if (p === null) return ["–", ""];
    const fall = p.startsWith("-") ? p.slice(1) : `-${p}`;
    const text = fixed(fall, 2);
    return [`${text} %`, text.startsWith("-") ? "down" : ""];
  }
  const num = (v) => (v === null || v === undefined ? NaN : Number(v));
  function time(ms) {
    if (!ms) return "–";
    const d = new Date(ms);
    const t = d.toLocaleTimeString([], { hour12: false });
    return d.toDateString() === new Date().toDateString() ? t : `${d.toLocaleDateString()} ${t}`;
  }

  // ---------------------------------------------------------------- messages on the page (never the console)
  function pageError(text) {
    const el = $("#page-error");
    el.textContent = text || "";
    el.hidden = !text;
  }
  let toastTimer = 0;
  function toast(text, bad = false) {
    const el = $("#toast");
    el.textContent = text;
    el.classList.toggle("bad", bad);
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (el.hidden = true), bad ? 8000 : 4000);
  }
  function problemText(status, body) {
    if (body && typeof body === "object" && (body.detail || body.title)) {
      const field = body.field ? ` (${body.field})` : "";
      return `${status} ${body.title || ""}: ${body.detail || ""}${field}`.trim();
    }
    return `HTTP ${status}`;
  }

  // ---------------------------------------------------------------- the token (asked on a 401)
  let tokenWait = null; // one dialog for every request that met a 401
  function askToken(refused) {
    const dialog = $("#token-dialog");
    $("#token-error").hidden = !refused;
    if (!dialog.open) {
      dialog.returnValue = ""; // "ok" only once a token worked (Esc leaves it as it was)
      $("#token-input").value = "";
      dialog.showModal();
      $("#token-input").focus();
    }
    if (!tokenWait) {
      let resolve;
      tokenWait = new Promise((r) => (resolve = r));
      tokenWait.resolve = resolve;
    }
    return tokenWait;
  }
  async function submitToken(ev) {
    ev.preventDefault();
    const value = $("#token-input").value.trim();
    if (!value) return;
    const button = $("#token-submit");
    button.disabled = true;
    let ok = false;
    try {
      const r = await fetch("/api/status", { headers: { Authorization: `Bearer ${value}` }, cache: "no-store" });
      ok = r.status !== 401;
    } catch {
      ok = false;
    } finally {
      button.disabled = false;
    }
    if (!ok) {
      $("#token-error").hidden = false;
      $("#token-input").select();
      return;
    }
    st.token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("#token-error").hidden = true;
    $("#token-open").hidden = true;
    $("#token-dialog").close("ok");
    pageError("");
    const wait = tokenWait;
    tokenWait = null;
    if (wait) wait.resolve();
  }

  // ---------------------------------------------------------------- the API
  async function api(method, path, body) {
    for (;;) {
      const headers = { Accept: "application/json" };
      if (st.token) headers.Authorization = `Bearer ${st.token}`;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const r = await fetch(path, {
        method, headers, cache: "no-store", body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (r.status === 401) {
        await askToken(Boolean(st.token));
        continue;
      }
      const text = await r.text();
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch {
        data = null;
      }
      if (!r.ok) {
        const e = new Error(problemText(r.status, data));
        e.status = r.status;
        e.problem = data;
        throw e;
      }
      return data;
    }
  }

  // ---------------------------------------------------------------- keyed tables
  /* Rows are keyed (data-* on the tr): an update rewrites the cells in place, so a focused button stays. */
  function syncRows(tbody, items, key, attrs, cells, actions) {
    const rows = tbody._rows || (tbody._rows = new Map());
    const want = new Set();
    items.forEach((item, i) => {
      const k = key(item);
      want.add(k);
      let tr = rows.get(k);
      if (!tr) {
        tr = document.createElement("tr");
        for (const [name, value] of Object.entries(attrs(item))) tr.dataset[name] = value;
        rows.set(k, tr);
      }
      const values = cells(item);
      while (tr.cells.length < values.length) tr.appendChild(document.createElement("td"));
      values.forEach(([text, cls, field], j) => {
        const td = tr.cells[j];
        if (td.textContent !== text) td.textContent = text;
        const c = cls || "";
        if (td.className !== c) td.className = c;
        if (field && td.dataset.field !== field) td.dataset.field = field;
      });
      if (actions) {
        let td = tr.cells[values.length];
        if (!td) td = tr.appendChild(document.createElement("td"));
        actions(td, item);
      }
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (const [k, tr] of rows) {
      if (!want.has(k)) {
        tr.remove();
        rows.delete(k);
      }
    }
  }
  function button(td, action, label, title, show) {
    let b = td.querySelector(`button[data-action="${action}"]`);
    if (!b) {
      b = document.createElement("button");
      b.type = "button";
      b.dataset.action = action;
      b.textContent = label;
      b.title = title;
      b.setAttribute("aria-label", title);
      td.appendChild(b);
    }
    b.hidden = !show;
    return b;
  }
  /* Keeps every protected item (a working order) plus the newest `keep` of the others: the others are bounded
   * on their own, so many working orders never push every finished one off the page. */
  function trim(map, keep, keyOf, orderBy, protect) {
    const items = [...map.values()].filter((x) => !(protect && protect(x)));
    if (items.length <= keep) return;
    items.sort((a, b) => orderBy(a) - orderBy(b));
    for (const x of items.slice(0, items.length - keep)) map.delete(keyOf(x));
  }

  // ---------------------------------------------------------------- orders
  function learnOrder(o) {
    let more = learn(o.pair, "price", o.price) | learn(o.pair, "price", o.stopPrice);
    more |= learn(o.pair, "qty", o.quantity);
    for (const f of o.fills || []) more |= learn(o.pair, "price", f.price) | learn(o.pair, "qty", f.quantity);
    return Boolean(more);
  }
  function putOrder(o) {
    const had = st.orders.get(o.orderId);
    if (had && (had.version || 0) > (o.version || 0)) return false;
    learnOrder(o);
    st.orders.set(o.orderId, o);
    return true;
  }
  const isWorking = (o) => WORKING_SET.has(o.status);
  function renderOrders() {
    trim(st.orders, KEEP.orders, (o) => o.orderId, (o) => o.createdAt || 0, isWorking);
    const items = [...st.orders.values()].sort(
      (a, b) => Number(isWorking(b)) - Number(isWorking(a)) || (b.createdAt || 0) - (a.createdAt || 0),
    );
    syncRows(
      $("#orders tbody"), items, (o) => o.orderId, (o) => ({ orderId: o.orderId, pair: o.pair }),
      (o) => [
        [o.orderId, "", "orderId"],
        [o.pair, "", "pair"],
        [o.side, o.side, "side"],
        [o.algo ? `${o.type} · ${o.algo}` : o.type, "", "type"],
        [qty(o.pair, o.quantity), "n", "quantity"],
        [o.price !== null && o.price !== undefined ? px(o.pair, o.price)
          : o.stopPrice !== null && o.stopPrice !== undefined ? `stop ${px(o.pair, o.stopPrice)}`
            : o.averagePrice ? `≈ ${px(o.pair, o.averagePrice)}` : "market", "n", "price"],
        [qty(o.pair, o.filledQuantity), "n", "filledQuantity"],
        [o.status, `st-${o.status}`, "status"],
      ],
      (td, o) => {
        const working = isWorking(o) && o.status !== "pending_cancel";
        button(td, "modify", "Modify", `Modify ${o.orderId}`, working && !o.algo);
        button(td, "cancel", "Cancel", `Cancel ${o.orderId}`, working);
      },
    );
  }

  // ---------------------------------------------------------------- fills
  function putFill(f) {
    if (!f || !f.fillId || st.fills.has(f.fillId)) return false;
    learn(f.pair, "price", f.price);
    learn(f.pair, "qty", f.quantity);
    st.fills.set(f.fillId, f);
    tick(f.pair, f.timestamp, f.price, true);
    return true;
  }
  function renderFills() {
    trim(st.fills, KEEP.fills, (f) => f.fillId, (f) => f.timestamp || 0);
    const items = [...st.fills.values()].sort((a, b) => (b.timestamp || 0) - (a.timestamp || 0));
    syncRows(
      $("#fills tbody"), items, (f) => f.fillId, (f) => ({ fillId: f.fillId, pair: f.pair }),
      (f) => [
        [time(f.timestamp), ""],
        [f.pair, ""],
        [f.side, f.side],
        [qty(f.pair, f.quantity), "n"],
        [px(f.pair, f.price), "n"],
        [`${fixed(f.fee, Math.min(8, Math.max(2, prec(f.pair).price) + 2))} ${f.feeCurrency || ""}`.trim(), "n"],
        [f.orderId || "", ""],
        [f.exchange || f.venue || "", ""],
      ],
    );
  }

  // ---------------------------------------------------------------- positions and summary
  const posKey = (p) => `${p.pair}|${p.exchange || p.venue || ""}`;
  function putPosition(p) {
    const k = posKey(p);
    const had = st.positions.get(k);
    if (had && (had.updatedAt || 0) > (p.updatedAt || 0)) return;
    learn(p.pair, "qty", p.quantity);
    if (!num(p.quantity)) st.positions.delete(k);
    else st.positions.set(k, p);
  }
  function renderPositions() {
    const items = [...st.positions.values()].sort((a, b) => (a.pair < b.pair ? -1 : a.pair > b.pair ? 1 : 0));
    syncRows(
      $("#positions tbody"), items, posKey, (p) => ({ pair: p.pair, exchange: p.exchange || p.venue || "" }),
      (p) => [
        [p.pair, ""],
        [p.exchange || p.venue || "", ""],
        [p.side, p.side === "long" ? "up" : "down"],
        [qty(p.pair, p.quantity), "n"],
        [px(p.pair, p.averagePrice), "n"],
        [px(p.pair, p.currentPrice), "n"],
        [money(p.unrealizedPnL, true), `n ${sign(p.unrealizedPnL)}`, "unrealizedPnl"],
      ],
      (td, p) => button(td, "close", "Close", `Close the ${p.pair} position on ${p.exchange || p.venue}`, true),
    );
  }
  function putPortfolio(snap, ts) {
    if (!snap || !snap.summary) return;
    const at = ts || snap.ts || Date.now();
    if (at < st.summaryTs) return;
    st.summaryTs = at;
    st.summary = snap.summary;
    if (snap.summary.baseCurrency) st.base = snap.summary.baseCurrency;
    if (Array.isArray(snap.positions)) {
      st.positions.clear();
      for (const p of snap.positions) putPosition(p);
    }
    const total = num(snap.summary.totalValue);
    if (Number.isFinite(total)) putEquity(at, total);
  }
  function renderSummary() {
    const s = st.summary;
    const set = (field, text, cls = "") => {
      const el = $(`#summary [data-field="${field}"]`);
      el.textContent = text;
      el.className = cls;
    };
    $("#base-ccy").textContent = st.base ? `(${st.base})` : "";
    if (s) {
      set("totalValue", money(s.totalValue));
      set("cash", money(s.totalCash));
      set("dayPnl", money(s.dayPnL, true), sign(s.dayPnL));
      set("realizedPnl", money(s.realizedPnL, true), sign(s.realizedPnL));
      set("unrealizedPnl", money(s.unrealizedPnL, true), sign(s.unrealizedPnL));
      set("fees", money(s.feesPaid));
    }
    // the service's drawdown (GET /api/performance), never one worked out from the points the page keeps
    const p = st.perf || {};
    set("drawdown", ...drawdownText(p.currentDrawdownPct));
    set("maxDrawdown", ...drawdownText(p.maxDrawdownPct));
  }
  function putPerformance(perf) {
    if (!perf) return;
    st.perf = { currentDrawdownPct: perf.currentDrawdownPct, maxDrawdownPct: perf.maxDrawdownPct };
    mark("summary");
  }
  let perfBusy = false; // one request at a time: a slow answer never piles up polls
  async function pollPerformance() {
    if (perfBusy || tokenWait) return;
    perfBusy = true;
    try {
      putPerformance(await api("GET", "/api/performance"));
    } finally {
      perfBusy = false;
    }
  }

  // ---------------------------------------------------------------- signals, alerts, trading state, venues
  function putSignal(s) {
    if (!s || !s.signalId) return;
    const had = st.signals.get(s.signalId);
    if (had && FINAL_SIGNAL.has(had.status) && !FINAL_SIGNAL.has(s.status)) return; // accepted after its result
    st.signals.set(s.signalId, s);
  }
  function renderSignals() {
    // by arrival (the service's receivedAt), never the sender's clock (ts): a source an hour behind still shows
    const arrived = (s) => s.receivedAt || s.ts || 0;
    trim(st.signals, KEEP.signals, (s) => s.signalId, arrived);
    const items = [...st.signals.values()].sort((a, b) => arrived(b) - arrived(a));
    syncRows(
      $("#signals tbody"), items, (s) => s.signalId, (s) => ({ signalId: s.signalId }),
      (s) => [
        [time(s.receivedAt || s.ts), ""],
        [s.pair, ""],
        [s.signal, String(s.signal || "").toLowerCase()],
        [fixed(s.confidence, 2), "n"],
        [[s.source, s.strategy].filter(Boolean).join(" / "), ""],
        [s.status, `st-${s.status}`, "status"],
        [(s.orders || []).length ? (s.orders || []).map((o) => `${o.orderId} ${o.status}`).join(", ")
          : s.reason || (s.notes || []).join("; ") || "", "wrap"],
      ],
    );
  }
  const alertKey = (a) => `${a.ts}|${a.code}|${a.orderId || ""}|${a.pair || ""}|${a.message}`;
  function putRisk(ev) {
    if (!ev) return;
    if (ev.state && (ev.code === "TRADING_STATE" || !ev.code)) setTradingState(ev.state);
    if (ev.severity && ev.code) st.alerts.set(alertKey(ev), ev);
  }
  function renderAlerts() {
    trim(st.alerts, KEEP.alerts, alertKey, (a) => a.ts || 0);
    const items = [...st.alerts.values()].sort((a, b) => (b.ts || 0) - (a.ts || 0));
    syncRows(
      $("#alerts tbody"), items, alertKey, (a) => ({ code: a.code }),
      (a) => [
        [time(a.ts), ""],
        [a.severity, `sev-${a.severity}`],
        [a.code, ""],
        [a.message, "wrap"],
      ],
    );
  }
  function setTradingState(s) {
    if (!s) return;
    st.tradingState = s;
    const el = $("#trading-state");
    el.textContent = s;
    el.className = `state ${s}`;
    $("#emergency-stop").disabled = s === "HALTED";
    $("#resume").disabled = s === "ACTIVE";
  }
  function renderVenues(list) {
    syncRows(
      $("#venues tbody"), list, (v) => v.id, (v) => ({ venue: v.id }),
      (v) => [
        [v.paper ? `${v.id} (paper)` : v.id, ""],
        [v.status, `st-${v.status}`, "status"],
        [v.updates || "", ""],
        [v.latencyMs === null || v.latencyMs === undefined ? "–" : `${v.latencyMs} ms`, "n"],
        [v.lastError ? `${v.lastError}${v.lastErrorAt ? ` (${time(v.lastErrorAt)})` : ""}` : "", "wrap"],
      ],
    );
  }
  async function pollStatus() {
    const [status, venues] = await Promise.all([api("GET", "/api/status"), api("GET", "/api/exchanges")]);
    setTradingState(status.tradingState);
    $("#service-status").textContent = `service ${status.status}`;
    $("#mode").textContent = `${status.mode} mode`;
    if (!st.pairs.length) setPairs(status.pairs || []);
    renderVenues((venues && venues.exchanges) || []);
    return status;
  }

  // ---------------------------------------------------------------- charts
  const chartOptions = () => ({
    autoSize: true,
    layout: { background: { color: "transparent" }, textColor: "#8a93a6", attributionLogo: false },
    grid: { vertLines: { color: "#222838" }, horzLines: { color: "#222838" } },
    timeScale: { timeVisible: true, secondsVisible: true },
    rightPriceScale: { borderColor: "#2a3040" },
  });
  let equityChart = null;
  let equitySeries = null;
  let ddSeries = null;
  let priceChart = null;
  let priceSeries = null;
  let priceMarkers = null;
  function makeCharts() {
    if (!LW) {
      pageError("The chart library did not load: the charts are off, the tables still work.");
      return;
    }
    equityChart = LW.createChart($("#equity-chart"), chartOptions());
    equitySeries = equityChart.addSeries(LW.AreaSeries, {
      lineColor: "#4c8dff", topColor: "rgba(76,141,255,.35)", bottomColor: "rgba(76,141,255,0)", lineWidth: 2,
      priceFormat: { type: "price", precision: 2, minMove: 0.01 },
    });
    ddSeries = equityChart.addSeries(LW.AreaSeries, {
      lineColor: "#ef5350", topColor: "rgba(239,83,80,0)", bottomColor: "rgba(239,83,80,.35)", lineWidth: 1,
      invertFilledArea: true, priceFormat: { type: "percent", precision: 2, minMove: 0.01 },
    }, 1);
    const panes = equityChart.panes();
    if (panes.length > 1) panes[1].setHeight(80);
    priceChart = LW.createChart($("#price-chart"), chartOptions());
    priceSeries = priceChart.addSeries(LW.LineSeries, { color: "#d8dde8", lineWidth: 2 });
    priceMarkers = LW.createSeriesMarkers(priceSeries, []);
  }
  function putEquity(ms, value) {
    st.equity.set(Math.floor(ms / 1000), value);
    if (st.equity.size > LIMIT.equity) {
      const keys = [...st.equity.keys()].sort((a, b) => a - b);
      for (const k of keys.slice(0, st.equity.size - LIMIT.equity)) st.equity.delete(k);
    }
  }
  function equityPoints() {
    return [...st.equity.entries()].sort((a, b) => a[0] - b[0]);
  }
  function renderEquity() {
    if (!equitySeries) return;
    const pts = equityPoints();
    let peak = -Infinity;
    const eq = [];
    const dd = [];
    for (const [t, v] of pts) {
      peak = Math.max(peak, v);
      eq.push({ time: t, value: v });
      dd.push({ time: t, value: peak > 0 ? ((v - peak) / peak) * 100 : 0 });
    }
    equitySeries.setData(eq);
    ddSeries.setData(dd);
  }
  function tick(pair, ms, price, isFill = false) {
    const v = num(price);
    if (!pair || !ms || !Number.isFinite(v)) return;
    let m = st.ticks.get(pair);
    if (!m) st.ticks.set(pair, (m = new Map()));
    const t = Math.floor(ms / 1000);
    if (isFill && m.has(t)) return; // the live price of that second stays; the marker sits on it
    m.set(t, v);
    if (m.size > LIMIT.prices) {
      const keys = [...m.keys()].sort((a, b) => a - b);
      for (const k of keys.slice(0, m.size - LIMIT.prices)) m.delete(k);
    }
  }
  function renderPrice() {
    if (!priceSeries || !st.pair) return;
    const pair = st.pair;
    const p = Math.max(2, prec(pair).price);
    priceSeries.applyOptions({ priceFormat: { type: "price", precision: p, minMove: 10 ** -p } });
    const m = st.ticks.get(pair) || new Map();
    const data = [...m.entries()].sort((a, b) => a[0] - b[0]).map(([time, value]) => ({ time, value }));
    priceSeries.setData(data);
    const first = data.length ? data[0].time : Infinity;
    const markers = [...st.fills.values()]
      .filter((f) => f.pair === pair && Math.floor(f.timestamp / 1000) >= first)
      .sort((a, b) => a.timestamp - b.timestamp)
      .map((f) => ({
        time: Math.floor(f.timestamp / 1000),
        position: f.side === "buy" ? "belowBar" : "aboveBar",
        color: f.side === "buy" ? "#26a69a" : "#ef5350",
        shape: f.side === "buy" ? "arrowUp" : "arrowDown",
        text: f.side === "buy" ? "B" : "S",
      }));
    priceMarkers.setMarkers(markers);
  }
  function setPairs(pairs) {
    st.pairs = pairs;
    const sel = $("#pair-select");
    sel.textContent = "";
    for (const p of pairs) {
      const o = document.createElement("option");
      o.value = p;
      o.textContent = p;
      sel.appendChild(o);
    }
    if (!st.pair || !pairs.includes(st.pair)) st.pair = pairs[0] || "";
    sel.value = st.pair;
  }

  // ---------------------------------------------------------------- rendering, batched
  const dirty = new Set();
  let renderTimer = 0;
  const RENDER = {
    orders: renderOrders, fills: renderFills, positions: renderPositions, summary: renderSummary,
    signals: renderSignals, alerts: renderAlerts, equity: renderEquity, price: renderPrice,
  };
  function mark(...what) {
    for (const w of what) dirty.add(w);
    if (!renderTimer) renderTimer = setTimeout(flush, 30);
  }
  function flush() {
    renderTimer = 0;
    if (st.precChanged) {
      st.precChanged = false;
      for (const w of ["orders", "fills", "positions", "price"]) dirty.add(w);
    }
    const what = [...dirty];
    dirty.clear();
    for (const w of what) {
      try {
        RENDER[w]();
      } catch (e) {
        pageError(`Could not draw ${w}: ${e.message}`);
      }
    }
  }
  const renderAll = () => mark(...Object.keys(RENDER));

  // ---------------------------------------------------------------- live events
  function apply(type, data) {
    st.events += 1;
    $("#last-update").textContent = `live · last event ${time(Date.now())}`;
    switch (type) {
      case "order":
        if (data && data.order && putOrder(data.order)) mark("orders");
        break;
      case "fill":
        if (putFill(data)) mark("fills", "price");
        break;
      case "position":
        putPosition(data);
        mark("positions");
        break;
      case "portfolio":
        putPortfolio(data, data && data.ts);
        mark("summary", "positions", "equity");
        break;
      case "risk":
        putRisk(data);
        mark("alerts");
        break;
      case "signal":
        putSignal(data);
        mark("signals");
        break;
      case "price": {
        if (!data) break;
        const b = num(data.bid);
        const a = num(data.ask);
        const mid = Number.isFinite(b) && Number.isFinite(a) ? (a + b) / 2 : num(data.last);
        learn(data.pair, "price", data.bid);
        learn(data.pair, "price", data.ask);
        tick(data.pair, data.ts || Date.now(), mid);
        if (data.pair === st.pair) {
          $("#price-last").textContent = `bid ${px(data.pair, data.bid)} · ask ${px(data.pair, data.ask)}`;
          mark("price");
        }
        break;
      }
      default:
        break;
    }
  }
  function onEvent(ev) {
    if (ev.event === "hello") {
      if (ev.id) st.lastEventId = ev.id;
      return;
    }
    let data = null;
    try {
      data = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!st.loaded) st.pending.push([ev.event, data]);
    else apply(ev.event, data);
    if (ev.id) st.lastEventId = ev.id; // live price events carry none: the position stays the stored events'
  }

  function setConnected(up) {
    st.connected = up;
    $("#conn-banner").hidden = up;
    if (!up) $("#last-update").textContent = "live updates lost";
  }

  /* Server-Sent Events read from a fetch() body (a browser's built-in SSE client cannot send the Authorization header). */
  async function readEvents(body, onHello) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let ev = { event: "message", data: [], id: null };
    st.lastByte = Date.now();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      st.lastByte = Date.now();
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
        if (line === "") {
          if (ev.data.length || ev.event !== "message") {
            const e = { event: ev.event, id: ev.id, data: ev.data.join("\n") };
            if (e.event === "hello") onHello();
            onEvent(e);
          }
          ev = { event: "message", data: [], id: null };
          continue;
        }
        if (line.startsWith(":")) continue; // a ping
        const c = line.indexOf(":");
        const field = c < 0 ? line : line.slice(0, c);
        const val = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
        if (field === "event") ev.event = val;
        else if (field === "data") ev.data.push(val);
        else if (field === "id") ev.id = val;
      }
    }
  }

  let helloSeen = null;
  async function streamLoop() {
    let attempt = 0;
    for (;;) {
      const ctl = new AbortController();
      st.streamAbort = ctl;
      try {
        const headers = { Accept: "text/event-stream" };
        if (st.token) headers.Authorization = `Bearer ${st.token}`;
        if (st.lastEventId) headers["Last-Event-ID"] = st.lastEventId;
        const r = await fetch("/api/stream", { headers, cache: "no-store", signal: ctl.signal });
        if (r.status === 401) {
          setConnected(false);
          await askToken(Boolean(st.token));
          continue;
        }
        if (r.status === 422 && st.lastEventId) {
          // a position this stream no longer knows (its streams were reset): start afresh and reload, without the
          // rows of before (an order working then may be gone: no Cancel button left on it)
          st.lastEventId = null;
          st.loaded = false;
          for (const m of [st.orders, st.fills, st.positions, st.signals, st.alerts]) m.clear();
          reload();
          continue;
        }
        if (!r.ok || !r.body) throw new Error(`the stream answered ${r.status}`);
        await readEvents(r.body, () => {
          attempt = 0;
          if (st.connected === false && st.everConnected) st.reconnects += 1;
          if (!st.everConnected && st.loadStarted) st.reloadNeeded = true; // came after the snapshots began
          st.everConnected = true;
          setConnected(true);
          if (helloSeen) helloSeen();
          if (st.reloadNeeded && st.loaded) {
            st.reloadNeeded = false;
            reload();
          }
        });
      } catch {
        // ended, cut or refused: the banner, then again after a back-off
      }
      ctl.abort();
      setConnected(false);
      await new Promise((r) => setTimeout(r, BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]));
      attempt += 1;
    }
  }
  setInterval(() => {
    if (st.connected && st.lastByte && Date.now() - st.lastByte > STALE_MS && st.streamAbort) st.streamAbort.abort();
  }, 5000);

  // ---------------------------------------------------------------- the snapshots (limits, never everything)
  /* Every working order: the pages of /api/orders?status=open, nextCursor followed up to LIMIT.workingMax; past
   * that, the page says that more exist (never silently missing). */
  async function loadWorking() {
    const pages = [];
    let cursor = null;
    let n = 0;
    do {
      const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const p = await api("GET", `/api/orders?status=open&limit=${LIMIT.working}${q}`);
      pages.push(p);
      n += (p.orders || []).length;
      cursor = p.nextCursor || null;
    } while (cursor && n < LIMIT.workingMax);
    return { pages, more: Boolean(cursor), n };
  }
  function showMoreWorking(more, n) {
    const el = $("#orders-more");
    el.textContent = more ? `More working orders than the ${n.toLocaleString("en-US")} shown: `
      + "GET /api/orders?status=open lists them all." : "";
    el.hidden = !more;
  }
  async function loadAll() {
    st.loadStarted = true;
    const [status, portfolio, performance, latest, trades, alerts, signals, working] = await Promise.all([
      pollStatus(),
      api("GET", "/api/portfolio"),
      api("GET", "/api/performance"),
      api("GET", `/api/orders?limit=${LIMIT.orders}`),
      api("GET", `/api/trades?limit=${LIMIT.fills}`),
      api("GET", `/api/alerts?limit=${LIMIT.alerts}`),
      api("GET", `/api/signals?limit=${LIMIT.signals}`),
      loadWorking(), // every working order (up to LIMIT.workingMax), newest first
    ]);
    st.base = (portfolio.summary && portfolio.summary.baseCurrency) || status.baseCurrency || "";
    for (const p of working.pages) for (const o of p.orders || []) putOrder(o);
    showMoreWorking(working.more, working.n);
    for (const o of latest.orders || []) putOrder(o);
    for (const f of (trades.trades || []).slice().reverse()) putFill(f);
    for (const a of alerts.alerts || []) putRisk({ ...a, state: undefined });
    for (const s of signals.signals || []) putSignal(s);
    for (const pt of (performance.equityCurve || []).slice(-LIMIT.equity)) putEquity(pt.ts, num(pt.equity));
    putPortfolio(portfolio, portfolio.ts);
    putPerformance(performance);
    const recent = [...st.fills.values()].sort((a, b) => b.timestamp - a.timestamp)[0];
    if (recent && st.pairs.includes(recent.pair)) {
      st.pair = recent.pair;
      $("#pair-select").value = st.pair;
    }
    st.loaded = true;
    const pending = st.pending;
    st.pending = [];
    for (const [type, data] of pending) apply(type, data);
  }
  async function reload() {
    try {
      await loadAll();
      renderAll();
      pageError("");
    } catch (e) {
      pageError(`Could not load the dashboard: ${e.message}`);
      setTimeout(reload, 2000); // not loaded: live events wait for the lists; tried again until they come
    }
  }

  // ---------------------------------------------------------------- actions
  let confirmDone = null;
  function confirmAction(text, { closeOption = false, yes = "Confirm" } = {}) {
    const dialog = $("#confirm-dialog");
    $("#confirm-text").textContent = text;
    $("#confirm-yes").textContent = yes;
    $("#confirm-close-wrap").hidden = !closeOption;
    $("#confirm-close-positions").checked = false;
    dialog.showModal();
    $("#confirm-no").focus();
    return new Promise((resolve) => {
      confirmDone = resolve;
    });
  }
  function endConfirm(ok) {
    const dialog = $("#confirm-dialog");
    const done = confirmDone;
    confirmDone = null;
    const closePositions = $("#confirm-close-positions").checked;
    if (dialog.open) dialog.close();
    if (done) done({ ok, closePositions });
  }
  async function run(btn, what, fn) {
    if (btn) btn.disabled = true;
    try {
      const out = await fn();
      return out;
    } catch (e) {
      toast(`${what} failed: ${e.message}`, true);
      return null;
    } finally {
      if (btn) btn.disabled = false;
    }
  }
  async function emergencyStop() {
    const c = await confirmAction(
      "Emergency stop: halt trading and cancel every working order, latched until you resume.",
      { closeOption: true, yes: "Stop trading" },
    );
    if (!c.ok) return;
    const btn = $("#emergency-stop");
    const out = await run(btn, "Emergency stop", () =>
      api("POST", "/api/risk/emergency-stop", {
        closePositions: c.closePositions, reason: "emergency stop from the dashboard",
      }));
    if (out) {
      setTradingState(out.state);
      const errs = (out.errors || []).length ? `; not done: ${out.errors.join("; ")}` : "";
      toast(`Trading ${out.state}: ${(out.canceledOrders || []).length} orders canceled, `
        + `${(out.closingOrders || []).length} closing${errs}`, Boolean(errs));
    }
  }
  async function resume() {
    const out = await run($("#resume"), "Resume", () => api("POST", "/api/risk/resume", {}));
    if (out) {
      setTradingState(out.state);
      toast(`Trading ${out.state}`);
    }
  }
  let modifying = null;
  function openModify(o) {
    modifying = o;
    $("#modify-order").textContent = `${o.orderId} · ${o.pair} ${o.side} ${o.type}`;
    const val = (v) => (v === null || v === undefined ? "" : plain(v) || "");
    $("#modify-price").value = val(o.price);
    $("#modify-quantity").value = val(o.quantity);
    $("#modify-stop").value = val(o.stopPrice);
    $("#modify-price").disabled = o.price === null || o.price === undefined;
    $("#modify-stop").disabled = o.stopPrice === null || o.stopPrice === undefined;
    $("#modify-error").hidden = true;
    $("#modify-dialog").showModal();
    ($("#modify-price").disabled ? $("#modify-quantity") : $("#modify-price")).focus();
  }
  async function submitModify(ev) {
    ev.preventDefault();
    const o = modifying;
    if (!o) return;
    const body = {};
    const take = (id, field) => {
      const el = $(id);
      const v = el.value.trim();
      if (!el.disabled && v !== "" && v !== (plain(o[field]) || "")) body[field] = v;
    };
    take("#modify-price", "price");
    take("#modify-quantity", "quantity");
    take("#modify-stop", "stopPrice");
    if (!Object.keys(body).length) {
      $("#modify-error").textContent = "Nothing changed.";
      $("#modify-error").hidden = false;
      return;
    }
    const btn = $("#modify-submit");
    btn.disabled = true;
    try {
      const out = await api("PATCH", `/api/orders/${encodeURIComponent(o.orderId)}`, body);
      if (out && out.orderId && putOrder(out)) mark("orders");
      $("#modify-dialog").close();
      toast(`${o.orderId}: modify sent`);
    } catch (e) {
      $("#modify-error").textContent = e.message;
      $("#modify-error").hidden = false;
    } finally {
      btn.disabled = false;
    }
  }
  async function onOrdersClick(ev) {
    const btn = ev.target.closest("button[data-action]");
    if (!btn) return;
    const id = btn.closest("tr").dataset.orderId;
    const o = st.orders.get(id);
    if (!o) return;
    if (btn.dataset.action === "modify") {
      openModify(o);
      return;
    }
    const out = await run(btn, `Cancel ${id}`, () => api("DELETE", `/api/orders/${encodeURIComponent(id)}`));
    if (out) {
      if (out.orderId && putOrder(out)) mark("orders");
      toast(`${id}: cancel sent`);
    }
  }
  async function onPositionsClick(ev) {
    const btn = ev.target.closest("button[data-action=close]");
    if (!btn) return;
    const tr = btn.closest("tr");
    const { pair, exchange } = tr.dataset;
    const c = await confirmAction(`Close the whole ${pair} position on ${exchange} at market?`, { yes: "Close" });
    if (!c.ok) return;
    const q = exchange ? `?exchange=${encodeURIComponent(exchange)}` : "";
    const out = await run(btn, `Close ${pair}`, () =>
      api("POST", `/api/positions/${encodeURIComponent(pair)}/close${q}`));
    if (out) toast(`${pair}: closing order ${out.orderId || ""} sent`);
  }

  // ---------------------------------------------------------------- start
  function wire() {
    $("#token-form").addEventListener("submit", submitToken);
    $("#token-cancel").addEventListener("click", () => $("#token-dialog").close("cancel"));
    $("#token-dialog").addEventListener("close", () => {
      if ($("#token-dialog").returnValue !== "ok" && tokenWait) {
        $("#token-open").hidden = false;
        pageError("The API needs its token (API_TOKEN): press “Enter API token”.");
      }
    });
    $("#token-open").addEventListener("click", () => askToken(false));
    $("#confirm-yes").addEventListener("click", () => endConfirm(true));
    $("#confirm-no").addEventListener("click", () => endConfirm(false));
    $("#confirm-dialog").addEventListener("close", () => endConfirm(false)); // Esc
    $("#modify-form").addEventListener("submit", submitModify);
    $("#modify-cancel").addEventListener("click", () => $("#modify-dialog").close());
    $("#emergency-stop").addEventListener("click", emergencyStop);
    $("#resume").addEventListener("click", resume);
    $("#orders").addEventListener("click", onOrdersClick);
    $("#positions").addEventListener("click", onPositionsClick);
    $("#pair-select").addEventListener("change", (e) => {
      st.pair = e.target.value;
      $("#price-last").textContent = "";
      mark("price");
    });
  }

  let renderedResolve;
  const rendered = new Promise((r) => (renderedResolve = r));
  window.tbx = {
    rendered,
    stats: () => ({
      orders: st.orders.size, fills: st.fills.size, positions: st.positions.size, signals: st.signals.size,
      alerts: st.alerts.size, events: st.events, reconnects: st.reconnects, connected: st.connected,
      lastEventId: st.lastEventId, equityPoints: st.equity.size,
      pricePoints: [...st.ticks.values()].reduce((n, m) => n + m.size, 0),
      rows: document.querySelectorAll("tbody tr").length,
    }),
  };

  async function start() {
    wire();
    try {
      makeCharts();
    } catch (e) {
      pageError(`The charts could not start: ${e.message}`);
    }
    setConnected(false);
    $("#last-update").textContent = "connecting…";
    const hello = new Promise((r) => (helloSeen = r));
    streamLoop();
    // the stream first, so that nothing between the snapshots and the stream is lost; without it (down, no token
    // yet) the snapshots still load after a few seconds, and the stream's events are applied when it comes
    await Promise.race([hello, new Promise((r) => setTimeout(r, 3000))]);
    for (;;) {
      try {
        await loadAll();
        break;
      } catch (e) {
        pageError(`Could not load the dashboard: ${e.message} (retrying)`);
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
    pageError("");
    renderAll();
    flush();
    if (st.reloadNeeded && st.connected) {
      st.reloadNeeded = false; // the stream began after the snapshots: once more, so that nothing falls between
      await reload();
      flush();
    }
    document.body.dataset.ready = "1";
    renderedResolve();
    let statusBusy = false;
    setInterval(() => {
      // skipped while the last one is still out or the token dialog waits: polls never pile up behind a 401
      if (!statusBusy && !tokenWait) {
        statusBusy = true;
        pollStatus().catch((e) => toast(`Status: ${e.message}`, true)).finally(() => (statusBusy = false));
      }
      pollPerformance().catch((e) => toast(`Performance: ${e.message}`, true)); // the drawdown, refreshed
    }, POLL_MS);
  }

  start();
})();
