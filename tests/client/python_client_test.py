#!/usr/bin/python3
"""End-to-end test of labshare-inventory with an independent client.

The client is Debian's python3-grpcio (not the project's C++ stubs): it talks to
the real binary over the network, the way any third-party client would.

    /usr/bin/python3 tests/client/python_client_test.py \
        --bin_dir BUILD/bin --proto_dir REPO/proto

Uses only the standard library, grpc and google.protobuf. Starts its own
redis-server on a free loopback port, mints a token with labshare-token, starts
labshare-inventory on port 0, then checks health, reflection, a create/read
round trip, request_id idempotency, error details and authentication, and
finally a graceful shutdown on SIGTERM; then a second labshare-inventory with
--tls_cert/--tls_key/--tls_ca (certificates made with the openssl command):
health and a call with a token over TLS, and no answer to plaintext. Exit code 0 when every check passes,
1 otherwise.
"""

import argparse
import importlib
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import grpc

REDIS_SERVER = "/usr/bin/redis-server"
PROTOC = "/usr/bin/protoc"
PROTOC_INCLUDE = "/usr/include"

READY_TIMEOUT_S = 15.0  # redis PING, "listening on" line, health SERVING
CALL_TIMEOUT_S = 10.0  # every RPC
SHUTDOWN_TIMEOUT_S = 15.0  # SIGTERM to exit

INVENTORY_SERVICE = "labshare.inventory.v1.InventoryService"
HEALTH_SERVICE = "grpc.health.v1.Health"
ERROR_DOMAIN = "inventory.labshare"


class FatalError(Exception):
    """A step failed that later checks depend on."""


# --------------------------------------------------------------------------- results


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print("PASS: %s" % name, flush=True)
        else:
            self.failed += 1
            print("FAIL: %s%s" % (name, (": " + detail) if detail else ""), flush=True)
        return ok

    def fail(self, name, detail=""):
        return self.check(name, False, detail)

    def equal(self, name, got, want):
        return self.check(name, got == want, "got %r, want %r" % (got, want))


# --------------------------------------------------------------------------- protobuf wire format by hand


def encode_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_len_field(field_no, payload):
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return encode_varint((field_no << 3) | 2) + encode_varint(len(payload)) + payload


def decode_varint(buf, pos):
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def decode_fields(buf):
    """Returns [(field_no, wire_type, value)]; value is int or bytes."""
    fields = []
    pos = 0
    while pos < len(buf):
        key, pos = decode_varint(buf, pos)
        field_no, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = decode_varint(buf, pos)
        elif wire_type == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire_type == 2:
            length, pos = decode_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field %d" % field_no)
            value, pos = bytes(buf[pos:pos + length]), pos + length
        elif wire_type == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("unsupported wire type %d" % wire_type)
        fields.append((field_no, wire_type, value))
    return fields


def fields_of(buf, field_no, wire_type):
    return [v for f, w, v in decode_fields(buf) if f == field_no and w == wire_type]


def decode_rpc_status(buf):
    """google.rpc.Status -> dict(code, message, details=[(type_url, value)])."""
    status = {"code": 0, "message": "", "details": []}
    for f, w, v in decode_fields(buf):
        if f == 1 and w == 0:
            status["code"] = v
        elif f == 2 and w == 2:
            status["message"] = v.decode("utf-8", "replace")
        elif f == 3 and w == 2:  # google.protobuf.Any
            type_url, value = "", b""
            for af, aw, av in decode_fields(v):
                if af == 1 and aw == 2:
                    type_url = av.decode("utf-8", "replace")
                elif af == 2 and aw == 2:
                    value = av
            status["details"].append((type_url, value))
    return status


def decode_error_info(buf):
    """google.rpc.ErrorInfo -> dict(reason, domain, metadata)."""
    info = {"reason": "", "domain": "", "metadata": {}}
    for f, w, v in decode_fields(buf):
        if f == 1 and w == 2:
            info["reason"] = v.decode("utf-8", "replace")
        elif f == 2 and w == 2:
            info["domain"] = v.decode("utf-8", "replace")
        elif f == 3 and w == 2:  # map entry: key = 1, value = 2
            key = value = ""
            for ef, ew, ev in decode_fields(v):
                if ef == 1 and ew == 2:
                    key = ev.decode("utf-8", "replace")
                elif ef == 2 and ew == 2:
                    value = ev.decode("utf-8", "replace")
            info["metadata"][key] = value
    return info


