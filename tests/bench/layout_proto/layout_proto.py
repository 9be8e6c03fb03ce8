#!/usr/bin/env python3
"""Issue 17 storage-layout prototype: bytes and Lua cost per booking, today's
layout against the candidates, side by side in one run.

    python3 tests/bench/layout_proto/layout_proto.py [--bookings 200000] [--rounds 10]

Starts one redis-server per layout on free loopback ports (no persistence,
default encodings unless a layout sets its own), sends the same CreateBooking
sequence to each, in alternating rounds, through that layout's Lua step:

  L0 current   today's CreateScript, extracted from
               services/booking/redis_booking_store.cc at run time, with the
               keys and arguments CreateArgs builds (derived id, so the
               request's record is in the document)
  L0c config   today's keys and script, with hash-max-listpack-value 1024 and
               zset-max-listpack-entries 1024 (no code change)
  L0h stage 1  today's keys and script, with hash-max-listpack-value 1024
               only (what is shipped since stage 1 of section 6)
  L1 leaves    document as one string; calendar and every listing index in
               listpack leaves (split past --leaf-max members, 64, by a step
               of their own; zset-max-listpack-entries stays 128)
  L2 compact   L1 + calendar merged into the by-instrument index + documents
               in linear-hashed listpack buckets (hash-max-listpack-value 1024)
  L3 merged    L1 + the calendar merged into the by-instrument index
  L4 recommended  L2 + the booking's name left out of the stored bytes,
               8-byte document fields, leaf caches verified by one epoch
  L5 lean      L3 + the name left out + epoch: string documents (no
               hash-max-listpack-value change), cheaper, more bytes
  L4d          L4 with the per-index directory check instead of the epoch
  L4x2, L4dx2  L4 / L4d written by two clients with their own caches (two
               replicas), batches alternating: stale caches answer MOVED, the
               client reloads and sends again
  L6 no listings  L4 without the listing indexes in the step (what an
               outbox-fed indexer would save the step; its bytes are not
               comparable: the indexes would be written elsewhere)
  REF          ../shared/perf-reference's Lua step on its own server

Every create does the real checks: replay / reuse / exists, no overlap,
then the writes and the outbox entry in the same script. The sequence holds
overlapping requests (must be SLOT_TAKEN) and replays; the outcome counts
must be identical in every single-writer layout (the run stops otherwise),
at the end ~300 instruments' live calendars are read back and checked for
overlaps, the stored documents are counted against the creates, listing
pages are compared entry by entry with today's ListingScript, and requests
sent with forgotten caches must answer MOVED, never write.

Prints per layout: used_memory delta per booking (with the outbox, and after
trimming every outbox to 0: the steady state with helper B's retention),
MEMORY USAGE sums per key class, EVALSHA usec_per_call of the create step,
split steps per booking and their cost, redis-server CPU per booking, and
read costs (GetBooking's read). Needs only python3 and redis-server.
"""
import argparse
import bisect
import hashlib
import os
import random
import re
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..', '..'))
PARTITIONS = 16


# ---------------------------------------------------------------- RESP client
class Redis:
    def __init__(self, port):
        self.s = socket.create_connection(('127.0.0.1', port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b''
        self.pos = 0

    @staticmethod
    def enc(args):
        out = [b'*%d\r\n' % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, int):
                a = b'%d' % a
            out.append(b'$%d\r\n' % len(a))
            out.append(a)
            out.append(b'\r\n')
        return b''.join(out)

    def _fill(self):
        chunk = self.s.recv(1 << 20)
        if not chunk:
            raise ConnectionError('redis closed')
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0

    def _line(self):
        while True:
            i = self.buf.find(b'\r\n', self.pos)
            if i >= 0:
                line = self.buf[self.pos:i]
                self.pos = i + 2
                return line
            self._fill()

    def _read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b'+':
            return rest.decode()
        if t == b'-':
            return RuntimeError(rest.decode())
        if t == b':':
            return int(rest)
        if t == b'$':
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) - self.pos < n + 2:
                self._fill()
            v = self.buf[self.pos:self.pos + n]
            self.pos += n + 2
            return v
        if t == b'*':
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise RuntimeError('bad reply %r' % line)

    def pipeline(self, cmds):
        self.s.sendall(b''.join(self.enc(c) for c in cmds))
        return [self._read() for _ in cmds]

    def call(self, *args):
        r = self.pipeline([list(args)])[0]
        if isinstance(r, RuntimeError):
            raise r
        return r


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_redis(extra):
    port = free_port()
    args = ['redis-server', '--port', str(port), '--bind', '127.0.0.1', '--save', '',
            '--appendonly', 'no', '--daemonize', 'no', '--logfile', ''] + extra
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            r = Redis(port)
            r.call('PING')
            return proc, r
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.02)


def info(r, section):
    text = r.call('INFO', section).decode()
    out = {}
    for line in text.split('\r\n'):
        if ':' in line and not line.startswith('#'):
            k, v = line.split(':', 1)
            out[k] = v
    return out


def used_memory(r):
    return int(info(r, 'memory')['used_memory'])


