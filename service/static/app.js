// sttm-serve's page: the /v1 API in a browser. No framework, no build step, nothing from a CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "sttm-api-key"; // sessionStorage only: gone when the tab closes
const STAGES = ["decode", "preprocess", "queue", "inference"];
const FRIENDLY = {
  too_large: "The file is too large for this server.",
  unsupported_media_type: "That is not a video the server accepts.",
  overloaded: "The server is busy right now; try again in a moment.",
  unauthorized: "This server needs an API key: enter it above.",
  empty_body: "The file is empty.",
};
const state = { labels: [], model: null, file: null, url: null, timeline: null, vtt: null, live: null };

// --- the API ------------------------------------------------------------------------------

class ApiError extends Error {}

function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** fetch + the API's JSON error body turned into one readable sentence. */
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  } catch (err) {
    if (err.name === "AbortError") throw err; // we stopped it
    throw new ApiError(`Could not reach the server (${err.message}).`);
  }
  if (response.ok) return response;
  let code = "http_error", message = response.statusText;
  try {
    const body = await response.json();
    ({ code, message } = body.error || { code, message: JSON.stringify(body) });
  } catch (_) { /* not JSON: keep the status text */ }
  const lead = FRIENDLY[code] ? `${FRIENDLY[code]} ` : "";
  throw new ApiError(`${lead}${message} (HTTP ${response.status}, ${code})`);
}

function videoForm(file) {
  const form = new FormData();
  form.append("file", file, file.name || "clip");
  return form;
}

// --- messages -----------------------------------------------------------------------------

function showError(err) {
  const box = $("error");
  box.textContent = err instanceof ApiError ? err.message : `Something went wrong: ${err.message || err}`;
  box.hidden = false;
  setStatus("");
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "style") Object.assign(node.style, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const child of [].concat(children)) node.append(child);
  return node;
}

function fmt(n, digits = 1) {
  return Number(n).toFixed(digits);
}

// one colour per label, dark enough for white text in light and dark mode
function labelColour(label) {
  const i = Math.max(0, state.labels.indexOf(label));
  const n = Math.max(state.labels.length, 1);
  return `hsl(${Math.round((i * 360) / n)}, 70%, 32%)`;
}

// --- the model ----------------------------------------------------------------------------

async function loadModel() {
  try {
    const models = await (await api("/v1/models")).json();
    const m = models[0];
    state.model = m;
    state.labels = m.labels;
    const merge = m.merge === "none" ? "no merging" : `${m.merge} ${Math.round(m.reduction * 100)}%`;
    $("model-info").textContent = `${m.name}: ${m.arch}, ${m.frames} frames × ${m.input_size}px, ${merge}, ` +
      `${m.labels.length} labels, ${m.backend} ${m.precision}` + (m.reason ? ` (${m.reason})` : "");
    const rungs = (m.rungs || []).map((r) => (typeof r === "object" ? r.reduction : r));
    $("reduction-field").hidden = rungs.length < 2;
    $("reduction").replaceChildren(
      el("option", { value: "", textContent: "auto" }),
      ...rungs.map((r) => el("option", { value: String(r), textContent: `${Math.round(r * 100)}%` })),
    );
    clearError();
  } catch (err) {
    $("model-info").textContent = "The model's description is not available.";
    showError(err);
  }
}

// --- a clip -------------------------------------------------------------------------------

function classifyParams() {
  const p = new URLSearchParams({
    top_k: $("top-k").value || "5",
    sampling: $("sampling").value,
    num_clips: $("num-clips").value || "1",
    crops: $("crops").value,
    explain: "true",
  });
  if ($("reduction").value) p.set("reduction", $("reduction").value);
  return p;
}

async function handleFile(file) {
  if (!file) return;
  clearError();
  state.file = file;
  for (const id of ["predictions", "latency", "frames", "merges", "segments", "legend"]) $(id).replaceChildren();
  $("downloads").hidden = true;
  showPlayer(file);
  setStatus(`Classifying ${file.name}…`);
  let result;
  try {
    result = await (await api(`/v1/classify?${classifyParams()}`, { method: "POST", body: videoForm(file) })).json();
  } catch (err) {
    showError(err);
    return;
  }
  if (state.file !== file) return; // a newer file was chosen meanwhile
  $("clip-results").hidden = false;
  renderPredictions($("predictions"), result.predictions);
  renderLatency(result.latency_ms);
  setStatus(`${file.name}: ${result.predictions[0].label} (${fmt(result.predictions[0].score * 100)}%), ` +
    `${fmt(result.latency_ms.total, 0)} ms on the server`);
  await Promise.all([renderFrames(result), loadTimeline(file)]);
}

