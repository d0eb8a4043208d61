// helm_validate.js: checks the objects a `helm template` of the gyro chart renders.
//
//   node helm_validate.js validate RENDERED.ndjson [--expect FACTS.json]
//   node helm_validate.js extract RENDERED.ndjson CONFIGMAP_NAME OUT_DIR
//   node helm_validate.js flags RENDERED.ndjson
//   node helm_validate.js args RENDERED.ndjson NAME_SUFFIX CONTAINER
//
// RENDERED.ndjson holds one Kubernetes object per line (test_helm.sh converts helm's YAML with
// `kubectl patch --local -o jsonpath='{@}'`, the real Kubernetes decoder, offline).
//
// validate: every object goes through the kubernetes-models validator of its apiVersion/kind
// (types, required fields, formats). Those validators accept unknown fields (the OpenAPI
// schemas do not close objects), so each object is also walked through a Proxy that records
// which properties the validator looked at: a property it never read is not part of the API
// (a typo such as `readinesProbe`) and is reported with its path. With --expect, the facts the
// file lists are asserted (see checkFacts). Exit 0 when everything holds, 1 with one line per
// problem otherwise, 2 on usage errors.
//
// flags: prints "BINARY --flag" for every flag the rendered containers pass to a binary.
//
// args: prints the arguments of one container, one a line (the test runs them).
//
// extract: writes each data key of the named ConfigMap to OUT_DIR/KEY (the test runs the
// rendered scripts and feeds the rendered run config to the real gyro-controller).
'use strict';

const fs = require('fs');
const path = require('path');

const MODELS = path.join(process.env.GY_SOURCE_DIR || path.join(__dirname, '..', '..'),
  'node_modules', 'kubernetes-models');

function readObjects(file) {
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '')
    .map((l, i) => {
      try {
        return JSON.parse(l);
      } catch (e) {
        throw new Error(`${file}:${i + 1}: not JSON: ${e.message}`);
      }
    });
}

// kubernetes-models file of an apiVersion/kind: "apps/v1" Deployment -> apps/v1/Deployment.js,
// "v1" Service -> v1/Service.js.
async function modelFor(obj) {
  const file = path.join(MODELS, ...obj.apiVersion.split('/'), `${obj.kind}.js`);
  if (!fs.existsSync(file)) return null;
  const mod = await import(file);
  return mod[obj.kind] || null;
}

// Wraps obj so that every own property the validator reads (or tests with `in`) is recorded
// as a JSON-pointer-like path in seen.
function track(obj, where, seen) {
  if (obj === null || typeof obj !== 'object') return obj;
  return new Proxy(obj, {
    get(t, k, r) {
      const v = Reflect.get(t, k, r);
      if (typeof k === 'string' && Object.prototype.hasOwnProperty.call(t, k)) {
        seen.add(`${where}/${k}`);
        return track(v, `${where}/${k}`, seen);
      }
      return v;
    },
    has(t, k) {
      if (typeof k === 'string') seen.add(`${where}/${k}`);
      return Reflect.has(t, k);
    },
  });
}

function allPaths(obj, where, out) {
  if (obj !== null && typeof obj === 'object') {
    for (const k of Object.keys(obj)) {
      out.push(`${where}/${k}`);
      allPaths(obj[k], `${where}/${k}`, out);
    }
  }
  return out;
}

function label(obj) {
  return `${obj.kind}/${(obj.metadata && obj.metadata.name) || '?'}`;
}

