#!/usr/bin/env python3
"""A minimal FastCGI client (responder role, one request per connection), stdlib only.

    python3 fcgi_client.py 127.0.0.1:PORT '/read?items=100'
"""
import socket
import struct
import sys

FCGI_VERSION = 1
FCGI_BEGIN_REQUEST = 1
FCGI_END_REQUEST = 3
FCGI_PARAMS = 4
FCGI_STDIN = 5
FCGI_STDOUT = 6
FCGI_STDERR = 7
FCGI_RESPONDER = 1
REQUEST_ID = 1


class FastCgiError(Exception):
    pass


def _record(record_type, content=b""):
    header = struct.pack("!BBHHBx", FCGI_VERSION, record_type, REQUEST_ID, len(content), 0)
    return header + content


def _length(n):
    return struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)


def _params(params):
    body = b""
    for name, value in params.items():
        name, value = name.encode(), value.encode()
        body += _length(len(name)) + _length(len(value)) + name + value
    return body


def _read_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise FastCgiError("connection closed before FCGI_END_REQUEST")
        data += chunk
    return data


def request(address, uri, timeout=10.0):
    """Sends GET uri to the FastCGI server at (host, port); returns (status, headers, body)."""
    path, _, query = uri.partition("?")
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REQUEST_URI": uri,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(address[1]),
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": "0",
    }
    with socket.create_connection(address, timeout=timeout) as sock:
        begin = struct.pack("!HB5x", FCGI_RESPONDER, 0)
        encoded = _params(params)
        sock.sendall(
            _record(FCGI_BEGIN_REQUEST, begin)
            + _record(FCGI_PARAMS, encoded)
            + _record(FCGI_PARAMS)
            + _record(FCGI_STDIN)
        )
        stdout = b""
        while True:
            version, record_type, _, length, padding = struct.unpack("!BBHHBx", _read_exactly(sock, 8))
            content = _read_exactly(sock, length + padding)[:length]
            if record_type == FCGI_STDOUT:
                stdout += content
            elif record_type == FCGI_STDERR:
                pass
            elif record_type == FCGI_END_REQUEST:
                break
    head, _, body = stdout.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(headers.get("status", "200").split()[0])
    return status, headers, body


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    host, _, port = argv[1].rpartition(":")
    status, _, body = request((host, int(port)), argv[2])
    print(status)
    sys.stdout.write(body.decode(errors="replace"))
    return 0 if status < 400 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
