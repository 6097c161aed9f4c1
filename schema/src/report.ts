/**
 * The shapes every step of `pnpm schema:check` reports in, the error codes, and the terminal
 * rendering. `--json` prints a {@link CheckReport} as is.
 */

/** What a violation is; stable, so tools reading `--json` can match on it. */
export type ViolationCode =
  | 'COMPOSITION_ERROR'
  | 'SCHEMA_DRIFT'
  | 'BREAKING_CHANGE'
  | 'INVALID_OPERATION'
  | 'EVENT_INCOMPATIBLE'
  | 'EVENT_VERSION_REMOVED'
  | 'EVENT_SNAPSHOT_MISSING'
  | 'EVENT_SAMPLE_MISSING'
  | 'EVENT_SAMPLE_INVALID'
  | 'INVALID_EVENT_BINDING';

/** One thing that fails the check. Only the location fields that apply are present. */
export interface Violation {
  code: ViolationCode;
  message: string;
  /** The finer code of the tool that found it: Apollo's composition error code, the inspector's change type, the event rule, the binding problem (`UNKNOWN_EVENT`, `PATH_NOT_IN_EVENT`, …). */
  detail?: string;
  subgraphs?: string[];
  /** Schema coordinate (`Type.field`, or the type of a `@changedBy`) or JSON path (`$.error.code`). */
  coordinate?: string;
  file?: string;
  operation?: string;
  /** Event `dataschema`, e.g. `job.updated/v1`. */
  event?: string;
  diff?: string;
  /** The command that fixes it, when one does. */
  fix?: string;
}

/** Why the check could not run (exit 2), as opposed to what it found (exit 1). */
export type SchemaCheckErrorCode = 'APPROVED_CHANGES_INVALID' | 'GIT_FAILED' | 'BASE_INVALID' | 'FILE_UNREADABLE';

/** Thrown inside a step that cannot run; the step is reported with status `error`. Match on `code`. */
export class SchemaCheckError extends Error {
  override readonly name = 'SchemaCheckError';
  constructor(
    readonly code: SchemaCheckErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The steps, in the order they run. */
export type StepName = 'composition' | 'drift' | 'breaking' | 'operations' | 'events' | 'bindings';

/** The outcome of one step, with its own heading in the terminal. */
export interface StepResult {
  step: StepName;
  title: string;
  /** `error`: the step could not run; `skipped`: nothing to check (no base, composition failed). */
  status: 'passed' | 'failed' | 'skipped' | 'error';
  summary: string;
  violations: Violation[];
  /** Informational lines: dangerous changes, approvals used, why a step was skipped. */
  notes: string[];
  error?: { code: string; message: string };
}

/** What `pnpm schema:check --json` prints. */
export interface CheckReport {
  /** 0 clean, 1 violations, 2 could not run. */
  exitCode: 0 | 1 | 2;
  steps: StepResult[];
}

/** Exit code of a set of steps: any step that could not run wins over violations. */
export function exitCodeOf(steps: readonly StepResult[]): CheckReport['exitCode'] {
  if (steps.some((s) => s.status === 'error')) return 2;
  return steps.some((s) => s.status === 'failed') ? 1 : 0;
}

const mark: Record<StepResult['status'], string> = { passed: '✓', failed: '✗', skipped: '-', error: '!' };

/** The terminal rendering: a heading per step, its violations with their location, then a verdict. */
export function formatReport(report: CheckReport): string {
  const lines: string[] = [];
  report.steps.forEach((step, i) => {
    lines.push(`${i + 1}. ${step.title}`, `   ${mark[step.status]} ${step.summary}`);
    if (step.error) lines.push(`   ${step.error.code}: ${step.error.message}`);
    for (const v of step.violations) {
      lines.push(`   ✗ ${where(v)}${v.message}`);
      if (v.diff) lines.push(...v.diff.split('\n').map((l) => `       ${l}`));
      if (v.fix) lines.push(`     fix: ${v.fix}`);
    }
    for (const note of step.notes) lines.push(`   · ${note}`);
    lines.push('');
  });
  const count = report.steps.reduce((n, s) => n + s.violations.length, 0);
  lines.push(
    report.exitCode === 0
      ? 'schema check passed'
      : report.exitCode === 1
        ? `schema check failed: ${count} violation${count === 1 ? '' : 's'}`
        : 'schema check could not run (see the steps marked !)',
  );
  return lines.join('\n');
}

function where(v: Violation): string {
  const parts = [
    v.detail,
    v.subgraphs?.length ? `subgraph ${v.subgraphs.join(', ')}` : undefined,
    v.file,
    v.operation ? `operation ${v.operation}` : undefined,
    v.event,
    v.coordinate,
  ].filter((p) => p !== undefined);
  return parts.length ? `[${parts.join(' · ')}] ` : '';
}
