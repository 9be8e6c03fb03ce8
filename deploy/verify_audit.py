#!/usr/bin/env python3
"""Offline verifier for a LabShare audit-trail export (AUDIT_EXPORT_FORMAT_JSONL).

    python3 deploy/verify_audit.py export.jsonl [--anchor SEQ:HEXHASH ...]
                                   [--public_key=audit.pub.pem]

Recomputes the AUDIT_V1 hash of every entry of a file written by
ExportAuditTrail (see AuditEntry and AuditExportFormat in
proto/labshare/usage/v1/usage.proto) and checks every link, the sequence
numbers, the header and the trailer. Python 3 standard library only, except
--public_key, which needs python3-cryptography (Debian package).

Prints one line and exits with
    0  "OK <n> entries, head <last sequence> <last hash hex>"
    1  "BROKEN at <sequence>: <kind>"   (the first break, in file order)
    2  the file cannot be read, or bad arguments.

Kinds are those of VerifyAuditChain (HASH_MISMATCH, LINK_MISMATCH,
SEQUENCE_GAP, UNKNOWN_ALGORITHM, ANCHOR_MISMATCH) plus the file's own:
MALFORMED (a line is not the JSON the format defines; <sequence> is the one
expected there), TRAILER_MISMATCH, NO_TRAILER, DATA_AFTER_TRAILER, and with
--public_key HEAD_SIGNATURE_INVALID.

Per entry n (as VerifyAuditChain does): its "sequence" must be n
(SEQUENCE_GAP); the SHA-256 recomputed from its fields and its own
previous_hash must equal its "hash" (HASH_MISMATCH); its previous_hash must
equal the hash of entry n - 1, or for the first entry the header's
previous_hash (LINK_MISMATCH).

A file proves only its own entries and links. To tie it to earlier history,
pass the anchors you kept (the last_hash of the previous export, or a head /
verification result) with --anchor SEQ:HEX: an anchor at start_sequence - 1 is
compared with the header's previous_hash, one inside the file with that
entry's hash (ANCHOR_MISMATCH); anchors outside the file are reported on
stderr as not checked.

The signed head: with --public_key=PEM (the usage service's public key,
`openssl pkey -in audit.pem -pubout -out audit.pub.pem`), the trailer must
carry the head's signature (an export that ends at the head, end_sequence 0,
of a signed chain) and it must verify over "LABSHARE-AUDIT-HEAD-V1" ||
last_sequence (8 bytes big-endian) || last_hash: Ed25519, or ECDSA P-256 with
SHA-256 (AuditChainHead in usage.proto). Otherwise HEAD_SIGNATURE_INVALID at
the last sequence: whoever rewrote the chain in Redis, even with consistent
hashes, did not have the service's private key.
"""

import argparse
import base64
import hashlib
import json
import struct
import sys

DOMAIN = b"LABSHARE-AUDIT-V1"
HEX = set("0123456789abcdef")
ZERO_HASH = "0" * 64


class Broken(Exception):
    def __init__(self, sequence, kind):
        super().__init__("BROKEN at %d: %s" % (sequence, kind))
        self.sequence = sequence
        self.kind = kind


def is_int(v):
    return type(v) is int


def is_hash(v):
    return isinstance(v, str) and len(v) == 64 and set(v) <= HEX


def str_field(b):
    return struct.pack(">I", len(b)) + b


def entry_hash(o, seq):
    """AUDIT_V1 hash of an entry line; raises Broken(seq, MALFORMED) on bad fields."""
    try:
        parts = [DOMAIN, struct.pack(">Q", o["sequence"])]
        for k in ("source_service", "event_id", "event_type", "payload_type"):
            if not isinstance(o[k], str):
                raise Broken(seq, "MALFORMED")
            parts.append(str_field(o[k].encode("utf-8")))
        for k in ("event_time", "append_time"):
            t = o[k]
            if not (isinstance(t, dict) and is_int(t.get("seconds")) and is_int(t.get("nanos"))):
                raise Broken(seq, "MALFORMED")
            parts.append(struct.pack(">qI", t["seconds"], t["nanos"]))
        if not isinstance(o["payload"], str):
            raise Broken(seq, "MALFORMED")
        parts.append(str_field(base64.b64decode(o["payload"], validate=True)))
        if not is_hash(o["previous_hash"]):
            raise Broken(seq, "MALFORMED")
        parts.append(bytes.fromhex(o["previous_hash"]))
    except (KeyError, TypeError, ValueError, struct.error, UnicodeError):
        raise Broken(seq, "MALFORMED")
    return hashlib.sha256(b"".join(parts)).hexdigest()


def parse_anchor(text):
    seq, sep, h = text.partition(":")
    h = h.lower()
    if not sep or not seq.isdigit() or int(seq) < 0 or not is_hash(h):
        raise argparse.ArgumentTypeError("expected SEQ:HEX with a 64-digit SHA-256, got %r" % text)
    return int(seq), h


HEAD_DOMAIN = b"LABSHARE-AUDIT-HEAD-V1"


