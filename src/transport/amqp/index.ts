/**
 * idem/amqp: the RabbitMQ transport (AMQP 0-9-1, amqplib; an optional peer
 * dependency). `createAmqpConsumer` consumes a queue with manual acks, runs
 * the deliveries that arrive together through the engine as one batch and
 * settles each by its verdict; `createAmqpPublisher` publishes with the key
 * as messageId and resolves on the broker's confirm, resending what was not
 * confirmed.
 */
export { createAmqpConsumer, AmqpConsumer, type AmqpConsumerStats, type AmqpConsumerEvents, type AmqpDeadLetter } from './consumer.js'
export { DeliveryAction, deliveryActionOf, delayQueueOf, Header } from './delivery.js'
export { partitionQueueOf } from './partition-queues.js'
export type { AmqpConsumerOptions, AmqpHandler } from './options.js'
export type { AmqpConnection } from './channel-link.js'
export { createAmqpPublisher, AmqpPublisher, type AmqpPublisherOptions, type AmqpPublishOptions } from './publisher.js'
