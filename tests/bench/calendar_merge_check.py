#!/usr/bin/env python3
"""The merged calendar (issue 17) against the version before it, by hand.

Takes the previous version's create and update Lua steps from git (`git show
BASE:services/booking/redis_booking_store.cc`, BASE default main) and this
tree's, starts its own redis-server(s) on free loopback ports, and:

  older-steps   writes one booking with this tree's create step, then runs the
                previous version's create (over it and in free time) and update
                (remove, end, keep) and BlockWindow with that version's keys: each must answer
                WRONGTYPE and leave DBSIZE unchanged (the sentinels of
                redis_booking_store.h).
  create-cost   the create step's Redis cost: the previous version's script on
                one redis-server, this tree's on another, the same requests
                (200 instruments, random starts over 3,000 days), ROUNDS rounds
                of N alternating which goes first; EVALSHA usec per call from
                INFO commandstats, and MEMORY USAGE of the calendar keys.

usage: tests/bench/calendar_merge_check.py older-steps|create-cost [--base REF] [--n N] [--rounds R]
Needs redis-server and redis-cli on PATH; run benches under flock /work/bench.lock.
"""
import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STORE = 'services/booking/redis_booking_store.cc'
GUARDS = 'common/lua_guards.h'


def extract(src, marker):
    i = src.index(marker)
    j = src.index('R"lua(', i) + len('R"lua(')
    return src[j:src.index(')lua"', j)]


def scripts(base):
    def show(path):
        return subprocess.run(['git', '-C', REPO, 'show', '%s:%s' % (base, path)], check=True,
                              capture_output=True, text=True).stdout
    old_store, old_guards = show(STORE), show(GUARDS)
    new_store = open(os.path.join(REPO, STORE)).read()
    new_guards = open(os.path.join(REPO, GUARDS)).read()
    g_old, g_new = extract(old_guards, 'kLuaGuards[]'), extract(new_guards, 'kLuaGuards[]')
    replay_old, replay_new = extract(old_store, 'constexpr char kReplayLua[]'), extract(new_store, 'constexpr char kReplayLua[]')
    cal = extract(new_store, 'constexpr char kCalendarLua[]')
    return {
        'old_create': g_old + replay_old + extract(old_store, 'const RedisScript& CreateScript()'),
        'old_update': g_old + replay_old + extract(old_store, 'const RedisScript& UpdateScript()'),
        'old_window': g_old + extract(old_store, 'absl::Status BookingStore::BlockWindow('),
        'new_create': g_new + replay_new + cal + extract(new_store, 'const RedisScript& CreateScript()'),
    }


class Redis:
    def __init__(self):
        s = socket.socket()
        s.bind(('127.0.0.1', 0))
        self.port = s.getsockname()[1]
        s.close()
        self.dir = tempfile.mkdtemp(prefix='calmerge.')
        self.proc = subprocess.Popen(['redis-server', '--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
                                      '--appendonly', 'no', '--hash-max-listpack-value', '1024', '--dir', self.dir],
                                     stdout=subprocess.DEVNULL)
        for _ in range(100):
            if self.cli('PING') == 'PONG':
                return
            time.sleep(0.05)
        sys.exit('redis-server did not start')

    def cli(self, *args, stdin=None):
        argv = ['redis-cli', '-p', str(self.port)] + ([] if stdin is not None else [str(a) for a in args])
        if stdin is not None:
            argv.append('--pipe')
        return subprocess.run(argv, input=stdin, capture_output=True, text=True).stdout.strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def create_keys(t, instr, bid, new):
    doc = t + ':booking:' + bid
    keys = [doc, t + ':outbox', doc, t + (':cl:' if new else ':cal:') + instr,
            t + (':cal:' if new else ':calend:') + instr, t + ':bystart:' + instr,
            t + ':sweep:instruments', t + ':sweep:instruments']
    return keys + ([t + ':calend:' + instr, t + ':clspan:' + instr] if new else [])


def create_args(bid, instr, s, e, new):
    args = ['fp-' + bid, 'doc-' + bid + 'x' * 180, '604800', '0', str(s), str(e), bid, str(s), instr, '', '', '',
            '0', '1', '0']
    args += ['%s!%d ' % (bid, e - s), ''] if new else [' ']
    return args + ['event-' + bid + 'y' * 250, '', '']