def cmdstats(r):
    out = {}
    for k, v in info(r, 'commandstats').items():
        fields = dict(x.split('=') for x in v.split(','))
        out[k[len('cmdstat_'):]] = (int(fields['calls']), int(fields['usec']))
    return out


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        parts = f.read().rsplit(')', 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf('SC_CLK_TCK')


# ---------------------------------------------------------------- workload
def fnv1a32(s):
    h = 2166136261
    for c in s.encode():
        h ^= c
        h = (h * 16777619) & 0xffffffff
    return h


def partition(instrument):
    return fnv1a32(instrument) % PARTITIONS


def derived_id(p, request_id):
    # Same shape as DerivedBookingId ("pNN-" + 16 hex digits of a 64-bit hash).
    return 'p%02d-%s' % (p, hashlib.sha256(b'CreateBooking\n' + request_id.encode()).hexdigest()[:16])


class Request:
    __slots__ = ('rid', 'instr', 'p', 'id', 'user', 'orgs', 's', 'e', 'rs', 'fp', 'doc', 'event')


def workload(n, seed, locality=0.0):
    rng = random.Random(seed)
    n_instr = max(20, n // 100)
    n_users = max(50, n // 10)
    n_orgs = 200
    instr = ['ins-%05d' % i for i in range(n_instr)]
    owner = {i: 'org-%03d' % rng.randrange(n_orgs) for i in instr}
    operator = {i: (owner[i] if rng.random() < 0.9 else 'org-%03d' % rng.randrange(n_orgs)) for i in instr}
    users = ['user-%06d' % u for u in range(n_users)]
    user_org = {u: 'org-%03d' % rng.randrange(n_orgs) for u in users}
    base = 1798761600000  # 2027-01-01T00:00:00Z
    planned = []
    per = n // n_instr
    for i in instr:
        t = base + rng.randrange(0, 7 * 86400) * 1000 // 60000 * 60000
        for _ in range(per):
            t += rng.choice([0, 15, 30, 60, 120, 240, 1440, 2880]) * 60000
            dur = rng.randrange(2, 17) * 15 * 60000 if rng.random() > 0.01 else rng.randrange(1, 6) * 86400000
            buf = rng.choice([0, 5, 10, 15]) * 60000
            lead = rng.randrange(0, 21 * 86400000)
            planned.append((t - lead, i, t, t + dur, t + dur + buf))
            t += dur + buf
    planned.sort()
    reqs = []
    made = []
    seq = 0

    def make(i, s, rs, e, user):
        nonlocal seq
        q = Request()
        seq += 1
        q.rid = 'req-%09d-%s' % (seq, '%08x' % rng.getrandbits(32))
        q.instr = i
        q.p = partition(i)
        q.id = derived_id(q.p, q.rid)
        q.user = user
        q.orgs = sorted({owner[i], operator[i], user_org[user]})
        q.s, q.e, q.rs = s, e, rs
        q.fp = hashlib.sha256(('%s|%s|%d|%d' % (q.rid, i, s, e)).encode()).digest()
        q.doc = rng.randbytes(rng.randrange(190, 215))
        q.event = rng.randbytes(90) + q.doc
        return q

    # With locality, a user books mostly from a personal set of 3 instruments:
    # each planned slot goes to one of the users who hold that instrument.
    holders = {}
    if locality > 0:
        for u in users:
            for i in rng.sample(instr, 3):
                holders.setdefault(i, []).append(u)
    for (_, i, s, _, e) in planned:
        if holders.get(i) and rng.random() < locality:
            user = rng.choice(holders[i])
        else:
            user = rng.choice(users)
        q = make(i, s, s, e, user)
        reqs.append(q)
        made.append(q)
        x = rng.random()
        if x < 0.05:  # someone else wants an overlapping slot on the same instrument
            o = made[rng.randrange(max(0, len(made) - 50), len(made))]
            st = o.s + rng.randrange(-4, 5) * 15 * 60000
            reqs.append(make(o.instr, st, st, st + 3600000, rng.choice(users)))
        elif x < 0.07:  # a retry of an earlier request (same request id and body)
            reqs.append(made[rng.randrange(len(made))])
    return reqs


# ---------------------------------------------------------------- layouts
def extract_lua(path, start_marker):
    src = open(os.path.join(ROOT, path)).read()
    at = src.index(start_marker)
    body = src.index('R"lua(', at) + len('R"lua(')
    return src[body:src.index(')lua"', body)]


def current_create_lua():
    guards = extract_lua('common/lua_guards.h', 'kLuaGuards[]')
    replay = extract_lua('services/booking/redis_booking_store.cc', 'constexpr char kReplayLua[]')
    calendar = extract_lua('services/booking/redis_booking_store.cc', 'constexpr char kCalendarLua[]')
    create = extract_lua('services/booking/redis_booking_store.cc', 'const RedisScript& CreateScript()')
    return guards + replay + calendar + create


def current_listing_lua():
    return extract_lua('services/booking/redis_booking_store.cc', 'const RedisScript& ListingScript()')


def tag(p):
    return '{bk:%d}' % p


class Layout:
    name = ''
    config = []

    def __init__(self):
        self.proc = None
        self.r = None
        self.outcomes = {}
        self.created = 0
        self.split_calls = 0

    def start(self):
        self.proc, self.r = start_redis(self.config)
        self.setup()

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()

    def count(self, reply):
        if isinstance(reply, RuntimeError):
            raise reply
        k = reply[0].decode()
        tgt = getattr(self, 'parent', None) or self
        tgt.outcomes[k] = tgt.outcomes.get(k, 0) + 1
        if k == 'OK':
            tgt.created += 1
        return k


class Current(Layout):
    name = 'L0 current'

    def __init__(self, name=None, config=()):
        super().__init__()
        if name:
            self.name = name
        self.config = list(config)

    def setup(self):
        self.sha = self.r.call('SCRIPT', 'LOAD', current_create_lua()).decode()
        self.list_sha = self.r.call('SCRIPT', 'LOAD', current_listing_lua()).decode()

    def command(self, q):
        t = tag(q.p)
        doc = t + ':booking:' + q.id
        swept = t + ':sweep:instruments'
        # Today's create step (redis_booking_store.cc CreateScript): the
        # calendar is one sorted set ({bk:P}:cl:, member "<id>!<end - start>"),
        # the older two keys are declared for its fold (KEYS 5 and 9).
        keys = [doc, t + ':outbox', doc, t + ':cl:' + q.instr, t + ':cal:' + q.instr,
                t + ':bystart:' + q.instr, swept, swept, t + ':calend:' + q.instr]
        args = [q.fp.hex(), q.doc, str(7 * 86400), '0', str(q.s), str(q.e), q.id, str(q.rs), q.instr,
                '', '', '', '0', '1', '0', '%s!%d' % (q.id, q.e - q.s), '', q.event, '', '']
        keys.append(t + ':ls:span')
        keys.append(t + ':ls:b:all')
        keys.append(t + ':ls:b:user:' + q.user)
        for o in q.orgs:
            keys.append(t + ':ls:b:org:' + o)
        return ['EVALSHA', self.sha, str(len(keys))] + keys + args

    def run(self, batch):
        for rep in self.r.pipeline([self.command(q) for q in batch]):
            self.count(rep)

    def key_class(self, k):
        k = re.sub(r'^\{bk:\d+\}', '{bk:P}', k)
        for pat, name in ((r':booking:', 'document'), (r':cl:', 'calendar'), (r':cal:', 'calendar (older)'),
                          (r':calend:', 'calendar ends (older)'),
                          (r':bystart:', 'by instrument'), (r':ls:b:all', 'listing all'),
                          (r':ls:b:user:', 'listing user'), (r':ls:b:org:', 'listing org'),
                          (r':outbox', 'outbox')):
            if re.search(pat, k):
                return name
        return 'other'

    def read_cmd(self, q):
        return ['HMGET', tag(q.p) + ':booking:' + q.id, 'v', 'd']

    def calendar(self, p, instr):
        t = tag(p)
        z = self.r.call('ZRANGE', t + ':cl:' + instr, 0, -1, 'WITHSCORES')
        out = []
        for i in range(0, len(z), 2):
            ident, length = z[i].decode().split('!', 1)
            out.append((int(z[i + 1]), int(z[i + 1]) + int(length.rstrip()), ident))
        return out

    def page(self, p, kind, ident, cursor, limit):
        t = tag(p)
        key = {'all': t + ':ls:b:all', 'user': t + ':ls:b:user:' + ident, 'org': t + ':ls:b:org:' + ident,
               'instr': t + ':bystart:' + ident}[kind]
        r = self.r.call('EVALSHA', self.list_sha, '1', key, 'asc', '-inf', '+inf',
                        str(cursor[0]) if cursor else '', cursor[1] if cursor else '', str(limit))
        return [(int(r[i + 1]), r[i].decode()) for i in range(0, len(r), 2)]


class Reference(Layout):
    """../shared/perf-reference's step: one ZSET per instrument, member
    "<end>:<id>" at score start; no document, index, idempotency or event."""
    name = 'REF perf-ref'
    LUA = r'''
local s = tonumber(ARGV[1])
local e = s + tonumber(ARGV[2])
local prev = redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. e, '-inf', 'LIMIT', 0, 1)
if #prev > 0 then
  local pend = tonumber(string.match(prev[1], '^(%d+):'))
  if pend > s then return 0 end
end
redis.call('ZADD', KEYS[1], s, e .. ':' .. ARGV[3])
return 1
'''

    def setup(self):
        self.sha = self.r.call('SCRIPT', 'LOAD', self.LUA).decode()

    def run(self, batch):
        cmds = [['EVALSHA', self.sha, '1', 'bk:' + q.instr, str(q.s), str(q.e - q.s), q.id] for q in batch]
        for rep in self.r.pipeline(cmds):
            k = 'OK' if rep == 1 else 'TAKEN'
            self.outcomes[k] = self.outcomes.get(k, 0) + 1
            if rep == 1:
                self.created += 1

    def key_class(self, k):
        return 'calendar (reference)'

    def read_cmd(self, q):
        return ['ZSCORE', 'bk:' + q.instr, q.id]

    def calendar(self, p, instr):
        z = self.r.call('ZRANGE', 'bk:' + instr, 0, -1, 'WITHSCORES')
        return [(int(z[i + 1]), int(z[i].split(b':')[0]), z[i].decode()) for i in range(0, len(z), 2)]

    def page(self, p, kind, ident, cursor, limit):
        return None


class Leaves(Layout):
    """doc_mode 's' (string key) or 'b' (linear-hashed buckets); merged: the
    calendar is the by-instrument index."""
    LEAF_MAX = 128
    DOCS_PER_BUCKET = 40

    def __init__(self, name, doc_mode, merged, config=(), strip=0, epoch=False, listings=True):
        super().__init__()
        self.listings = listings  # False: the listing indexes are left to an outbox consumer
        self.use_epoch = epoch
        self.epoch = {}    # partition -> leaf epoch the cached directories are at
        self.strip = strip  # bytes of the stored proto left out (the booking's name, restored on read)
        self.swept = set()
        self.name = name
        self.doc_mode = doc_mode
        self.merged = merged
        self.config = list(config)
        self.dirs = {}     # prefix -> sorted bounds (ints), the leaves but 0
        self.meta = {}     # partition -> [L, s]
        self.span = {}     # partition -> longest blocked end - reserved start sent
        self.moved = 0
        self.multi = False  # several writers: caches may be stale (MOVED, reload, retry)
        self.known = set()  # multi: prefixes whose directory is cached at self.epoch

    def setup(self):
        load = lambda f: self.r.call('SCRIPT', 'LOAD', open(os.path.join(HERE, f)).read()).decode()
        self.sha = load('leaf_create.lua')
        self.list_sha = load('leaf_list.lua')
        self.split_leaf_src = open(os.path.join(HERE, 'split_leaf.lua')).read()
        self.split_docs_src = open(os.path.join(HERE, 'split_docs.lua')).read()

    # -- caches the client keeps (the script verifies them)
    def leaf_bound(self, prefix, score, strict=False):
        b = self.dirs.get(prefix)
        if not b:
            return 0
        i = (bisect.bisect_left if strict else bisect.bisect_right)(b, score)
        return b[i - 1] if i > 0 else 0

    def prev_bound(self, prefix, bound):
        return self.leaf_bound(prefix, bound, strict=True)

    def bucket(self, p, h):
        L, s = self.meta.get(p, (0, 0))
        b = h % (1 << L)
        if b < s:
            b = h % (1 << (L + 1))
        return b

    def prefixes(self, q):
        t = tag(q.p)
        cal = t + (':i:' if self.merged else ':c:') + q.instr
        others = [] if self.merged else [t + ':i:' + q.instr]
        if self.listings:
            others += [t + ':l:a', t + ':l:u:' + q.user] + [t + ':l:o:' + o for o in q.orgs]
        return cal, others

    def doc_value(self, q):
        return bytes([len(q.fp)]) + q.fp + b'\x011' + q.doc[self.strip:]

    def doc_field(self, q):
        return bytes.fromhex(q.id[4:20]) if self.doc_mode == 'b' else q.id

    def ensure(self, q):
        """Multi-writer: load what the cache lacks (epoch first, then the
        directories: a split in between only makes the step say MOVED)."""
        t = tag(q.p)
        if self.epoch.get(q.p) is None:
            self.epoch[q.p] = int(self.r.call('GET', t + ':lv') or 0)
            self.known = {k for k in self.known if not k.startswith(t)}
        if q.p not in self.meta and self.doc_mode == 'b':
            m = self.r.call('HMGET', t + ':dm', 'L', 's')
            self.meta[q.p] = (int(m[0] or 0), int(m[1] or 0))
        cal, others = self.prefixes(q)
        for pre in [cal] + others:
            if pre not in self.known:
                self.dirs[pre] = sorted(int(b) for b in self.r.call('ZRANGE', pre + '#', 0, -1))
                self.known.add(pre)
        if q.p not in self.span:
            self.span[q.p] = int(self.r.call('GET', t + ':ls:span') or 0)

    def forget(self, p):
        self.epoch[p] = None
        self.meta.pop(p, None)

    def command(self, q):
        if self.multi:
            self.ensure(q)
        t = tag(q.p)
        cal, others = self.prefixes(q)
        h = int(q.id[4:12], 16)
        if self.doc_mode == 's':
            doc_key, meta = t + ':b:' + q.id, t + ':sweep:instruments'
            bucket = 0
        else:
            bucket = self.bucket(q.p, h)
            doc_key, meta = t + ':d:%d' % bucket, t + ':dm'
        keys = [doc_key, meta, t + ':outbox', t + ':sweep:instruments', t + ':ls:span', t + ':lv', cal + '#']
        span = max(self.span.get(q.p, 0), q.e - q.rs)
        bounds = []
        b = self.leaf_bound(cal, q.e, strict=True)
        while True:
            bounds.append(b)
            if b == 0 or b + span <= q.s or (not self.merged and len(bounds) == 2) or len(bounds) == 8:
                break
            b = self.prev_bound(cal, b)
        keys += ['%s:%d' % (cal, b) for b in bounds]
        args = [self.doc_mode, '1' if self.merged else '0', q.fp, self.doc_value(q), q.id, str(q.s), str(q.e),
                str(q.rs), '' if q.instr in self.swept else q.instr, q.event, str(h), str(bucket), self.doc_field(q),
                str(self.epoch.get(q.p, 0)) if self.use_epoch else '', str(self.LEAF_MAX),
                str(len(bounds))] + [str(b) for b in bounds]
        for pre in others:
            lb = self.leaf_bound(pre, q.rs)
            keys += [pre + '#', '%s:%d' % (pre, lb)]
            args.append(str(lb))
        return ['EVALSHA', self.sha, str(len(keys))] + keys + args

    def split_leaf(self, prefix, bound, p):
        leaf = '%s:%d' % (prefix, bound)
        n = self.r.call('ZCARD', leaf)
        if n <= self.LEAF_MAX:
            return
        mid = self.r.call('ZRANGE', leaf, n // 2, n // 2, 'WITHSCORES')
        low = self.r.call('ZRANGE', leaf, 0, 0, 'WITHSCORES')
        m = int(mid[1])
        if m <= int(low[1]):
            nxt = self.r.call('ZRANGEBYSCORE', leaf, '(%d' % m, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
            if not nxt:
                return  # one score only: stays one (bigger) leaf
            m = int(nxt[1])
        epoch = self.r.call('EVAL', self.split_leaf_src, '4', prefix + '#', leaf, '%s:%d' % (prefix, m),
                            tag(p) + ':lv', str(bound), str(m), str(self.LEAF_MAX))
        (getattr(self, 'parent', None) or self).split_calls += 1
        if epoch and self.multi and epoch != (self.epoch.get(p) or 0) + 1:
            self.forget(p)  # someone else split too: reload before the next step
            return
        if epoch:
            self.epoch[p] = epoch
            bisect.insort(self.dirs.setdefault(prefix, []), m)

    def split_docs(self, p):
        while True:
            L, s = self.meta.get(p, (0, 0))
            n = self.docs.get(p, 0)
            if n <= self.DOCS_PER_BUCKET * ((1 << L) + s):
                return
            t = tag(p)
            moved = self.r.call('EVAL', self.split_docs_src, '3', t + ':dm', t + ':d:%d' % s, t + ':d:%d' % (s + (1 << L)),
                                str(L), str(s))
            (getattr(self, 'parent', None) or self).split_calls += 1
            if moved == -1:  # another writer split first: reload the state
                m = self.r.call('HMGET', t + ':dm', 'L', 's')
                self.meta[p] = (int(m[0] or 0), int(m[1] or 0))
                continue
            s += 1
            if s == 1 << L:
                L, s = L + 1, 0
            self.meta[p] = (L, s)

    def run(self, batch):
        if not hasattr(self, 'docs'):
            self.docs = {}
        replies = self.r.pipeline([self.command(q) for q in batch])
        todo = []
        for q, rep in zip(batch, replies):
            tries = 0
            while self.multi and rep[0] == b'MOVED' and tries < 5:
                # stale cache: reload what the step named, send again (the
                # requests after it in the batch have already run)
                (getattr(self, 'parent', None) or self).moved += 1
                self.forget(q.p)
                rep = self.r.call(*self.command(q))
                tries += 1
            k = self.count(rep)
            if k == 'MOVED':
                (getattr(self, 'parent', None) or self).moved += 1
            if k != 'OK':
                continue
            self.span[q.p] = max(self.span.get(q.p, 0), q.e - q.rs)
            self.swept.add(q.instr)
            cal, others = self.prefixes(q)
            if self.doc_mode == 'b':
                self.docs[q.p] = rep[1]
            for pos in rep[2:]:
                if pos == 0:
                    todo.append((cal, self.leaf_bound(cal, q.s), q.p))
                else:
                    todo.append((others[pos - 1], self.leaf_bound(others[pos - 1], q.rs), q.p))
        for prefix, bound, p in dict.fromkeys(todo):
            self.split_leaf(prefix, bound, p)
        if self.doc_mode == 'b':
            for p in range(PARTITIONS):
                self.split_docs(p)

    def key_class(self, k):
        k = re.sub(r'^\{bk:\d+\}', '{bk:P}', k)
        for pat, name in ((r':b:', 'document'), (r':d:', 'document bucket'), (r':dm$', 'document meta'),
                          (r':c:.*#$', 'calendar dir'), (r':c:', 'calendar'), (r':i:.*#$', 'by instrument dir'),
                          (r':i:', 'by instrument' + (' (+calendar)' if self.merged else '')),
                          (r':l:a#', 'listing all dir'), (r':l:a', 'listing all'),
                          (r':l:u:.*#$', 'listing user dir'), (r':l:u:', 'listing user'),
                          (r':l:o:.*#$', 'listing org dir'), (r':l:o:', 'listing org'), (r':outbox', 'outbox')):
            if re.search(pat, k):
                return name
        return 'other'

    def read_cmd(self, q):
        if self.doc_mode == 's':
            return ['GET', tag(q.p) + ':b:' + q.id]
        return ['HGET', tag(q.p) + ':d:%d' % self.bucket(q.p, int(q.id[4:12], 16)), self.doc_field(q)]

    def calendar(self, p, instr):
        pre = tag(p) + (':i:' if self.merged else ':c:') + instr
        out = []
        for b in [0] + sorted(int(x) for x in self.r.call('ZRANGE', pre + '#', 0, -1)):
            z = self.r.call('ZRANGE', '%s:%d' % (pre, b), 0, -1, 'WITHSCORES')
            for i in range(0, len(z), 2):
                m = z[i].decode()
                ident, d = m.split('!')
                if d != '-':
                    out.append((int(z[i + 1]), int(z[i + 1]) + int(d), ident))
        return out

    def page(self, p, kind, ident, cursor, limit):
        t = tag(p)
        pre = {'all': t + ':l:a', 'user': t + ':l:u:' + ident, 'org': t + ':l:o:' + ident,
               'instr': t + ':i:' + ident}[kind]
        merged = '1' if (kind == 'instr' and self.merged) else '0'
        r = self.r.call('EVALSHA', self.list_sha, '1', pre + '#', pre, str(cursor[0]) if cursor else '',
                        cursor[1] if cursor else '', str(limit), merged)
        return [(int(r[i + 1]), r[i].decode()) for i in range(0, len(r), 2)]


class Pair(Leaves):
    """L4 written by two clients with their own caches (two booking
    replicas), batches alternating: every stale cache must end in MOVED,
    a reload and the right answer."""

    def __init__(self, name, config, epoch):
        super().__init__(name, 'b', True, config, strip=31, epoch=epoch)
        self.multi = True
        self.turn = 0

    def start(self):
        super().start()
        self.other = Leaves(self.name + ' (b)', 'b', True, self.config, strip=31, epoch=self.use_epoch)
        self.other.multi = True
        self.other.parent = self
        self.other.r = Redis(self.r.s.getpeername()[1])
        self.other.setup()

    def run(self, batch):
        self.turn ^= 1
        Leaves.run(self if self.turn else self.other, batch)


# ---------------------------------------------------------------- measuring
def memory_by_class(layout):
    r = layout.r
    cursor = b'0'
    sums, counts = {}, {}
    while True:
        cursor, keys = r.call('SCAN', cursor, 'COUNT', '2000')
        if keys:
            sizes = r.pipeline([['MEMORY', 'USAGE', k, 'SAMPLES', '0'] for k in keys])
            encs = r.pipeline([['OBJECT', 'ENCODING', k] for k in keys])
            for k, n, e in zip(keys, sizes, encs):
                c = layout.key_class(k.decode())
                enc = e.decode() if isinstance(e, bytes) else str(e)
                sums[c] = sums.get(c, 0) + (n or 0)
                counts.setdefault(c, {})
                counts[c][enc] = counts[c].get(enc, 0) + 1
        if cursor == b'0':
            break
    return sums, counts


def load_avg():
    with open('/proc/loadavg') as f:
        return ' '.join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bookings', type=int, default=200000)
    ap.add_argument('--rounds', type=int, default=10)
    ap.add_argument('--batch', type=int, default=64, help='creates per pipelined round trip')
    ap.add_argument('--seed', type=int, default=17)
    ap.add_argument('--layouts', default='L0,L4,L5,REF',
                    help='any of L0,L0c,L0h,L1,L2,L3,L4,L4d,L5,L6,REF,L4x2,L4dx2')
    ap.add_argument('--locality', type=float, default=0.9,
                    help='share of bookings a user makes on one of 3 personal instruments (0: any instrument)')
    ap.add_argument('--reads', type=int, default=20000)
    ap.add_argument('--docs-per-bucket', type=int, default=40,
                    help='linear hashing load: a bucket split whenever documents > this x buckets')
    ap.add_argument('--leaf-max', type=int, default=64,
                    help='a leaf is split past this many members (zset-max-listpack-entries stays 128)')
    a = ap.parse_args()

    print('layout prototype (issue 17): %d planned bookings, %d rounds, batch %d; redis %s; load %s' % (
        a.bookings, a.rounds, a.batch, subprocess.run(['redis-server', '--version'], capture_output=True,
                                                      text=True).stdout.split()[2], load_avg()))
    reqs = workload(a.bookings, a.seed, a.locality)
    print('requests: %d (creates, overlapping attempts, retries); user locality %.2f' % (len(reqs), a.locality))
    all_layouts = {
        'L0': Current(),
        'L0c': Current('L0c config only', ['--hash-max-listpack-value', '1024', '--zset-max-listpack-entries', '1024']),
        'L0h': Current('L0h stage 1', ['--hash-max-listpack-value', '1024']),
        'L1': Leaves('L1 leaves', 's', False),
        'L2': Leaves('L2 compact', 'b', True, ['--hash-max-listpack-value', '1024']),
        'L3': Leaves('L3 merged', 's', True),
        'L4': Leaves('L4 recommended', 'b', True, ['--hash-max-listpack-value', '1024'], strip=31, epoch=True),
        'L5': Leaves('L5 lean', 's', True, strip=31, epoch=True),
        'L6': Leaves('L6 no listings', 'b', True, ['--hash-max-listpack-value', '1024'], strip=31, epoch=True,
                     listings=False),
        'REF': Reference(),
        'L4d': Leaves('L4d dir checks', 'b', True, ['--hash-max-listpack-value', '1024'], strip=31),
        'L4x2': Pair('L4x2 2 writers', ['--hash-max-listpack-value', '1024'], epoch=True),
        'L4dx2': Pair('L4dx2 2 writers', ['--hash-max-listpack-value', '1024'], epoch=False),
    }
    Leaves.LEAF_MAX = a.leaf_max
    Leaves.DOCS_PER_BUCKET = a.docs_per_bucket
    layouts = [all_layouts[x] for x in a.layouts.split(',')]
    try:
        for l in layouts:
            l.start()
            l.mem0 = used_memory(l.r)
            l.cpu0 = cpu_seconds(l.proc.pid)
            l.r.call('CONFIG', 'RESETSTAT')
        per_round = (len(reqs) + a.rounds - 1) // a.rounds
        loads = []
        for rnd in range(a.rounds):
            chunk = reqs[rnd * per_round:(rnd + 1) * per_round]
            order = layouts if rnd % 2 == 0 else list(reversed(layouts))
            for l in order:
                for i in range(0, len(chunk), a.batch):
                    l.run(chunk[i:i + a.batch])
            loads.append(load_avg())
        print('load average after each round: ' + ' | '.join(loads))

        # outcomes must agree
        ref = layouts[0].outcomes
        for l in layouts:
            print('%-12s outcomes %s' % (l.name, dict(sorted(l.outcomes.items()))))
            if isinstance(l, Reference):
                continue  # no idempotency: its retries are new attempts
            if getattr(l, 'multi', False):
                # a MOVED request is sent again after the rest of its batch
                # ran: a different order, so counts may differ by a few; the
                # checks below (no overlap, one document per created booking)
                # are what must hold
                continue
            if {k: v for k, v in l.outcomes.items() if k != 'MOVED'} != {k: v for k, v in ref.items() if k != 'MOVED'}:
                print('MISMATCH in outcomes: %s vs %s' % (l.name, layouts[0].name))
                sys.exit(1)

        rows = []
        for l in layouts:
            st = cmdstats(l.r)
            l.cpu1 = cpu_seconds(l.proc.pid)
            l.mem1 = used_memory(l.r)
            sums, counts = memory_by_class(l)
            # steady state: every outbox trimmed (helper B's retention, after its window)
            l.r.pipeline([['XTRIM', tag(p) + ':outbox', 'MAXLEN', '0'] for p in range(PARTITIONS)])
            l.mem2 = used_memory(l.r)
            ev = st.get('evalsha', (0, 0))
            sp = st.get('eval', (0, 0))
            rows.append((l, st, sums, counts, ev, sp))

        print()
        print('bytes per stored booking (created: %d)' % layouts[0].created)
        hdr = '%-40s' % 'key class (MEMORY USAGE / booking)' + ''.join('%16s' % l.name for l in layouts)
        print(hdr)
        classes = []
        for _, _, sums, _, _, _ in rows:
            for c in sums:
                if c not in classes:
                    classes.append(c)
        for c in classes:
            print('%-40s' % c + ''.join('%16.1f' % (sums.get(c, 0) / l.created) for (l, _, sums, _, _, _) in rows))
        print('%-40s' % 'sum MEMORY USAGE' + ''.join('%16.1f' % (sum(s.values()) / l.created) for (l, _, s, _, _, _) in rows))
        print('%-40s' % 'sum without outbox' + ''.join('%16.1f' % ((sum(s.values()) - s.get('outbox', 0)) / l.created)
                                                       for (l, _, s, _, _, _) in rows))
        print('%-40s' % 'used_memory delta (with outbox)' + ''.join('%16.1f' % ((l.mem1 - l.mem0) / l.created) for l in layouts))
        print('%-40s' % 'used_memory, outbox trimmed (steady)' + ''.join('%16.1f' % ((l.mem2 - l.mem0) / l.created) for l in layouts))
        print()
        print('encodings (keys per encoding):')
        for (l, _, _, counts, _, _) in rows:
            print('  %-12s %s' % (l.name, '; '.join('%s %s' % (c, dict(v)) for c, v in counts.items())))
        print()
        print('%-40s' % 'create step' + ''.join('%16s' % l.name for l in layouts))
        print('%-40s' % 'EVALSHA calls' + ''.join('%16d' % ev[0] for (_, _, _, _, ev, _) in rows))
        print('%-40s' % 'EVALSHA usec_per_call' + ''.join('%16.2f' % (ev[1] / max(ev[0], 1)) for (_, _, _, _, ev, _) in rows))
        print('%-40s' % 'split steps per booking' + ''.join('%16.4f' % (l.split_calls / l.created) for l in layouts))
        print('%-40s' % 'split usec per booking' + ''.join('%16.2f' % (sp[1] / l.created) for (l, _, _, _, _, sp) in rows))
        print('%-40s' % 'Lua usec per booking (create+split)' + ''.join(
            '%16.2f' % ((ev[1] + sp[1]) / l.created) for (l, _, _, _, ev, sp) in rows))
        print('%-40s' % 'redis-server CPU us per request' + ''.join(
            '%16.1f' % ((l.cpu1 - l.cpu0) * 1e6 / len(reqs)) for l in layouts))
        print('commands run inside the create step (calls per request x usec_per_call):')
        for (l, st, _, _, _, _) in rows:
            inner = sorted(((k, c, u) for k, (c, u) in st.items() if k not in ('evalsha', 'eval', 'script|load', 'config|resetstat', 'ping', 'script')),
                           key=lambda x: -x[2])
            print('  %-12s %s' % (l.name, ', '.join('%s %.2fx%.2f' % (k, c / len(reqs), u / max(c, 1)) for k, c, u in inner)))
        base = rows[0][4][1] / max(rows[0][4][0], 1)
        print('%-40s' % 'usec_per_call vs L0' + ''.join('%16.2f' % ((ev[1] / max(ev[0], 1)) / base) for (_, _, _, _, ev, _) in rows))

        # reads (GetBooking's read), same ids everywhere
        rng = random.Random(5)
        ok_ids = [q for q in reqs[:len(reqs)]]
        sample = [ok_ids[rng.randrange(len(ok_ids))] for _ in range(a.reads)]
        for l in layouts:
            l.r.call('CONFIG', 'RESETSTAT')
            for i in range(0, len(sample), 100):
                l.r.pipeline([l.read_cmd(q) for q in sample[i:i + 100]])
            st = cmdstats(l.r)
            name = l.read_cmd(sample[0])[0].lower()
            c, u = st.get(name, (0, 0))
            l.read_usec = u / max(c, 1)
            l.read_name = name
        print('%-40s' % 'document read usec_per_call' + ''.join('%16s' % ('%s %.2f' % (l.read_name, l.read_usec)) for l in layouts))

        # guarantees: no overlap on any calendar; listing pages identical to today's
        instr = sorted({(q.p, q.instr) for q in reqs})
        bad = 0
        for l in layouts:
            for p, i in instr[:: max(1, len(instr) // 300)]:
                cal = sorted(l.calendar(p, i))
                for x, y in zip(cal, cal[1:]):
                    if y[0] < x[1]:
                        bad += 1
        for l in layouts:
            if isinstance(l, Leaves) and l.doc_mode == 'b':
                stored, cursor = 0, b'0'
                while True:
                    cursor, keys = l.r.call('SCAN', cursor, 'MATCH', '{bk:*}:d:*', 'COUNT', '2000')
                    if keys:
                        stored += sum(l.r.pipeline([['HLEN', k] for k in keys]))
                    if cursor == b'0':
                        break
                print('%s: %d documents stored for %d created (%s)' % (
                    l.name, stored, l.created, 'equal' if stored == l.created else 'DIFFERENT'))
        print('overlap check over %d calendars x %d layouts: %d overlapping pairs' % (
            len(instr[:: max(1, len(instr) // 300)]), len(layouts), bad))
        probes = [(0, 'all', '')]
        probes += [(q.p, 'user', q.user) for q in reqs[:: max(1, len(reqs) // 20)]]
        probes += [(q.p, 'org', q.orgs[0]) for q in reqs[:: max(1, len(reqs) // 5)]]
        probes += [(q.p, 'instr', q.instr) for q in reqs[:: max(1, len(reqs) // 20)]]
        diffs, entries = 0, 0
        for p, kind, ident in probes:
            seqs = []
            for l in layouts:
                if isinstance(l, Reference) or not getattr(l, 'listings', True):
                    continue
                got, cursor = [], None
                while True:
                    pg = l.page(p, kind, ident, cursor, 50)
                    got += pg
                    if len(pg) < 50:
                        break
                    cursor = pg[-1]
                seqs.append(got)
            entries += len(seqs[0])
            diffs += sum(1 for s in seqs[1:] if s != seqs[0])
        print('listing pages (50, by cursor) over %d indexes, %d entries: %d differ from L0' % (len(probes), entries, diffs))
        for l in layouts:
            if hasattr(l, 'moved'):
                print('%s: MOVED replies %d' % (l.name, l.moved))
        # Stale caches: the step must answer MOVED (or the right answer), never
        # create a duplicate or an overlap. Retries of created bookings and
        # new requests overlapping a created booking, sent with every cache
        # forgotten (directories, epochs, bucket state), then with the caches.
        rng = random.Random(11)
        probes_q = [reqs[rng.randrange(len(reqs) // 2)] for _ in range(300)]
        for l in layouts:
            if not isinstance(l, Leaves) or l.multi:
                continue  # (two writers: every step already met stale caches)
            saved = (l.dirs, l.meta, l.epoch)
            tally = {}
            for q in probes_q:
                over = Request()
                for f in Request.__slots__:
                    setattr(over, f, getattr(q, f))
                over.rid = q.rid + '-x'
                over.id = derived_id(q.p, over.rid)
                over.s, over.e, over.rs = q.s + 60000, q.s + 3600000, q.s + 60000
                for probe in (q, over):
                    l.dirs, l.meta, l.epoch = {}, {}, {}
                    stale = l.r.call(*l.command(probe))[0].decode()
                    l.dirs, l.meta, l.epoch = saved
                    fresh = l.r.call(*l.command(probe))[0].decode()
                    key = '%s:%s->%s' % ('retry' if probe is q else 'overlap', stale, fresh)
                    tally[key] = tally.get(key, 0) + 1
            print('%s stale-cache probes (stale answer -> answer with the cache): %s' % (l.name, dict(sorted(tally.items()))))
        print('load average at the end: %s' % load_avg())
    finally:
        for l in layouts:
            l.stop()


if __name__ == '__main__':
    main()
