#!/usr/bin/python3
"""A member firm's HTTPS webhook receiver, for tests/notify/webhook_delivery_test.cc.

Usage: webhook_receiver.py CERT KEY PORT_FILE LOG_FILE

Serves HTTPS on 127.0.0.1 (a free port, written to PORT_FILE once listening)
with CERT/KEY (issued by the test CA). For every POST to a path it checks
LabShare-Signature (v1=hex HMAC-SHA256(secret, id + "." + timestamp + "." +
body), constant-time) with the secret registered for that path,
LabShare-Webhook-Timestamp (within 300 s of this machine's clock) and that
the body's "id" is LabShare-Webhook-Id; answers 401 when any check fails,
500 while failures are requested for the path, else 204. Each request is
appended to LOG_FILE, before answering, as one line:
  path id timestamp sig_ok ts_ok body_ok status type organization
POST /_control (form fields path, secret, fail) registers a path's secret
and how many of its next requests fail (-1: all, 0: none).
"""
import hashlib
import hmac
import http.server
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse

cert, key, port_file, log_file = sys.argv[1:5]
secrets = {}
failures = {}
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def reply(self, status, text=b''):
        self.send_response(status)
        self.send_header('Content-Length', str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', '0')))
        path = self.path.split('?')[0]
        if path == '/_control':
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
            with lock:
                if 'secret' in form:
                    secrets[form['path']] = form['secret']
                if 'fail' in form:
                    failures[form['path']] = int(form['fail'])
            return self.reply(200, b'ok')
        wid = self.headers.get('LabShare-Webhook-Id', '')
        ts = self.headers.get('LabShare-Webhook-Timestamp', '')
        sig = self.headers.get('LabShare-Signature', '')
        with lock:
            secret = secrets.get(path)
            remaining = failures.get(path, 0)
            if remaining > 0:
                failures[path] = remaining - 1
        sig_ok = False
        if secret is not None and sig.startswith('v1='):
            mac = hmac.new(secret.encode(), wid.encode() + b'.' + ts.encode() + b'.' + body, hashlib.sha256)
            sig_ok = hmac.compare_digest(mac.hexdigest(), sig[3:])
        try:
            ts_ok = abs(time.time() - int(ts)) <= 300
        except ValueError:
            ts_ok = False
        try:
            doc = json.loads(body)
            body_ok = doc.get('id') == wid and 'header' in doc.get('event', {})
        except ValueError:
            doc, body_ok = {}, False
        if not (sig_ok and ts_ok and body_ok):
            status = 401
        elif remaining != 0:
            status = 500
        else:
            status = 204
        line = ' '.join([path, wid or '-', ts or '-', str(int(sig_ok)), str(int(ts_ok)), str(int(body_ok)),
                         str(status), doc.get('type') or '-', doc.get('organization') or '-'])
        with lock:
            with open(log_file, 'a') as f:
                f.write(line + '\n')
        self.reply(status)


server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
with open(port_file + '.tmp', 'w') as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + '.tmp', port_file)
server.serve_forever()
