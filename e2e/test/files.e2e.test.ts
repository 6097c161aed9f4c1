import { createHash, randomUUID } from 'node:crypto';
import { Document as Docx, Packer, Paragraph } from 'docx';
import { PDFDocument, StandardFonts } from 'pdf-lib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { servicesAvailable } from '@tributary/core/testing';
import { collect, startEmbeddedSystem, startProcessSystem, type GraphQLResponse, type TestSystem } from './fixtures/system.ts';

const UPLOAD = `mutation Upload($input: UploadDocumentInput!) {
  uploadDocument(input: $input) {
    document { id title contentType file { name contentType size sha256 downloadUrl } }
    job { id status }
  }
}`;
const JOB_COMPLETED = `subscription Done($jobId: ID!) {
  jobCompleted(jobId: $jobId) { status error { code message } document { content analysis { summary keywords themes { name } } } }
}`;
const SENTENCES = [
  'Offshore wind farms in the North Sea delivered record electricity output this winter.',
  'Turbine manufacturers expect offshore wind capacity to double within five years.',
  'Grid operators are building new transmission lines to carry the offshore wind power inland.',
];

async function pdfOf(lines: string[]): Promise<Uint8Array> {
  const pdf = await PDFDocument.create();
  const font = await pdf.embedFont(StandardFonts.Helvetica);
  const page = pdf.addPage();
  lines.forEach((line, i) => page.drawText(line, { x: 40, y: 780 - i * 16, size: 10, font }));
  return pdf.save();
}

const docxOf = async (paragraphs: string[]) => new Uint8Array(await Packer.toBuffer(new Docx({ sections: [{ children: paragraphs.map((text) => new Paragraph(text)) }] })));
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

interface MultipartOptions {
  token?: string | null;
  /** Default: `apollo-require-preflight: true`. */
  headers?: Record<string, string>;
  variables?: Record<string, unknown>;
  gateway?: number;
}

/** A request per the GraphQL multipart request spec, as `curl -F operations=… -F map=… -F 0=@file` sends it. */
async function uploadFile(system: TestSystem, bytes: Uint8Array, name: string, options: MultipartOptions = {}) {
  const token = options.token === undefined ? await system.token() : options.token;
  const form = new FormData();
  form.append('operations', JSON.stringify({ query: UPLOAD, variables: options.variables ?? { input: { title: name, file: null } } }));
  form.append('map', JSON.stringify({ 0: ['variables.input.file'] }));
  form.append('0', new Blob([new Uint8Array(bytes)], { type: 'application/pdf' }), name);
  const response = await fetch(system.gateways[options.gateway ?? 0]!, {
    method: 'POST',
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(options.headers ?? { 'apollo-require-preflight': 'true' }) },
    body: form,
  });
  return { status: response.status, body: (await response.json()) as GraphQLResponse };
}

async function download(system: TestSystem, path: string, token?: string | null) {
  const bearer = token === undefined ? await system.token() : token;
  const response = await fetch(new URL(path, system.gateways[0]!), { headers: bearer ? { authorization: `Bearer ${bearer}` } : {} });
  return { status: response.status, headers: response.headers, bytes: new Uint8Array(await response.arrayBuffer()) };
}

const code = (body: GraphQLResponse) => body.errors?.[0]?.extensions?.code;
const stored = async (system: TestSystem) => ({ files: await system.count('documents', 'select count(*) as n from files'), documents: await system.count('documents', 'select count(*) as n from documents') });

