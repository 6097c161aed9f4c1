/**
 * `pnpm dev`'s demo page (../server.ts serves it on the gateway's `/`): upload a document at a
 * priority, follow its job live over graphql-ws (`jobUpdated`) or cancel it (`cancelJob`), show
 * the analysis and the tenant's themes. Plain DOM, no framework; the token is kept in the tab as
 * GraphiQL keeps it.
 */
import './demo.css';
import { createClient, type Client } from 'graphql-ws';
import { initialToken, normalizeToken, readConfig, socketError, storeToken, webSocketUrl } from '@tributary/gateway/ui/client';

interface GraphQLError {
  message: string;
  extensions?: { code?: string; field?: string; retryAfterSeconds?: number };
}
interface Theme {
  name: string;
  score: number;
}
interface Analysis {
  summary: string;
  themes: Theme[];
  sentiment: { label: string; score: number };
}
type JobStatus = 'QUEUED' | 'RUNNING' | 'COMPLETED' | 'FAILED' | 'CANCELLED';
interface JobUpdate {
  id: string;
  status: JobStatus;
  priority?: string;
  attempts: number;
  error: { code: string; message: string } | null;
  document: { title: string; analysis: Analysis | null } | null;
}
interface ThemeStat {
  name: string;
  documentCount: number;
  averageScore: number;
}

const UPLOAD = `mutation DemoUpload($input: UploadDocumentInput!) {
  uploadDocument(input: $input) { document { id title file { name downloadUrl } } job { id status priority } }
}`;
const PROGRESS = `subscription DemoProgress($jobId: ID!) {
  jobUpdated(jobId: $jobId) {
    id status priority attempts error { code message }
    document { title analysis { summary themes { name score } sentiment { label score } } }
  }
}`;
/** JOB_ALREADY_FINISHED for a job that ended COMPLETED or FAILED; a CANCELLED one comes back unchanged. */
const CANCEL = `mutation DemoCancel($id: ID!) { cancelJob(id: $id) { id status } }`;
const THEMES = `query DemoThemes { themes(first: 10) { name documentCount averageScore } }`;
/** The chart follows the tenant's aggregates: a message each time they change, with the themes in it. */
const STATS_UPDATED = `subscription DemoStats { statsUpdated { themes(first: 10) { name documentCount averageScore } } }`;

