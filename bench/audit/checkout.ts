/**
 * The federation gateway audit (graphql-hive/federation-gateway-audit) as `pnpm bench:audit` runs
 * it: its own code at one commit, unpacked outside this repository (none of it is committed here)
 * with its own locked dependencies.
 *
 * Where it comes from, first that is set:
 *   AUDIT_DIR       an unpacked, installed checkout: used as it is (its commit is "unknown")
 *   AUDIT_GIT_DIR   a git directory holding the audit's history, e.g. a mirror
 *   AUDIT_REPO_URL  cloned (`git clone --bare --depth 1`), default the public GitHub repository
 * AUDIT_REF picks the commit (default HEAD). The unpacked tree is kept under the OS temp dir, one
 * per commit, and reused by later runs.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface AuditCheckout {
  /** The unpacked tree, with node_modules. */
  dir: string;
  /** Full commit id, or "unknown" for AUDIT_DIR. */
  commit: string;
  /** Where the code came from (a path or URL), for the result file. */
  source: string;
}

const DEFAULT_REPO_URL = 'https://github.com/graphql-hive/federation-gateway-audit.git';

const run = (cmd: string, args: string[], cwd?: string) => execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 30 }).trim();

function gitDir(): { gitDir: string; source: string } {
  if (process.env.AUDIT_GIT_DIR) return { gitDir: process.env.AUDIT_GIT_DIR, source: process.env.AUDIT_GIT_DIR };
  const url = process.env.AUDIT_REPO_URL ?? DEFAULT_REPO_URL;
  const dir = join(tmpdir(), 'federation-gateway-audit.git');
  if (!existsSync(dir)) run('git', ['clone', '--bare', '--depth', '1', url, dir]);
  return { gitDir: dir, source: url };
}

export function prepareAudit(): AuditCheckout {
  if (process.env.AUDIT_DIR) return { dir: process.env.AUDIT_DIR, commit: 'unknown', source: process.env.AUDIT_DIR };
  const { gitDir: git, source } = gitDir();
  const commit = run('git', ['--git-dir', git, 'rev-parse', `${process.env.AUDIT_REF ?? 'HEAD'}^{commit}`]);
  const dir = join(tmpdir(), `federation-gateway-audit-${commit.slice(0, 12)}`);
  const ready = join(dir, '.tributary-ready');
  if (existsSync(ready)) return { dir, commit, source };

  console.log(`audit: unpacking ${commit} from ${source} into ${dir}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const tarball = execFileSync('git', ['--git-dir', git, 'archive', commit], { maxBuffer: 1 << 30 });
  execFileSync('tar', ['-x', '-C', dir], { input: tarball });

  // Its runtime dependencies, as its lockfile pins them. Its devDependencies are the gateways it
  // audits (Cosmo's wgc, Hive Gateway, …) and are not needed to serve the subgraphs and tests;
  // installing them here fails besides (a 404 on one of wgc's tarballs).
  console.log('audit: npm ci --omit=dev');
  run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund'], dir);
  // graphql is a peer dependency that the audit satisfies through its devDependencies, so
  // --omit=dev leaves it out: add the very version its lockfile pins.
  const lock = JSON.parse(readFileSync(join(dir, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> };
  const graphqlVersion = lock.packages['node_modules/graphql']?.version;
  if (!graphqlVersion) throw new Error('audit: its package-lock.json pins no graphql');
  const packed = run('npm', ['pack', `graphql@${graphqlVersion}`, '--pack-destination', dir, '--silent'], dir).split('\n').pop()!;
  mkdirSync(join(dir, 'node_modules', 'graphql'), { recursive: true });
  execFileSync('tar', ['-xzf', join(dir, packed), '-C', join(dir, 'node_modules', 'graphql'), '--strip-components=1']);
  writeFileSync(ready, `${commit}\n`);
  return { dir, commit, source };
}
