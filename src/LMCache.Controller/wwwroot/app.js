// LMCache controller dashboard: plain JavaScript against the controller's own HTTP API (no build step, no CDN).
"use strict";

const state = { instances: [], series: [], maxPoints: 90 };

// With --auth-token, calls that change a cache need the token: asked for once on a 401 and kept in this tab only.
async function post(path, body, retried) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem("lmcache-controller-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  if (response.status === 401 && !retried) {
    const entered = window.prompt("This controller needs its auth token for " + path + ":");
    if (entered) {
      sessionStorage.setItem("lmcache-controller-token", entered);
      return post(path, body, true);
    }
  }
  const data = await response.json();
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function ago(epochSeconds) {
  if (!epochSeconds) return "never";
  const s = Math.max(0, Date.now() / 1000 - epochSeconds);
  return s < 60 ? s.toFixed(0) + " s ago" : (s / 60).toFixed(1) + " min ago";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function tierCell(tiers) {
  const cell = el("td");
  for (const t of tiers) {
    const pct = t.capacity_bytes > 0 ? Math.min(100, (100 * t.used_bytes) / t.capacity_bytes) : 0;
    const bar = el("div", { class: "bar" }, el("div", { style: `width:${pct.toFixed(1)}%` }));
    cell.append(el("div", { class: "tier", "data-tier": t.location },
      el("small", {}, `${t.location}: ${bytes(t.used_bytes)} / ${bytes(t.capacity_bytes)} · ${t.entries} chunks · hit rate ${(100 * t.hit_rate).toFixed(1)}% · ${t.evictions} evicted`),
      bar));
  }
  return cell;
}

async function refreshOverview() {
  const data = await (await fetch("/instances")).json();
  state.instances = data.instances;
  document.getElementById("instance-count").textContent = data.controller.instances;
  const active = data.instances.reduce((n, i) => n + i.active_workers, 0);
  document.getElementById("worker-count").textContent = `${active} / ${data.controller.workers}`;
  document.getElementById("indexed-keys").textContent = data.controller.indexed_keys;
  const body = document.querySelector("#instances tbody");
  body.replaceChildren(...data.instances.map(i => el("tr", { "data-instance": i.instance_id },
    el("td", {}, i.instance_id), el("td", {}, i.model_name), el("td", {}, i.ip),
    el("td", { class: "status-" + i.status }, i.status), el("td", {}, `${i.active_workers} / ${i.worker_count}`),
    el("td", {}, ago(i.last_heartbeat_time)), el("td", {}, (100 * i.cache_hit_rate).toFixed(1) + "%"), tierCell(i.tiers))));

  const select = document.getElementById("chunk-instance");
  const current = select.value;
  const ids = data.instances.map(i => i.instance_id);
  if (select.options.length !== ids.length || ids.some((id, k) => select.options[k].value !== id)) {
    select.replaceChildren(...ids.map(id => el("option", { value: id }, id)));
    // Default to an instance that answers, never to an unresponsive or inactive one while a healthy one exists.
    const healthy = data.instances.find(i => i.status === "active") || data.instances.find(i => i.status === "degraded");
    select.value = ids.includes(current) ? current : (healthy ? healthy.instance_id : (ids[0] || ""));
    if (!current && ids.length) refreshChunks();
  }
  sample(data);
}

function sample(data) {
  // Rates between the controller's samples of the cumulative counters (kept server-side, so a reload keeps the charts).
  state.series = [];
  const h = data.history || [];
  for (let k = 1; k < h.length; k++) {
    const dt = Math.max(0.001, h[k].time - h[k - 1].time);
    const requested = h[k].requested_tokens - h[k - 1].requested_tokens;
    const hit = h[k].hit_tokens - h[k - 1].hit_tokens;
    state.series.push({
      store: Math.max(0, (h[k].stored_tokens - h[k - 1].stored_tokens) / dt),
      retrieve: Math.max(0, hit / dt),
      hitRate: requested > 0 ? (100 * hit) / requested : null,
    });
  }
  state.series = state.series.slice(-state.maxPoints);
  drawChart("chart-throughput", [["store", "#3a7bd5"], ["retrieve", "#2e8b57"]], null);
  drawChart("chart-hitrate", [["hitRate", "#d68910"]], 100);
}

function drawChart(id, lines, fixedMax) {
  const canvas = document.getElementById(id);
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 30;
  g.clearRect(0, 0, w, h);
  let max = fixedMax || 1;
  if (!fixedMax) for (const p of state.series) for (const [k] of lines) if (p[k] > max) max = p[k];
  g.strokeStyle = "#ccd"; g.fillStyle = "#667"; g.font = "11px sans-serif";
  g.beginPath(); g.moveTo(pad, 5); g.lineTo(pad, h - pad); g.lineTo(w - 5, h - pad); g.stroke();
  g.fillText(max >= 1000 ? (max / 1000).toFixed(1) + "k" : max.toFixed(0), 2, 12);
  g.fillText("0", 2, h - pad);
  const step = (w - pad - 10) / Math.max(1, state.maxPoints - 1);
  for (const [key, color] of lines) {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    let started = false;
    state.series.forEach((p, k) => {
      if (p[key] === null) return;
      const x = pad + k * step, y = h - pad - ((h - pad - 5) * p[key]) / max;
      if (started) g.lineTo(x, y); else { g.moveTo(x, y); started = true; }
    });
    g.stroke();
  }
}

async function refreshChunks() {
  const instance = document.getElementById("chunk-instance").value;
  const body = document.querySelector("#chunks tbody");
  if (!instance) { body.replaceChildren(); return; }
  try {
    const data = await post("/list_chunks", {
      instance_id: instance,
      location: document.getElementById("chunk-tier").value || null,
      search: document.getElementById("chunk-search").value || null,
      limit: 500,
    });
    document.getElementById("chunk-summary").textContent = `${data.total} chunks`;
    body.replaceChildren(...data.chunks.map(c => el("tr", { "data-key": c.key },
      el("td", { class: "key" }, c.key), el("td", {}, c.location), el("td", {}, c.worker_id), el("td", {}, bytes(c.size)),
      el("td", {}, c.num_tokens), el("td", {}, c.compressed ? "cachegen" : "raw"), el("td", {}, c.pinned ? "yes" : "no"),
      el("td", {}, ago(c.admitted_at)), el("td", {}, ago(c.last_access)),
      el("td", {},
        el("button", { class: "pin", onclick: () => chunkAction(c.pinned ? "/unpin_chunks" : "/pin_chunks", instance, c) }, c.pinned ? "Unpin" : "Pin"),
        " ",
        el("button", { class: "danger delete", onclick: () => chunkAction("/delete_chunks", instance, c) }, "Delete")))));
  } catch (e) {
    document.getElementById("chunk-summary").textContent = "error: " + e.message;
  }
}

async function chunkAction(path, instance, chunk) {
  try {
    await post(path, { instance_id: instance, location: chunk.location, keys: [chunk.key] });
  } catch (e) {
    alert(e.message);
  }
  await refreshChunks();
}

async function refreshMetrics() {
  document.getElementById("metrics").textContent = await (await fetch("/metrics")).text();
}

async function tick() {
  const badge = document.getElementById("connection");
  try {
    const health = await post("/health", { instance_id: "system" });
    document.getElementById("controller-status").textContent = health.message || "running";
    await refreshOverview();
    if (document.querySelector("details").open) await refreshMetrics();
    badge.textContent = "connected"; badge.className = "badge ok";
  } catch (e) {
    badge.textContent = "disconnected"; badge.className = "badge bad";
  }
  document.getElementById("clock").textContent = new Date().toLocaleTimeString();
}

document.getElementById("chunk-refresh").addEventListener("click", refreshChunks);
document.getElementById("chunk-instance").addEventListener("change", refreshChunks);
document.getElementById("chunk-tier").addEventListener("change", refreshChunks);
document.getElementById("chunk-search").addEventListener("input", refreshChunks);
document.querySelector("details").addEventListener("toggle", refreshMetrics);
tick();
setInterval(tick, 2000);
setInterval(refreshChunks, 5000);