def decode_bad_request_fields(buf):
    """google.rpc.BadRequest -> [field] of its field_violations."""
    names = []
    for violation in fields_of(buf, 1, 2):
        for f, w, v in decode_fields(violation):
            if f == 1 and w == 2:
                names.append(v.decode("utf-8", "replace"))
    return names


def error_details(err):
    """The decoded grpc-status-details-bin of a grpc.RpcError, or None."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            if isinstance(value, str):
                value = value.encode("latin-1")
            return decode_rpc_status(value)
    return None


def error_info_of(status):
    for type_url, value in status["details"]:
        if type_url.endswith("/google.rpc.ErrorInfo"):
            return decode_error_info(value)
    return None


def bad_request_fields_of(status):
    for type_url, value in status["details"]:
        if type_url.endswith("/google.rpc.BadRequest"):
            return decode_bad_request_fields(value)
    return None


# --------------------------------------------------------------------------- processes


def free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_answers_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(b"+PONG")
    except OSError:
        return False


def start_redis(tmp):
    """Starts redis-server on a free port; returns (process, port, log path)."""
    data_dir = os.path.join(tmp, "redis")
    os.makedirs(data_dir, exist_ok=True)
    log_path = os.path.join(tmp, "redis.log")
    last_error = ""
    for _ in range(3):  # the free port may be taken between probe and bind
        port = free_loopback_port()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", data_dir],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last_error = "redis-server exited with code %d" % proc.returncode
                break
            if redis_answers_ping(port):
                return proc, port, log_path
            time.sleep(0.05)
        else:
            last_error = "redis-server did not answer PING within %.0f s" % READY_TIMEOUT_S
            stop_process(proc, 5.0)
    raise FatalError("%s (log %s:\n%s)" % (last_error, log_path, read_text(log_path)))


def stop_process(proc, timeout):
    """SIGTERM, then SIGKILL after timeout. Returns the exit code, or None if it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def read_text(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)


def make_signing_key(bin_dir, tmp):
    """The token issuer's key (labshare-token --generate_key) and its JWKS file."""
    tool = os.path.join(bin_dir, "labshare-token")
    if not os.access(tool, os.X_OK):
        raise FatalError("%s does not exist or is not executable" % tool)
    key_file = os.path.join(tmp, "token-signing.pem")
    jwks_file = os.path.join(tmp, "jwks.json")
    subprocess.run([tool, "--generate_key=" + key_file], check=True, capture_output=True, timeout=30)
    with open(jwks_file, "wb") as out:
        subprocess.run([tool, "--jwks", key_file], check=True, stdout=out, timeout=30)
    return key_file, jwks_file


