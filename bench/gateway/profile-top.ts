/**
 * `tsx bench/gateway/profile-top.ts <file.cpuprofile> [n]`: the top self-time items of a V8 CPU
 * profile (from `node --cpu-prof`, e.g. `BENCH_PROFILE=ours pnpm bench:gateway`), by function
 * and by package.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const file = process.argv[2];
if (!file) throw new Error('usage: profile-top.ts <file.cpuprofile> [n]');
const n = Number(process.argv[3] ?? 25);
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const self = new Map<number, number>();
for (let i = 0; i < profile.samples.length; i++) self.set(profile.samples[i]!, (self.get(profile.samples[i]!) ?? 0) + (profile.timeDeltas[i] ?? 0));
const total = [...self.values()].reduce((a, b) => a + b, 0);

const where = (url: string) => {
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(?!.*node_modules\/)(.*)$/.exec(url);
  if (pkg) return { pkg: pkg[1]!, file: pkg[2]! };
  if (url.startsWith('node:')) return { pkg: `node:${url.slice(5).replace(/^internal\//, '').split('/')[0]}`, file: url.slice(5) };
  const repo = /\/work\/main\/(.*)$/.exec(url);
  if (repo) return { pkg: repo[1]!.split('/').slice(0, 2).join('/'), file: repo[1]! };
  return { pkg: url ? url : '(vm)', file: url };
};

const functions = new Map<string, number>();
const packages = new Map<string, number>();
for (const [id, time] of self) {
  const node = byId.get(id)!;
  const { functionName, url, lineNumber } = node.callFrame;
  const { pkg, file: path } = where(url);
  const name = url ? `${functionName || '(anonymous)'}  ${path}:${lineNumber + 1}` : functionName || '(anonymous)';
  functions.set(name, (functions.get(name) ?? 0) + time);
  const group = url ? pkg : `(${functionName})`;
  packages.set(group, (packages.get(group) ?? 0) + time);
}

const print = (title: string, entries: Map<string, number>) => {
  console.log(`\n${title}`);
  for (const [name, time] of [...entries].sort((a, b) => b[1] - a[1]).slice(0, n)) console.log(`${((time / total) * 100).toFixed(1).padStart(5)}%  ${(time / 1000).toFixed(0).padStart(7)} ms  ${name}`);
};
console.log(`${file}: ${(total / 1e6).toFixed(1)} s sampled`);
print('self time by function', functions);
print('self time by package', packages);
