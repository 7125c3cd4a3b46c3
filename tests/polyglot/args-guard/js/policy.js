// args-guard (JavaScript, componentize-js): refuses a `tools/call` whose arguments
// mention a production host. The same policy exists in Rust
// (tests/policies/args-guard-rust) and Python (../python); all three must decide
// identically. The rule, exactly:
//  - every string value of the arguments JSON (recursively through objects and
//    arrays; object keys are not inspected) is split into maximal runs of ASCII
//    [A-Za-z0-9.-];
//  - each run is lowercased and stripped of leading and trailing '.' and '-';
//  - a run is a production host when it ends with ".<domain>" for one of the
//    configured domains and is longer than that suffix (*.prod.internal).
// A call mentioning such hosts is denied with -32001 "Denied: production host";
// the audit reason lists the hosts (sorted, without repeats). Arguments that are
// not JSON are denied with -32603 "Internal error". Listing, resources and
// prompts are not affected (their hooks allow and pass, and are declared absent).
// Settings: {"domains"?: [string]} (default ["prod.internal"]).

import { log } from 'portcullis:policy/host@0.2.0';

const CODE = -32001;
const MESSAGE = 'Denied: production host';

function trimHost(s) {
  return s.replace(/^[.-]+/, '').replace(/[.-]+$/, '');
}

function typeName(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  switch (typeof v) {
    case 'boolean': return 'a boolean';
    case 'number': return 'a number';
    case 'string': return 'a string';
    default: return 'an object';
  }
}

// The configured suffixes (".prod.internal"), or throws a message string.
function suffixes(settings) {
  let obj = {};
  if (settings.trim() !== '') {
    try {
      obj = JSON.parse(settings);
    } catch (e) {
      throw `settings are not valid JSON: ${e}`;
    }
    if (obj === null) obj = {};
  }
  if (typeof obj !== 'object' || Array.isArray(obj)) {
    throw `settings must be a JSON object, got ${typeName(obj)}`;
  }
  let domains = ['prod.internal'];
  for (const key of Object.keys(obj)) {
    if (key !== 'domains') throw `unknown settings key \`${key}\``;
  }
  if ('domains' in obj) {
    const d = obj.domains;
    if (!Array.isArray(d)) {
      throw `settings key \`domains\` must be an array of strings, got ${typeName(d)}`;
    }
    d.forEach((item, i) => {
      if (typeof item !== 'string') {
        throw `settings key \`domains[${i}]\` must be a string, got ${typeName(item)}`;
      }
    });
    domains = d;
  }
  if (domains.length === 0) throw 'settings key `domains` must not be empty';
  for (const d of domains) {
    if (trimHost(d) === '') throw `settings key \`domains\` has an empty domain ${JSON.stringify(d)}`;
  }
  return domains.map((d) => '.' + trimHost(d).toLowerCase());
}

function hostsIn(s, sfx, found) {
  for (const run of s.match(/[A-Za-z0-9.-]+/g) || []) {
    const host = trimHost(run).toLowerCase();
    if (sfx.some((x) => host.length > x.length && host.endsWith(x))) found.add(host);
  }
}

function walk(v, sfx, found) {
  if (typeof v === 'string') hostsIn(v, sfx, found);
  else if (Array.isArray(v)) v.forEach((x) => walk(x, sfx, found));
  else if (v !== null && typeof v === 'object') Object.values(v).forEach((x) => walk(x, sfx, found));
}

function deny(code, message, reason) {
  return { tag: 'deny', val: { code, message, reason } };
}

function decide(settings, args) {
  let sfx;
  try {
    sfx = suffixes(settings);
  } catch (e) {
    return deny(-32603, 'Internal error', String(e));
  }
  let value;
  try {
    value = JSON.parse(args);
  } catch (_) {
    return deny(-32603, 'Internal error', 'arguments are not valid JSON');
  }
  const found = new Set();
  walk(value, sfx, found);
  if (found.size === 0) return { tag: 'allow' };
  // Hosts are ASCII, so code-unit order is byte order (as in Rust and Python).
  const hosts = [...found].sort();
  const noun = hosts.length === 1 ? 'host' : 'hosts';
  return deny(CODE, MESSAGE, `arguments mention production ${noun} ${hosts.join(', ')}`);
}

export function validateSettings(settings) {
  suffixes(settings);
}

// Only calls are checked, from their arguments alone, the same way every time.
export function describe(settings) {
  return {
    filterTools: false,
    checkCall: true,
    checkResult: false,
    readsConnectorTools: false,
    readsArguments: true,
    deterministic: true,
    readsToolDefinitions: false,
    filterResources: false,
    checkResource: false,
    checkResourceContents: false,
    filterPrompts: false,
    checkPrompt: false,
    checkPromptResult: false,
  };
}

export function filterTools(settings, ctx) {
  return ctx.connector.tools.map(() => ({ tag: 'allow' }));
}

export function checkCall(settings, ctx, tool, args) {
  const v = decide(settings, args);
  if (v.tag === 'deny') log('debug', `args-guard (js): ${v.val.reason}`);
  return v;
}

export function checkResult(settings, ctx, tool, result) {
  return { tag: 'pass' };
}

// Resources and prompts: declared absent above, so never called; allow and pass.
export function filterResources(settings, ctx, items) {
  return items.map(() => ({ tag: 'allow' }));
}

export function checkResource(settings, ctx, item, action) {
  return { tag: 'allow' };
}

export function checkResourceContents(settings, ctx, item, result) {
  return { tag: 'pass' };
}

export function filterPrompts(settings, ctx, items) {
  return items.map(() => ({ tag: 'allow' }));
}

export function checkPrompt(settings, ctx, item, action) {
  return { tag: 'allow' };
}

export function checkPromptResult(settings, ctx, item, result) {
  return { tag: 'pass' };
}