def mint_token(bin_dir, key_file):
    tool = os.path.join(bin_dir, "labshare-token")
    proc = subprocess.run(
        [tool, "--signing_key_file=" + key_file, "--user=admin", "--org=", "--roles=consortium_admin", "--ttl=1h"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    token = proc.stdout.decode("ascii", "replace").strip()
    if proc.returncode != 0 or not token:
        raise FatalError("labshare-token exited with code %d, stdout %r, stderr %r" %
                         (proc.returncode, token, proc.stderr.decode("utf-8", "replace")))
    if token.count(".") != 2:
        raise FatalError("labshare-token printed %r, not a JWT (three dot-separated parts)" % token)
    return token


class InventoryServer:
    def __init__(self, bin_dir, redis_port, key_file, jwks_file, tmp, extra_args=(), name="inventory"):
        self.binary = os.path.join(bin_dir, "labshare-inventory")
        if not os.access(self.binary, os.X_OK):
            raise FatalError("%s does not exist or is not executable" % self.binary)
        self.stderr_path = os.path.join(tmp, name + ".stderr.log")
        self.stdout_lines = []
        self._lines = queue.Queue()
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [self.binary, "--listen=127.0.0.1:0", "--redis=127.0.0.1:%d" % redis_port,
                 "--metrics_listen=127.0.0.1:0", "--jwks=" + jwks_file, "--token_signing_key_file=" + key_file]
                + list(extra_args),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.stdout_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)  # EOF

    def wait_listening(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FatalError("no 'listening on HOST:PORT' line on stdout within %.0f s" %
                                 READY_TIMEOUT_S)
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                raise FatalError("labshare-inventory exited with code %d before printing "
                                 "'listening on HOST:PORT'" % code)
            if line.startswith("listening on "):
                address = line[len("listening on "):].strip()
                host, _, port = address.rpartition(":")
                if not host or not port.isdigit() or int(port) == 0:
                    raise FatalError("bad listening line %r" % line)
                return address

    def stderr_text(self):
        return read_text(self.stderr_path)


# --------------------------------------------------------------------------- checks


def identity(b):
    return b


def check_health(results, channel, service="", label=""):
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=identity, response_deserializer=identity)
    deadline = time.monotonic() + READY_TIMEOUT_S
    status, last = None, ""
    request = encode_len_field(1, service) if service else b""  # HealthCheckRequest{service}
    while time.monotonic() < deadline:
        try:
            reply = check(request, timeout=CALL_TIMEOUT_S)
            values = fields_of(reply, 1, 0)
            status = values[-1] if values else 0  # absent = UNKNOWN
            last = "status %d" % status
            if status == 1:
                break
        except grpc.RpcError as e:
            last = "%s: %s" % (e.code(), e.details())
        except ValueError as e:
            last = "undecodable HealthCheckResponse: %s" % e
        time.sleep(0.1)
    results.check("%shealth: Check(\"%s\") reports SERVING within %.0f s" % (label, service, READY_TIMEOUT_S),
                  status == 1, "last answer: " + last)


def check_reflection(results, channel):
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=identity, response_deserializer=identity)
    request = encode_len_field(7, "")  # ServerReflectionRequest{list_services: ""}
    names = []
    try:
        responses = list(info(iter([request]), timeout=CALL_TIMEOUT_S))
    except grpc.RpcError as e:
        results.fail("reflection: ServerReflectionInfo list_services", "%s: %s" % (e.code(), e.details()))
        return
    try:
        for response in responses:
            for f, w, v in decode_fields(response):
                if f == 7 and w == 2:  # error_response
                    results.fail("reflection: list_services", "error_response %r" % v)
                if f == 6 and w == 2:  # list_services_response
                    for service in fields_of(v, 1, 2):
                        for name in fields_of(service, 1, 2):
                            names.append(name.decode("utf-8", "replace"))
    except ValueError as e:
        results.fail("reflection: decode ServerReflectionResponse", str(e))
        return
    results.equal("reflection: exactly one response to one request", len(responses), 1)
    for want in (INVENTORY_SERVICE, HEALTH_SERVICE):
        results.check("reflection: list_services includes %s" % want, want in names,
                      "services listed: %r" % names)


