// Validates the custom resources of renderings (JSON arrays written by scripts/check-deploy.sh)
// against their CRDs' schemas, as compiled into the kubernetes-models npm packages (KEDA,
// Prometheus Operator, Strimzi): types, enums and required fields. Prints one line per finding,
// file: Kind/name: error, and exits 1 if there is any, or if a kind has no schema here.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const require = createRequire(`${process.env.CRD_MODELS}/`);
const MODELS = {
  "keda.sh/v1alpha1": "@kubernetes-models/keda/keda.sh/v1alpha1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
  "kafka.strimzi.io/v1beta2": "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1beta2",
};
const load = async (apiVersion) => {
  const entry = MODELS[apiVersion];
  if (!entry) return null;
  // The packages are ES modules with an `exports` map: resolve the directory, import its index.
  const dir = require.resolve(`${entry.split("/").slice(0, 2).join("/")}/package.json`).replace(/package\.json$/, "");
  return import(pathToFileURL(`${dir}${entry.split("/").slice(2).join("/")}/index.js`).href);
};
let findings = 0;
for (const path of process.argv.slice(2)) {
  for (const object of JSON.parse(readFileSync(path, "utf8"))) {
    const where = `${path}: ${object.kind}/${object.metadata?.name}`;
    const models = await load(object.apiVersion);
    const Model = models?.[object.kind];
    if (!Model) {
      console.log(`${where}: no schema for ${object.apiVersion} ${object.kind}`);
      findings += 1;
      continue;
    }
    try {
      new Model(object).validate();
    } catch (e) {
      console.log(`${where}: ${e.message}`);
      findings += 1;
    }
  }
}
process.exit(findings === 0 ? 0 : 1);
