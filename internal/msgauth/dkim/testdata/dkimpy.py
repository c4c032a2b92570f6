"""Interop helper for Herald's DKIM tests, run with Debian's python3-dkim.
One process handles many messages: importing dkim is the slow part.

  dkimpy.py verify KEYS.json MSGFILE...
      prints "<file#> <sig#> pass|fail|error" per signature of each message;
      KEYS.json maps "selector._domainkey.domain" to the TXT record value.
  dkimpy.py sign JOBS.json
      JOBS.json is a list of {"msg", "algo", "domain", "selector", "key",
      "headers"} (msg and key are file names, headers a colon list);
      prints a JSON list of the DKIM-Signature fields.
"""
import json
import sys

import dkim


def verify(keyfile, msgfiles):
    with open(keyfile) as f:
        keys = {k.lower().rstrip("."): v for k, v in json.load(f).items()}

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        v = keys.get(name.lower().rstrip("."))
        return v.encode() if v is not None else None

    for n, path in enumerate(msgfiles):
        with open(path, "rb") as f:
            d = dkim.DKIM(f.read(), minkey=1024)
        count = sum(1 for k, _ in d.headers if k.lower() == b"dkim-signature")
        for i in range(count):
            try:
                ok = d.verify(idx=i, dnsfunc=dnsfunc)
            except dkim.DKIMException as e:
                print(n, i, "error", e)
                continue
            print(n, i, "pass" if ok else "fail")


def sign(jobfile):
    with open(jobfile) as f:
        jobs = json.load(f)
    out = []
    for j in jobs:
        with open(j["msg"], "rb") as f:
            msg = f.read()
        with open(j["key"], "rb") as f:
            key = f.read()
        sig = dkim.sign(
            msg, j["selector"].encode(), j["domain"].encode(), key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=j["algo"].encode(),
            include_headers=[h.encode() for h in j["headers"].split(":")],
        )
        out.append(sig.decode())
    print(json.dumps(out))


def main():
    if sys.argv[1] == "verify":
        verify(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "sign":
        sign(sys.argv[2])
    else:
        sys.exit("unknown mode " + sys.argv[1])


if __name__ == "__main__":
    main()