def openssl(*args):
    proc = subprocess.run(["openssl"] + list(args), stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise FatalError("openssl %s: %s" % (" ".join(args), proc.stderr.decode("utf-8", "replace")))


def make_pki(tmp):
    """A CA and inventory's certificate (spiffe://labshare/inventory, localhost, 127.0.0.1)."""
    d = os.path.join(tmp, "pki")
    os.makedirs(d, exist_ok=True)
    p = {name: os.path.join(d, name) for name in ("ca.crt", "ca.key", "inventory.crt", "inventory.key",
                                                    "inventory.csr", "ext.cnf")}
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", p["ca.key"], "-out", p["ca.crt"], "-days", "1", "-subj", "/CN=python test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", p["inventory.key"], "-out", p["inventory.csr"], "-subj", "/CN=inventory")
    with open(p["ext.cnf"], "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
                "subjectAltName=URI:spiffe://labshare/inventory,DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", p["inventory.csr"], "-CA", p["ca.crt"], "-CAkey", p["ca.key"],
            "-CAcreateserial", "-days", "1", "-out", p["inventory.crt"], "-extfile", p["ext.cnf"])
    os.chmod(p["inventory.key"], 0o600)
    return p


def check_tls(results, bin_dir, redis_port, key_file, jwks_file, tmp, token, inv):
    """A second inventory on the same Redis with --tls_*: TLS with a token works, plaintext does not."""
    pki = make_pki(tmp)
    server = InventoryServer(bin_dir, redis_port, key_file, jwks_file, tmp,
                             ["--tls_cert=" + pki["inventory.crt"], "--tls_key=" + pki["inventory.key"],
                              "--tls_ca=" + pki["ca.crt"]], name="inventory-tls")
    try:
        address = server.wait_listening()
        with open(pki["ca.crt"], "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(address, credentials)
        check_health(results, channel, label="TLS: ")
        get_org = Stub(channel, inv).method("GetOrganization", "Organization")
        org = call(results, "TLS: GetOrganization with a token", get_org,
                   inv.GetOrganizationRequest(name="organizations/py-org"),
                   [("authorization", "Bearer " + token)])
        if org is not None:
            results.equal("TLS: GetOrganization answers the organisation", org.name, "organizations/py-org")
        channel.close()
        plain = grpc.insecure_channel(address)
        check = plain.unary_unary("/grpc.health.v1.Health/Check",
                                  request_serializer=identity, response_deserializer=identity)
        try:
            check(b"", timeout=5)
            results.fail("TLS: a plaintext client gets no answer from the TLS port")
        except grpc.RpcError as e:
            results.equal("TLS: a plaintext client gets no answer from the TLS port", e.code(),
                          grpc.StatusCode.UNAVAILABLE)
        plain.close()
    finally:
        code = stop_process(server.proc, SHUTDOWN_TIMEOUT_S)
        results.equal("TLS: graceful shutdown of the TLS inventory", code, 0)
        if results.failed:
            print("---- labshare-inventory (TLS) stderr ----")
            print(server.stderr_text().rstrip("\n"), flush=True)


def generate_messages(proto_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    cmd = [PROTOC, "--python_out=" + out_dir, "-I" + proto_dir, "-I" + PROTOC_INCLUDE,
           os.path.join(proto_dir, "labshare/type/v1/types.proto"),
           os.path.join(proto_dir, "labshare/inventory/v1/inventory.proto")]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise FatalError("protoc failed with code %d: %s" %
                         (proc.returncode, proc.stderr.decode("utf-8", "replace")))
    sys.path.insert(0, out_dir)
    types_pb2 = importlib.import_module("labshare.type.v1.types_pb2")
    inventory_pb2 = importlib.import_module("labshare.inventory.v1.inventory_pb2")
    return types_pb2, inventory_pb2


class Stub:
    def __init__(self, channel, pb2):
        self._channel = channel
        self._pb2 = pb2

    def method(self, name, response):
        return self._channel.unary_unary(
            "/%s/%s" % (INVENTORY_SERVICE, name),
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=getattr(self._pb2, response).FromString)


def call(results, what, fn, request, metadata):
    """Calls fn; on an RpcError records a failure and returns None."""
    try:
        return fn(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as e:
        results.fail(what, "%s: %s" % (e.code(), e.details()))
        return None


def check_inventory(results, channel, token, types_pb2, inv):
    from google.protobuf import duration_pb2

    auth = [("authorization", "Bearer " + token)]
    stub = Stub(channel, inv)
    create_org = stub.method("CreateOrganization", "Organization")
    create_fac = stub.method("CreateFacility", "Facility")
    create_ins = stub.method("CreateInstrument", "Instrument")
    get_ins = stub.method("GetInstrument", "Instrument")

    # Organisation.
    org_req = inv.CreateOrganizationRequest(
        organization_id="py-org", request_id="py-req-org-%s" % secrets.token_hex(8),
        organization=inv.Organization(display_name="Python Client Org", type=inv.ENTERPRISE,
                                      size_class=inv.SME, membership_state=inv.MEMBER, tier="CORE"))
    org = call(results, "CreateOrganization py-org", create_org, org_req, auth)
    if org is None:
        raise FatalError("cannot continue without the organisation")
    results.equal("CreateOrganization: name", org.name, "organizations/py-org")
    results.equal("CreateOrganization: membership_state", inv.MembershipState.Name(org.membership_state),
                  "MEMBER")
    results.equal("CreateOrganization: tier", org.tier, "CORE")

    # Facility.
    fac_req = inv.CreateFacilityRequest(
        facility_id="py-fac", request_id="py-req-fac-%s" % secrets.token_hex(8),
        facility=inv.Facility(display_name="Python Client Facility",
                              owner_organization="organizations/py-org",
                              access_policy=inv.AccessPolicy(allow_members=True)))
    fac = call(results, "CreateFacility py-fac", create_fac, fac_req, auth)
    if fac is None:
        raise FatalError("cannot continue without the facility")
    results.equal("CreateFacility: name", fac.name, "facilities/py-fac")
    results.equal("CreateFacility: operator_organization defaults to the owner",
                  fac.operator_organization, "organizations/py-org")

    # Instrument.
    slot_rules = inv.SlotRules(
        min_block=duration_pb2.Duration(seconds=3600),
        max_block=duration_pb2.Duration(seconds=8 * 3600),
        member_horizon=duration_pb2.Duration(seconds=30 * 86400),
        non_member_horizon=duration_pb2.Duration(seconds=7 * 86400),
        billing_basis=inv.ACTUAL_TIME,
        billing_unit=duration_pb2.Duration(seconds=15 * 60))
    sent = inv.Instrument(
        display_name="Python Client SEM",
        owner_organization="organizations/py-org",
        facility="facilities/py-fac",
        category="electron-microscopy",
        original_value=types_pb2.Money(currency_code="CNY", amount_minor=250000000),
        daily_available_hours=8,
        modes=[inv.ModeOffering(mode=types_pb2.ON_SITE, slot_rules=slot_rules)])
    ins_req = inv.CreateInstrumentRequest(
        instrument=sent, instrument_id="py-sem",
        request_id="py-req-sem-%s" % secrets.token_hex(8))
    created = call(results, "CreateInstrument py-sem", create_ins, ins_req, auth)
    if created is None:
        raise FatalError("cannot continue without the instrument")
    results.check("CreateInstrument py-sem", True)

    got = call(results, "GetInstrument instruments/py-sem", get_ins,
               inv.GetInstrumentRequest(name="instruments/py-sem"), auth)
    if got is not None:
        results.equal("GetInstrument: name", got.name, "instruments/py-sem")
        results.equal("GetInstrument: display_name", got.display_name, sent.display_name)
        results.equal("GetInstrument: owner_organization", got.owner_organization,
                      "organizations/py-org")
        results.equal("GetInstrument: operator_organization", got.operator_organization,
                      "organizations/py-org")
        results.equal("GetInstrument: facility", got.facility, "facilities/py-fac")
        results.equal("GetInstrument: category", got.category, "electron-microscopy")
        results.equal("GetInstrument: original_value.amount_minor", got.original_value.amount_minor,
                      250000000)
        results.equal("GetInstrument: original_value.currency_code",
                      got.original_value.currency_code, "CNY")
        results.equal("GetInstrument: daily_available_hours", got.daily_available_hours, 8)
        results.equal("GetInstrument: state", inv.InstrumentState.Name(got.state), "ACTIVE")
        results.equal("GetInstrument: etag", got.etag, "1")
        results.check("GetInstrument: modes equal what was sent", list(got.modes) == list(sent.modes),
                      "got %s, want %s" % ([str(m) for m in got.modes], [str(m) for m in sent.modes]))
        results.equal("GetInstrument: service_catalogue empty", len(got.service_catalogue), 0)
        results.check("GetInstrument: access_policy unset", not got.HasField("access_policy"),
                      "got %s" % got.access_policy)
        results.check("GetInstrument: create_time and update_time set",
                      got.HasField("create_time") and got.create_time.seconds > 0 and
                      got.HasField("update_time") and got.update_time.seconds > 0,
                      "create_time %s update_time %s" % (got.create_time, got.update_time))
        results.check("GetInstrument equals the CreateInstrument answer", got == created,
                      "create answered:\n%s\nget answered:\n%s" % (created, got))

    # Retry with the same request_id: the first answer again.
    again = call(results, "CreateInstrument retry with the same request_id", create_ins, ins_req, auth)
    if again is not None:
        results.check("CreateInstrument retry with the same request_id returns the first answer",
                      again == created, "first:\n%s\nretry:\n%s" % (created, again))

    # Missing display_name: INVALID_ARGUMENT with ErrorInfo INVALID_FIELD.
    bad = inv.Instrument()
    bad.CopyFrom(sent)
    bad.ClearField("display_name")
    bad_req = inv.CreateInstrumentRequest(instrument=bad, instrument_id="py-sem-bad",
                                          request_id="py-req-bad-%s" % secrets.token_hex(8))
    try:
        create_ins(bad_req, metadata=auth, timeout=CALL_TIMEOUT_S)
        results.fail("CreateInstrument without display_name fails", "the call succeeded")
    except grpc.RpcError as e:
        results.equal("CreateInstrument without display_name: code", e.code(),
                      grpc.StatusCode.INVALID_ARGUMENT)
        details = error_details(e)
        if results.check("CreateInstrument without display_name: grpc-status-details-bin present",
                         details is not None, "trailing metadata %r" % (e.trailing_metadata(),)):
            results.equal("grpc-status-details-bin: google.rpc.Status code", details["code"],
                          grpc.StatusCode.INVALID_ARGUMENT.value[0])
            info = error_info_of(details)
            if results.check("grpc-status-details-bin: carries a google.rpc.ErrorInfo", info is not None,
                             "details type_urls %r" % [t for t, _ in details["details"]]):
                results.equal("ErrorInfo.reason", info["reason"], "INVALID_FIELD")
                results.equal("ErrorInfo.domain", info["domain"], ERROR_DOMAIN)
            violations = bad_request_fields_of(details)
            results.check("grpc-status-details-bin: BadRequest names instrument.display_name",
                          violations is not None and "instrument.display_name" in violations,
                          "BadRequest field violations %r" % (violations,))

    # No credentials: UNAUTHENTICATED.
    try:
        get_ins(inv.GetInstrumentRequest(name="instruments/py-sem"), timeout=CALL_TIMEOUT_S)
        results.fail("GetInstrument without authorization metadata fails", "the call succeeded")
    except grpc.RpcError as e:
        results.equal("GetInstrument without authorization metadata: code", e.code(),
                      grpc.StatusCode.UNAUTHENTICATED)
        details = error_details(e)
        info = error_info_of(details) if details else None
        results.equal("GetInstrument without authorization metadata: ErrorInfo.reason",
                      info["reason"] if info else None, "MISSING_CREDENTIALS")


# --------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin_dir", required=True, help="directory holding labshare-inventory and labshare-token")
    parser.add_argument("--proto_dir", required=True, help="the repository's proto/ directory")
    args = parser.parse_args()
    bin_dir = os.path.abspath(args.bin_dir)
    proto_dir = os.path.abspath(args.proto_dir)

    # A SIGTERM to this script (a test runner's timeout) still runs the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("python_client_test: terminated"))

    results = Results()
    tmp = tempfile.mkdtemp(prefix="labshare-pyclient-")
    redis = None
    server = None
    channel = None
    try:
        redis, redis_port, _ = start_redis(tmp)
        results.check("redis-server answers PING on 127.0.0.1:%d" % redis_port, True)

        key_file, jwks_file = make_signing_key(bin_dir, tmp)
        token = mint_token(bin_dir, key_file)
        results.check("labshare-token minted a token", True)

        server = InventoryServer(bin_dir, redis_port, key_file, jwks_file, tmp)
        address = server.wait_listening()
        results.check("labshare-inventory printed 'listening on %s'" % address, True)

        channel = grpc.insecure_channel(address)
        check_health(results, channel)
        check_health(results, channel, service=INVENTORY_SERVICE)  # health names the service
        check_reflection(results, channel)

        types_pb2, inventory_pb2 = generate_messages(proto_dir, os.path.join(tmp, "py"))
        results.check("protoc generated and imported labshare.inventory.v1.inventory_pb2", True)
        check_inventory(results, channel, token, types_pb2, inventory_pb2)
        check_tls(results, bin_dir, redis_port, key_file, jwks_file, tmp, token, inventory_pb2)
    except FatalError as e:
        results.fail("fatal", str(e))
    except Exception:  # a bug here or an unexpected client error: still clean up
        results.fail("unexpected error", traceback.format_exc())
    finally:
        if channel is not None:
            channel.close()
        if server is not None:
            exited = server.proc.poll() is not None
            if exited:
                results.fail("graceful shutdown", "labshare-inventory had already exited with code %d"
                             % server.proc.returncode)
            else:
                started = time.monotonic()
                code = stop_process(server.proc, SHUTDOWN_TIMEOUT_S)
                if code is None:
                    results.fail("graceful shutdown", "labshare-inventory did not exit within %.0f s "
                                 "of SIGTERM (killed)" % SHUTDOWN_TIMEOUT_S)
                else:
                    results.equal("graceful shutdown: SIGTERM exit code (in %.1f s)"
                                  % (time.monotonic() - started), code, 0)
        if redis is not None:
            stop_process(redis, 10.0)
        if results.failed and server is not None:
            print("---- labshare-inventory stdout ----")
            print("\n".join(server.stdout_lines))
            print("---- labshare-inventory stderr (JSON lines) ----")
            print(server.stderr_text().rstrip("\n"))
            print("---- end of labshare-inventory output ----", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)

    print("%d passed, %d failed" % (results.passed, results.failed), flush=True)
    return 0 if results.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
