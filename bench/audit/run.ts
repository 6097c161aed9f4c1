/**
 * `pnpm bench:audit`: the federation gateway audit (graphql-hive/federation-gateway-audit) on our
 * gateway and, beside it, plain Apollo Gateway.
 *
 * The audit is a server of its own: per test suite, a few subgraphs (under /<suite>/<subgraph>),
 * the supergraph composed from them (/<suite>/supergraph) and the cases (/<suite>/tests: a query
 * and the expected `data`, and whether errors are expected). Its code runs here unchanged, in its
 * own process (see checkout.ts for where it comes from), one server per target. For every suite
 * this script starts the gateway as bench:gateway does (bench/gateway/target.ts) on the suite's supergraph,
 * sends each case's query and judges the answer as the audit's own test runner does (src/test.ts):
 * `data` deep-equal to the expected `data` (null when absent), and, when the case says whether
 * errors are expected, errors present exactly then.
 *
 * Env: BENCH_AUDIT_TARGETS (default `ours,apollo`; any kind target.ts knows), BENCH_AUDIT_SUITES
 * (comma-separated suite ids, default all), BENCH_RESULT_NAME (see results.ts). Writes
 * bench/results/audit.json. Exits 1 when `ours` fails a case that Apollo Gateway passes.
 */
import { signToken } from '@tributary/gateway';
import { deepStrictEqual } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { start, stop } from '../gateway/ipc.ts';
import { onInterrupt, writeResult } from '../results.ts';
import { prepareAudit } from './checkout.ts';

interface Case {
  query: string;
  expected: { data?: unknown; errors?: boolean };
}
interface Failure {
  suite: string;
  index: number;
  query: string;
  expected: unknown;
  received: unknown;
}
interface TargetResult {
  passed: number;
  failed: number;
  total: number;
  /** Per suite, one character per case in the audit's order: `.` passed, `X` failed. */
  suites: Record<string, string>;
  failures: Failure[];
  /** Each case's answer as the gateway sent it (JSON text), by `<suite>_<index>`: ours is compared with Apollo's byte for byte. */
  answers: Record<string, string>;
}

const here = fileURLToPath(new URL('.', import.meta.url));
const TARGETS = (process.env.BENCH_AUDIT_TARGETS ?? 'ours,apollo').split(',').filter(Boolean);
const SUITES = process.env.BENCH_AUDIT_SUITES?.split(',').filter(Boolean);
const CASE_TIMEOUT_MS = 10_000; // the audit's own per-query timeout

