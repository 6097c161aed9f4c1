import type { Violation } from './report.ts';

/**
 * Drift: every generated file must equal what the code generates now, and no generated file may
 * be left over (a removed subgraph). Both maps are keyed by repo-relative path; `committed` holds
 * what is on disk, `undefined` for a missing file.
 */
export function checkDrift(
  generated: Readonly<Record<string, string>>,
  committed: Readonly<Record<string, string | undefined>>,
): Violation[] {
  const violations: Violation[] = [];
  const fix = 'pnpm schema:compose';
  for (const [file, text] of Object.entries(generated)) {
    const onDisk = committed[file];
    if (onDisk === undefined) violations.push({ code: 'SCHEMA_DRIFT', file, message: 'is missing', fix });
    else if (onDisk !== text)
      violations.push({ code: 'SCHEMA_DRIFT', file, message: 'differs from what the code generates', diff: unifiedDiff(onDisk, text, file), fix });
  }
  for (const [file, text] of Object.entries(committed)) {
    if (text !== undefined && !(file in generated))
      violations.push({ code: 'SCHEMA_DRIFT', file, message: 'is no longer generated (a removed subgraph?)', fix });
  }
  return violations;
}

/**
 * A unified diff of two texts by lines (longest common subsequence, 2 lines of context).
 * Generated schema files are a few hundred lines, so the quadratic table is fine.
 * @param maxLines cut the output after this many lines, default 60
 */
export function unifiedDiff(before: string, after: string, name: string, maxLines = 60): string {
  const a = before.split('\n');
  const b = after.split('\n');
  // lcs[i][j] = length of the LCS of a[i..] and b[j..]
  const lcs = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--)
    for (let j = b.length - 1; j >= 0; j--)
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);

  type Line = { op: ' ' | '-' | '+'; text: string; ai: number; bi: number };
  const lines: Line[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) lines.push({ op: ' ', text: a[i]!, ai: i++, bi: j++ });
    else if (j < b.length && (i === a.length || lcs[i]![j + 1]! >= lcs[i + 1]![j]!)) lines.push({ op: '+', text: b[j]!, ai: i, bi: j++ });
    else lines.push({ op: '-', text: a[i]!, ai: i++, bi: j });
  }

  const context = 2;
  const out = [`--- ${name} (committed)`, `+++ ${name} (generated)`];
  for (let k = 0; k < lines.length; k++) {
    if (lines[k]!.op === ' ') continue;
    const start = Math.max(0, k - context);
    let end = k;
    // extend the hunk while the next change is within 2 * context unchanged lines
    for (let m = k; m < lines.length && m <= end + 2 * context; m++) if (lines[m]!.op !== ' ') end = m;
    end = Math.min(lines.length - 1, end + context);
    const hunk = lines.slice(start, end + 1);
    const first = hunk[0]!;
    const oldCount = hunk.filter((l) => l.op !== '+').length;
    const newCount = hunk.filter((l) => l.op !== '-').length;
    out.push(`@@ -${first.ai + 1},${oldCount} +${first.bi + 1},${newCount} @@`, ...hunk.map((l) => `${l.op}${l.text}`));
    k = end;
  }
  if (out.length > maxLines) return [...out.slice(0, maxLines), `… ${out.length - maxLines} more lines`].join('\n');
  return out.join('\n');
}
