/**
 * idem/redis-streams: the Redis Streams transport. `createStreamConsumer` reads
 * a stream in a consumer group, runs each batch through the engine, acks what
 * is durable, dead-letters what cannot succeed and takes over the pending
 * entries of dead consumers; in owned mode it reads the partition streams
 * its engine owns, which `createStreamProducer` fills. Uses ioredis, which
 * idem already depends on.
 */
export { createStreamConsumer, StreamConsumer, type StreamConsumerStats, type StreamConsumerEvents } from './consumer.js'
export { EntryAction, entryActionOf } from './entry-action.js'
export type { StreamEntry, DeadLetter } from './entry.js'
export type { StreamConsumerOptions, StreamHandler } from './options.js'
export { createStreamProducer, StreamProducer, type StreamProducerOptions, type ProducedEntry } from './producer.js'
export { partitionStreamOf } from './partitioned-stream.js'