/** A file's whole round trip: upload, the analysis of its text, the download and its tenancy. */
async function roundTrip(system: TestSystem, bytes: Uint8Array, name: string, contentType: string) {
  const { status, body } = await uploadFile(system, bytes, name);
  expect(body.errors).toBeUndefined();
  expect(status).toBe(200);
  const { document, job } = body.data.uploadDocument;
  expect(job.status).toBe('QUEUED');
  expect(document.contentType).toBe(contentType);
  expect(document.file).toEqual({ name, contentType, size: bytes.length, sha256: sha256(bytes), downloadUrl: expect.stringMatching(/^\/files\/[0-9a-f-]{36}$/) });

  const [message] = await collect(system.ws(), JOB_COMPLETED, { jobId: job.id });
  expect(message!.errors).toBeUndefined();
  const completed = message!.data.jobCompleted;
  expect(completed.status).toBe('COMPLETED');
  for (const sentence of SENTENCES) expect(completed.document.content).toContain(sentence);
  // The offline analyzer's summary is extractive: sentences of the file's text.
  expect(SENTENCES.some((s) => completed.document.analysis.summary.includes(s.slice(0, 40)))).toBe(true);
  expect(completed.document.analysis.keywords.join(' ')).toMatch(/offshore|wind/);

  const got = await download(system, document.file.downloadUrl);
  expect(got.status).toBe(200);
  expect(sha256(got.bytes)).toBe(sha256(bytes));
  expect(got.headers.get('content-type')).toBe(contentType);
  expect(got.headers.get('content-disposition')).toContain(`filename*=UTF-8''${encodeURIComponent(name)}`);
  // Another tenant's file looks exactly like one that does not exist; no token is no file.
  expect((await download(system, document.file.downloadUrl, await system.token({ tenant: `other-${randomUUID()}` }))).status).toBe(404);
  expect((await download(system, `/files/${randomUUID()}`)).status).toBe(404);
  expect((await download(system, document.file.downloadUrl, null)).status).toBe(401);
  // Read back later, the document still names its file.
  const read = await system.query('query($id: ID!) { document(id: $id) { file { sha256 downloadUrl } } }', { id: document.id });
  expect(read.data.document.file).toEqual({ sha256: sha256(bytes), downloadUrl: document.file.downloadUrl });
  return document;
}

const available = await servicesAvailable();