const children = new Set<ChildProcess>();
const state = onInterrupt(async () => {
  await Promise.all([...children].map((child) => stopChild(child)));
});

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.connected) await stop(child);
  else if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
  }
  children.delete(child);
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The audit's server (its CLI's `serve`), through tsx as this process runs. */
async function startAuditServer(dir: string): Promise<{ child: ChildProcess; base: string }> {
  const port = await freePort();
  const child = spawn(process.execPath, [...process.execArgv, '--import', pathToFileURL(join(here, 'with-resolvers.ts')).href, 'src/cli.ts', 'serve', '--port', String(port)], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.add(child);
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the audit's server exited with ${child.exitCode}`);
    const ok = await fetch(`${base}/_health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return { child, base };
    if (Date.now() > deadline) throw new Error(`the audit's server did not answer on ${base} within 60 s`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function getJson<T>(url: string): Promise<T> {
  const response = await fetch(url, { headers: { accept: 'application/json' } });
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
  return (await response.json()) as T;
}

/** The audit's verdict on one answer (src/test.ts): what it compares, compared as it does. */
function judge(expectedResult: Case['expected'], response: { data?: unknown; errors?: unknown[] }): { pass: boolean; expected: unknown; received: unknown } {
  const errorsOptional = typeof expectedResult.errors !== 'boolean';
  const received = { data: response.data ?? null, errors: errorsOptional ? null : Boolean(response.errors?.length) };
  const expected = { data: expectedResult.data ?? null, errors: errorsOptional ? null : (expectedResult.errors ?? false) };
  try {
    deepStrictEqual(received, expected);
    return { pass: true, expected, received };
  } catch {
    return { pass: false, expected, received: response };
  }
}

async function ask(url: string, headers: Record<string, string>, query: string): Promise<{ text: string; body: { data?: unknown; errors?: unknown[] } }> {
  try {
    const response = await fetch(url, { method: 'POST', headers: { accept: 'application/json', 'content-type': 'application/json', ...headers }, body: JSON.stringify({ query }), signal: AbortSignal.timeout(CASE_TIMEOUT_MS) });
    const text = await response.text();
    return { text, body: JSON.parse(text) as { data?: unknown; errors?: unknown[] } };
  } catch (error) {
    // A failed request is a failed case, with the reason kept for the report.
    const body = { errors: [{ message: `request failed: ${error instanceof Error ? error.message : String(error)}` }] };
    return { text: JSON.stringify(body), body };
  }
}

/** One suite on one gateway: start it on the suite's supergraph, ask every case, stop it. */
async function runSuite(target: string, id: string, base: string, auth: { secret: string; headers: Record<string, string> }, result: TargetResult): Promise<void> {
  const supergraphPath = join(tmpdir(), `tributary-audit-supergraph-${process.pid}.graphql`);
  writeFileSync(supergraphPath, await fetch(`${base}/${id}/supergraph`).then((r) => r.text()));
  // Fetched per run, as the audit's runner does: some suites' cases are made afresh each time
  // (mutations draws a new request id, which its subgraph refuses to see twice).
  const cases = await getJson<Case[]>(`${base}/${id}/tests`);
  let marks = '';
  let url: string | undefined;
  let child: ChildProcess | undefined;
  let startError: string | undefined;
  try {
    const gateway = await start(join(here, '..', 'gateway', 'target.ts'), [target], { env: { NODE_ENV: 'production', BENCH_SUPERGRAPH: supergraphPath, BENCH_AUTH_SECRET: auth.secret } });
    child = gateway.child;
    children.add(child);
    url = gateway.ready.url;
  } catch (error) {
    // A gateway that refuses the suite's supergraph fails each of its cases.
    startError = error instanceof Error ? error.message : String(error);
  }
  try {
    for (const [index, testCase] of cases.entries()) {
      const answer = url ? await ask(url, auth.headers, testCase.query) : { text: '', body: { errors: [{ message: `gateway did not start: ${startError}` }] } };
      const response = answer.body;
      result.answers[`${id}_${index}`] = answer.text;
      const verdict = judge(testCase.expected, response);
      marks += verdict.pass ? '.' : 'X';
      result.total++;
      if (verdict.pass) result.passed++;
      else {
        result.failed++;
        result.failures.push({ suite: id, index, query: testCase.query, expected: verdict.expected, received: verdict.received });
      }
    }
  } finally {
    if (child) await stopChild(child);
    rmSync(supergraphPath, { force: true });
  }
  result.suites[id] = marks;
  console.log(`${target.padEnd(8)} ${id.padEnd(40)} ${marks}`);
}

async function main() {
  const audit = prepareAudit();
  const secret = randomBytes(32).toString('base64url');
  // Our gateway wants a signed token (as in bench:gateway); the others ignore the header.
  const auth = { secret, headers: { authorization: `Bearer ${await signToken(secret, { sub: 'audit', tenant: 'audit', expiresIn: '2h' })}` } };
  const results: Record<string, TargetResult> = Object.fromEntries(TARGETS.map((t) => [t, { passed: 0, failed: 0, total: 0, suites: {}, failures: [], answers: {} }]));
  console.log(`audit ${audit.commit} (${audit.source}), targets ${TARGETS.join(', ')}`);
  for (const target of TARGETS) {
    // A fresh audit server per gateway, as the audit runs them: its subgraphs keep state (the
    // mutations suite's writes), which one gateway's run must not leave to the next.
    const server = await startAuditServer(audit.dir);
    try {
      const ids = (await getJson<string[]>(`${server.base}/ids`)).filter((id) => !SUITES || SUITES.includes(id));
      for (const id of ids) {
        if (state.interrupted) break;
        await runSuite(target, id, server.base, auth, results[target]!);
      }
    } finally {
      await stopChild(server.child);
    }
  }

  console.log('');
  for (const [target, result] of Object.entries(results)) {
    console.log(`${target}: ${result.passed}/${result.total} passed`);
    for (const f of result.failures) console.log(`  ✗ ${f.suite}_${f.index}: expected ${JSON.stringify(f.expected)}\n      received ${JSON.stringify(f.received)}`);
  }
  // Our executor's promise: the very answer Apollo Gateway's gives, on every case.
  const ours = results.ours;
  const apollo = results.apollo;
  const sameAsApollo = ours && apollo ? compareAnswers(ours.answers, apollo.answers) : undefined;
  if (sameAsApollo) {
    console.log(`\nours answers ${sameAsApollo.identical}/${sameAsApollo.compared} cases with Apollo Gateway's bytes`);
    for (const id of sameAsApollo.different) console.log(`  ≠ ${id}\n      apollo ${apollo!.answers[id]}\n      ours   ${ours!.answers[id]}`);
  }
  const file = writeResult('audit', {
    audit: { repository: 'graphql-hive/federation-gateway-audit', commit: audit.commit, source: audit.source },
    ...(sameAsApollo ? { sameAsApollo } : {}),
    targets: Object.fromEntries(Object.entries(results).map(([target, { answers: _, ...rest }]) => [target, rest])),
  });
  console.log(`\nwrote ${file}`);

  // Our promise: every case plain Apollo Gateway passes, ours passes too.
  if (ours && apollo) {
    const apolloFailed = new Set(apollo.failures.map((f) => `${f.suite}_${f.index}`));
    const regressions = ours.failures.filter((f) => !apolloFailed.has(`${f.suite}_${f.index}`));
    if (regressions.length > 0) {
      console.error(`ours fails ${regressions.length} case(s) that Apollo Gateway passes: ${regressions.map((f) => `${f.suite}_${f.index}`).join(', ')}`);
      process.exitCode = 1;
    }
  }
}

/** Cases both answered, and those whose JSON text differs. */
function compareAnswers(ours: Record<string, string>, apollo: Record<string, string>): { compared: number; identical: number; different: string[] } {
  const different: string[] = [];
  let compared = 0;
  for (const [id, text] of Object.entries(ours)) {
    if (apollo[id] === undefined) continue;
    compared++;
    if (apollo[id] !== text) different.push(id);
  }
  return { compared, identical: compared - different.length, different };
}

await main();
