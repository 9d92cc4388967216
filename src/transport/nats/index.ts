/**
 * idem/nats: the NATS JetStream transport (@nats-io/transport-node and
 * @nats-io/jetstream, optional peer dependencies). `createJetStreamPublisher`
 * publishes with `Nats-Msg-Id` = the key, so the stream drops resends inside
 * its duplicate window; `createJetStreamConsumer` pulls from a durable
 * consumer, runs what arrives together through the engine as one batch, and
 * acks, naks with a delay or terms each message by its verdict.
 */
export { createJetStreamConsumer, JetStreamConsumer, type JetStreamConsumerStats, type JetStreamConsumerEvents, type JetStreamTermination } from './consumer.js'
export { MsgAction, msgActionOf, MSG_ID_HEADER, termTakesReason } from './jetstream-message.js'
export type { JetStreamConsumerOptions, JetStreamHandler } from './options.js'
export { createJetStreamPublisher, JetStreamPublisher, type JetStreamPublisherOptions, type JetStreamPublished } from './publisher.js'
