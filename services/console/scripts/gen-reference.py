#!/usr/bin/python3
"""Writes docs/api-reference.md, the HTTP API reference, from proto/.

Every RPC of the public services (inventory, booking, billing, usage, notify)
as the console gateway serves it (Connect protocol: POST JSON to
/<package>.<Service>/<Method>), with its comment from the proto verbatim
(roles, errors), its request and response messages (field names as the
protobuf JSON mapping writes them) and the enums they use.

  services/console/scripts/gen-reference.py [--out FILE] [--check FILE]

--out writes the reference (default: docs/api-reference.md at the repository
root); --check FILE regenerates into a temporary file and fails, showing the
difference, when FILE is not what the protos give (tests: api_reference_test).
Needs protoc and Debian's python3-protobuf.
"""

import argparse
import difflib
import os
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
PROTO_DIR = os.path.join(ROOT, 'proto')
PUBLIC = [  # (package, service, short name) in the order of the reference
    ('labshare.inventory.v1', 'InventoryService', 'inventory'),
    ('labshare.booking.v1', 'BookingService', 'booking'),
    ('labshare.billing.v1', 'BillingService', 'billing'),
    ('labshare.usage.v1', 'UsageService', 'usage'),
    ('labshare.notify.v1', 'NotificationService', 'notify'),
    ('labshare.notify.v1', 'WebhookService', 'notify'),
    ('labshare.notify.v1', 'CalendarFeedService', 'notify'),
]
SIGN_IN = ('labshare.identity.v1', 'IdentityService')
CONVENTIONS_FILE = 'labshare/type/v1/types.proto'

F = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    F.TYPE_DOUBLE: 'double', F.TYPE_FLOAT: 'float', F.TYPE_INT64: 'int64', F.TYPE_UINT64: 'uint64',
    F.TYPE_INT32: 'int32', F.TYPE_FIXED64: 'fixed64', F.TYPE_FIXED32: 'fixed32', F.TYPE_BOOL: 'bool',
    F.TYPE_STRING: 'string', F.TYPE_BYTES: 'bytes', F.TYPE_UINT32: 'uint32', F.TYPE_SFIXED32: 'sfixed32',
    F.TYPE_SFIXED64: 'sfixed64', F.TYPE_SINT32: 'sint32', F.TYPE_SINT64: 'sint64',
}
# How the protobuf JSON mapping writes a type, where that is not obvious.
JSON_FORM = {
    'int64': 'JSON string', 'uint64': 'JSON string', 'fixed64': 'JSON string', 'sfixed64': 'JSON string',
    'sint64': 'JSON string', 'bytes': 'base64 string',
}
WELL_KNOWN = {
    'google.protobuf.Timestamp': 'Timestamp (RFC 3339 string)',
    'google.protobuf.Duration': 'Duration (string, e.g. "3600s")',
    'google.protobuf.FieldMask': 'FieldMask (string, e.g. "displayName,category")',
    'google.protobuf.Empty': 'Empty (`{}`)',
    'google.protobuf.Struct': 'Struct (JSON object)',
    'google.protobuf.Any': 'Any (JSON object with "@type")',
}


def protos():
    out = []
    for dirpath, _, files in os.walk(os.path.join(PROTO_DIR, 'labshare')):
        for f in files:
            if f.endswith('.proto'):
                out.append(os.path.relpath(os.path.join(dirpath, f), PROTO_DIR))
    return sorted(out)


def descriptor_set():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'set.pb')
        subprocess.run(['protoc', '-I', PROTO_DIR, '--include_imports', '--include_source_info',
                        '--descriptor_set_out=' + out] + protos(), check=True, cwd=PROTO_DIR)
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, 'rb') as f:
            fds.ParseFromString(f.read())
        return fds


def comment_text(text):
    """A comment as written, without the one space after //."""
    lines = text.rstrip('\n').split('\n')
    return '\n'.join(l[1:] if l.startswith(' ') else l for l in lines).strip('\n')


