#!/usr/bin/env python3
"""Offline verifier for the files labshare-archive writes besides the audit
trail (the audit file is deploy/verify_audit.py's).

    python3 deploy/verify_archive.py billing-2026.jsonl
    python3 deploy/verify_archive.py bookings-2026.jsonl   # leases-, orders-, projects-2026.jsonl alike

Python 3 standard library only. Prints one line and exits with
    0  "OK billing <year>: <c> charges, <p> postings, <l> ledger lines"
       "OK bookings <year>: <n> bookings" (leases, orders, projects alike)
    1  "BROKEN at line <n>: <kind>"   (the first break, in file order)
    2  the file cannot be read, or bad arguments.

Both files: a header line naming the format, one record per line carrying a
document (base64) and the SHA-256 of its bytes (HASH_MISMATCH), and a
trailer with the counts and the SHA-256 of every byte before it
(TRAILER_MISMATCH; NO_TRAILER, DATA_AFTER_TRAILER; MALFORMED for a line that
is not the format's JSON).

The billing file (labshare-billing-jsonl) also proves the ledger it took out
of Redis balances: each posting document (labshare.billing.v1.Posting, read
here from its protobuf wire bytes) has debits equal to credits per currency
(UNBALANCED_POSTING at the posting's line); each ledger line
("<ms>|<posting>|<counterparty>|<currency>|<debit minus credit>", of the
account named by its key) belongs to an archived posting and is one of its
entries (account, counterparty, currency, signed amount), and every posting
has exactly its entries as lines, so its lines sum to zero
(LEDGER_MISMATCH at the trailer when not; at the line when a ledger line
record's "posting" is not its line's posting). Every charge and posting
record's index member time and every ledger line's time is before the
header's cut_ms (AFTER_CUT); a charge or posting key appears once
(DUPLICATE); every posting an archived charge names (Charge.posting,
subsidy_postings, corrections) is archived too (MISSING_POSTING at the
trailer). After each account list's lines, a "carried_forward" record gives
the list's carried-forward totals per (counterparty, currency) before the
fold and after it: after must be before plus that list's archived lines,
debits and credits apart (CARRIED_FORWARD_MISMATCH); the trailer counts
them ("lists"). The header also carries the audit anchor
(audit_last_sequence, audit_last_hash: the audit file's last entry).

The projects file (labshare-projects-jsonl) also carries, per project, its
budget counters ("budget_counters": {"<instrument>:budget|committed|used":
milliseconds, "<instrument>:budget_version": the project version the budget
was written from}); they must be an object of non-negative integers, committed
zero (MALFORMED otherwise): a project that goes holds no booking's hours.
Its "project" must be the document's name and "version" an integer >= 1
(MALFORMED otherwise; the removal acts on them, and the SHA-256 covers only
the document), and a project appears once (DUPLICATE).

Every file: a name of the form <kind>-<year>.jsonl must match its header's
format and year (MALFORMED at line 1 otherwise).
"""

import os
import re

import base64
import hashlib
import json
import sys
from collections import Counter, defaultdict


# Header format -> the trailer's count field (and the word printed).
FORMATS = {
    "labshare-billing-jsonl": "billing",
    "labshare-bookings-jsonl": "bookings",
    "labshare-leases-jsonl": "leases",
    "labshare-orders-jsonl": "orders",
    "labshare-projects-jsonl": "projects",
}


class Broken(Exception):
    def __init__(self, line, kind):
        super().__init__(kind)
        self.line = line
        self.kind = kind


# ---- protobuf wire format, just what a Posting needs

def _varint(buf, i):
    shift = 0
    value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf):
    """(field number, wire type, value) of one message; bytes for length-delimited."""
    i = 0
    out = []
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("unknown wire type")
        out.append((number, wire, value))
    return out


def _int64(v):
    return v - (1 << 64) if v >= (1 << 63) else v


def _money(buf):
    currency, amount = "", 0
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            currency = value.decode("utf-8")
        elif number == 2 and wire == 0:
            amount = _int64(value)
    return currency, amount


def posting_entries(doc):
    """[(account, counterparty, currency, debit minus credit)] of a Posting."""
    entries = []
    for number, wire, value in _fields(doc):
        if number != 4 or wire != 2:  # Posting.entries
            continue
        account = counterparty = ""
        debit = credit = ("", 0)
        for n, w, v in _fields(value):
            if n == 1 and w == 2:
                account = v.decode("utf-8")
            elif n == 2 and w == 2:
                counterparty = v.decode("utf-8")
            elif n == 3 and w == 2:
                debit = _money(v)
            elif n == 4 and w == 2:
                credit = _money(v)
        if debit[1] < 0 or credit[1] < 0 or (debit[1] == 0) == (credit[1] == 0):
            raise ValueError("an entry needs exactly one positive side")
        currency = debit[0] if debit[1] else credit[0]
        entries.append((account, counterparty, currency, debit[1] - credit[1]))
    return entries


