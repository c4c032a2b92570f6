"""Seal and verify ARC chains with dkimpy for Herald's interop tests.

Reads a JSON list of requests on stdin, writes a JSON list of answers on
stdout (one Python start-up for many operations):
  {"op": "seal", "message": str, "hops": [{"domain", "selector", "key", "srv_id",
   "ar", "subject_prefix"}]}        -> {"message": str}
  {"op": "verify", "message": str, "dns": {name: txt}} -> {"cv": str, "reason": str}
No network is used: key lookups are answered from "dns". Exits 77 when
dkimpy (python3-dkim) or authres is missing.
"""
import json
import sys

try:
    import authres  # noqa: F401 (dkim.arc_sign needs it)
    import dkim
except ImportError as e:
    print(e, file=sys.stderr)
    sys.exit(77)


def seal(req):
    msg = req["message"].encode()
    for hop in req["hops"]:
        if hop.get("subject_prefix"):
            msg = msg.replace(b"Subject: ", b"Subject: " + hop["subject_prefix"].encode(), 1)
        ar = ("Authentication-Results: %s; %s\r\n" % (hop["srv_id"], hop["ar"])).encode()
        msg = ar + msg
        headers = dkim.arc_sign(
            msg, hop["selector"].encode(), hop["domain"].encode(), hop["key"].encode(),
            hop["srv_id"].encode(), include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
            timestamp=1767225600)
        if not headers:
            raise SystemExit("arc_sign produced no headers")
        msg = b"".join(headers) + msg
    return {"message": msg.decode()}


def verify(req):
    dns = req["dns"]

    def dnsfunc(name, timeout=5):
        txt = dns.get(name.decode().rstrip("."))
        return txt.encode() if txt is not None else None

    cv, _results, reason = dkim.arc_verify(req["message"].encode(), dnsfunc=dnsfunc)
    return {"cv": cv.decode() if cv is not None else "", "reason": reason}


reqs = json.load(sys.stdin)
json.dump([seal(r) if r["op"] == "seal" else verify(r) for r in reqs], sys.stdout)
