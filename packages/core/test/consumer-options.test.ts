import { describe, expect, it } from 'vitest';
import type { BatchEventHandler, EventConsumerOptions, EventConsumerSettings, EventHandler, StagedEventHandler } from '../src/events/consumer.ts';

/** What `pnpm typecheck` checks: each `@ts-expect-error` below fails the typecheck if the line compiles. */
describe('EventConsumerOptions', () => {
  it('takes exactly one of handler, batchHandler and stagedHandler, checked by the compiler', () => {
    const settings = {} as EventConsumerSettings;
    const handler: EventHandler = async () => {};
    const batchHandler: BatchEventHandler = async () => {};
    const stagedHandler: StagedEventHandler = async () => {};
    const each: EventConsumerOptions[] = [
      { ...settings, handler },
      { ...settings, batchHandler },
      { ...settings, stagedHandler },
    ];
    // @ts-expect-error no handler
    const none: EventConsumerOptions = { ...settings };
    // @ts-expect-error two kinds of handler
    const two: EventConsumerOptions = { ...settings, handler, batchHandler };
    // @ts-expect-error two kinds of handler
    const staged: EventConsumerOptions = { ...settings, handler, stagedHandler };
    expect([...each, none, two, staged]).toHaveLength(6);
  });
});