describe('file uploads through the gateway, embedded', () => {
  let system: TestSystem;
  beforeAll(async () => {
    system = await startEmbeddedSystem();
  }, 60_000);
  afterAll(async () => {
    await system?.stop();
  }, 60_000);

  it('analyses a PDF uploaded with multipart, and serves it back to its own tenant only', async () => {
    await roundTrip(system, await pdfOf(SENTENCES), 'offshore-wind.pdf', 'application/pdf');
  });

  it('analyses a DOCX uploaded with multipart', async () => {
    await roundTrip(system, await docxOf(SENTENCES), 'Offshore wind – 2026.docx', 'application/vnd.openxmlformats-officedocument.wordprocessingml.document');
  });

  it('reads HTML and Markdown files by their bytes, whatever their name', async () => {
    const html = await uploadFile(system, new TextEncoder().encode(`<!doctype html><html><body><h1>Wind</h1><p>${SENTENCES[0]}</p></body></html>`), 'page.pdf');
    expect(html.body.errors).toBeUndefined();
    expect(html.body.data.uploadDocument.document.contentType).toBe('text/html');
    const md = await uploadFile(system, new TextEncoder().encode(`# Wind\n\n${SENTENCES[1]}\n`), 'notes.txt');
    expect(md.body.data.uploadDocument.document.contentType).toBe('text/markdown');
  });

  it('refuses a file over DOCUMENT_MAX_FILE_BYTES with 413 PAYLOAD_TOO_LARGE and stores nothing', async () => {
    const before = await stored(system);
    const big = new Uint8Array(30 * 1024 * 1024).fill(0x61);
    const { status, body } = await uploadFile(system, big, 'big.txt');
    expect(status).toBe(413);
    expect(code(body)).toBe('PAYLOAD_TOO_LARGE');
    expect(await stored(system)).toEqual(before);
  }, 60_000);

  it('refuses an executable named .pdf with BAD_USER_INPUT on the file field, storing nothing', async () => {
    const before = await stored(system);
    const elf = new Uint8Array(4096);
    elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x3e, 0, 1, 0, 0, 0]);
    const { status, body } = await uploadFile(system, elf, 'report.pdf');
    expect(status).toBe(400);
    expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'file' });
    expect(await stored(system)).toEqual(before);
  });

  it('refuses a corrupt PDF with UNREADABLE_DOCUMENT, storing nothing', async () => {
    const before = await stored(system);
    const good = await pdfOf(SENTENCES);
    const corrupt = new Uint8Array([...new TextEncoder().encode('%PDF-1.7\n'), ...good.slice(300, 900)]);
    const { body } = await uploadFile(system, corrupt, 'broken.pdf');
    expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'UNREADABLE_DOCUMENT', field: 'file' });
    expect(await stored(system)).toEqual(before);
  });

  it('refuses multipart without a preflight header (CSRF), or without a token, before storing anything', async () => {
    const before = await stored(system);
    const pdf = await pdfOf(SENTENCES);
    const csrf = await uploadFile(system, pdf, 'csrf.pdf', { headers: {} });
    expect(csrf.status).toBe(400);
    expect(code(csrf.body)).toBe('BAD_REQUEST');
    expect(csrf.body.errors?.[0]?.message).toMatch(/apollo-require-preflight/);
    const named = await uploadFile(system, pdf, 'named.pdf', { headers: { 'x-apollo-operation-name': 'Upload' } });
    expect(named.body.errors).toBeUndefined();
    const anonymous = await uploadFile(system, pdf, 'anonymous.pdf', { token: null });
    expect(anonymous.status).toBe(401);
    expect(code(anonymous.body)).toBe('UNAUTHENTICATED');
    expect((await stored(system)).files).toBe(before.files + 1);
  });

  it('takes exactly one of content and file', async () => {
    const pdf = await pdfOf(SENTENCES);
    const both = await uploadFile(system, pdf, 'both.pdf', { variables: { input: { title: 'Both', content: 'Some text.', file: null } } });
    expect(both.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'file' });
    const neither = await system.query(UPLOAD, { input: { title: 'Neither' } });
    expect(neither.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'content' });
    // A reference can only come from a multipart request of the caller's own tenant.
    const forged = await system.query(UPLOAD, { input: { title: 'Forged', file: randomUUID() } });
    expect(forged.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'file' });
    const text = await system.query(UPLOAD, { input: { title: 'Text', content: SENTENCES.join(' ') } });
    expect(text.data.uploadDocument.document.file).toBeNull();
  });

  it('refuses a map naming a file the request does not carry, and a batch', async () => {
    const token = await system.token();
    const form = new FormData();
    form.append('operations', JSON.stringify({ query: UPLOAD, variables: { input: { title: 'x', file: null } } }));
    form.append('map', JSON.stringify({ 0: ['variables.input.file'] }));
    const response = await fetch(system.gateways[0]!, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'apollo-require-preflight': '1' }, body: form });
    expect(response.status).toBe(400);
    const batch = new FormData();
    batch.append('operations', JSON.stringify([{ query: UPLOAD, variables: { input: { title: 'x', file: null } } }]));
    batch.append('map', JSON.stringify({ 0: ['0.variables.input.file'] }));
    batch.append('0', new Blob(['hello']), 'a.txt');
    expect((await fetch(system.gateways[0]!, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'apollo-require-preflight': '1' }, body: batch })).status).toBe(400);
  });
});

describe.skipIf(!available)('file uploads through the gateway, separate processes on PostgreSQL and RabbitMQ', () => {
  let system: TestSystem;
  beforeAll(async () => {
    system = await startProcessSystem();
  }, 120_000);
  afterAll(async () => {
    await system?.stop();
  }, 60_000);

  it('analyses a PDF uploaded with multipart, and serves it back to its own tenant only', async () => {
    await roundTrip(system, await pdfOf(SENTENCES), 'offshore-wind.pdf', 'application/pdf');
    const big = await uploadFile(system, new Uint8Array(30 * 1024 * 1024).fill(0x61), 'big.txt');
    expect(big.status).toBe(413);
    expect(await system.count('documents', 'select count(*) as n from files')).toBe(1);
  }, 60_000);
});
