/**
 * The suites of `idem bench`, by name, apart from their code: the CLI's usage
 * lists them without loading a suite (the peers they measure are dev
 * dependencies). run.ts maps every name to its suite; the compiler checks both.
 */
export const SUITE_NAMES = ['bloom', 'lru', 'engine', 'redis', 'streams', 'sql', 'bullmq', 'owned', 'versions', 'http', 'amqp', 'nats', 'platform'] as const
export type SuiteName = (typeof SUITE_NAMES)[number]

export const benchUsage = `idem bench [--json] [--quick] [--only ${SUITE_NAMES.join(',')}]`
