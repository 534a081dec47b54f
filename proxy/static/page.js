// The try-it page: one /classify?verbose=true&threshold=0 call per image, then the threshold slider filters
// the detections here, so moving it redraws at once without asking the server again.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { image: null, detections: [] };

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
    response = await fetch("/classify?verbose=true&threshold=0", { method: "POST", headers, body: file });
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
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => { state.image = image; draw(); URL.revokeObjectURL(url); };
  image.onerror = () => showError("The browser cannot show this image, though the model read it.");
  image.src = url;
}

function pick(files) {
  if (files && files.length) classify(files[0]);
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
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    pick(e.dataTransfer.files);
  });
  checkModel();
});