class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }

  static from(error: GraphQLError): ApiError {
    const { code = 'ERROR', field, retryAfterSeconds } = error.extensions ?? {};
    const detail = [field ? `field: ${field}` : '', retryAfterSeconds !== undefined ? `retry in ${retryAfterSeconds} s` : ''].filter(Boolean).join(', ');
    return new ApiError(code, detail ? `${error.message} (${detail})` : error.message);
  }
}

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing from the page`);
  return found as T;
}

const config = readConfig();
const ui = {
  token: element<HTMLInputElement>('token'),
  tokenHint: element('token-hint'),
  form: element<HTMLFormElement>('upload'),
  submit: element<HTMLButtonElement>('upload-submit'),
  title: element<HTMLInputElement>('title'),
  content: element<HTMLTextAreaElement>('content'),
  contentType: element<HTMLSelectElement>('content-type'),
  priority: element<HTMLSelectElement>('priority'),
  file: element<HTMLInputElement>('file'),
  original: element('original'),
  originalLink: element<HTMLAnchorElement>('original-link'),
  error: element('error'),
  steps: element('steps'),
  status: element('job-status'),
  cancel: element<HTMLButtonElement>('cancel-job'),
  timeline: element<HTMLOListElement>('timeline'),
  analysis: element('analysis'),
  summary: element('summary'),
  docThemes: element<HTMLUListElement>('doc-themes'),
  sentiment: element('sentiment'),
  chart: element<HTMLOListElement>('chart'),
  chartEmpty: element('chart-empty'),
};

let token = initialToken(config);
ui.token.value = token;
ui.tokenHint.textContent = token
  ? config.devToken && token === config.devToken
    ? 'Pre-filled with the development token that pnpm dev printed (tenant "dev").'
    : 'The token you entered, kept for this browser tab.'
  : 'Paste a JWT: the gateway verifies it and scopes everything to its tenant.';

function showError(error: unknown): void {
  const { code, message } = error instanceof ApiError ? error : socketError(error);
  ui.error.replaceChildren(Object.assign(document.createElement('strong'), { textContent: code }), document.createTextNode(` ${message}`));
  ui.error.hidden = false;
}

function clearError(): void {
  ui.error.hidden = true;
  ui.error.replaceChildren();
}

/**
 * A JSON operation, or with `file` a multipart one (the GraphQL multipart request spec): the
 * file goes at `variables.input.file`. The preflight header is what the gateway's CSRF
 * check asks of every multipart request.
 */
async function graphql<T>(query: string, variables: Record<string, unknown> = {}, file?: File): Promise<T> {
  const auth: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  let init: RequestInit;
  if (file) {
    const form = new FormData();
    form.append('operations', JSON.stringify({ query, variables }));
    form.append('map', JSON.stringify({ 0: ['variables.input.file'] }));
    form.append('0', file, file.name);
    init = { method: 'POST', headers: { accept: 'application/json', 'apollo-require-preflight': 'true', ...auth }, body: form };
  } else {
    init = { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', ...auth }, body: JSON.stringify({ query, variables }) };
  }
  const response = await fetch(config.graphqlPath, init);
  let body: { data?: T | null; errors?: GraphQLError[] };
  try {
    body = (await response.json()) as typeof body;
  } catch {
    throw new ApiError(`HTTP_${response.status}`, `the gateway answered ${response.status} ${response.statusText} without a GraphQL response`);
  }
  const [first] = body.errors ?? [];
  if (first) throw ApiError.from(first);
  if (!body.data) throw new ApiError('NO_DATA', 'the gateway answered without data');
  return body.data;
}

let socket: { token: string; client: Client } | undefined;
function socketClient(): Client {
  if (!socket || socket.token !== token) {
    void socket?.client.dispose();
    const current = token;
    socket = {
      token: current,
      client: createClient({
        url: webSocketUrl(config.graphqlPath),
        connectionParams: () => ({ authorization: `Bearer ${current}` }),
        retryAttempts: 2,
        // 4403: the token was refused; trying again cannot help.
        shouldRetry: (event) => !(event instanceof CloseEvent && event.code === 4403),
      }),
    };
  }
  return socket.client;
}

const STEPS = ['QUEUED', 'RUNNING', 'COMPLETED'] as const;

/** The job the page shows: the one the cancel button acts on. */
let shown: { id: string; status: JobStatus; priority?: string | undefined } | undefined;

function showStatus(job: { id: string; status: JobStatus; priority?: string | undefined; attempts?: number }): void {
  const reached = STEPS.indexOf(job.status as (typeof STEPS)[number]);
  for (const step of ui.steps.querySelectorAll<HTMLElement>('[data-step]')) {
    const index = STEPS.indexOf(step.dataset.step as (typeof STEPS)[number]);
    step.classList.toggle('done', index < reached || job.status === 'COMPLETED');
    step.classList.toggle('current', index === reached && job.status !== 'COMPLETED');
  }
  ui.steps.classList.toggle('failed', job.status === 'FAILED');
  ui.steps.classList.toggle('cancelled', job.status === 'CANCELLED');
  const again = shown?.id === job.id && shown.status === job.status;
  const priority = job.priority ?? (shown?.id === job.id ? shown.priority : undefined);
  // A cancel in flight keeps its button disabled until its answer; a new job starts afresh.
  if (shown?.id !== job.id) ui.cancel.disabled = false;
  shown = { id: job.id, status: job.status, priority };
  const attempts = job.attempts ? ` (attempt ${job.attempts})` : '';
  ui.status.dataset.status = job.status;
  ui.status.replaceChildren(
    `Job ${job.id.slice(0, 8)}… `,
    Object.assign(document.createElement('strong'), { textContent: job.status }),
    job.status === 'COMPLETED' || job.status === 'CANCELLED' ? '' : attempts,
    priority && priority !== 'NORMAL' ? `, priority ${priority}` : '',
  );
  // A job can be cancelled until it ends.
  ui.cancel.hidden = job.status !== 'QUEUED' && job.status !== 'RUNNING';
  // The cancel's answer and the subscription both report CANCELLED: one line for it.
  if (again) return;
  const item = document.createElement('li');
  item.append(Object.assign(document.createElement('span'), { textContent: job.status }), ` ${new Date().toLocaleTimeString()}`);
  ui.timeline.append(item);
}

function bar(fraction: number, label: string): HTMLElement {
  const track = document.createElement('span');
  track.className = 'track';
  track.setAttribute('aria-hidden', 'true');
  const fill = document.createElement('span');
  fill.className = 'fill';
  fill.style.width = `${Math.max(2, Math.min(100, fraction * 100)).toFixed(1)}%`;
  track.append(fill);
  track.title = label;
  return track;
}

function showAnalysis(analysis: Analysis): void {
  ui.summary.textContent = analysis.summary;
  ui.docThemes.replaceChildren(
    ...analysis.themes.map((theme) => {
      const item = document.createElement('li');
      item.append(Object.assign(document.createElement('span'), { className: 'name', textContent: theme.name }), bar(theme.score, `score ${theme.score}`), Object.assign(document.createElement('span'), { className: 'value', textContent: theme.score.toFixed(2) }));
      return item;
    }),
  );
  const { label, score } = analysis.sentiment;
  ui.sentiment.replaceChildren(Object.assign(document.createElement('span'), { className: `sentiment ${label.toLowerCase()}`, textContent: label }), ` score ${score.toFixed(2)} (−1 … 1)`);
  ui.analysis.hidden = false;
}

async function refreshThemes(): Promise<void> {
  if (!token) return;
  const { themes } = await graphql<{ themes: ThemeStat[] }>(THEMES);
  drawThemes(themes);
  watchStats();
}

let stopWatchingStats: (() => void) | undefined;
let watchedWith: string | undefined;
/** One statsUpdated stream per token: the chart redraws from its messages. */
function watchStats(): void {
  if (watchedWith === token) return;
  stopWatchingStats?.();
  watchedWith = token;
  stopWatchingStats = socketClient().subscribe<{ statsUpdated: { themes: ThemeStat[] } }>(
    { query: STATS_UPDATED },
    {
      next: ({ data }) => {
        if (data?.statsUpdated) drawThemes(data.statsUpdated.themes);
      },
      error: (error) => {
        watchedWith = undefined;
        showError(error);
      },
      complete: () => {},
    },
  );
}

function drawThemes(themes: ThemeStat[]): void {
  const most = Math.max(1, ...themes.map((t) => t.documentCount));
  ui.chart.replaceChildren(
    ...themes.map((theme) => {
      const item = document.createElement('li');
      const count = `${theme.documentCount} document${theme.documentCount === 1 ? '' : 's'}, average score ${theme.averageScore.toFixed(2)}`;
      item.setAttribute('aria-label', `${theme.name}: ${count}`);
      item.append(Object.assign(document.createElement('span'), { className: 'name', textContent: theme.name }), bar(theme.documentCount / most, count), Object.assign(document.createElement('span'), { className: 'value', textContent: String(theme.documentCount) }));
      return item;
    }),
  );
  ui.chartEmpty.hidden = themes.length > 0;
}

let stopFollowing: (() => void) | undefined;
function follow(jobId: string): void {
  stopFollowing?.();
  stopFollowing = socketClient().subscribe<{ jobUpdated: JobUpdate }>(
    { query: PROGRESS, variables: { jobId } },
    {
      next: ({ data, errors }) => {
        const [first] = errors ?? [];
        if (first) return showError(ApiError.from(first as GraphQLError));
        const job = data?.jobUpdated;
        if (!job) return;
        showStatus(job);
        if (job.status === 'FAILED') showError(new ApiError(job.error?.code ?? 'FAILED', job.error?.message ?? 'the analysis failed'));
        if (job.status === 'COMPLETED' && job.document?.analysis) showAnalysis(job.document.analysis);
      },
      error: showError,
      complete: () => {},
    },
  );
}

ui.token.addEventListener('input', () => {
  token = normalizeToken(ui.token.value);
  storeToken(token);
  ui.tokenHint.textContent = token ? 'The token you entered, kept for this browser tab.' : 'Paste a JWT to upload.';
});
ui.token.addEventListener('change', () => {
  ui.token.value = token;
  clearError();
  refreshThemes().catch(showError);
});

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  clearError();
  if (!token) return showError(new ApiError('UNAUTHENTICATED', 'enter a token first'));
  ui.submit.disabled = true;
  ui.analysis.hidden = true;
  ui.timeline.replaceChildren();
  ui.original.hidden = true;
  ui.cancel.hidden = true;
  shown = undefined;
  const file = ui.file.files?.[0];
  const priority = ui.priority.value;
  const input = file ? { title: ui.title.value, file: null, priority } : { title: ui.title.value, content: ui.content.value, contentType: ui.contentType.value, priority };
  graphql<{ uploadDocument: { document: { file: { name: string; downloadUrl: string } | null }; job: { id: string; status: JobStatus; priority: string } } }>(UPLOAD, { input }, file)
    .then(({ uploadDocument: { document, job } }) => {
      if (document.file) {
        ui.originalLink.dataset.url = document.file.downloadUrl;
        ui.originalLink.dataset.name = document.file.name;
        ui.originalLink.textContent = `Download the original (${document.file.name})`;
        ui.original.hidden = false;
      }
      showStatus(job);
      follow(job.id);
    })
    .catch(showError)
    .finally(() => {
      ui.submit.disabled = false;
    });
});

ui.cancel.addEventListener('click', () => {
  const job = shown;
  if (!job) return;
  clearError();
  ui.cancel.disabled = true;
  graphql<{ cancelJob: { id: string; status: JobStatus } }>(CANCEL, { id: job.id })
    .then(({ cancelJob }) => {
      // The page may have moved on to another upload meanwhile.
      if (shown?.id === cancelJob.id) showStatus(cancelJob);
    })
    .catch((error: unknown) => {
      ui.cancel.disabled = false;
      showError(error);
    });
});

// A chosen file replaces the content: the textarea is then not required.
ui.file.addEventListener('change', () => {
  const chosen = Boolean(ui.file.files?.length);
  ui.content.required = !chosen;
  ui.content.disabled = chosen;
  ui.contentType.disabled = chosen;
  if (chosen && ui.file.files?.[0]) ui.title.value = ui.file.files[0].name.replace(/\.[^.]+$/, '') || ui.title.value;
});

// The download needs the bearer token, which a plain link cannot carry.
ui.originalLink.addEventListener('click', (event) => {
  event.preventDefault();
  const url = ui.originalLink.dataset.url;
  if (!url) return;
  fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} })
    .then(async (response) => {
      if (!response.ok) throw new ApiError(`HTTP_${response.status}`, 'the file could not be downloaded');
      const href = URL.createObjectURL(await response.blob());
      const a = Object.assign(document.createElement('a'), { href, download: ui.originalLink.dataset.name ?? 'document' });
      a.click();
      setTimeout(() => URL.revokeObjectURL(href), 10_000);
    })
    .catch(showError);
});

refreshThemes().catch(showError);
