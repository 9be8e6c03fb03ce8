#!/usr/bin/env python3
"""Every error reason an RPC's proto comment lists is named by some test.

For each rpc in proto/labshare/, the reasons after "Errors:" in its comment
(UPPER_SNAKE words that are not gRPC codes) must appear in quotes ("REASON")
in a test file under tests/ or among the console's browser tests that also
names the rpc, so that the situation the comment describes for it is proven
for that rpc. Reasons most methods share (GENERIC: INVALID_FIELD, scope,
etags, page tokens...) need only be named by some test; they are proven
method by method by error_contract_test, authz_matrix_test and the
services' own tests. A floor, not a proof: the file names both, which does
not show that one test asserts that reason of that rpc. A reason that
cannot be reached in a test goes into UNREACHABLE below with the reason why.

usage: reasons_named_test.py [REPO_ROOT]
"""
import glob
import os
import re
import sys

# (rpc, reason) pairs no test can reach, and why.
UNREACHABLE = {
}

GENERIC = {'INVALID_FIELD', 'INVALID_NAME', 'ORGANIZATION_SCOPE', 'ROLE_NOT_ALLOWED', 'INVALID_PAGE_TOKEN',
           'ETAG_MISMATCH', 'USER_SCOPE', 'INVALID_UPDATE_MASK', 'INVENTORY_UNAVAILABLE', 'REQUEST_ID_REUSED',
           'INVALID_INTERVAL', 'INVALID_PERIOD'}

CODES = {'INVALID_ARGUMENT', 'NOT_FOUND', 'FAILED_PRECONDITION', 'PERMISSION_DENIED', 'ALREADY_EXISTS',
         'RESOURCE_EXHAUSTED', 'DEADLINE_EXCEEDED', 'OUT_OF_RANGE', 'UNAUTHENTICATED', 'UNAVAILABLE',
         'ABORTED', 'INTERNAL', 'CANCELLED', 'UNIMPLEMENTED', 'DATA_LOSS', 'UNKNOWN'}


def ListedReasons(errors):
    """The reasons of an "Errors:" text: the UPPER_SNAKE words inside the
    brackets after each code, except in an explanation (after a ':' up to the
    next ',', ';' or the closing bracket), which may name enum values."""
    out = set()
    depth, explaining, i = 0, False, 0
    while i < len(errors):
        c = errors[i]
        if c == '(':
            depth += 1
        elif c == ')':
            depth = max(depth - 1, 0)
            if depth == 0:
                explaining = False
        elif c in ';,':
            explaining = False
        elif c == ':' and depth >= 1:
            explaining = True
        m = re.match(r'[A-Z][A-Z0-9]+(?:_[A-Z0-9]+)+\b', errors[i:])
        if m and (i == 0 or not (errors[i - 1].isalnum() or errors[i - 1] == '_')):
            if depth >= 1 and not explaining:
                out.add(m.group(0))
            i += len(m.group(0))
            continue
        i += 1
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', '..')
    texts = []
    for pattern in ('tests/**/*.cc', 'tests/**/*.h', 'services/console/e2e/**/*.ts'):
        for f in glob.glob(os.path.join(root, pattern), recursive=True):
            with open(f, errors='ignore') as fh:
                texts.append(fh.read())
    tests = '\n'.join(texts)

    def Named(rpc, reason):
        quoted = '"%s"' % reason
        if reason in GENERIC:
            return quoted in tests
        word = re.compile(r'\b%s\b' % rpc)
        return any(quoted in t and word.search(t) for t in texts)

    missing = []
    for proto in sorted(glob.glob(os.path.join(root, 'proto/labshare/**/*.proto'), recursive=True)):
        comment = []
        with open(proto) as fh:
            for line in fh:
                stripped = line.strip()
                if stripped.startswith('//'):
                    comment.append(stripped[2:])
                    continue
                m = re.match(r'rpc (\w+)\(', stripped)
                if not m:
                    comment = []  # only the comment right above an rpc is its contract
                    continue
                if m:
                    text = ' '.join(comment)
                    at = text.find('Errors:')
                    if at >= 0:
                        reasons = ListedReasons(text[at:]) - CODES
                        for r in sorted(reasons):
                            if not Named(m.group(1), r) and (m.group(1), r) not in UNREACHABLE:
                                missing.append('%s %s %s' % (os.path.basename(proto), m.group(1), r))
                comment = []
    if missing:
        print('reasons an rpc comment lists that no test file naming the rpc names ("REASON"):')
        for line in missing:
            print('  ' + line)
        print('write a test that puts the platform in the situation the comment describes and asserts '
              'the code and the reason, or list the pair in UNREACHABLE with why')
        return 1
    print('every listed reason is named by a test file that names its rpc')
    return 0


if __name__ == '__main__':
    sys.exit(main())
