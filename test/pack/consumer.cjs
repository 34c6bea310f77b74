// Packaging check, cross-process (scripts/pack-test.sh): this CommonJS process opens channel
// argv[2] (waiting up to 10 s for producer.mjs) and prints every message until end-of-stream.
const { Channel } = require('shmbus');

async function main() {
  const rx = Channel.open(process.argv[2], { waitMs: 10_000 });
  const decoder = new TextDecoder();
  let count = 0;
  for await (const frame of rx) {
    console.log('received', decoder.decode(frame));
    count++;
  }
  rx.close(); // the last end to close removes the file
  console.log(`received ${count} messages`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
