/**
 * shmbus: shared-memory IPC for Node.js.
 *
 * ```ts
 * import { Channel } from 'shmbus';
 * const tx = Channel.create('orders');
 * tx.trySend(new Uint8Array([1, 2, 3]));
 * ```
 */

export { BlobHandle } from './blob/handle.js';
export {
  type BlobAppendOptions,
  type BlobAttachOptions,
  BlobStore,
  type BlobStoreOptions,
  type BlobStoreStats,
  BlobView,
} from './blob/store.js';
export {
  Channel,
  type ChannelCreateOptions,
  type ChannelOpenOptions,
  ChannelReceiver,
  ChannelSender,
  type EndOptions,
  type Priority,
  type ReceiverStats,
  type SenderStats,
  type SendOptions,
  type WaitOptions,
  type WaitStrategy,
} from './channel/channel.js';
export type { Histogram, HistogramSnapshot } from './core/histogram.js';
export { DIAGNOSTICS_CHANNELS } from './diagnostics.js';
export {
  ErrorCode,
  type ErrorCodeValue,
  ShmArgumentError,
  ShmError,
  type ShmErrorOptions,
  ShmFrameError,
  ShmSegmentError,
  ShmStateError,
  ShmSystemError,
  ShmTimeoutError,
} from './errors.js';
export {
  Consumer,
  type ConsumerMetrics,
  type ConsumerOptions,
  type ConsumerState,
  type ReconnectOptions,
  type SubscribeSpec,
} from './fanout/consumer.js';
export type { KindMode } from './fanout/filter.js';
export { type BlobResolver, decodeMessage, FanoutMessage } from './fanout/frame.js';
export {
  type ConsumerInfo,
  type EvictReason,
  type PublishInput,
  Sender,
  type SenderMetrics,
  type SenderOptions,
} from './fanout/sender.js';
export { inspectSegment, type ListOptions, listSegments, type SegmentInfo } from './inspect/inspect.js';
export type { ChannelGeometry } from './layout/channel.js';
export type { DaemonGeometry } from './layout/daemon.js';
export type { SizeClass } from './layout/hub.js';
export { LAYOUT_VERSION } from './layout/segment.js';
export {
  PROMETHEUS_METRICS,
  type PromClientLike,
  type PrometheusOptions,
  registerPrometheusMetrics,
} from './metrics/prometheus.js';
export { Client, type ClientConnectOptions, type RequestOptions } from './rpc/client.js';
export {
  Daemon,
  type DaemonClientInfo,
  type DaemonCreateOptions,
  type DaemonStats,
  type Handler,
  type Reply,
  type ServeHandle,
} from './rpc/daemon.js';
export { type CleanedFile, type CleanReport, cleanStale, type KeptFile } from './segment/clean.js';
export { DEFAULT_DIR, FILE_PREFIX, MAX_NAME_LENGTH } from './segment/names.js';
export type { SegmentOptions } from './segment/segment.js';
export { Hub, type HubCreateOptions, HubMessage, HubPeer, type HubSendOptions } from './session/hub.js';
export {
  type SendOptions as SessionSendOptions,
  Session,
  type SessionCreateOptions,
  SessionMessage,
  type SessionOpenOptions,
} from './session/session.js';
