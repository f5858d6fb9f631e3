// Sends a reader's day through Segment's own Node.js library to the gateway at HOST, with the
// site key as the write key: tests/tests/segment.rs runs it and checks what Pulse made of it.
const { Analytics } = require('@segment/analytics-node');

const analytics = new Analytics({
  writeKey: process.env.WRITE_KEY,
  host: process.env.HOST,
  path: '/v1/batch',
  flushAt: 4,
  maxRetries: 3,
});
analytics.on('error', (err) => {
  console.error('segment error:', err && (err.reason || err.message || err));
  process.exitCode = 1;
});

const userId = process.env.USER_ID;
analytics.identify({ userId, traits: { plan: 'pro', name: 'Ana' } });
for (let i = 1; i <= 3; i++) {
  analytics.page({
    userId,
    name: `Story ${i}`,
    properties: { url: `https://news.example/articles/${i}`, content_type: 'article', section: 'sport' },
  });
}
analytics.track({ userId, event: 'Newsletter Signup', properties: { list: 'morning' } });
analytics.track({ anonymousId: 'segment-anon-1', event: 'Video Play', properties: { seconds: 12 } });

analytics.closeAndFlush({ timeout: 20000 }).then(() => {
  console.log('flushed');
});