async function validateAll(objects, problems) {
  for (const obj of objects) {
    if (!obj || typeof obj.apiVersion !== 'string' || typeof obj.kind !== 'string') {
      problems.push(`object without apiVersion/kind: ${JSON.stringify(obj).slice(0, 120)}`);
      continue;
    }
    const Model = await modelFor(obj);
    if (!Model) {
      problems.push(`${label(obj)}: no kubernetes-models type for ${obj.apiVersion} ${obj.kind}`);
      continue;
    }
    // The model's validate() runs the schema's validator on `this`: hand it the tracked object
    // itself (constructing a Model would copy, and so read, every property).
    const seen = new Set();
    try {
      Model.prototype.validate.call(track(obj, '', seen));
    } catch (e) {
      const details = (e.errors || []).map((x) => `${x.instancePath} ${x.message}`).join('; ');
      problems.push(`${label(obj)}: invalid: ${details || e.message}`);
      continue;
    }
    const unknown = allPaths(obj, '', []).filter((p) => !seen.has(p));
    // A path under an unknown one is reported once, through its parent.
    const roots = unknown.filter((p) => !unknown.some((q) => q !== p && p.startsWith(`${q}/`)));
    for (const p of roots) problems.push(`${label(obj)}: unknown field ${p}`);
  }
}

function find(objects, kind, nameSuffix) {
  return objects.filter((o) => o.kind === kind && o.metadata.name.endsWith(nameSuffix));
}

function containersOf(podSpec) {
  return [...(podSpec.initContainers || []), ...(podSpec.containers || [])];
}