function showPlayer(file) {
  const player = $("player");
  if (state.url) URL.revokeObjectURL(state.url);
  if (state.vtt) URL.revokeObjectURL(state.vtt);
  state.url = URL.createObjectURL(file);
  state.vtt = null;
  player.querySelectorAll("track").forEach((t) => t.remove());
  player.pause();
  player.muted = true; // never starts with sound, and never starts by itself
  player.src = state.url;
  $("grabber").src = state.url;
}

function renderPredictions(list, predictions) {
  list.replaceChildren(...predictions.map((p) =>
    el("li", {}, [
      el("span", { className: "label", textContent: `${p.label} ` }),
      el("span", { className: "score", textContent: `${fmt(p.score * 100)}%` }),
      el("div", { className: "bar", "aria-hidden": "true" }, el("span", { style: { width: `${p.score * 100}%` } })),
    ])));
}

function renderLatency(ms) {
  const total = STAGES.reduce((s, k) => s + ms[k], 0) || 1;
  const bar = el("div", { className: "stack", role: "img",
    "aria-label": STAGES.map((k) => `${k} ${fmt(ms[k])} ms`).join(", ") },
    STAGES.map((k) => el("span", { className: `stage-${k}`, title: `${k} ${fmt(ms[k])} ms`,
      style: { width: `${(100 * ms[k]) / total}%`, background: `var(--${k})` } })));
  const legend = el("ul", {}, [
    ...STAGES.map((k) => el("li", { className: `stage-${k}` }, [
      el("span", { className: "swatch", style: { background: `var(--${k})` }, "aria-hidden": "true" }),
      `${k} ${fmt(ms[k])} ms`])),
    el("li", {}, `total ${fmt(ms.total)} ms (with the upload's parsing)`),
  ]);
  $("latency").replaceChildren(bar, legend);
}

// --- sampled frames and the merges ---------------------------------------------------------

function once(target, event, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${timeoutMs} ms`)), timeoutMs);
    target.addEventListener(event, () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** The video's frame at `seconds`, centre-cropped to a square (what the model sees) on a canvas. */
async function grab(seconds, size) {
  const video = $("grabber");
  if (video.readyState < 1) await once(video, "loadedmetadata");
  const target = Math.min(seconds, Math.max(0, video.duration - 0.001));
  if (Math.abs(video.currentTime - target) > 1e-4 || video.readyState < 2) {
    const seeked = once(video, "seeked");
    video.currentTime = target;
    await seeked;
  }
  const canvas = el("canvas", { width: size, height: size });
  const side = Math.min(video.videoWidth, video.videoHeight);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(video, (video.videoWidth - side) / 2, (video.videoHeight - side) / 2, side, side, 0, 0, size, size);
  return canvas;
}

function figure(canvas, caption, label) {
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", label);
  return el("figure", {}, [canvas, el("figcaption", { textContent: caption })]);
}

function decodeIds(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  return Array.from({ length: bytes.length / 2 }, (_, i) => view.getUint16(2 * i, true));
}

async function renderFrames(result) {
  const fps = result.video.fps || 25;
  const size = (state.model && state.model.input_size) || 96;
  const stamp = (f) => (f + 0.5) / fps;
  try {
    const thumbs = [];
    for (const f of result.frames) {
      thumbs.push(figure(await grab(stamp(f), size), `${fmt(f / fps, 2)} s`, `sampled frame ${f} at ${fmt(f / fps, 2)} s`));
    }
    $("frames").replaceChildren(...thumbs);
    if (result.merges) await renderMerges(result.merges, fps, size, stamp);
  } catch (err) {
    setStatus(`${$("status").textContent} (the browser cannot draw this video's frames: ${err.message})`);
  }
}

