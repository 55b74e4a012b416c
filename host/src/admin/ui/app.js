"use strict";
// The dashboard's script: polls the admin API every POLL_MS and renders what it answers.
// Rates are differences of successive totals over the time between the two answers, so they
// need nothing from the gateway but its counters. Everything is rendered with textContent:
// names come from the configuration and must never become markup.
(() => {
  const POLL_MS = 1500;
  const CHART_POINTS = 60;
  const TOKEN_KEY = "gateway-admin-token";
  const PHASES = ["request", "response"];

  const $ = (id) => document.getElementById(id);

  /** The totals of the previous answer, for rates; null before the first one. */
  let previous = null;
  /** Requests and 5xx per second, oldest first, for the chart. */
  const samples = [];

  class Unauthorized extends Error {}

  // sessionStorage, not localStorage: the token leaves with the tab.
  const storedToken = () => sessionStorage.getItem(TOKEN_KEY);

  async function getJson(path) {
    const headers = { accept: "application/json" };
    const token = storedToken();
    if (token) headers.authorization = "Bearer " + token;
    const response = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
    if (response.status === 401) {
      const body = await response.json().catch(() => ({}));
      throw new Unauthorized(body.error || "the admin API wants a token");
    }
    if (!response.ok) throw new Error(path + " answered " + response.status);
    return response.json();
  }

  function cell(content, className) {
    const td = document.createElement("td");
    if (content instanceof Node) td.append(content);
    else td.textContent = content === null || content === undefined ? "–" : String(content);
    if (className) td.className = className;
    return td;
  }

  function span(text, className, title) {
    const element = document.createElement("span");
    element.textContent = text;
    if (className) element.className = className;
    if (title) element.title = title;
    return element;
  }

  /** Replaces the rows of table `id` with `rows`, each a list of cells. */
  function fill(id, rows, empty) {
    const body = $(id).tBodies[0];
    const built = rows.map((cells) => {
      const tr = document.createElement("tr");
      tr.append(...cells);
      return tr;
    });
    if (built.length === 0) {
      const tr = document.createElement("tr");
      const td = cell(empty, "muted");
      td.colSpan = $(id).tHead.rows[0].cells.length;
      tr.append(td);
      built.push(tr);
    }
    body.replaceChildren(...built);
  }

  function duration(seconds) {
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = Math.floor(seconds % 60);
    if (d > 0) return `${d}d ${h}h ${m}m`;
    if (h > 0) return `${h}h ${m}m ${s}s`;
    if (m > 0) return `${m}m ${s}s`;
    return `${s}s`;
  }

  const perSecond = (value) => (value === null ? "–" : value.toFixed(1));

  function renderStatus(status) {
    $("version").textContent = "v" + status.version;
    $("uptime").textContent = duration(status.uptime_seconds);
    $("generation").textContent = String(status.generation);
    $("route-count").textContent = String(status.routes);
    $("service-count").textContent = String(status.services);
    $("filter-count").textContent = String(status.filters);
    $("workers").textContent = String(status.workers);
    $("listeners").textContent = status.listeners.join(", ");
  }

  /** The totals, rates since the previous answer, and the chart's next sample. */
  function renderStats(stats, filters, now) {
    const requests = stats.requests;
    const current = { at: now, total: requests.total, c4xx: requests["4xx"], c5xx: requests["5xx"] };
    current.filterCalls = new Map();
    for (const filter of filters.filters) {
      for (const phase of PHASES) {
        current.filterCalls.set(filter.name + "/" + phase, filter.calls[phase].calls);
      }
    }
    let rates = { requests: null, c4xx: null, c5xx: null };
    // A smaller total means another process answers now (a restart): start over.
    if (previous && current.total >= previous.total && now > previous.at) {
      const seconds = (now - previous.at) / 1000;
      rates = {
        requests: (current.total - previous.total) / seconds,
        c4xx: (current.c4xx - previous.c4xx) / seconds,
        c5xx: (current.c5xx - previous.c5xx) / seconds,
      };
      samples.push({ requests: rates.requests, errors: rates.c5xx });
      if (samples.length > CHART_POINTS) samples.shift();
    }
    $("requests-total").textContent = String(requests.total);
    $("request-rate").textContent = perSecond(rates.requests);
    $("error-rate").textContent = perSecond(rates.c5xx);
    $("client-error-rate").textContent = perSecond(rates.c4xx);
    $("by-class").textContent = ["1xx", "2xx", "3xx", "4xx", "5xx"]
      .map((name) => `${name} ${requests[name]}`)
      .join(", ");
    const breakers = stats.breakers;
    $("breakers").textContent =
      `${breakers.closed} closed, ${breakers.open} open, ${breakers.half_open} half-open, ` +
      `opened ${breakers.opened_total} times`;
    const seconds = previous ? (now - previous.at) / 1000 : 0;
    const before = previous;
    previous = current;
    return { before, seconds };
  }

  function renderRoutes(routes) {
    fill(
      "routes",
      routes.routes.map((route) => [
        cell(route.name),
        cell(route.host || "any"),
        cell(route.path),
        cell(route.methods ? route.methods.join(" ") : "any"),
        cell(route.service),
        cell(route.filters.map((filter) => filter.name).join(", ") || "–"),
      ]),
      "no routes",
    );
  }

  function renderServices(services) {
    const rows = [];
    for (const [name, service] of Object.entries(services.services)) {
      for (const instance of service.instances) {
        const health = instance.ejected
          ? span("ejected", "bad")
          : instance.healthy
            ? span("healthy", "ok")
            : span("unhealthy", "bad");
        const breaker =
          instance.breaker === null
            ? span("none", "muted")
            : span(
                instance.breaker.replace("_", "-"),
                { closed: "ok", half_open: "warn", open: "bad" }[instance.breaker],
                `opened ${instance.breaker_opened} times`,
              );
        rows.push([
          cell(name),
          cell(service.balancer),
          cell(instance.url),
          cell(health),
          cell(breaker),
          cell(instance.ejections, "num"),
          cell(instance.in_flight, "num"),
          cell(instance.ewma_ms === null ? null : instance.ewma_ms.toFixed(1) + " ms", "num"),
        ]);
      }
    }
    fill("services", rows, "no services");
  }

  function renderFilters(filters, before, seconds) {
    const rows = [];
    for (const filter of filters.filters) {
      const used = new Set(filter.routes.flatMap((route) => route.phases));
      for (const phase of PHASES) {
        const totals = filter.calls[phase];
        if (!used.has(phase) && totals.calls === 0) continue;
        const failures = Object.entries(totals.failures);
        const failed = failures.reduce((sum, [, count]) => sum + count, 0);
        const earlier = before && before.filterCalls.get(filter.name + "/" + phase);
        const rate =
          earlier === undefined || earlier === null || seconds <= 0 || totals.calls < earlier
            ? null
            : (totals.calls - earlier) / seconds;
        rows.push([
          cell(filter.name),
          cell(phase),
          cell(totals.calls, "num"),
          cell(totals.replies, "num"),
          cell(
            span(
              String(failed),
              failed > 0 ? "bad" : "",
              failures.map(([kind, count]) => `${kind} ${count}`).join(", "),
            ),
            "num",
          ),
          cell(totals.mean_micros === null ? null : totals.mean_micros + " µs", "num"),
          cell(perSecond(rate), "num"),
        ]);
      }
    }
    fill("filters", rows, "no filters");
  }

  function renderReloads(reload) {
    $("reload-successes").textContent = String(reload.successes);
    $("reload-failures").textContent = String(reload.failures);
    fill(
      "reloads",
      [...reload.history].reverse().map((attempt) => [
        cell(attempt.at),
        cell(attempt.trigger),
        cell(attempt.applied ? span("applied", "ok") : span("rejected", "bad")),
        cell(attempt.duration_ms + " ms", "num"),
        cell(attempt.problems.concat(attempt.warnings).join("; ") || "–"),
      ]),
      "no reloads yet",
    );
  }

  function drawChart() {
    const canvas = $("rate-chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const context = canvas.getContext("2d");
    context.scale(ratio, ratio);
    context.clearRect(0, 0, width, height);
    $("chart-window").textContent = String(Math.round((samples.length * POLL_MS) / 1000));
    if (samples.length < 2) return;
    // Headroom above the highest rate keeps its line clear of the scale's label.
    const highest = Math.max(1, ...samples.map((sample) => sample.requests));
    const top = highest * 1.25;
    const step = (width - 8) / (CHART_POINTS - 1);
    const style = getComputedStyle(document.documentElement);
    const line = (key, color) => {
      context.beginPath();
      samples.forEach((sample, index) => {
        // The newest sample at the right edge: the chart fills from the right as it runs.
        const x = width - 4 - (samples.length - 1 - index) * step;
        const y = height - 6 - (sample[key] / top) * (height - 18);
        if (index === 0) context.moveTo(x, y);
        else context.lineTo(x, y);
      });
      context.strokeStyle = style.getPropertyValue(color).trim();
      context.lineWidth = 2;
      context.stroke();
    };
    line("requests", "--accent");
    line("errors", "--bad");
    context.fillStyle = style.getPropertyValue("--muted").trim();
    context.font = "11px system-ui, sans-serif";
    context.fillText(`${highest.toFixed(1)}/s at most`, 6, 12);
  }

  function setState(state, text) {
    const badge = $("state");
    badge.dataset.state = state;
    badge.textContent = text;
  }

  function askForToken(message) {
    $("auth").hidden = false;
    $("dashboard").hidden = true;
    $("auth-message").textContent = message;
    setState("token", "token needed");
    $("token").focus();
  }

  async function poll() {
    try {
      // The status alone first: without a token, one request is refused, not six.
      const status = await getJson("/admin/status");
      const [routes, services, stats, filters, reload] = await Promise.all(
        ["routes", "services", "stats", "filters", "reload"].map((name) =>
          getJson("/admin/" + name),
        ),
      );
      const now = performance.now();
      renderStatus(status);
      const { before, seconds } = renderStats(stats, filters, now);
      renderRoutes(routes);
      renderServices(services);
      renderFilters(filters, before, seconds);
      renderReloads(reload);
      drawChart();
      $("auth").hidden = true;
      $("dashboard").hidden = false;
      setState("live", "live");
      $("updated").textContent = new Date().toLocaleTimeString();
    } catch (error) {
      if (error instanceof Unauthorized) {
        // Polling stops until a token is given: retrying a refused one only fills the log.
        const message = storedToken()
          ? "The admin API refused this token: " + error.message
          : "This gateway's admin API wants a bearer token. It is kept in this tab's session " +
            "storage only and sent as Authorization: Bearer.";
        sessionStorage.removeItem(TOKEN_KEY);
        askForToken(message);
        return;
      }
      setState("offline", "offline: " + error.message);
    }
    setTimeout(poll, POLL_MS);
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    setState("loading", "loading");
    poll();
  });

  poll();
})();
