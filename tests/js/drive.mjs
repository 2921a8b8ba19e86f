// Drives the official @fal-ai/client against the service, pointed at it either with a
// requestMiddleware that rewrites fal's URLs or with proxyUrl (the server-proxy contract).
// Usage: node drive.mjs '{"base": "...", "mode": "middleware|proxy", "imageUrl": "...", "pngPath": "..."}'
// Prints one JSON object (the last line of stdout) for pytest to check.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

// The client is installed in a cache folder outside the repository (tests/support/js_client.py).
const require = createRequire(`${process.env.FAL_CLIENT_HOME}/`);
const { createFalClient, ValidationError } = require("@fal-ai/client");

const APP = "fal-ai/live-portrait/image";
const config = JSON.parse(process.argv[2]);
const { base } = config;

function clientOptions() {
  const credentials = "anything:anything";
  if (config.mode === "proxy") {
    // when: "always" because the default proxies only inside browsers.
    return { credentials, proxyUrl: { url: `${base}/api/fal/proxy`, when: "always" } };
  }
  const rewrite = (url) =>
    url
      .replace(/^https:\/\/queue\.fal\.run\//, `${base}/`)
      .replace(/^https:\/\/fal\.run\//, `${base}/run/`)
      .replace(/^https:\/\/rest\.fal\.ai\//, `${base}/`);
  return { credentials, requestMiddleware: async (req) => ({ ...req, url: rewrite(req.url) }) };
}

const fal = createFalClient(clientOptions());
const pngBlob = () => new Blob([readFileSync(config.pngPath)], { type: "image/png" });
const noCrop = { flag_do_crop: false };

async function subscribePolling() {
  const updates = [];
  const result = await fal.subscribe(APP, {
    input: { image_url: config.imageUrl, ...noCrop, smile: 0.5 },
    logs: true,
    pollInterval: 100,
    onQueueUpdate: (update) => updates.push(update),
  });
  return {
    data: result.data,
    requestId: result.requestId,
    statuses: updates.map((u) => u.status),
    sawLogs: updates.some((u) => Array.isArray(u.logs) && u.logs.length > 0),
  };
}

async function subscribeStreamingWithBlobInput() {
  const updates = [];
  // A Blob in the input is uploaded through the storage API first, its URL put in its place.
  const result = await fal.subscribe(APP, {
    input: { image_url: pngBlob(), ...noCrop, output_format: "png" },
    mode: "streaming",
    logs: true,
    onQueueUpdate: (update) => updates.push(update),
  });
  return { data: result.data, requestId: result.requestId, statuses: updates.map((u) => u.status) };
}

async function uploadThenQueue() {
  const url = await fal.storage.upload(pngBlob());
  const submitted = await fal.queue.submit(APP, { input: { image_url: url, ...noCrop } });
  const requestId = submitted.request_id;
  const statuses = [];
  for (;;) {
    const status = await fal.queue.status(APP, { requestId, logs: true });
    statuses.push(status.status);
    if (status.status === "COMPLETED") break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const result = await fal.queue.result(APP, { requestId });
  return { uploadedUrl: url, submittedId: requestId, data: result.data, requestId: result.requestId, statuses };
}

async function validationError() {
  try {
    await fal.queue.submit(APP, { input: { image_url: config.imageUrl, smile: 9 } });
    return { thrown: false };
  } catch (error) {
    return {
      thrown: true,
      isValidationError: error instanceof ValidationError,
      status: error.status,
      fieldErrors: error.fieldErrors,
    };
  }
}

const out = {
  polling: await subscribePolling(),
  streaming: await subscribeStreamingWithBlobInput(),
  queue: await uploadThenQueue(),
  invalid: await validationError(),
};
console.log(JSON.stringify(out));
