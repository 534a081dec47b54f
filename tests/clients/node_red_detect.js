// Runs node-red-contrib-deepstack's own request code (deepstack-integration.js) against a server, then reads the
// answer as its object-detection node does (result.success, result.predictions.filter(...), result.duration || 0).
// Usage: node node_red_detect.js PORT IMAGE_FILE [CUSTOM_MODEL]   → one JSON line on stdout.
"use strict";
const fs = require("fs");
const integration = require("node-red-contrib-deepstack/deepstack-integration.js");

const [port, imageFile, customModel] = process.argv.slice(2);
const server = { proto: "http", host: "127.0.0.1", port, version: "v1", credentials: {}, rejectUnauthorized: true };
const image = fs.readFileSync(imageFile);
const call = customModel
  ? integration.customModel(image, server, 0.4, customModel)
  : integration.objectDetection(image, server, 0.4);

call
  .then((result) => {
    const people = result.predictions.filter((p) => p.label == "person");
    console.log(JSON.stringify({ ok: true, success: result.success, people: people.length, duration: result.duration || 0 }));
  })
  .catch((error) => {
    const body = error.response ? JSON.parse(error.response.body) : {};
    console.log(JSON.stringify({ ok: false, status: error.response && error.response.statusCode, predictions: body.predictions }));
  });
