"""Issue 9's hostile clients against an installed server (ci-check), with the standard library only.

usage: hostile_probe.py SERVER_PORT ORIGIN_PORT

Holds 150 connections that never finish a request while /health must answer within 2 s; sends
what waitress used to answer in text/plain (a 300 KB header, a bad chunk size) and JSON nested
10,000 deep, which must come back as JSON errors; names an audio_url with a password, which must
not come back. Exits non-zero, saying what failed, on the first miss.
"""

import json
import socket
import sys
import time
import urllib.error
import urllib.request

SERVER, ORIGIN = int(sys.argv[1]), int(sys.argv[2])


def raw(payload: bytes) -> tuple[int, str, dict]:
    with socket.create_connection(("127.0.0.1", SERVER), timeout=10) as sock:
        try:
            sock.sendall(payload)
        except OSError:
            pass  # answered before we were done sending: read the answer
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    content_type = next((line.split(": ", 1)[1] for line in lines if line.lower().startswith("content-type:")), "")
    return int(lines[0].split()[1]), content_type, json.loads(body)


def expect(what: str, payload: bytes, status: int, code: int) -> None:
    got, content_type, body = raw(payload)
    if (got, content_type, body.get("code")) != (status, "application/json", code) or not body.get("uid"):
        sys.exit(f"{what}: expected {status} JSON code {code}, got {got} {content_type} {body}")
    print(f"  {what}: {got} JSON code {code}: {body['description']}")


held = []
for i in range(150):
    sock = socket.create_connection(("127.0.0.1", SERVER), timeout=10)
    sock.sendall([b"", b"POST /transcribe/url HT", b"GET /health HTTP/1.1\r\nHost: a\r\n"][i % 3])
    held.append(sock)
started = time.monotonic()
with urllib.request.urlopen(f"http://127.0.0.1:{SERVER}/health", timeout=2) as answer:
    assert answer.status == 200
print(f"  150 unfinished connections held: GET /health 200 in {time.monotonic() - started:.3f} s")
for sock in held:
    sock.close()

expect("a 300 KB header", b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n", 431, 9)
expect("a bad chunk size",
       b"POST /transcribe/url HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, 9)
nested = b'{"audio_url": "http://127.0.0.1/a.wav", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
expect("JSON nested 10,000 deep", b"POST /transcribe/url HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
       b"Content-Type: application/json\r\n" + f"Content-Length: {len(nested)}\r\n\r\n".encode() + nested, 400, 9)

request = urllib.request.Request(
    f"http://127.0.0.1:{SERVER}/transcribe/url", method="POST", headers={"Content-Type": "application/json"},
    data=json.dumps({"audio_url": f"http://ci:s3cret-pw@127.0.0.1:{ORIGIN}/missing.wav"}).encode())
try:
    urllib.request.urlopen(request, timeout=30)
    sys.exit("a download of a missing file succeeded")
except urllib.error.HTTPError as error:
    status, body = error.code, json.loads(error.read())
if status != 502 or "s3cret-pw" in body["description"] or "***@" not in body["description"]:
    sys.exit(f"credentials: expected a 502 with the password masked, got {status} {body}")
print(f"  a URL with a password: 502, masked: {body['description']}")
