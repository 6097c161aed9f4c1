import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Attributes, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor, SimpleSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { contextFromTraceparent, currentContext, parentFromTraceparent, runInContext, traceparentOf, type ExecutionContext } from './context.ts';
import { errorCode, errorMessage } from './errors.ts';

export { SpanKind };

let tracer: Tracer | undefined;
let provider: BasicTracerProvider | undefined;

/**
 * Record OpenTelemetry spans: exported over OTLP/HTTP to `endpoint` (the
 * `OTEL_EXPORTER_OTLP_ENDPOINT` convention: `<endpoint>/v1/traces`), or to a given exporter
 * (tests). Without either, no spans are recorded, but trace ids still flow through requests,
 * events and logs. Once per process; later calls are ignored.
 */
export function initTracing(options: { serviceName: string; endpoint?: string | undefined; exporter?: SpanExporter }): void {
  if (provider || (!options.endpoint && !options.exporter)) return;
  const processor = options.exporter
    ? new SimpleSpanProcessor(options.exporter)
    : new BatchSpanProcessor(new OTLPTraceExporter({ url: `${options.endpoint!.replace(/\/$/, '')}/v1/traces` }));
  provider = new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': options.serviceName }), spanProcessors: [processor] });
  tracer = provider.getTracer('tributary');
}

/** Flush and stop the exporter (graceful shutdown, tests). */
export async function shutdownTracing(): Promise<void> {
  const p = provider;
  provider = undefined;
  tracer = undefined;
  await p?.shutdown();
}

/** Start spans under this parent: an incoming traceparent, a context, or the current one. */
export type SpanParent = ExecutionContext | string | undefined;

/**
 * Run `fn` in a span that is a child of `parent`: our execution context (trace and span ids
 * that logs and published events carry) takes the new span's id, so everything done inside
 * hangs under it. Without tracing enabled the ids are still made and propagated.
 */
export async function withSpan<T>(name: string, kind: SpanKind, parent: SpanParent, attributes: Attributes, fn: (context: ExecutionContext) => Promise<T>): Promise<T> {
  const base = typeof parent === 'string' ? parentFromTraceparent(parent) : (parent ?? currentContext() ?? contextFromTraceparent(undefined));
  const child: ExecutionContext = { ...contextFromTraceparent(undefined), traceId: base.traceId, sampled: base.sampled, ...(base.tenantId ? { tenantId: base.tenantId } : {}) };
  if (!tracer) return runInContext(child, () => fn(child));
  const span = tracer.startSpan(name, { kind, attributes }, otelParent(base));
  child.spanId = span.spanContext().spanId;
  try {
    const result = await runInContext(child, () => fn(child));
    span.setStatus({ code: SpanStatusCode.OK });
    return result;
  } catch (error) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(error) });
    span.setAttribute('error.code', errorCode(error));
    throw error;
  } finally {
    span.end();
  }
}

/** Our context as the (remote) parent of an OpenTelemetry span. */
function otelParent(parent: ExecutionContext) {
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId: parent.traceId,
    spanId: parent.spanId,
    traceFlags: parent.sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
    isRemote: true,
  });
}

/**
 * A producer span for one event being written (it ends at once: the outbox row is the message),
 * returning the traceparent the event carries, so its consumers' spans hang under it.
 */
export function producerTraceparent(name: string, attributes: Attributes, parent: ExecutionContext = currentContext() ?? contextFromTraceparent(undefined)): string {
  if (!tracer) return traceparentOf(parent);
  const span = tracer.startSpan(name, { kind: SpanKind.PRODUCER, attributes }, otelParent(parent));
  span.end();
  return traceparentOf({ ...parent, spanId: span.spanContext().spanId });
}
