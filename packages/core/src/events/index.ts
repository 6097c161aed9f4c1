export * from './transport.ts';
export { InMemoryTransport } from './memory.ts';
export { coalesceWrites } from './amqplib-writes.ts';
export { deleteNamespace, RabbitMqTransport, type RabbitMqTransportOptions } from './rabbitmq.ts';
export { publish, type NewEvent } from './publish.ts';
export { OutboxRelay, type OutboxRelayOptions } from './relay.ts';
export { EventConsumer, type BatchEventHandler, type EventConsumerHandler, type EventConsumerOptions, type EventConsumerSettings, type EventHandler, type HandlerContext, type StagedEventHandler, type StagedHandlerContext, type TransactionContext } from './consumer.ts';
export { createTransport } from './create.ts';
