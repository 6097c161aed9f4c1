import { pino, type Logger, type LoggerOptions } from 'pino';
import { currentContext } from './context.ts';

export type { Logger } from 'pino';

/**
 * A pino JSON logger. Every line written inside a request or message context carries its
 * `traceId` (and `tenantId`), through a mixin, so one id finds a whole pipeline's lines.
 */
export function createLogger(options: { service: string; level?: string; destination?: pino.DestinationStream }): Logger {
  const settings: LoggerOptions = {
    level: options.level ?? 'info',
    base: { service: options.service },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    mixin() {
      const context = currentContext();
      if (!context) return {};
      return context.tenantId ? { traceId: context.traceId, tenantId: context.tenantId } : { traceId: context.traceId };
    },
  };
  return options.destination ? pino(settings, options.destination) : pino(settings);
}