# ---- the files

def _record(line_no, obj):
    doc_b64, digest = obj.get("document"), obj.get("sha256")
    if not isinstance(doc_b64, str) or not isinstance(digest, str):
        raise Broken(line_no, "MALFORMED")
    try:
        doc = base64.b64decode(doc_b64, validate=True)
    except ValueError:
        raise Broken(line_no, "MALFORMED")
    if hashlib.sha256(doc).hexdigest() != digest:
        raise Broken(line_no, "HASH_MISMATCH")
    return doc


def charge_postings(doc):
    """The posting names a Charge names: posting, subsidy_postings, corrections."""
    out = []
    for number, wire, value in _fields(doc):
        if number in (36, 37, 38) and wire == 2:
            out.append(value.decode("utf-8"))
    return out


def _totals(value):
    """{(counterparty, currency): [debit, credit]} of a carried_forward list."""
    if not isinstance(value, list):
        raise ValueError("not a list")
    out = defaultdict(lambda: [0, 0])
    for item in value:
        if not isinstance(item, dict):
            raise ValueError("not an object")
        cp, cur, d, c = (item.get("counterparty"), item.get("currency"), item.get("debit"), item.get("credit"))
        if not isinstance(cp, str) or not isinstance(cur, str) or type(d) is not int or type(c) is not int:
            raise ValueError("bad totals")
        out[(cp, cur)][0] += d
        out[(cp, cur)][1] += c
    return out


def _project_counters_ok(counters):
    """A project's budget counters: non-negative integers, nothing committed."""
    if not isinstance(counters, dict):
        return False
    for field, ms in counters.items():
        if type(ms) is not int or ms < 0:
            return False
        if field.endswith(":committed") and ms != 0:
            return False
    return True


def _project_line(line_no, obj, doc, seen):
    """A projects record: counters as _project_counters_ok says; "project"
    is the document's name (Project field 1; the removal acts on it, and
    the record's SHA-256 covers only the document) and appears once;
    "version" an integer >= 1."""
    if not _project_counters_ok(obj.get("budget_counters")):
        raise Broken(line_no, "MALFORMED")
    try:
        names = [v.decode("utf-8") for number, wire, v in _fields(doc) if number == 1 and wire == 2]
    except (ValueError, IndexError, UnicodeDecodeError):
        raise Broken(line_no, "MALFORMED")
    project, version = obj.get("project"), obj.get("version")
    if not names or names[-1] != project or type(version) is not int or version < 1:
        raise Broken(line_no, "MALFORMED")
    if project in seen:
        raise Broken(line_no, "DUPLICATE")
    seen.add(project)


