// The booking-rules editor (web/src/screens/admin/mode-rules.tsx) reads
// hours, days and percentages with web/src/screens/admin/rule-units.ts and
// writes google.protobuf.Duration and basis points: exactly, without float
// drift (0.25 h is 900 s, 0.1 h is 360 s, 0.29 % is 29 bps), and shows
// what it read the same way back.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WebModules } from './web-module.js';

interface DurationValue { seconds: bigint; nanos: number }
type Parsed<T> = { kind: 'empty' } | { kind: 'ok'; value: T } | { kind: 'bad' };
interface Units {
  HOUR: number; DAY: number;
  parseDuration(text: string, unit: number): Parsed<DurationValue>;
  durationText(d: DurationValue | undefined, unit: number): string;
  parseBps(text: string): Parsed<number>;
  bpsText(bps: number): string;
  parseInt32(text: string): Parsed<number>;
}

let web: WebModules | undefined;

describe('the booking-rules editor\'s numbers', () => {
  let u: Units;
  before(async () => {
    web = new WebModules('webrules-');
    web.write('screens/admin/rule-units.ts', 'rule-units');
    u = await web.load<Units>('rule-units');
  });
  after(() => web?.cleanUp());

  const ok = (seconds: bigint, nanos = 0) => ({ kind: 'ok', value: { seconds, nanos } });

  it('reads hours and days into whole seconds and nanos, exactly', () => {
    assert.deepEqual(u.parseDuration('0.25', u.HOUR), ok(900n));
    assert.deepEqual(u.parseDuration('0.1', u.HOUR), ok(360n));     // 0.1 * 3600 is 360.00000000000006 in floats
    assert.deepEqual(u.parseDuration('0.3', u.HOUR), ok(1080n));
    assert.deepEqual(u.parseDuration('.5', u.HOUR), ok(1800n));
    assert.deepEqual(u.parseDuration(' 12 ', u.HOUR), ok(43200n));
    assert.deepEqual(u.parseDuration('60', u.DAY), ok(5184000n));
    assert.deepEqual(u.parseDuration('120', u.DAY), ok(10368000n));
    assert.deepEqual(u.parseDuration('1.5', u.DAY), ok(129600n));
    assert.deepEqual(u.parseDuration('0.0001', u.HOUR), ok(0n, 360_000_000));
    assert.deepEqual(u.parseDuration('0.000000001', u.DAY), ok(0n, 86_400));
    assert.deepEqual(u.parseDuration('0', u.DAY), ok(0n));
    // A negative value keeps one sign (the service refuses it, naming the field).
    assert.deepEqual(u.parseDuration('-0.5', u.HOUR), ok(-1800n));
    assert.deepEqual(u.parseDuration('-0.0001', u.HOUR), ok(0n, -360_000_000));
  });

  it('tells an empty field from text that is no number of this kind', () => {
    assert.deepEqual(u.parseDuration('', u.HOUR), { kind: 'empty' });
    assert.deepEqual(u.parseDuration('   ', u.DAY), { kind: 'empty' });
    for (const bad of ['abc', '1,5', '1.2.3', '.', '-', '1e3', '2 h', '0x10', '1 000']) {
      assert.deepEqual(u.parseDuration(bad, u.HOUR), { kind: 'bad' }, bad);
    }
    // Finer than a nanosecond, or past Duration's range.
    assert.deepEqual(u.parseDuration('0.000000000001', u.HOUR), { kind: 'bad' });
    assert.deepEqual(u.parseDuration('4000000', u.DAY), { kind: 'bad' });
  });

  it('shows durations in the unit, exactly when it can', () => {
    assert.equal(u.durationText({ seconds: 900n, nanos: 0 }, u.HOUR), '0.25');
    assert.equal(u.durationText({ seconds: 1800n, nanos: 0 }, u.HOUR), '0.5');
    assert.equal(u.durationText({ seconds: 43200n, nanos: 0 }, u.HOUR), '12');
    assert.equal(u.durationText({ seconds: 5184000n, nanos: 0 }, u.DAY), '60');
    assert.equal(u.durationText({ seconds: 129600n, nanos: 0 }, u.DAY), '1.5');
    assert.equal(u.durationText({ seconds: 0n, nanos: 0 }, u.DAY), '0');
    assert.equal(u.durationText({ seconds: 0n, nanos: 360_000_000 }, u.HOUR), '0.0001');
    assert.equal(u.durationText({ seconds: -1800n, nanos: 0 }, u.HOUR), '-0.5');
    assert.equal(u.durationText(undefined, u.HOUR), '');
    // 20 minutes has no finite decimal in hours: six decimals.
    assert.equal(u.durationText({ seconds: 1200n, nanos: 0 }, u.HOUR), '0.333333');
    assert.equal(u.durationText({ seconds: 900n, nanos: 0 }, u.DAY), '0.010417');
    // What is shown reads back as the same Duration when it has a finite
    // decimal of at most nine places in the unit.
    for (const [s, n] of [[900n, 0], [1n, 0], [86399n, 0], [3600n, 500_000_000], [10368000n, 0], [7n, 200_000], [5400n, 0]] as const) {
      for (const unit of [u.HOUR, u.DAY]) {
        const text = u.durationText({ seconds: s, nanos: n }, unit);
        const exact = ((s * 1_000_000_000n + BigInt(n)) * 1_000_000_000n) % (BigInt(unit) * 1_000_000_000n) === 0n;
        if (exact) assert.deepEqual(u.parseDuration(text, unit), ok(s, n), `${s}s ${n}ns in ${unit}`);
      }
    }
  });

  it('reads percentages into basis points and back', () => {
    assert.deepEqual(u.parseBps('25'), { kind: 'ok', value: 2500 });
    assert.deepEqual(u.parseBps('2.5'), { kind: 'ok', value: 250 });
    assert.deepEqual(u.parseBps('0.29'), { kind: 'ok', value: 29 });   // 0.29 * 100 is 28.999999999999996 in floats
    assert.deepEqual(u.parseBps('100'), { kind: 'ok', value: 10000 });
    assert.deepEqual(u.parseBps('150'), { kind: 'ok', value: 15000 }); // the service's to refuse
    assert.deepEqual(u.parseBps('-1'), { kind: 'ok', value: -100 });
    assert.deepEqual(u.parseBps(''), { kind: 'empty' });
    for (const bad of ['0.125', 'x', '25%', '99999999']) assert.deepEqual(u.parseBps(bad), { kind: 'bad' }, bad);
    assert.equal(u.bpsText(2500), '25');
    assert.equal(u.bpsText(250), '2.5');
    assert.equal(u.bpsText(29), '0.29');
    assert.equal(u.bpsText(1), '0.01');
    assert.equal(u.bpsText(0), '0');
    assert.equal(u.bpsText(-150), '-1.5');
  });

  it('reads whole numbers that fit an int32', () => {
    assert.deepEqual(u.parseInt32('90'), { kind: 'ok', value: 90 });
    assert.deepEqual(u.parseInt32('-3'), { kind: 'ok', value: -3 });
    assert.deepEqual(u.parseInt32(''), { kind: 'empty' });
    for (const bad of ['1.5', 'abc', '2147483648']) assert.deepEqual(u.parseInt32(bad), { kind: 'bad' }, bad);
  });
});
