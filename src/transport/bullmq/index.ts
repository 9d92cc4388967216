/**
 * idem/bullmq: the BullMQ transport. `idemProcessor` wraps a processor you run in
 * your own Worker; `createConsumer` is a ready Worker with idem's defaults.
 * bullmq is an optional peer dependency: only this entry imports it.
 */
export { idemProcessor, jobActionOf, type IdemProcessor, type ProcessorStats } from './processor.js'
export { createConsumer, Consumer, type ConsumerStats, type ConsumerEvents } from './consumer.js'
export { createProducer, Producer, type ProducerOptions, type ProducedJob } from './producer.js'
export { partitionQueueOf } from './partitioned-queue.js'
export { JobAction, type ConsumerOptions, type IdemProcessorOptions, type JobHandler, type JobSettlement, type UnconfirmedCommit } from './options.js'