def load_public_key(path):
    """The public key of a PEM file; Ed25519 or EC P-256. Raises ValueError."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    with open(path, "rb") as f:
        key = load_pem_public_key(f.read())
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return key
    raise ValueError("not an Ed25519 or ECDSA P-256 public key")


def check_head_signature(key, trailer, last_seq, last_hash):
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    sig = trailer.get("head_signature")
    if not isinstance(sig, str) or not sig:
        print("the export carries no head signature: export up to the head (end_sequence 0) "
              "of a signed chain", file=sys.stderr)
        raise Broken(last_seq, "HEAD_SIGNATURE_INVALID")
    try:
        raw = base64.b64decode(sig, validate=True)
    except ValueError:
        raise Broken(last_seq, "HEAD_SIGNATURE_INVALID")
    message = HEAD_DOMAIN + struct.pack(">Q", last_seq) + bytes.fromhex(last_hash)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, message, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(raw, message)
    except InvalidSignature:
        raise Broken(last_seq, "HEAD_SIGNATURE_INVALID")


def verify(lines, anchors, public_key=None):
    """Returns (entries, last_sequence, last_hash_hex); raises Broken."""
    if not lines:
        raise Broken(0, "MALFORMED")

    def load(raw, seq):
        try:
            o = json.loads(raw.decode("utf-8"))
        except (UnicodeError, ValueError):
            raise Broken(seq, "MALFORMED")
        if not isinstance(o, dict):
            raise Broken(seq, "MALFORMED")
        return o

    header = load(lines[0], 0)
    start, end = header.get("start_sequence"), header.get("end_sequence")
    if (header.get("format") != "labshare-audit-jsonl" or header.get("version") != 1
            or not is_int(start) or not is_int(end) or start < 1 or end <= start
            or not is_hash(header.get("previous_hash"))):
        raise Broken(start if is_int(start) else 0, "MALFORMED")
    if header.get("algorithm") != "SHA-256":
        raise Broken(start, "UNKNOWN_ALGORITHM")
    if start == 1 and header["previous_hash"] != ZERO_HASH:
        raise Broken(1, "LINK_MISMATCH")
    anchored = {}
    for s, h in anchors:
        if start - 1 <= s < end:
            anchored.setdefault(s, []).append(h)
        else:
            print("anchor %d outside the file [%d, %d): not checked" % (s, start, end), file=sys.stderr)
    for h in anchored.get(start - 1, []):
        if start > 1 and h != header["previous_hash"]:
            raise Broken(start - 1, "ANCHOR_MISMATCH")

    prev, seq, count = header["previous_hash"], start, 0
    for i, raw in enumerate(lines[1:], start=1):
        o = load(raw, seq)
        if "trailer" in o:
            if i != len(lines) - 1:
                raise Broken(seq, "DATA_AFTER_TRAILER")
            if seq < end:
                raise Broken(seq, "SEQUENCE_GAP")
            if (o.get("trailer") is not True or o.get("entries") != end - start
                    or o.get("last_sequence") != end - 1 or o.get("last_hash") != prev):
                raise Broken(end - 1, "TRAILER_MISMATCH")
            if public_key is not None:
                check_head_signature(public_key, o, end - 1, prev)
            return count, end - 1, prev
        if not is_int(o.get("sequence")):
            raise Broken(seq, "MALFORMED")
        if o["sequence"] != seq or seq >= end:
            raise Broken(seq, "SEQUENCE_GAP")
        h = entry_hash(o, seq)
        if not is_hash(o.get("hash")):
            raise Broken(seq, "MALFORMED")
        if h != o["hash"]:
            raise Broken(seq, "HASH_MISMATCH")
        if o["previous_hash"] != prev:
            raise Broken(seq, "LINK_MISMATCH")
        for a in anchored.get(seq, []):
            if a != h:
                raise Broken(seq, "ANCHOR_MISMATCH")
        prev, seq, count = h, seq + 1, count + 1
    raise Broken(seq, "NO_TRAILER")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="the .jsonl file written by ExportAuditTrail")
    parser.add_argument("--anchor", action="append", default=[], type=parse_anchor,
                        metavar="SEQ:HEX", help="a (sequence, hash) pair kept from earlier")
    parser.add_argument("--public_key", metavar="PEM",
                        help="the usage service's public key: the head's signature must verify")
    args = parser.parse_args(argv)
    public_key = None
    if args.public_key:
        try:
            public_key = load_public_key(args.public_key)
        except ImportError:
            print("--public_key needs python3-cryptography (apt-get install python3-cryptography)",
                  file=sys.stderr)
            return 2
        except (OSError, ValueError) as e:
            print("cannot use public key %s: %s" % (args.public_key, e), file=sys.stderr)
            return 2
    try:
        with open(args.export, "rb") as f:
            data = f.read()
    except OSError as e:
        print("cannot read %s: %s" % (args.export, e), file=sys.stderr)
        return 2
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final line end
    try:
        n, last_seq, last_hash = verify(lines, args.anchor, public_key)
    except Broken as b:
        print(b)
        return 1
    print("OK %d entries, head %d %s%s" % (n, last_seq, last_hash,
                                          ", head signature valid" if public_key is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
