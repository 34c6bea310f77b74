// Worker side of rtt.worker.* (bench/cases/peers.mjs): echoes every message on parentPort
// (a structured-clone copy each way; the in-process reference).
import { parentPort } from 'node:worker_threads';

parentPort.on('message', (message) => parentPort.postMessage(message));
