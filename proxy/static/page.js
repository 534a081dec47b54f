// The try-it page: one /classify?verbose=true&threshold=0 call per image (with its tiles and region, when chosen),
// then the threshold slider filters the detections here, so moving it redraws at once without asking the server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { image: null, file: null, detections: [], region: null, dragging: null };

function parseRegion(text) {
  const values = text.split(",").map((part) => Number(part.trim()));
  const ok = values.length === 4 && values.every((v) => Number.isFinite(v) && v >= 0 && v <= 1)
             && values[0] < values[2] && values[1] < values[3];
  return ok ? values : null;
}

function query() {
  let q = "verbose=true&threshold=0";
  if ($("tiles").checked) q += `&tile=${$("tile-size").value}`;
  if (state.region) q += `&roi=${state.region.map((v) => v.toFixed(4)).join(",")}`;
  return q;
}

function outlineRegion(ctx, region, line) {
  const [x1, y1, x2, y2] = region;
  const rect = [x1 * ctx.canvas.width, y1 * ctx.canvas.height,
                (x2 - x1) * ctx.canvas.width, (y2 - y1) * ctx.canvas.height];
  ctx.lineWidth = line;
  ctx.setLineDash([]);
  ctx.strokeStyle = "#000";
  ctx.strokeRect(...rect);
  ctx.setLineDash([6 * line, 6 * line]);
  ctx.strokeStyle = "#fff";
  ctx.strokeRect(...rect);
  ctx.setLineDash([]);
}

function colourFor(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360} 85% 45%)`;
}

function visible() {
  const threshold = Number($("threshold").value);
  return state.detections.filter((d) => d.score > threshold);
}

function draw() {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  if (!state.image) return;
  canvas.width = state.image.naturalWidth;
  canvas.height = state.image.naturalHeight;
  ctx.drawImage(state.image, 0, 0);
  const shown = visible();
  const line = Math.max(2, Math.round(Math.min(canvas.width, canvas.height) / 250));
  const region = state.dragging || state.region;
  if (region) outlineRegion(ctx, region, line);
  const fontSize = Math.max(12, Math.round(Math.min(canvas.width, canvas.height) / 40));
  ctx.font = `${fontSize}px system-ui, sans-serif`;
  for (const d of shown) {
    const x = d.x1 * canvas.width, y = d.y1 * canvas.height;
    const w = (d.x2 - d.x1) * canvas.width, h = (d.y2 - d.y1) * canvas.height;
    ctx.lineWidth = line;
    ctx.strokeStyle = ctx.fillStyle = colourFor(d.class);
    ctx.strokeRect(x, y, w, h);
    const text = `${d.class} ${d.score.toFixed(2)}`;
    const labelY = y >= fontSize + 2 * line ? y - fontSize - 2 * line : y;
    ctx.fillRect(x, labelY, ctx.measureText(text).width + 2 * line, fontSize + 2 * line);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x + line, labelY + fontSize);
  }
  canvas.dataset.drawn = String(shown.length);
  canvas.setAttribute("aria-label", `The image with ${shown.length} detection${shown.length === 1 ? "" : "s"} drawn`);
  renderCounts(shown);
}

function renderCounts(shown) {
  const counts = new Map();
  for (const d of shown) counts.set(d.class, (counts.get(d.class) || 0) + 1);
  const body = $("counts").tBodies[0];
  body.replaceChildren(...[...counts].map(([name, n]) => {
    const row = document.createElement("tr");
    const cls = document.createElement("td");
    const num = document.createElement("td");
    cls.textContent = name;
    num.textContent = String(n);
    row.append(cls, num);
    return row;
  }));
  const total = shown.length;
  $("summary").textContent = total ? `${total} detection${total === 1 ? "" : "s"} above the threshold.`
                                   : "Nothing above the threshold.";
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

async function classify(file) {
  showError("");
  $("summary").textContent = "Asking the model…";
  const headers = { "Content-Type": file.type || "application/octet-stream" };
  const key = $("api-key").value.trim();
  if (key) headers["X-API-Key"] = key;
  let response;
  try {
    response = await fetch(`/classify?${query()}`, { method: "POST", headers, body: file });
  } catch (err) {
    showError(`The server did not answer: ${err.message}`);
    return;
  }
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) {
    showError(body.error || `HTTP ${response.status}`);
    $("summary").textContent = "";
    return;
  }
  state.detections = body;
  if (state.file === file && state.image) { draw(); return; }  // the same picture, other tiles or region
  state.file = file;
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => { state.image = image; draw(); URL.revokeObjectURL(url); };
  image.onerror = () => showError("The browser cannot show this image, though the model read it.");
  image.src = url;
}

function pick(files) {
  if (files && files.length) classify(files[0]);
}

function setRegion(region) {
  state.region = region;
  $("region").value = region ? region.map((v) => v.toFixed(3)).join(",") : "";
  if (state.file) classify(state.file);
  else draw();
}

function pointAt(event) {
  const box = $("canvas").getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return [clamp((event.clientX - box.left) / box.width), clamp((event.clientY - box.top) / box.height)];
}

function dragRegion(canvas) {
  let start = null;
  canvas.addEventListener("pointerdown", (e) => {
    if (!state.image) return;
    start = pointAt(e);
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!start) return;
    const [x, y] = pointAt(e);
    state.dragging = [Math.min(start[0], x), Math.min(start[1], y), Math.max(start[0], x), Math.max(start[1], y)];
    draw();
  });
  canvas.addEventListener("pointerup", () => {
    const region = state.dragging;
    start = null;
    state.dragging = null;
    if (region && region[2] - region[0] > 0.01 && region[3] - region[1] > 0.01) setRegion(region);
    else draw();
  });
}

async function checkModel() {
  try {
    const ready = await (await fetch("/readyz")).json();
    $("model-status").textContent = ready.ready ? `Model ${ready.model}, version ${ready.version}: ready.`
                                                : `Model not ready: ${ready.error}`;
  } catch (err) {
    $("model-status").textContent = "The server did not answer.";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const zone = $("drop-zone");
  $("image-input").addEventListener("change", (e) => pick(e.target.files));
  $("threshold").addEventListener("input", () => {
    $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
    draw();
  });
  $("tiles").addEventListener("change", () => { if (state.file) classify(state.file); });
  $("tile-size").addEventListener("change", () => { if (state.file && $("tiles").checked) classify(state.file); });
  $("region").addEventListener("change", () => {
    const text = $("region").value.trim();
    const region = text ? parseRegion(text) : null;
    if (text && !region) {
      showError("A region is four numbers from 0 to 1: x1,y1,x2,y2, with x1 < x2 and y1 < y2.");
      return;
    }
    setRegion(region);
  });
  $("clear-region").addEventListener("click", () => setRegion(null));
  dragRegion($("canvas"));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    pick(e.dataTransfer.files);
  });
  checkModel();
});