class Index:
    """Every message and enum by full name, with its comment and file."""

    def __init__(self, fds):
        self.files = {f.name: f for f in fds.file}
        self.messages = {}   # full name -> (DescriptorProto, file, path)
        self.enums = {}      # full name -> (EnumDescriptorProto, file, path)
        self.order = {}      # full name -> (file name, position) for stable order
        self.comments = {}   # (file name, path tuple) -> Location
        for f in fds.file:
            for loc in f.source_code_info.location:
                self.comments[(f.name, tuple(loc.path))] = loc
            for i, m in enumerate(f.message_type):
                self._message(f, m, f.package, (4, i))
            for i, e in enumerate(f.enum_type):
                self._add_enum(f, e, f.package, (5, i))

    def _message(self, f, m, scope, path):
        name = scope + '.' + m.name
        self.messages[name] = (m, f, path)
        self.order[name] = (f.name, len(self.order))
        for i, n in enumerate(m.nested_type):
            self._message(f, n, name, path + (3, i))
        for i, e in enumerate(m.enum_type):
            self._add_enum(f, e, name, path + (4, i))

    def _add_enum(self, f, e, scope, path):
        name = scope + '.' + e.name
        self.enums[name] = (e, f, path)
        self.order[name] = (f.name, len(self.order))

    def comment(self, file_name, path, trailing=True):
        loc = self.comments.get((file_name, tuple(path)))
        if loc is None:
            return ''
        parts = [comment_text(loc.leading_comments)] if loc.leading_comments else []
        if trailing and loc.trailing_comments:
            parts.append(comment_text(loc.trailing_comments))
        return '\n'.join(p for p in parts if p)

    def header(self, file_name):
        """The file's header comment: the one above `package`."""
        loc = self.comments.get((file_name, (2,)))
        if loc is None:
            return ''
        parts = [comment_text(c) for c in loc.leading_detached_comments]
        if loc.leading_comments:
            parts.append(comment_text(loc.leading_comments))
        return '\n\n'.join(p for p in parts if p)


def divider(text):
    """'---------- organisations' (a section line in a service) -> 'organisations'."""
    t = text.strip()
    if '\n' in t or len(t) < 6 or t[0] not in '-=' or t[:5].strip(t[0]):
        return None
    return t.strip(t[0]).strip() or None


def method_groups(ix, f, s, spath):
    """The section line each method of a service stands under, or ''."""
    groups, current = [], ''
    svc = ix.comments.get((f.name, tuple(spath)))
    if svc is not None and svc.trailing_comments:
        current = divider(comment_text(svc.trailing_comments)) or current
    for i in range(len(s.method)):
        loc = ix.comments.get((f.name, tuple(spath) + (2, i)))
        if loc is not None:
            for c in loc.leading_detached_comments:
                current = divider(comment_text(c)) or current
        groups.append(current)
    return groups


def anchor(full_name):
    return full_name.replace('.', '-').lower()


def method_anchor(service, method):
    return (service + '-' + method).lower()


def escape_cell(text):
    """One line for a table cell: pipes and HTML escaped, emphasis marks kept literal."""
    out = []
    in_code = False
    for ch in ' '.join(text.split()):
        if ch == '`':
            in_code = not in_code
            out.append(ch)
        elif ch == '|':
            out.append('\\|')
        elif in_code:
            out.append(ch)
        elif ch == '<':
            out.append('&lt;')
        elif ch == '>':
            out.append('&gt;')
        elif ch in '*_[]\\':
            out.append('\\' + ch)
        else:
            out.append(ch)
    if in_code:  # an unbalanced backtick would swallow the rest of the row
        return escape_cell(text.replace('`', "'"))
    return ''.join(out)


def text_block(text):
    """A comment verbatim, in a fence that no line of it closes."""
    fence = '```'
    while fence in text:
        fence += '`'
    return f'{fence}text\n{text}\n{fence}\n'


