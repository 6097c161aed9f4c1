import { z } from 'zod';

/** W3C trace-context `traceparent` header: version-traceid-parentid-flags. */
export const traceparentSchema = z
  .string()
  .regex(/^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/, 'must be a W3C traceparent');

/** Event type names: dot-separated lowercase words, e.g. `document.uploaded`. */
export const eventTypeSchema = z.string().regex(/^[a-z][a-z0-9]*(\.[a-z][a-z0-9]*)+$/, 'must look like `aggregate.verb`');

/**
 * The CloudEvents 1.0 shaped envelope every Tributary event travels in.
 * `data` is validated separately, by the contract named in `dataschema`.
 */
export const envelopeSchema = z.object({
  id: z.uuid(),
  type: eventTypeSchema,
  source: z.string().min(1),
  specversion: z.literal('1.0'),
  time: z.iso.datetime({ offset: true }),
  dataschema: z.string().regex(/^[a-z][a-z0-9.]*\/v[1-9][0-9]*$/, 'must be `<type>/v<n>`'),
  subject: z.string().min(1),
  traceparent: traceparentSchema.optional(),
  tenantid: z.string().min(1).max(128),
  data: z.unknown(),
});

export type Envelope<TData = unknown> = Omit<z.infer<typeof envelopeSchema>, 'data'> & { data: TData };