// Facts (all optional): controllerReplicas, workerReplicas, gpusPerPod, etcd ("bundled" |
// "external" | "none"), etcdEndpoints (substring of --store), secrets (strings that must appear
// in no object but a Secret), binaries (file: one name per line is written there).
function checkFacts(objects, facts, problems) {
  const want = (cond, msg) => { if (!cond) problems.push(msg); };
  const dep = find(objects, 'Deployment', '-controller')[0];
  const sts = find(objects, 'StatefulSet', '-worker')[0];
  want(dep, 'no controller Deployment');
  want(sts, 'no worker StatefulSet');
  if (!dep || !sts) return;
  const ctl = dep.spec.template.spec.containers.find((c) => c.name === 'controller');
  const wrk = sts.spec.template.spec.containers.find((c) => c.name === 'worker');
  if ('controllerReplicas' in facts) {
    want(dep.spec.replicas === facts.controllerReplicas,
      `controller replicas ${dep.spec.replicas}, expected ${facts.controllerReplicas}`);
  }
  want(sts.spec.podManagementPolicy === 'Parallel', 'worker StatefulSet is not Parallel');
  want(sts.spec.updateStrategy && sts.spec.updateStrategy.type === 'OnDelete',
    'worker StatefulSet update strategy is not OnDelete');
  if ('workerReplicas' in facts) {
    want(sts.spec.replicas === facts.workerReplicas,
      `worker replicas ${sts.spec.replicas}, expected ${facts.workerReplicas}`);
  }
  if ('gpusPerPod' in facts) {
    const lim = (wrk.resources.limits || {})['nvidia.com/gpu'];
    const req = (wrk.resources.requests || {})['nvidia.com/gpu'];
    const got = lim === undefined ? 0 : Number(lim);
    want(got === facts.gpusPerPod && (req === undefined ? 0 : Number(req)) === got,
      `worker nvidia.com/gpu limit ${lim} request ${req}, expected ${facts.gpusPerPod}`);
  }
  // Rank from the pod ordinal; peer addresses through the headless Service.
  want(wrk.args.includes('--ordinal=$(GYRO_ORDINAL)'), 'worker does not pass --ordinal');
  const ord = (wrk.env || []).find((e) => e.name === 'GYRO_ORDINAL');
  want(ord && ord.valueFrom.fieldRef.fieldPath.includes('apps.kubernetes.io/pod-index'),
    'GYRO_ORDINAL is not the pod-index label');
  const hs = objects.find((o) => o.kind === 'Service' && o.metadata.name === sts.spec.serviceName);
  want(hs && hs.spec.clusterIP === 'None', `worker serviceName ${sts.spec.serviceName} is not a headless Service`);
  const vols = sts.spec.template.spec.volumes || [];
  const shm = vols.find((v) => v.name === 'dshm');
  want(shm && shm.emptyDir && shm.emptyDir.medium === 'Memory' && shm.emptyDir.sizeLimit,
    '/dev/shm is not a memory emptyDir with a size limit');
  want((wrk.volumeMounts || []).some((m) => m.mountPath === '/dev/shm'), '/dev/shm not mounted');
  want((sts.spec.template.spec.terminationGracePeriodSeconds || 0) >= 60,
    'worker terminationGracePeriodSeconds below 60');
  const pre = wrk.lifecycle && wrk.lifecycle.preStop && wrk.lifecycle.preStop.exec;
  want(pre && pre.command.some((a) => a.endsWith('prestop.sh')), 'worker has no preStop checkpoint hook');
  // PDB over the controllers.
  const pdb = find(objects, 'PodDisruptionBudget', '-controller')[0];
  if (dep.spec.replicas > 1) {
    want(pdb && pdb.spec.minAvailable === 1, 'no controller PodDisruptionBudget with minAvailable 1');
    const aff = dep.spec.template.spec.affinity;
    want(aff && aff.podAntiAffinity, 'controller replicas have no anti-affinity');
  }
  // Every gyro container: non-root, read-only root, no capabilities.
  for (const o of objects.filter((x) => x.spec && x.spec.template)) {
    const ps = o.spec.template.spec;
    want(ps.automountServiceAccountToken === false, `${label(o)}: service account token mounted`);
    for (const c of containersOf(ps)) {
      const sc = c.securityContext || {};
      want(sc.runAsNonRoot === true && sc.readOnlyRootFilesystem === true &&
        sc.allowPrivilegeEscalation === false && sc.capabilities &&
        JSON.stringify(sc.capabilities.drop) === '["ALL"]',
      `${label(o)} container ${c.name}: not non-root/read-only/drop ALL`);
      want(c.resources && (c.resources.requests || c.resources.limits),
        `${label(o)} container ${c.name}: no resources`);
    }
  }
  // Probes on the controller.
  want(ctl.livenessProbe && ctl.readinessProbe, 'controller has no liveness/readiness probe');
  // etcd.
  const store = ctl.args.find((a) => a.startsWith('--store='));
  const etcdSts = find(objects, 'StatefulSet', '-etcd')[0];
  if (facts.etcd === 'bundled') {
    want(etcdSts && etcdSts.spec.replicas === 3, 'bundled etcd is not a 3-member StatefulSet');
    want(etcdSts && (etcdSts.spec.volumeClaimTemplates || []).length === 1, 'etcd has no PVC template');
    want(find(objects, 'Service', '-etcd-peer')[0] && find(objects, 'Service', '-etcd')[0],
      'etcd peer or client Service missing');
    want(store && store.split(',').length === 3, `--store does not list 3 members: ${store}`);
  } else if (facts.etcd === 'external') {
    want(!etcdSts, 'etcd StatefulSet rendered with etcd.mode external');
    want(store && store.includes(facts.etcdEndpoints), `--store ${store} lacks ${facts.etcdEndpoints}`);
  } else if (facts.etcd === 'none') {
    want(!etcdSts && !store, 'etcd rendered or --store passed with etcd.mode none');
  }
  if (store) want(ctl.args.some((a) => a.startsWith('--run=')), '--store without --run');
  // ServiceAccount without RBAC.
  const sa = objects.find((o) => o.kind === 'ServiceAccount');
  want(sa && sa.automountServiceAccountToken === false, 'ServiceAccount mounts its token');
  want(!objects.some((o) => /Role/.test(o.kind)), 'RBAC objects rendered');
  // Secrets never outside Secrets (ConfigMaps, args, env values, annotations...).
  for (const s of facts.secrets || []) {
    for (const o of objects.filter((x) => x.kind !== 'Secret')) {
      want(!JSON.stringify(o).includes(s), `${label(o)} contains a token`);
    }
  }
  const sec = objects.find((o) => o.kind === 'Secret' && o.data && o.data['join-token']);
  if (sec) {
    const got = Buffer.from(sec.data['join-token'], 'base64').toString();
    if ((facts.secrets || []).length) {
      want(facts.secrets.includes(got), 'the Secret does not hold the join token given');
    }
  }
  // The binaries the chart runs (checked against the build by test_helm.sh).
  if (facts.binaries) {
    const names = new Set();
    for (const o of objects.filter((x) => x.spec && x.spec.template)) {
      if (find([o], 'StatefulSet', '-etcd').length) continue; // etcd's own image
      for (const c of containersOf(o.spec.template.spec)) {
        // System tools run by absolute path (/bin/sh) come with the base image.
        const cmd = (c.command || [])[0];
        if (cmd && !cmd.startsWith('/')) names.add(cmd);
        const ex = c.lifecycle && c.lifecycle.preStop && c.lifecycle.preStop.exec;
        if (ex) names.add('gyroctl');
      }
    }
    fs.writeFileSync(facts.binaries, [...names].sort().join('\n') + '\n');
  }
}

