// Edit a portrait with the official fal client, pointed at a portrait-queue service.
//
//   npm install @fal-ai/client
//   node examples/edit-portrait.mjs portrait.jpg edited.jpg
//
// PORTRAIT_QUEUE_URL (default http://127.0.0.1:8000) names the service, FAL_KEY the key (from
// `python -m api.keys create NAME`; anything with AUTH_MODE=off). USE_PROXY=1 goes through the service's
// /api/fal/proxy instead of rewriting URLs (what a browser app would use).
import { readFile, writeFile } from "node:fs/promises";
import { createFalClient } from "@fal-ai/client";

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error("usage: node edit-portrait.mjs INPUT_IMAGE OUTPUT_IMAGE");
  process.exit(2);
}
const base = (process.env.PORTRAIT_QUEUE_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
const credentials = process.env.FAL_KEY ?? "anything:anything";

// The client's hosts are fixed, so every call's URL is rewritten on its way out...
const rewrite = (url) =>
  url
    .replace(/^https:\/\/queue\.fal\.run\//, `${base}/`)
    .replace(/^https:\/\/fal\.run\//, `${base}/run/`)
    .replace(/^https:\/\/rest\.fal\.ai\//, `${base}/`);
const fal = createFalClient(
  process.env.USE_PROXY === "1"
    ? // ...or sent to the proxy route with the original URL in x-fal-target-url.
      // when: "always", since by default the proxy is used only in browsers.
      { credentials, proxyUrl: { url: `${base}/api/fal/proxy`, when: "always" } }
    : { credentials, requestMiddleware: async (req) => ({ ...req, url: rewrite(req.url) }) },
);

const type = input.endsWith(".png") ? "image/png" : input.endsWith(".webp") ? "image/webp" : "image/jpeg";
let printed = 0;
const { data, requestId } = await fal.subscribe("fal-ai/live-portrait/image", {
  // A Blob is uploaded to the service's storage first and replaced by its URL.
  input: { image_url: new Blob([await readFile(input)], { type }), smile: 0.8, rotate_yaw: 10 },
  logs: true,
  onQueueUpdate: (update) => {
    // Polling answers with every log line so far: print only the new ones.
    const logs = update.logs ?? [];
    logs.slice(printed).forEach((line) => console.log(line.message));
    printed = Math.max(printed, logs.length);
  },
});
const image = await fetch(data.image.url);
await writeFile(output, Buffer.from(await image.arrayBuffer()));
console.log(`${output}: ${data.image.width}x${data.image.height} ${data.image.content_type} (request ${requestId})`);