/** Per time slice: the frame, its patches tinted by the token they ended in, borders between tokens. */
async function renderMerges(merges, fps, size, stamp) {
  const [t, h, w] = merges.grid;
  const ids = decodeIds(merges.ids);
  const sizes = new Map();
  for (const id of ids) sizes.set(id, (sizes.get(id) || 0) + 1);
  const colour = (id) => `hsla(${(id * 137.508) % 360}, 85%, 55%, 0.6)`; // golden-angle hues
  const figures = [];
  for (let s = 0; s < t; s++) {
    const frame = merges.frames[s];
    const canvas = await grab(stamp(frame), size);
    const ctx = canvas.getContext("2d");
    const ph = size / h, pw = size / w;
    const at = (y, x) => ids[(s * h + y) * w + x];
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const id = at(y, x);
        if (sizes.get(id) > 1) {
          ctx.fillStyle = colour(id);
          ctx.fillRect(x * pw, y * ph, pw, ph);
        }
        ctx.fillStyle = "rgba(255, 255, 0, 0.9)";
        if (x > 0 && at(y, x - 1) !== id) ctx.fillRect(x * pw, y * ph, 1, ph);
        if (y > 0 && at(y - 1, x) !== id) ctx.fillRect(x * pw, y * ph, pw, 1);
      }
    }
    const tokens = new Set(ids.slice(s * h * w, (s + 1) * h * w)).size;
    figures.push(figure(canvas, `${fmt(frame / fps, 2)} s · ${tokens} tokens`,
      `frame ${frame}: ${h * w} patches in ${tokens} merged tokens`));
  }
  $("merges").replaceChildren(...figures);
}

// --- the timeline -------------------------------------------------------------------------

async function loadTimeline(file) {
  try {
    const vtt = api("/v1/timeline?format=vtt", { method: "POST", body: videoForm(file), headers: { Accept: "text/vtt" } })
      .then((r) => r.blob());
    vtt.catch(() => {}); // reported below, once
    const body = await (await api("/v1/timeline?format=json", { method: "POST", body: videoForm(file) })).json();
    if (state.file !== file) return;
    state.timeline = body;
    renderSegments(body.segments || [], body.video.duration_s);
    const captions = await vtt;
    if (state.file !== file) return;
    attachCaptions(captions, body);
  } catch (err) {
    showError(err);
  }
}

function renderSegments(segments, duration) {
  const track = $("segments");
  const span = duration || Math.max(1e-3, ...segments.map((s) => s.end_s));
  track.replaceChildren(...segments.map((s) =>
    el("button", {
      type: "button", className: "segment", textContent: s.label,
      title: `${s.label} ${fmt(s.start_s, 2)}–${fmt(s.end_s, 2)} s, score ${fmt(s.score, 2)}`,
      "aria-label": `${s.label} from ${fmt(s.start_s, 2)} to ${fmt(s.end_s, 2)} seconds, score ${fmt(s.score, 2)}: seek`,
      "data-start": String(s.start_s), "data-label": s.label,
      style: { left: `${(100 * s.start_s) / span}%`, width: `${(100 * (s.end_s - s.start_s)) / span}%`,
        background: labelColour(s.label) },
      onclick: () => seek(s.start_s),
    })));
  const labels = [...new Set(segments.map((s) => s.label))];
  $("legend").replaceChildren(...labels.map((l) =>
    el("li", {}, [el("span", { className: "swatch", style: { background: labelColour(l) }, "aria-hidden": "true" }), l])));
}

function seek(seconds) {
  const player = $("player");
  player.currentTime = seconds;
  player.focus();
}

function attachCaptions(vttBlob, body) {
  state.vtt = URL.createObjectURL(vttBlob);
  const track = el("track", { kind: "captions", label: "actions", srclang: "en", src: state.vtt, default: true });
  $("player").append(track);
  $("download-vtt").href = state.vtt;
  $("download-json").href = URL.createObjectURL(new Blob([JSON.stringify(body, null, 2)], { type: "application/json" }));
  $("downloads").hidden = false;
}

// --- live ---------------------------------------------------------------------------------

function recorderType() {
  const types = ["video/webm;codecs=vp8", "video/webm;codecs=vp9", "video/webm", "video/mp4"];
  return types.find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t)) || "";
}