class Writer:
    def __init__(self, index):
        self.ix = index
        self.used_messages = []
        self.used_enums = []
        self._seen = set()

    # ------------------------------------------------------------ reachability
    def reach(self, type_name):
        name = type_name.lstrip('.')
        if name in self._seen or name in WELL_KNOWN:
            return
        self._seen.add(name)
        if name in self.ix.enums:
            self.used_enums.append(name)
            return
        if name not in self.ix.messages:
            return
        m = self.ix.messages[name][0]
        if not m.options.map_entry:
            self.used_messages.append(name)
        for fld in m.field:
            if fld.type_name:
                self.reach(fld.type_name)

    # ------------------------------------------------------------ types
    def type_of(self, fld):
        """Markdown of a field's type (map, repeated, optional marked)."""
        if fld.type_name:
            name = fld.type_name.lstrip('.')
            msg = self.ix.messages.get(name)
            if msg and msg[0].options.map_entry:
                k, v = msg[0].field[0], msg[0].field[1]
                return f'map&lt;{self.base_type(k)}, {self.base_type(v)}&gt; (JSON object)'
        base = self.base_type(fld)
        if fld.label == F.LABEL_REPEATED:
            return f'repeated {base} (JSON array)'
        if fld.proto3_optional:
            return f'optional {base}'
        return base

    def base_type(self, fld):
        if fld.type_name:
            name = fld.type_name.lstrip('.')
            if name in WELL_KNOWN:
                return WELL_KNOWN[name]
            kind = 'enum ' if name in self.ix.enums else ''
            return f'{kind}[{short_name(name)}](#{anchor(name)})'
        scalar = SCALARS[fld.type]
        return f'{scalar} ({JSON_FORM[scalar]})' if scalar in JSON_FORM else scalar

    # ------------------------------------------------------------ sections
    def fields_table(self, name):
        m, f, path = self.ix.messages[name]
        if not m.field:
            return 'No fields (`{}`).\n'
        rows = ['| Field (JSON) | Type | Description |', '|---|---|---|']
        for i, fld in enumerate(m.field):
            json = fld.json_name or lower_camel(fld.name)
            field_cell = f'`{json}`' + (f' ({escape_cell(fld.name)})' if json != fld.name else '')
            desc = self.ix.comment(f.name, path + (2, i))
            if fld.HasField('oneof_index') and not fld.proto3_optional:
                desc = (desc + ' ' if desc else '') + f'(One of `{m.oneof_decl[fld.oneof_index].name}`.)'
            rows.append(f'| {field_cell} | {self.type_of(fld)} | {escape_cell(desc)} |')
        return '\n'.join(rows) + '\n'

    def message_section(self, name):
        m, f, path = self.ix.messages[name]
        out = [f'<a id="{anchor(name)}"></a>\n', f'#### {short_name(name)}\n', f'`{name}`\n']
        c = self.ix.comment(f.name, path)
        if c:
            out.append(text_block(c))
        out.append(self.fields_table(name))
        return '\n'.join(out)

    def enum_section(self, name):
        e, f, path = self.ix.enums[name]
        out = [f'<a id="{anchor(name)}"></a>\n', f'#### {short_name(name)}\n', f'`{name}`; JSON: the value\'s name as a string.\n']
        c = self.ix.comment(f.name, path)
        if c:
            out.append(text_block(c))
        rows = ['| Value | Number | Description |', '|---|---|---|']
        for i, v in enumerate(e.value):
            rows.append(f'| `{v.name}` | {v.number} | {escape_cell(self.ix.comment(f.name, path + (2, i)))} |')
        out.append('\n'.join(rows) + '\n')
        return '\n'.join(out)


def short_name(full):
    """labshare.booking.v1.Booking.State -> Booking.State"""
    parts = full.split('.')
    for i, p in enumerate(parts):
        if p[:1].isupper():
            return '.'.join(parts[i:])
    return full


def lower_camel(name):
    out, up = [], False
    for ch in name:
        if ch == '_':
            up = True
        else:
            out.append(ch.upper() if up else ch)
            up = False
    return ''.join(out)


def find_service(ix, package, service):
    for f in ix.files.values():
        if f.package != package:
            continue
        for i, s in enumerate(f.service):
            if s.name == service:
                return f, s, (6, i)
    raise SystemExit(f'gen-reference: no service {package}.{service} in proto/')


