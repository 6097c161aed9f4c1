import { headers as natsHeaders, type MsgHdrs } from '@nats-io/transport-node';

/**
 * Our headers as NATS headers. Values are strings on the wire (`attemptOf` reads numbers from
 * strings); CR/LF would end the header block, so a multi-line error message is put on one line.
 */
export function toNatsHeaders(values: Readonly<Record<string, unknown>> | undefined): MsgHdrs {
  const h = natsHeaders();
  for (const [key, value] of Object.entries(values ?? {})) {
    if (value === undefined || value === null) continue;
    const text = typeof value === 'string' ? value : typeof value === 'number' || typeof value === 'boolean' ? String(value) : JSON.stringify(value);
    h.set(key, text.replace(/[\r\n]+/g, ' '));
  }
  return h;
}

/** NATS headers as a plain record (first value of each), without the server's own (`Nats-…`) and those named in `drop`. */
export function fromNatsHeaders(h: MsgHdrs | undefined, drop: readonly string[] = []): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  for (const key of h.keys()) {
    if (key.startsWith('Nats-') || drop.includes(key)) continue;
    out[key] = h.get(key);
  }
  return out;
}

/** A message's payload as a Buffer without copying it. */
export const payload = (data: Uint8Array) => Buffer.from(data.buffer, data.byteOffset, data.byteLength);
