// The playground: renders its controls from the API's own schema (/playground/config.json) and
// uses only the public API, as any client would: storage upload, submit, SSE status, result.
"use strict";

const KEY_STORAGE = "portrait-queue-key"; // sessionStorage: gone when the tab closes
const $ = (id) => document.getElementById(id);

const state = { config: null, file: null, running: false };

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Key ${key}` } : {};
}

// One-line message for a failed API call: fal's detail string, or the first 422 item.
async function describeFailure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    return `HTTP ${response.status}`;
  }
  if (response.status === 401) {
    return "Unauthorized: enter a valid API key above (key_id:secret).";
  }
  const detail = body && body.detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((d) => `${(d.loc || []).slice(1).join(".") || "input"}: ${d.msg}`).join("\n");
  }
  return typeof detail === "string" ? detail : `HTTP ${response.status}`;
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), ...authHeaders() },
  });
  if (!response.ok) {
    throw new Error(await describeFailure(response));
  }
  return response;
}

// ---- controls, generated from EditParams' JSON schema ---------------------------------------

function label(name) {
  return name.replace(/^flag_/, "").replace(/_/g, " ");
}

function sliderStep(min, max) {
  const span = max - min;
  return span <= 2 ? 0.01 : span <= 40 ? 0.1 : 0.5;
}

function lowerBound(prop) {
  if (prop.minimum !== undefined) return prop.minimum;
  if (prop.exclusiveMinimum !== undefined) return prop.exclusiveMinimum + (prop.type === "integer" ? 1 : 0.01);
  return undefined;
}

function makeControl(name, prop, asSlider) {
  const row = document.createElement("div");
  row.className = "control";
  const lab = document.createElement("label");
  lab.htmlFor = `field-${name}`;
  lab.textContent = label(name);
  lab.title = prop.description || "";
  row.appendChild(lab);
  let input;
  if (prop.type === "boolean") {
    row.classList.add("flag");
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = Boolean(prop.default);
    row.appendChild(input);
  } else if (prop.enum) {
    input = document.createElement("select");
    for (const choice of prop.enum) {
      const option = document.createElement("option");
      option.value = option.textContent = choice;
      input.appendChild(option);
    }
    input.value = prop.default;
    row.appendChild(input);
  } else {
    input = document.createElement("input");
    input.type = asSlider ? "range" : "number";
    const min = lowerBound(prop);
    if (min !== undefined) input.min = String(min);
    if (prop.maximum !== undefined) input.max = String(prop.maximum);
    input.step = prop.type === "integer" ? "1" : asSlider ? String(sliderStep(min, prop.maximum)) : "any";
    input.value = String(prop.default);
    row.appendChild(input);
    if (asSlider) {
      const shown = document.createElement("output");
      shown.id = `value-${name}`;
      shown.textContent = input.value;
      input.addEventListener("input", () => (shown.textContent = input.value));
      row.appendChild(shown);
    }
  }
  input.id = `field-${name}`;
  input.name = name;
  input.dataset.kind = prop.type === "boolean" ? "bool" : prop.enum ? "enum" : prop.type;
  input.dataset.default = String(prop.default);
  return row;
}

function renderControls(config) {
  const props = config.schema.properties;
  const sliders = $("sliders");
  const options = $("options");
  for (const name of config.expression_fields) {
    sliders.appendChild(makeControl(name, props[name], true));
  }
  for (const [name, prop] of Object.entries(props)) {
    if (!config.expression_fields.includes(name)) {
      options.appendChild(makeControl(name, prop, false));
    }
  }
}

function resetControls() {
  for (const input of $("edit-form").querySelectorAll("[data-kind]")) {
    if (input.dataset.kind === "bool") input.checked = input.dataset.default === "true";
    else input.value = input.dataset.default;
    input.dispatchEvent(new Event("input"));
  }
}

function readParams() {
  const params = {};
  for (const input of $("edit-form").querySelectorAll("[data-kind]")) {
    const kind = input.dataset.kind;
    if (kind === "bool") params[input.name] = input.checked;
    else if (kind === "enum") params[input.name] = input.value;
    else params[input.name] = Number(input.value);
  }
  return params;
}

// ---- file picking ----------------------------------------------------------------------------

// Some browsers give a HEIC file (what phones take) no type at all: name it from its extension.
function imageType(file) {
  if (file.type) return file.type;
  const extension = file.name.toLowerCase().split(".").pop();
  return { heic: "image/heic", heif: "image/heif" }[extension] || "";
}

function useFile(file) {
  if (!file || !imageType(file).startsWith("image/")) {
    showError("Pick an image file (JPEG, PNG, WebP or HEIC).");
    return;
  }
  state.file = file;
  const original = $("original");
  original.src = URL.createObjectURL(file);
  original.hidden = false;
  $("result").hidden = true;
  $("download").hidden = true;
  $("phase").textContent = `Ready: ${file.name}`;
  $("submit").disabled = state.running;
  showError("");
}

function wireDropZone() {
  const zone = $("drop-zone");
  $("file-input").addEventListener("change", (event) => useFile(event.target.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    useFile(event.dataTransfer.files[0]);
  });
}

// ---- one edit: upload, submit, stream, result ------------------------------------------------

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function appendLogs(lines) {
  const pre = $("logs");
  for (const line of lines || []) {
    pre.textContent += `${line.timestamp ? line.timestamp.slice(11, 23) : ""} ${line.level} ${line.message}\n`;
  }
  pre.scrollTop = pre.scrollHeight;
}

function showStatus(status) {
  $("phase").textContent = status.status.replace("_", " ").toLowerCase();
  let text;
  if (status.status === "IN_QUEUE") text = `queue position ${status.queue_position}`;
  else if (status.status === "IN_PROGRESS") text = "running on a worker";
  else text = status.error ? `failed: ${status.error}` : "done";
  $("queue").textContent = text;
  // Every distinct step stays listed, so a short wait in the queue is still visible afterwards.
  const history = $("history");
  if (history.lastElementChild?.textContent !== text) {
    const item = document.createElement("li");
    item.textContent = text;
    history.appendChild(item);
  }
}

async function upload(file) {
  const type = imageType(file);
  const initiate = await api("/storage/upload/initiate", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ file_name: file.name, content_type: type }),
  });
  const { upload_url: uploadUrl, file_url: fileUrl } = await initiate.json();
  // The upload URL is signed; the key is not needed (nor sent) for the PUT itself.
  const put = await fetch(uploadUrl, { method: "PUT", headers: { "Content-Type": type }, body: file });
  if (!put.ok) throw new Error(`upload failed: ${await describeFailure(put)}`);
  return fileUrl;
}

// The SSE status stream, read with fetch (EventSource cannot send the Authorization header).
async function followStatus(requestId, onEvent) {
  const response = await api(`/${state.config.queue_base}/requests/${requestId}/status/stream?logs=1`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
      if (data.trim()) {
        last = JSON.parse(data);
        onEvent(last);
      }
    }
  }
  return last;
}

async function runEdit(event) {
  event.preventDefault();
  if (!state.file || state.running) return;
  state.running = true;
  $("submit").disabled = true;
  $("logs").textContent = "";
  $("queue").textContent = "";
  $("history").textContent = "";
  $("result").hidden = true;
  $("download").hidden = true;
  showError("");
  try {
    $("phase").textContent = "uploading";
    const imageUrl = await upload(state.file);
    $("phase").textContent = "submitting";
    const submitted = await api(`/${state.config.app_id}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image_url: imageUrl, ...readParams() }),
    });
    const ticket = await submitted.json();
    document.body.dataset.requestId = ticket.request_id;
    showStatus(ticket);
    const final = await followStatus(ticket.request_id, (status) => {
      showStatus(status);
      appendLogs(status.logs);
    });
    if (!final || final.status !== "COMPLETED") throw new Error("the status stream ended early");
    const result = await fetch(`/${state.config.queue_base}/requests/${ticket.request_id}`, {
      headers: authHeaders(),
    });
    if (!result.ok) throw new Error(await describeFailure(result));
    showResult((await result.json()).image);
  } catch (error) {
    $("phase").textContent = "failed";
    showError(error.message || String(error));
  } finally {
    state.running = false;
    $("submit").disabled = !state.file;
  }
}

function showResult(image) {
  const img = $("result");
  img.src = image.url;
  img.hidden = false;
  const link = $("download");
  link.href = image.url;
  link.download = image.file_name || "portrait";
  link.textContent = `download (${image.width}×${image.height}, ${Math.round(image.file_size / 1024)} KB)`;
  link.hidden = false;
}

// ---- key -------------------------------------------------------------------------------------

function showKeyState() {
  const saved = sessionStorage.getItem(KEY_STORAGE);
  const required = state.config && state.config.auth_required;
  $("key-state").textContent = saved ? "key set for this tab" : required ? "a key is required" : "no key needed";
}

function wireKey() {
  $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    showKeyState();
  });
}

async function main() {
  wireKey();
  const response = await fetch("/playground/config.json");
  state.config = await response.json();
  $("app-id").textContent = state.config.app_id;
  renderControls(state.config);
  showKeyState();
  wireDropZone();
  $("reset").addEventListener("click", resetControls);
  $("edit-form").addEventListener("submit", runEdit);
  document.body.dataset.ready = "true";
}

main().catch((error) => showError(`could not load the playground: ${error.message}`));