def render():
    ix = Index(descriptor_set())
    w = Writer(ix)
    services = [(pkg, svc, short, *find_service(ix, pkg, svc)) for pkg, svc, short in PUBLIC]
    for _, _, _, f, s, _ in services:
        for m in s.method:
            w.reach(m.input_type)
            w.reach(m.output_type)
    by_package = {}
    for name in sorted(w.used_messages + w.used_enums, key=lambda n: ix.order[n]):
        pkg = (ix.messages.get(name) or ix.enums.get(name))[1].package
        by_package.setdefault(pkg, []).append(name)

    out = []
    out.append('# LabShare HTTP API reference\n')
    out.append('<!-- Generated by services/console/scripts/gen-reference.py from proto/. Do not edit: '
               'change the proto comments and run the script (api_reference_test fails when this file is stale). -->\n')
    out.append('Every method of the public services, as the console gateway (`services/console`) serves it '
               'to browsers and to member firms\' own scripts. The comment of each method is the contract '
               '(who may call it, what it answers, which errors); it is quoted here verbatim from `proto/`.\n')

    # ---------------------------------------------------------------- contents
    out.append('## Contents\n')
    out.append('- [Calling the API](#calling-the-api)')
    out.append('- [Conventions of every method](#conventions-of-every-method)')
    for pkg, svc, short, f, s, spath in services:
        out.append(f'- [{svc}](#{anchor(pkg + "." + svc)}) ({short}, {len(s.method)} methods)')
        lines = {}
        for m, g in zip(s.method, method_groups(ix, f, s, spath)):
            lines.setdefault(g, []).append(f'[{m.name}](#{method_anchor(svc, m.name)})')
        for g, links in lines.items():
            out.append(f'  - {g + ": " if g else ""}{", ".join(links)}')
    out.append(f'- [{SIGN_IN[1]}: sign-in only](#{anchor(".".join(SIGN_IN))})')
    out.append('- [Messages and enums](#messages-and-enums)')
    for pkg in by_package:
        out.append(f'  - [{pkg}](#{anchor(pkg)})')
    out.append('')

    # ---------------------------------------------------------------- calling
    out.append('## Calling the API\n')
    out.append('Each method is an HTTP endpoint of the console gateway (the console URL `deploy/run-local.sh` '
               'prints, `http://127.0.0.1:50056` by default), spoken in the '
               '[Connect protocol](https://connectrpc.com/docs/protocol): `POST /<package>.<Service>/<Method>` with '
               'the request message as JSON. The same paths also accept gRPC-Web and gRPC. Scripts authenticate with '
               'the LabShare access token of `labshare login` (stored in '
               '`${XDG_CONFIG_HOME:-~/.config}/labshare/credentials.json`, valid 15 minutes; any `labshare` command '
               'renews it); the console\'s own pages use their session cookie instead.\n')
    out.append('```sh\n'
               'CONSOLE=http://127.0.0.1:50056\n'
               'labshare whoami >/dev/null   # renews the stored token when it is about to expire\n'
               'TOKEN=$(python3 -c \'import json,os; print(json.load(open(os.path.expanduser("~/.config/labshare/credentials.json")))["access_token"])\')\n'
               'curl -sS -X POST "$CONSOLE/labshare.inventory.v1.InventoryService/ListInstruments" \\\n'
               '  -H "Content-Type: application/json" \\\n'
               '  -H "Authorization: Bearer $TOKEN" \\\n'
               '  -d \'{"pageSize": 10}\'\n'
               '```\n')
    out.append('- **Request and response bodies** use the [protobuf JSON mapping](https://protobuf.dev/programming-guides/json/): '
               'field names in lowerCamelCase as listed below (the proto names are accepted too), enums as their '
               'value names, 64-bit integers as strings, `Timestamp` as RFC 3339, `Duration` as `"3600s"`, '
               '`FieldMask` as a comma-separated string of lowerCamel paths; fields at their default value are '
               'left out of answers.')
    out.append('- **Errors** answer a non-200 status with Connect\'s JSON error body '
               '`{"code": "failed_precondition", "message": "...", "details": [...]}`; `details` holds a '
               '`google.rpc.ErrorInfo` (its `reason`, e.g. `SLOT_TAKEN`, `domain` and `metadata`; base64 protobuf in '
               '`value`) and, for bad fields, a `google.rpc.BadRequest`. The reasons each method may answer are '
               'listed in its comment ("Errors:") and in the conventions below. The gateway\'s own refusals and '
               'errors (rate limit, session, CSRF, a request it cannot read, a service it cannot reach) carry an '
               'ErrorInfo of the domain `console.labshare`; their reasons are listed in '
               '[services/console/README.md](../services/console/README.md#the-http-api-for-member-firms).')
    out.append('- **Streaming methods** (marked *server streaming*) answer a stream of messages: Connect '
               'streaming (`Content-Type: application/connect+json`, each message in a 5-byte envelope), '
               'gRPC-Web or gRPC; use a Connect or gRPC client library rather than plain curl.')
    out.append('- **Requests that change something** take an optional `requestId`: a retry with the same '
               '`requestId` returns the first answer instead of acting twice.\n')

    out.append('## Conventions of every method\n')
    out.append(f'From the header of `proto/{CONVENTIONS_FILE}`, verbatim:\n')
    out.append(text_block(ix.header(CONVENTIONS_FILE)))

    # ---------------------------------------------------------------- services
    for pkg, svc, short, f, s, spath in services:
        full = pkg + '.' + svc
        out.append(f'<a id="{anchor(full)}"></a>\n')
        out.append(f'## {svc}\n')
        out.append(f'`{full}` (the {short} service), from `proto/{f.name}`.\n')
        header = ix.header(f.name)
        if header:
            out.append(text_block(header))
        c = ix.comment(f.name, spath, trailing=False)
        if c:
            out.append(text_block(c))
        shown = None
        for i, (m, group) in enumerate(zip(s.method, method_groups(ix, f, s, spath))):
            if group and group != shown:
                out.append(f'**{svc}: {group}**\n')
                shown = group
            out.append(f'<a id="{method_anchor(svc, m.name)}"></a>\n')
            out.append(f'### {m.name}\n')
            out.append(f'`POST /{full}/{m.name}`\n')
            req, res = m.input_type.lstrip('.'), m.output_type.lstrip('.')
            kind = 'server streaming: a stream of ' if m.server_streaming else ''
            if m.client_streaming:
                kind = 'client streaming (not offered over HTTP): ' + kind
            out.append(f'Request [{short_name(req)}](#{anchor(req)}) → {kind}'
                       f'{link_or_wkt(res)}\n')
            c = ix.comment(f.name, spath + (2, i))
            if c:
                out.append(text_block(c))

    # ---------------------------------------------------------------- sign-in
    f, s, spath = find_service(ix, *SIGN_IN)
    out.append(f'<a id="{anchor(".".join(SIGN_IN))}"></a>\n')
    out.append(f'## {SIGN_IN[1]}: sign-in only\n')
    out.append(f'`{".".join(SIGN_IN)}` (`proto/{f.name}`: {", ".join(m.name for m in s.method)}) turns a '
               'sign-in at the consortium\'s OpenID Connect provider into LabShare tokens. It is not offered '
               'through the gateway: people sign in to the console in the browser (`/auth/login`), and scripts '
               'get their token with `labshare login`.\n')

    # ---------------------------------------------------------------- types
    out.append('## Messages and enums\n')
    out.append('The messages the methods above take and answer, and the messages and enums inside them, '
               'by package in the order of the proto files.\n')
    for pkg, names in by_package.items():
        out.append(f'<a id="{anchor(pkg)}"></a>\n')
        out.append(f'### {pkg}\n')
        for name in names:
            out.append(w.message_section(name) if name in ix.messages else w.enum_section(name))
    return '\n'.join(out).rstrip('\n') + '\n'


