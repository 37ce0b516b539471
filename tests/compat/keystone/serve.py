"""Serves Keystone's public WSGI application on 127.0.0.1 for the tests.

usage: python serve.py PORT CONFIG_FILE

Keystone ships no server of its own (production runs it under uwsgi or
Apache); the standard library's threading WSGI server is enough for a test
and needs nothing compiled. Prints `LISTENING PORT` once it serves.
"""

import os
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

port = int(sys.argv[1])
os.environ["OS_KEYSTONE_CONFIG_FILES"] = sys.argv[2]
# oslo.config parses sys.argv when the application initialises.
sys.argv = sys.argv[:1]

from keystone.server import wsgi  # noqa: E402

application = wsgi.initialize_public_application()


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        pass


httpd = make_server("127.0.0.1", port, application, server_class=ThreadingServer,
                    handler_class=QuietHandler)
print(f"LISTENING {httpd.server_port}", flush=True)
httpd.serve_forever()
