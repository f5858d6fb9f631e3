// Checks the page's Prometheus parser and quantile against known answers, without a browser:
//   node tests/ops/parse.test.js (tests/tests/ops_page.rs runs it)
'use strict';
const assert = require('assert');
const fs = require('fs');
const path = require('path');

global.window = {};
global.document = { readyState: 'loading', addEventListener() {} };
// eslint-disable-next-line no-eval
(0, eval)(fs.readFileSync(path.join(__dirname, '..', '..', 'gateway', 'assets', 'ops', 'ops.js'), 'utf8'));
const { parseProm, histogramQuantile } = window.pulseOps;

const text = [
  '# HELP pulse_build_info The build.',
  '# TYPE pulse_build_info gauge',
  '# UNIT pulse_x_seconds seconds',
  'pulse_build_info{version="1.2.3"} 1',
  'pulse_gateway_errors_total{reason="a \\"quoted\\" \\\\ back\\nslash",code="x"} 42 1700000000000',
  'pulse_gateway_requests_total{handler="collect",protocol="http2",status="200",} 7',
  'pulse_gateway_events_accepted_total 1.5e3',
  'pulse_gateway_events_accepted_created 1.7e9',
  'pulse_h_bucket{le="+Inf"} 3',
  'pulse_nan NaN',
  'broken{le="1" 3',
  '# EOF',
].join('\n');
const m = parseProm(text);
assert.strictEqual(m.get('pulse_build_info')[0].labels.version, '1.2.3');
const e = m.get('pulse_gateway_errors_total')[0];
assert.strictEqual(e.labels.reason, 'a "quoted" \\ back\nslash');
assert.strictEqual(e.labels.code, 'x');
assert.strictEqual(e.value, 42);
assert.strictEqual(m.get('pulse_gateway_requests_total')[0].labels.status, '200');
assert.strictEqual(m.get('pulse_gateway_events_accepted_total')[0].value, 1500);
assert.strictEqual(m.get('pulse_h_bucket')[0].labels.le, '+Inf');
assert.ok(Number.isNaN(m.get('pulse_nan')[0].value));
assert.ok(!m.has('broken'));

// histogram_quantile: 10 in (0, 1], 10 in (1, 2], none above.
const b = [[1, 10], [2, 20], [Infinity, 20]];
assert.strictEqual(histogramQuantile(0.5, b), 1);
assert.strictEqual(histogramQuantile(0.75, b), 1.5);
assert.strictEqual(histogramQuantile(0.25, b), 0.5);
// The rank in the +Inf bucket: the highest finite bound.
assert.strictEqual(histogramQuantile(0.99, [[1, 10], [2, 10], [Infinity, 20]]), 2);
// Nothing observed, or no +Inf bucket: no answer.
assert.strictEqual(histogramQuantile(0.5, [[1, 0], [Infinity, 0]]), null);
assert.strictEqual(histogramQuantile(0.5, [[1, 3], [2, 4]]), null);
// Rates: per second over the interval, summed by group; a drop is a counter reset.
const before = 'c{p="a"} 100\nc{p="b"} 50\n';
const after = 'c{p="a"} 300\nc{p="b"} 20\nc{p="c"} 4\n';
const r = window.pulseOps.rates(before, 0, after, 2000, 'c', (l) => l.p);
assert.deepStrictEqual([...r.entries()], [['a', 100], ['b', 10], ['c', 2]]);
// Quantiles from bucket increases over the interval only.
const h0 = 'h_bucket{le="0.001"} 100\nh_bucket{le="0.01"} 100\nh_bucket{le="+Inf"} 100\n';
const h1 = 'h_bucket{le="0.001"} 100\nh_bucket{le="0.01"} 200\nh_bucket{le="+Inf"} 200\n';
const q = window.pulseOps.quantiles(h0, h1, 'h', [0.5]);
assert.ok(Math.abs(q[0] - 0.0055) < 1e-12, q);
console.log('ok');
