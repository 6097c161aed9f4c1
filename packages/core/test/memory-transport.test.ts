import { InMemoryTransport } from '@tributary/core/events';
import { describeTransportContract } from '@tributary/core/testing';

describeTransportContract('in-memory', async (namespace) => {
  const transport = new InMemoryTransport(namespace);
  return { transport, cleanup: () => transport.close() };
});
