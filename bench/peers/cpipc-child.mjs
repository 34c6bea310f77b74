// Child side of rtt.cpipc.* (bench/cases/peers.mjs): echoes every message over the
// child_process IPC channel (forked with serialization 'advanced', so Buffers travel as bytes).
process.on('message', (message) => process.send(message));
process.on('disconnect', () => process.exit(0)); // the parent died: do not linger