def older_steps(sc):
    r = Redis()
    try:
        t, cal, ends = '{bk:5}', '{bk:5}:cal:i1', '{bk:5}:calend:i1'
        keys = create_keys(t, 'i1', 'b1', True)
        print('this tree creates b1 [1000, 2000):',
              r.cli('EVAL', sc['new_create'], len(keys), *keys, *create_args('b1', 'i1', 1000, 2000, True)))
        before = r.cli('DBSIZE')
        print('older keys: cal', r.cli('TYPE', cal), '/ calend', r.cli('TYPE', ends), '; DBSIZE', before)
        ok = True
        for bid, s, e in (('b9', 1500, 2500), ('b8', 5000, 6000)):
            keys = create_keys(t, 'i1', bid, False)
            out = r.cli('EVAL', sc['old_create'], len(keys), *keys, *create_args(bid, 'i1', s, e, False))
            print('previous create %s [%d, %d): %s' % (bid, s, e, out))
            ok = ok and out.startswith('WRONGTYPE')
        for op in ('remove', 'end', 'keep'):
            keys = [t + ':idem:X:u1', t + ':outbox', t + ':booking:b1', cal, ends, t + ':due']
            args = ['fpu', 'doc-b1-2', '604800', '1', op, 'b1', '1500', '0', '0', 'keep', ' ', '', '0', '1', '0', 'ev']
            out = r.cli('EVAL', sc['old_update'], len(keys), *keys, *args)
            print('previous update %s: %s' % (op, out))
            ok = ok and out.startswith('WRONGTYPE')
        out = r.cli('EVAL', sc['old_window'], 2, cal, ends, 'mw:w1', '1200', '1800\f')
        print('previous BlockWindow: %s' % out)
        ok = ok and out.startswith('WRONGTYPE')
        after = r.cli('DBSIZE')
        print('DBSIZE after', after)
        print('RESULT older-steps', 'ok' if ok and after == before else 'FAILED')
        return 0 if ok and after == before else 1
    finally:
        r.stop()


def resp(args):
    out = ['*%d\r\n' % len(args)]
    for a in args:
        b = str(a)
        out.append('$%d\r\n%s\r\n' % (len(b.encode()), b))
    return ''.join(out)


def evalsha_stat(r):
    for line in r.cli('INFO', 'commandstats').splitlines():
        if line.startswith('cmdstat_evalsha:'):
            d = dict(kv.split('=') for kv in line.split(':', 1)[1].split(','))
            return int(d['calls']), int(d['usec'])
    return 0, 0


def create_cost(sc, n, rounds):
    old, new = Redis(), Redis()
    try:
        sides = [('previous', old, False, old.cli('SCRIPT', 'LOAD', sc['old_create'])),
                 ('this tree', new, True, new.cli('SCRIPT', 'LOAD', sc['new_create']))]
        rng = random.Random(7)
        totals = {}
        for rnd in range(rounds):
            reqs = []
            for i in range(n):
                k = rng.randrange(200)
                s = 1764806400000 + rng.randrange(3000) * 86400000 + rng.randrange(96) * 900000
                reqs.append(('b%d-%d' % (rnd, i), 'i%d' % k, '{bk:%d}' % (k % 16), s, s + rng.randrange(1, 13) * 300000))
            for name, r, is_new, sha in (sides if rnd % 2 == 0 else sides[::-1]):
                body = ''.join(resp(['EVALSHA', sha, 10 if is_new else 8] + create_keys(t, instr, bid, is_new) +
                                    create_args(bid, instr, s, e, is_new)) for bid, instr, t, s, e in reqs)
                c0, u0 = evalsha_stat(r)
                piped = r.cli(stdin=body).splitlines()
                c1, u1 = evalsha_stat(r)
                per = (u1 - u0) / max(c1 - c0, 1)
                totals[name] = totals.get(name, 0) + per
                print('round %d %-9s %d calls, %.2f usec per EVALSHA (%s); loadavg %s' % (
                    rnd, name, c1 - c0, per, piped[-1] if piped else '', open('/proc/loadavg').read().split()[0]))
        for name, r, is_new, _ in sides:
            total, count = 0, 0
            for k in r.cli('--scan', '--pattern', '{bk:*}:c*').splitlines():
                if r.cli('TYPE', k) in ('zset', 'hash'):
                    total += int(r.cli('MEMORY', 'USAGE', k, 'SAMPLES', '0') or 0)
                if r.cli('TYPE', k) == 'zset':
                    count += int(r.cli('ZCARD', k))
            print('RESULT create-cost %s: usec_per_evalsha_summed=%.1f calendar_bytes=%d entries=%d bytes_per_entry=%.1f'
                  % (name, totals[name], total, count, total / max(count, 1)))
        return 0
    finally:
        old.stop()
        new.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('what', choices=['older-steps', 'create-cost'])
    ap.add_argument('--base', default='main')
    ap.add_argument('--n', type=int, default=20000)
    ap.add_argument('--rounds', type=int, default=6)
    a = ap.parse_args()
    sc = scripts(a.base)
    print('loadavg', open('/proc/loadavg').read().strip())
    return older_steps(sc) if a.what == 'older-steps' else create_cost(sc, a.n, a.rounds)


if __name__ == '__main__':
    sys.exit(main())
