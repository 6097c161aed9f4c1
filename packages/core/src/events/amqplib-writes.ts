import type { ChannelModel } from 'amqplib';

/**
 * The one place that reaches into amqplib's internals (issue 27): its `Connection` keeps the socket
 * as `connection.stream` and the frame multiplexer as `connection.muxer`, whose `_readIncoming()`
 * drains the channels' frames onto the socket. amqplib has no public option for this (checked
 * against 2.3.x); toa-io/comq#290 describes the same one-write-per-frame loop in amqplib's `Mux`
 * and where a cork belongs upstream. When amqplib corks (or batches) there itself, delete this file,
 * its call in rabbitmq.ts and test/amqplib-writes.int.test.ts.
 * Guarded by test/amqplib-writes.int.test.ts, which fails when amqplib's shape changes.
 */
interface AmqplibInternals {
  stream?: { cork?: () => void; uncork?: () => void };
  muxer?: { _readIncoming?: () => void; __corked?: boolean };
}

/** amqplib's socket and multiplexer behind a connection, or undefined if its internals differ. */
export function amqplibInternals(model: ChannelModel): AmqplibInternals | undefined {
  return (model as unknown as { connection?: AmqplibInternals }).connection;
}

/**
 * amqplib's multiplexer writes each frame group (one per published message, ack, …) to the
 * socket on its own: with `noDelay` that is one send syscall per message, a large share of a
 * publisher's CPU. Corking the socket while the multiplexer drains its channels turns a batch
 * of publishes into one `writev` (the socket still signals backpressure past its high water
 * mark, and the multiplexer waits for `drain` as before). Skipped if amqplib's internals differ
 * (the guard test says so first). Idempotent per connection.
 */
export function coalesceWrites(model: ChannelModel): void {
  const connection = amqplibInternals(model);
  const muxer = connection?.muxer;
  const stream = connection?.stream;
  if (!muxer || muxer.__corked || typeof muxer._readIncoming !== 'function' || typeof stream?.cork !== 'function' || typeof stream.uncork !== 'function') return;
  const readIncoming = muxer._readIncoming.bind(muxer);
  muxer._readIncoming = () => {
    stream.cork!();
    try {
      readIncoming();
    } finally {
      stream.uncork!();
    }
  };
  muxer.__corked = true;
}
