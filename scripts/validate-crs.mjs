// Validates the custom resources of renderings (JSON arrays written by scripts/check-deploy.sh)
// against their CRDs' schemas, as compiled into the kubernetes-models npm packages (KEDA,
// Prometheus Operator, Strimzi): types, enums and required fields. Then strictly, for keys no
// schema knows (a misspelled `pollingIntervall` is otherwise ignored by the API server and
// KEDA alike): each object is type-checked by the TypeScript compiler against the package's
// generated interface, whose excess-property check rejects unknown keys at any depth (one per
// object literal: fix and run again). Prints one line per finding, file: Kind/name: error, and
// exits 1 if there is any, or if a kind has no schema here.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
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
const typed = []; // [where, apiVersion, kind, object] of every object with a schema
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
    typed.push([where, object]);
    try {
      new Model(object).validate();
    } catch (e) {
      console.log(`${where}: ${e.message}`);
      findings += 1;
    }
  }
}

// One `const oN: I<Kind> = <object>;` per object, in a file beside the packages so that their
// types resolve; each object's lines are remembered to name it in a finding.
const ts = require("typescript");
let source = "";
const starts = [];
typed.forEach(([, o], i) => {
  source += `import type { I${o.kind} as T${i} } from "${MODELS[o.apiVersion]}/${o.kind}";\n`;
});
typed.forEach(([, o], i) => {
  starts.push(source.split("\n").length - 1);
  source += `export const o${i}: T${i} = ${JSON.stringify(o, null, 1)};\n`;
});
const dir = mkdtempSync(`${process.env.CRD_MODELS}/../strict-`);
const file = `${dir}/objects.ts`;
writeFileSync(file, source);
const program = ts.createProgram([file], {
  strict: true,
  noEmit: true,
  skipLibCheck: true,
  types: [],
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
});
for (const d of ts.getPreEmitDiagnostics(program)) {
  const line = d.file ? d.file.getLineAndCharacterOfPosition(d.start).line : 0;
  const index = starts.findLastIndex((start) => start <= line);
  const where = index >= 0 ? typed[index][0] : file;
  console.log(`${where}: ${ts.flattenDiagnosticMessageText(d.messageText, " ")}`);
  findings += 1;
}
rmSync(dir, { recursive: true, force: true });
process.exit(findings === 0 ? 0 : 1);
