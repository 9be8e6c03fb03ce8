#!/usr/bin/python3
"""A development and test SMTP server (Debian's python3-aiosmtpd) that stores
each message it accepts as one file in a directory.

    /usr/bin/python3 tests/notify/smtp_sink.py --dir DIR [--listen 127.0.0.1:PORT]
        [--tls_cert PEM --tls_key PEM] [--auth_user NAME --auth_password_file FILE]

With --tls_cert/--tls_key it offers STARTTLS and requires it before MAIL;
with --auth_user it requires AUTH (PLAIN or LOGIN, over TLS only).

Prints "listening on HOST:PORT" once it accepts connections. Every accepted
message becomes DIR/<n>-<recipient>.eml (written to a temporary name, then
renamed: a reader never sees half a message), with the envelope in the
first lines (X-Envelope-From, X-Envelope-To). For tests, recipients whose
local part starts with
  tempfail-  are refused with 451 (try again later);
  reject-    are refused with 550 (mailbox unavailable);
  hold-      are held after DATA: the sink writes DIR/holding-<recipient>
             and answers only once DIR/release exists (a sender can be
             killed while its message is in flight); the message is then
             stored like any other.
"""

import argparse
import asyncio
import itertools
import os
import signal
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, directory):
        self.dir = directory
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local.startswith("tempfail-"):
            return "451 4.3.0 try again later"
        if local.startswith("reject-"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            if rcpt.split("@")[0].startswith("hold-"):
                open(os.path.join(self.dir, "holding-" + rcpt), "w").close()
                while not os.path.exists(os.path.join(self.dir, "release")):
                    await asyncio.sleep(0.05)
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8")
        for rcpt in envelope.rcpt_tos:
            n = next(self.counter)
            name = "%06d-%d-%s.eml" % (n, os.getpid(), rcpt.replace("/", "_"))
            tmp = os.path.join(self.dir, "." + name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(b"X-Envelope-From: " + envelope.mail_from.encode() + b"\r\n")
                f.write(b"X-Envelope-To: " + rcpt.encode() + b"\r\n")
                f.write(data)
            os.rename(tmp, os.path.join(self.dir, name))
        return "250 Message accepted for delivery"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--tls_cert", default="")
    ap.add_argument("--tls_key", default="")
    ap.add_argument("--auth_user", default="")
    ap.add_argument("--auth_password_file", default="")
    args, _ = ap.parse_known_args()  # ignores the flags test harnesses add
    os.makedirs(args.dir, exist_ok=True)
    host, port = args.listen.rsplit(":", 1)
    port = int(port)
    if port == 0:
        import socket
        s = socket.socket()
        s.bind((host, 0))
        port = s.getsockname()[1]
        s.close()
    kwargs = {}
    if args.tls_cert:
        import ssl
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        kwargs.update(tls_context=context, require_starttls=True)
    if args.auth_user:
        password = open(args.auth_password_file).read().strip()

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == args.auth_user
                  and auth_data.password.decode() == password)
            return AuthResult(success=ok)

        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=True)
    controller = Controller(Handler(args.dir), hostname=host, port=port, data_size_limit=10 * 1024 * 1024,
                            **kwargs)
    controller.start()
    print("listening on %s:%d" % (host, port), flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
