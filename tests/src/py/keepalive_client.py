# Python's http.client on one kept-alive HTTP/1.1 connection to argv[1]:argv[2]:
# a POST with a body, then a GET. One line per answer: status, HTTP version, the
# app's x-version (what it read) and, for the POST, the body length the app got
# and the answer's length.
import http.client, sys
host, port = sys.argv[1], int(sys.argv[2])
c = http.client.HTTPConnection(host, port, timeout=20)
c.request("POST", "/upload?reply=5", body=b"from-python", headers={"x-trace": "py"})
r = c.getresponse()
print(r.status, r.version, r.getheader("x-version"), r.getheader("x-body-len"), len(r.read()))
c.request("GET", "/again")
r = c.getresponse()
print(r.status, r.version, r.getheader("x-version"), r.read().decode().strip())