async function main(argv) {
  const [mode, file, ...rest] = argv;
  if (mode === 'validate' && file) {
    const objects = readObjects(file);
    const problems = [];
    await validateAll(objects, problems);
    const i = rest.indexOf('--expect');
    if (i >= 0) checkFacts(objects, JSON.parse(fs.readFileSync(rest[i + 1], 'utf8')), problems);
    for (const p of problems) console.log(`helm_validate: ${file}: ${p}`);
    if (!problems.length) console.log(`helm_validate: ${file}: ${objects.length} objects valid`);
    return problems.length ? 1 : 0;
  }
  if (mode === 'flags' && file) {
    // One line "BINARY --flag" per flag a container passes to the project's binaries: the
    // args of containers whose command is BINARY, and the gyroctl options the preStop hook
    // forwards (prestop.sh WAIT [GYROCTL_OPTION...]).
    const lines = new Set();
    for (const o of readObjects(file).filter((x) => x.spec && x.spec.template)) {
      for (const c of containersOf(o.spec.template.spec)) {
        const cmd = (c.command || [])[0];
        for (const a of c.args || []) {
          const m = /^--[a-z][a-z-]*/.exec(a);
          if (cmd && m) lines.add(`${cmd} ${m[0]}`);
        }
        const ex = c.lifecycle && c.lifecycle.preStop && c.lifecycle.preStop.exec;
        for (const a of (ex && ex.command) || []) {
          const m = /^--[a-z][a-z-]*/.exec(a);
          if (m) lines.add(`gyroctl ${m[0]}`);
        }
      }
    }
    for (const l of [...lines].sort()) console.log(l);
    return 0;
  }
  if (mode === 'args' && file && rest.length === 2) {
    // The args of container rest[1] of the workload whose name ends with rest[0], one a line.
    const [suffix, cname] = rest;
    const o = readObjects(file).find((x) => x.spec && x.spec.template &&
      x.metadata.name.endsWith(suffix));
    const c = o && o.spec.template.spec.containers.find((x) => x.name === cname);
    if (!c) {
      console.log(`helm_validate: ${file}: no container ${cname} in *${suffix}`);
      return 1;
    }
    for (const a of [...(c.command || []).slice(1), ...(c.args || [])]) console.log(a);
    return 0;
  }
  if (mode === 'extract' && file && rest.length === 2) {
    const [name, dir] = rest;
    const cm = readObjects(file).find((o) => o.kind === 'ConfigMap' && o.metadata.name === name);
    if (!cm) {
      console.log(`helm_validate: ${file}: no ConfigMap ${name}`);
      return 1;
    }
    for (const [k, v] of Object.entries(cm.data || {})) fs.writeFileSync(path.join(dir, k), v);
    return 0;
  }
  console.error('usage: helm_validate.js validate RENDERED.ndjson [--expect FACTS.json]\n' +
    '       helm_validate.js extract RENDERED.ndjson CONFIGMAP OUT_DIR\n' +
    '       helm_validate.js flags RENDERED.ndjson\n' +
    '       helm_validate.js args RENDERED.ndjson NAME_SUFFIX CONTAINER');
  return 2;
}

main(process.argv.slice(2)).then((rc) => process.exit(rc), (e) => {
  console.error(`helm_validate: ${e.stack || e}`);
  process.exit(1);
});
