import { initTracing, shutdownTracing } from '@tributary/core/tracing';
import { waitFor } from '@tributary/core/testing';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect, startEmbeddedSystem, type TestSystem } from './fixtures/system.ts';

const exporter = new InMemorySpanExporter();

describe('observability', () => {
  let system: TestSystem;
  let documentId: string;
  beforeAll(async () => {
    // Before the services start: the first initTracing of the process wins.
    initTracing({ serviceName: 'tributary-test', exporter });
    system = await startEmbeddedSystem();
    const uploaded = await system.query('mutation { uploadDocument(input: { title: "Traced", content: "Tracing async pipelines is hard. Events cross services and brokers." }) { document { id } job { id } } }');
    documentId = uploaded.data.uploadDocument.document.id;
    await collect(system.ws(), 'subscription($id: ID!) { jobCompleted(jobId: $id) { status document { analysis { summary } } } }', { id: uploaded.data.uploadDocument.job.id });
    await waitFor(async () => (await system.query('{ stats { analyzed } }')).data?.stats.analyzed === 1, 10_000, 'insights');
  }, 60_000);
  afterAll(async () => {
    await system?.stop();
    await shutdownTracing();
  });

  it('follows one upload through every service in one connected trace, to the subscription message', () => {
    const spans = exporter.getFinishedSpans();
    const upload = spans.find((s) => s.name === 'publish document.uploaded' && JSON.stringify(s.attributes).length > 0);
    expect(upload).toBeDefined();
    const traceId = upload!.spanContext().traceId;
    const trace = spans.filter((s) => s.spanContext().traceId === traceId);
    const names = trace.map((s) => s.name);
    for (const expected of [
      'gateway POST /graphql',
      'documents POST /graphql',
      'publish document.uploaded',
      /analysis\.document-uploaded process$/,
      'publish analysis.started',
      'publish analysis.completed',
      /jobs\.job-view process$/,
      /insights\.aggregates process$/,
      'publish job.updated',
      'gateway subscription jobCompleted',
    ]) {
      expect(names.some((n) => (typeof expected === 'string' ? n === expected : expected.test(n))), String(expected)).toBe(true);
    }
    // Connected: one root (the gateway request), every other span's parent is in the trace.
    const ids = new Set(trace.map((s) => s.spanContext().spanId));
    const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;
    const roots = trace.filter((s) => !parentOf(s) || !ids.has(parentOf(s)!));
    expect(roots.map((s) => s.name)).toEqual(['gateway POST /graphql']);
    // The consumer of the upload event hangs under the span that published it.
    const consumer = trace.find((s) => /analysis\.document-uploaded process$/.test(s.name))!;
    expect(parentOf(consumer)).toBe(upload!.spanContext().spanId);
  });

  it('exposes the key counters on /metrics of every service, moved by the upload', async () => {
    const read = async (url: string) => (await fetch(new URL('/metrics', url))).text();
    const value = (text: string, series: RegExp) => {
      const line = text.split('\n').find((l) => series.test(l));
      return line ? Number(line.split(' ').at(-1)) : Number.NaN;
    };
    for (const [name, url] of Object.entries({ gateway: system.gateways[0]!, ...system.subgraphs })) {
      const response = await fetch(new URL('/metrics', url));
      expect(response.status, name).toBe(200);
      expect(response.headers.get('content-type'), name).toMatch(/^text\/plain/);
    }
    const text = await read(system.subgraphs.documents!);
    expect(value(text, /^tributary_events_published_total\{service="documents",type="document\.uploaded"\}/)).toBeGreaterThanOrEqual(1);
    expect(value(text, /^tributary_events_consumed_total\{service="analysis",consumer="document-uploaded",type="document\.uploaded",outcome="applied"\}/)).toBeGreaterThanOrEqual(1);
    expect(value(text, /^tributary_events_consumed_total\{service="jobs",consumer="job-view",type="analysis\.completed",outcome="applied"\}/)).toBeGreaterThanOrEqual(1);
    // One job.updated per batch of the job's events: at least one, at most one per state.
    expect(value(text, /^tributary_events_published_total\{service="jobs",type="job\.updated"\}/)).toBeGreaterThanOrEqual(1);
    expect(value(text, /^tributary_job_duration_seconds_count\{outcome="completed"\}/)).toBe(1);
    expect(value(text, /^tributary_http_request_duration_seconds_count\{service="gateway",route="\/graphql",status="200"\}/)).toBeGreaterThanOrEqual(2);
    expect(value(text, /^tributary_graphql_resolver_duration_seconds_count\{service="documents",type="Mutation",field="uploadDocument"\}/)).toBe(1);
    expect(value(text, /^tributary_outbox_backlog\{service="documents"\}/)).toBe(0);
    expect(value(text, /^tributary_outbox_oldest_unsent_age_seconds\{service="analysis"\}/)).toBe(0);
    for (const name of ['tributary_events_retried_total', 'tributary_events_dead_lettered_total', 'tributary_llm_tokens_total', 'tributary_llm_cache_hits_total', 'tributary_llm_fallbacks_total', 'tributary_llm_budget_refusals_total']) {
      expect(text, name).toContain(`# TYPE ${name} counter`);
    }
    expect(documentId).toBeDefined();
  });
});
