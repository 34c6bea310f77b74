/**
 * diagnostics_channel events: what happens to peers, published only while someone subscribes
 * (`channel.hasSubscribers`: no object is built otherwise, and none of these is on a hot path).
 *
 * ```ts
 * import diagnostics_channel from 'node:diagnostics_channel';
 * diagnostics_channel.subscribe('shmbus:peer-died', (e) => console.log(e));
 * // { primitive: 'session', name: 'render', peer: 'B', pid: 4242 }
 * ```
 * Channels and their messages (every message has `primitive` and `name`):
 * - `shmbus:peer-connected`: a fan-out consumer was handed its ring
 *   ({ primitive: 'fanout', name: socket path, id, pid, uid }).
 * - `shmbus:peer-died`: a peer is gone without closing (a session peer or hub peer whose
 *   liveness lock was found free: { peer, pid }), or a fan-out consumer's connection ended
 *   ({ id, pid, reason: 'disconnect' }).
 * - `shmbus:evicted`: the sender dropped a consumer ({ id, pid, reason, message }).
 * - `shmbus:lapped`: a fan-out consumer fell a whole ring behind and was evicted for it
 *   ({ id, pid, capacity }).
 * - `shmbus:recovered`: resources of a dead process were taken back ({ what, count }): session
 *   and hub slots of a dead peer, blob-store chunks a killed process left half-created,
 *   half-freed or activated without moving the head.
 */
import * as diagnostics_channel from 'node:diagnostics_channel';

export const diagnostics = {
  peerConnected: diagnostics_channel.channel('shmbus:peer-connected'),
  peerDied: diagnostics_channel.channel('shmbus:peer-died'),
  evicted: diagnostics_channel.channel('shmbus:evicted'),
  lapped: diagnostics_channel.channel('shmbus:lapped'),
  recovered: diagnostics_channel.channel('shmbus:recovered'),
} as const;

/** The channel names, for subscribers. */
export const DIAGNOSTICS_CHANNELS = {
  peerConnected: 'shmbus:peer-connected',
  peerDied: 'shmbus:peer-died',
  evicted: 'shmbus:evicted',
  lapped: 'shmbus:lapped',
  recovered: 'shmbus:recovered',
} as const;