def link_or_wkt(name):
    if name in WELL_KNOWN:
        return WELL_KNOWN[name]
    return f'[{short_name(name)}](#{anchor(name)})'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=os.path.join(ROOT, 'docs', 'api-reference.md'))
    ap.add_argument('--check', metavar='FILE', help='fail if FILE differs from what the protos give')
    args = ap.parse_args()
    text = render()
    if args.check:
        with tempfile.NamedTemporaryFile('w', suffix='.md', delete=False, encoding='utf-8') as tmp:
            tmp.write(text)
        try:
            with open(tmp.name, encoding='utf-8') as f:
                fresh = f.read()
            try:
                with open(args.check, encoding='utf-8') as f:
                    current = f.read()
            except FileNotFoundError:
                current = ''
            if fresh != current:
                sys.stdout.writelines(difflib.unified_diff(
                    current.splitlines(True), fresh.splitlines(True), args.check, 'regenerated', n=1))
                print(f'\n{args.check} is stale: run services/console/scripts/gen-reference.py and commit it',
                      file=sys.stderr)
                return 1
            print(f'{args.check} matches the protos')
            return 0
        finally:
            os.unlink(tmp.name)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w', encoding='utf-8') as f:
        f.write(text)
    print(f'wrote {os.path.relpath(args.out, ROOT)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
