#!/usr/bin/env python3
"""Writes the hand-made seeds of corpus/<target>/ (named by their SHA-1, as
libFuzzer names what it finds). Run again after editing; inputs that fuzzing
found are added to the same folders by scripts/fuzz.sh and kept."""
import hashlib
import os

here = os.path.dirname(os.path.abspath(__file__))
cuts = bytes([0, 1, 2, 3, 5, 7, 11, 13, 0, 2, 4, 6, 8, 10, 12, 15])

responses = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nT: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nto the end",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\n0\n\n",
    b"HTTP/1.1 401 Unauthorized\nWWW-Authenticate: Bearer\nContent-Length: 2\n\n{}",
    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
]
requests = [
    b"POST /api/auth/login HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello"
    b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n",
    b"\r\n\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\nHost: h\n\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 990 + b"\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    b"\r\n" * 40,
]
urls = [b"https://textual.tonic.ai", b"http://127.0.0.1:8080/textual/", b"https://[::1]:443/base",
        b"http://user:pw@host/", b"https://h:0", b"HTTPS://Example.COM:65535/a/b"]
jwt = (b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAxODAwfQ."
       b"c2lnbmF0dXJl")
tokens = [jwt, jwt + b"=", b"QQ", b"QR", b"QUJ", b"", b"a.b.c", b"e30.eyJleHAiOjF9.", b"====="]
retry = [b"120", b" 5 ", b"Wed, 21 Oct 2015 07:28:00 GMT", b"Sun, 06 Nov 2994 08:49:37 GMT", b"-1", b"999999999999"]
json_docs = [
    b'{"jwt":"a.b.c","refreshToken":"r1"}',
    b'{"iat":1700000000,"exp":1700001800.75,"sub":"x"}',
    b'{"exp":9223372036854775808}',
    b'{"exp":123456789012345678901234567890}',
    b'{"jwt":"a","refreshToken":"r","jwt":"b"}',
    b'\xef\xbb\xbf{"detail":"d"}',
    b'{"detail":"d"}\x00',
    b'{"title":"T","message":"M","errorMessage":"E"}',
    b'{"n":' + b"[" * 1024 + b"]" * 1024 + b"}",
    b'{"s":"\\ud83d\\ude00","exp":-0.5}',
]
# RESP: two bytes of limits (0xff 0xff: depth 8, bulk 279, 15 elements, lines
# of 244), two of the split point, eight argument sizes, then the stream.
resp_header = bytes([0xFF, 0xFF, 7, 0, 3, 0, 5, 1, 16, 2, 200, 4])
resp_streams = [
    b"+OK\r\n-ERR wrong type\r\n:-42\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n",
    b"*3\r\n:1\r\n*2\r\n+a\r\n$1\r\nb\r\n*0\r\n",
    b"_\r\n#t\r\n#f\r\n,-1.5e+3\r\n,inf\r\n(-3492890328409238509324850943850943825024385\r\n",
    b"!8\r\nSYNTAX x\r\n=8\r\ntxt:some\r\n%2\r\n+k\r\n:1\r\n$2\r\nk2\r\n_\r\n~2\r\n:1\r\n:2\r\n",
    b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nmsg\r\n|1\r\n+ttl\r\n:3600\r\n$5\r\nvalue\r\n",
    b"$6\r\na\r\nb\0c\r\n:9223372036854775807\r\n:-9223372036854775808\r\n",
    b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
    b"$3\r\nabcde\r\n",
    b"+O\rK\r\n",
    b":9223372036854775808\r\n",
    b"$-2\r\n",
    b"*2\r\n$3\r\nGET\r\n$3\r\n{k}\r\n",
]

corpora = {
    "response_parser": [bytes([flags]) + cuts + r for r in responses for flags in (0, 2)],
    "request_parser": [cuts + r for r in requests],
    "url": urls,
    "base64url_jwt": tokens,
    "retry_after": retry,
    "json_simdjson": json_docs,
    "json_nlohmann": json_docs,
    "json_differential": json_docs,
    "resp_reader": [resp_header + r for r in resp_streams] + [bytes([0, 0]) + resp_header[2:] + resp_streams[0]],
}
for target, inputs in corpora.items():
    folder = os.path.join(here, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for data in inputs:
        with open(os.path.join(folder, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)