async function startLive() {
  clearError();
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError(new ApiError("This browser cannot record the camera (no getUserMedia or MediaRecorder)."));
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
  } catch (err) {
    showError(new ApiError(`The camera is not available: ${err.message}`));
    return;
  }
  const video = $("live-video");
  video.srcObject = stream;
  video.classList.add("on");
  video.play().catch(() => { /* the browser refused to play: the preview stays still, streaming goes on */ });
  resetLiveView();
  const key = sessionStorage.getItem(KEY);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // A browser's WebSocket cannot send a header: the key is the first message, never in the URL.
  const ws = new WebSocket(`${scheme}://${location.host}/v1/streams/ws`);
  const recorder = new MediaRecorder(stream, { mimeType: recorderType() });
  const live = { ws, recorder, stream, ended: false };
  state.live = live;
  ws.onopen = () => {
    if (key) ws.send(JSON.stringify({ type: "auth", key }));
    ws.send(JSON.stringify({ window_s: 2, stride_s: 1, top_k: 3 }));
    recorder.ondataavailable = (e) => { if (e.data.size && ws.readyState === WebSocket.OPEN) ws.send(e.data); };
    recorder.onstop = () => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "end" })); };
    recorder.start(500);
  };
  ws.onmessage = (e) => onLiveEvent(JSON.parse(e.data));
  ws.onerror = () => showError(new ApiError("The live connection failed (is the key right? does the server stream?)."));
  ws.onclose = () => stopLive(false);
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
}

function resetLiveView() {
  $("live-segments").replaceChildren();
  $("live-lag").textContent = "";
  $("live-label").textContent = "waiting for the first window…";
  $("live-label").dataset.label = "";
}

/** A URL stream the server reads itself (`POST /v1/streams`), its Server-Sent Events read with
 * fetch (EventSource cannot send the key's header). */
async function watchUrl(url) {
  clearError();
  stopLive(true);
  let info;
  try {
    info = await (await api("/v1/streams", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ url, window_s: 2, stride_s: 1, top_k: 3 }) })).json();
  } catch (err) {
    showError(err);
    return;
  }
  const controller = new AbortController();
  state.live = { id: info.id, controller, ended: false };
  resetLiveView();
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
  try {
    const response = await api(`/v1/streams/${info.id}/events`, { signal: controller.signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      for (let cut = buffer.indexOf("\n\n"); cut >= 0; cut = buffer.indexOf("\n\n")) {
        const event = parseEvent(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (event) onLiveEvent(event);
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") showError(err);
  }
  stopLive(false);
}

/** One Server-Sent Events block (`event:` + `data:` lines; comments are keep-alives). */
function parseEvent(block) {
  let event = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  return data ? { event, data: JSON.parse(data) } : null;
}

function onLiveEvent({ event, data }) {
  if (event === "window") {
    const best = data.predictions[0];
    if (best) $("live-label").textContent = `${best.label} ${fmt(best.score * 100, 0)}%`;
    $("live-label").dataset.label = best ? best.label : "";
    $("live-lag").textContent = `window ${fmt(data.start_s)}–${fmt(data.end_s)} s · lag ${fmt(data.lag_s, 2)} s · ` +
      `model ${fmt(data.latency_ms, 0)} ms`;
  } else if (event === "segment") {
    const list = $("live-segments");
    list.prepend(el("li", { textContent: `${data.label} ${fmt(data.start_s)}–${fmt(data.end_s)} s (${fmt(data.score, 2)})` }));
    while (list.children.length > 10) list.lastChild.remove();
  } else if (event === "error") {
    showError(new ApiError(`${data.message} (${data.code})`));
  } else if (event === "end") {
    $("live-lag").textContent += ` · ended: ${data.reason}`;
  }
}

function stopLive(graceful = true) {
  const live = state.live;
  if (!live || live.ended) return;
  live.ended = true;
  if (live.controller) { // a URL stream: stop reading, and stop it on the server when asked to
    live.controller.abort();
    if (graceful) api(`/v1/streams/${live.id}`, { method: "DELETE" }).catch(() => {});
  } else {
    if (live.recorder.state !== "inactive") live.recorder.stop(); // its onstop sends {"type": "end"}
    live.stream.getTracks().forEach((t) => t.stop());
    if (!graceful && live.ws.readyState === WebSocket.OPEN) live.ws.close();
    $("live-video").classList.remove("on");
  }
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
}

// --- wiring -------------------------------------------------------------------------------

function init() {
  const key = $("key");
  key.value = sessionStorage.getItem(KEY) || "";
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (key.value) sessionStorage.setItem(KEY, key.value);
    else sessionStorage.removeItem(KEY);
    loadModel();
  });
  $("file").addEventListener("change", (e) => handleFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    handleFile(e.dataTransfer.files[0]);
  });
  $("live-start").addEventListener("click", startLive);
  $("live-stop").addEventListener("click", () => stopLive(true));
  $("url-form").addEventListener("submit", (e) => {
    e.preventDefault();
    watchUrl($("stream-url").value);
  });
  loadModel();
}

document.addEventListener("DOMContentLoaded", init);