def verify(path):
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    sha = hashlib.sha256()
    fmt = None
    year = None
    counts = Counter()
    entries = {}  # posting id -> Counter of (account, counterparty, currency, signed)
    seen = defaultdict(Counter)  # posting id -> ledger lines seen, same shape
    trailer = False
    cut_ms = None
    keys_seen = set()
    required = set()  # posting ids archived charges name
    list_totals = defaultdict(lambda: defaultdict(lambda: [0, 0]))  # account key -> (cp, cur) -> [debit, credit]
    cf_keys = set()
    projects_seen = set()  # "project" of the projects file's records
    named = re.match(r"^(billing|bookings|leases|orders|projects)-(\d+)\.jsonl$", os.path.basename(path))
    for n, raw in enumerate(lines, start=1):
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Broken(n, "MALFORMED")
        if not isinstance(obj, dict):
            raise Broken(n, "MALFORMED")
        if trailer:
            raise Broken(n, "DATA_AFTER_TRAILER")
        if n == 1:
            fmt = obj.get("format")
            year = obj.get("year")
            if fmt not in FORMATS or obj.get("version") != 1:
                raise Broken(n, "MALFORMED")
            if named and (named.group(1) != FORMATS[fmt] or str(year) != named.group(2)):
                raise Broken(n, "MALFORMED")
            if fmt == "labshare-billing-jsonl":
                cut_ms = obj.get("cut_ms")
                if type(cut_ms) is not int:
                    raise Broken(n, "MALFORMED")
        elif "trailer" in obj:
            if obj.get("trailer") is not True or obj.get("sha256") != sha.hexdigest():
                raise Broken(n, "TRAILER_MISMATCH")
            if fmt != "labshare-billing-jsonl":
                if obj.get(FORMATS[fmt]) != counts["record"]:
                    raise Broken(n, "TRAILER_MISMATCH")
            else:
                for kind in ("charges", "postings", "ledger_lines"):
                    if obj.get(kind) != counts[kind[:-1]]:
                        raise Broken(n, "TRAILER_MISMATCH")
                if obj.get("lists") != len(cf_keys):
                    raise Broken(n, "TRAILER_MISMATCH")
                for posting, lines_seen in seen.items():
                    if posting not in entries:
                        raise Broken(n, "LEDGER_MISMATCH")
                for posting, expected in entries.items():
                    if seen.get(posting, Counter()) != expected:
                        raise Broken(n, "LEDGER_MISMATCH")
                for posting in required:
                    if posting not in entries:
                        raise Broken(n, "MISSING_POSTING")
            trailer = True
            continue
        elif fmt != "labshare-billing-jsonl":
            doc = _record(n, obj)
            if fmt == "labshare-projects-jsonl":
                _project_line(n, obj, doc, projects_seen)
            counts["record"] += 1
        else:
            kind = obj.get("kind")
            key = obj.get("key")
            if kind not in ("charge", "posting", "ledger_line", "carried_forward") or not isinstance(key, str):
                raise Broken(n, "MALFORMED")
            if kind == "carried_forward":
                try:
                    before, after = _totals(obj.get("before")), _totals(obj.get("after"))
                except ValueError:
                    raise Broken(n, "MALFORMED")
                if key in cf_keys:
                    raise Broken(n, "MALFORMED")
                cf_keys.add(key)
                want = defaultdict(lambda: [0, 0])
                for k, v in list(before.items()) + list(list_totals[key].items()):
                    want[k][0] += v[0]
                    want[k][1] += v[1]
                if dict(want) != dict(after):
                    raise Broken(n, "CARRIED_FORWARD_MISMATCH")
                sha.update(raw)
                sha.update(b"\n")
                continue
            doc = _record(n, obj)
            counts[kind] += 1
            if kind in ("charge", "posting"):
                if key in keys_seen:
                    raise Broken(n, "DUPLICATE")
                keys_seen.add(key)
                member = obj.get("index_member")
                try:
                    stamp = member.split("|", 1)[0]
                    ms = int(stamp)
                except (AttributeError, ValueError):
                    raise Broken(n, "MALFORMED")
                # "<ns, 19 digits>|<id>"; earlier files "<ms, 15 digits>|<id>".
                if len(stamp) == 19:
                    ms //= 1000000
                if ms >= cut_ms:
                    raise Broken(n, "AFTER_CUT")
            if kind == "charge":
                try:
                    for name in charge_postings(doc):
                        required.add(name.rsplit("/", 1)[-1])
                except (ValueError, UnicodeDecodeError):
                    raise Broken(n, "MALFORMED")
            elif kind == "posting":
                try:
                    parsed = posting_entries(doc)
                except (ValueError, UnicodeDecodeError):
                    raise Broken(n, "MALFORMED")
                per_currency = defaultdict(int)
                for _, _, currency, signed in parsed:
                    per_currency[currency] += signed
                if len(parsed) < 2 or any(v != 0 for v in per_currency.values()):
                    raise Broken(n, "UNBALANCED_POSTING")
                entries[key.rsplit(":", 1)[-1]] = Counter(parsed)
            elif kind == "ledger_line":
                fields = doc.decode("utf-8", "replace").split("|")
                prefix = "{billing}:acct:"
                if len(fields) != 5 or not key.startswith(prefix):
                    raise Broken(n, "MALFORMED")
                try:
                    ms = int(fields[0])
                    signed = int(fields[4])
                except ValueError:
                    raise Broken(n, "MALFORMED")
                if obj.get("posting") != fields[1]:
                    raise Broken(n, "LEDGER_MISMATCH")
                if ms >= cut_ms:
                    raise Broken(n, "AFTER_CUT")
                seen[fields[1]][(key[len(prefix):], fields[2], fields[3], signed)] += 1
                totals = list_totals[key][(fields[2], fields[3])]
                if signed > 0:
                    totals[0] += signed
                else:
                    totals[1] -= signed
        sha.update(raw)
        sha.update(b"\n")
    if not lines:
        raise Broken(0, "MALFORMED")
    if not trailer:
        raise Broken(len(lines), "NO_TRAILER")
    if fmt != "labshare-billing-jsonl":
        return "OK %s %s: %d %s" % (FORMATS[fmt], year, counts["record"], FORMATS[fmt])
    return "OK billing %s: %d charges, %d postings, %d ledger lines" % (
        year, counts["charge"], counts["posting"], counts["ledger_line"])


def main(argv):
    if len(argv) != 2 or argv[1].startswith("-"):
        print("usage: verify_archive.py FILE (billing-, bookings-, leases-, orders- or projects-<year>.jsonl)",
              file=sys.stderr)
        return 2
    try:
        print(verify(argv[1]))
        return 0
    except OSError as e:
        print("cannot read %s: %s" % (argv[1], e), file=sys.stderr)
        return 2
    except Broken as b:
        print("BROKEN at line %d: %s" % (b.line, b.kind))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
