"""Image-list verification: cloudctl's verifier (asn1crypto + cryptography, in process) against
`openssl smime -verify` (the tool vmcatcher's docs use), on the same signed list, as a ratio.

    .venv/bin/python bench/marketplace_verify.py [--images 1000] [--rounds 50]
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cloudctl.core.marketplace import imagelist, smime  # noqa: E402
from cloudctl.core.marketplace.trust import TrustStore  # noqa: E402

from mp_lists import list_doc  # noqa: E402
from mp_pki import make_ca, make_endorser  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()
    ca = make_ca()
    endorser = make_endorser(ca, "Bench Endorser")
    images = [{"hv:image": {"dc:identifier": f"img-{n}", "dc:title": f"image {n}", "hv:uri": f"http://x/{n}",
                            "hv:size": n, "sl:checksum:sha512": hashlib.sha512(str(n).encode()).hexdigest()}}
              for n in range(args.images)]
    body = imagelist.dump(list_doc("bench", "1", endorser, images))
    msg = smime.sign(body, endorser.cert, endorser.key)
    with tempfile.TemporaryDirectory() as d:
        ca_pem, _ = ca.write(Path(d), "ca")
        f = Path(d) / "list.smime"
        f.write_bytes(msg)
        store = TrustStore.load(ca_pem)
        now = dt.datetime.now(dt.timezone.utc)
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            s = smime.verify(msg)
            store.check(s.signer, s.certificates, now)
            imagelist.images(imagelist.parse(s.content))
        ours = (time.perf_counter() - t0) / args.rounds
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            subprocess.run(["openssl", "smime", "-verify", "-in", str(f), "-CAfile", str(ca_pem), "-out", "/dev/null"],
                           check=True, capture_output=True)
        theirs = (time.perf_counter() - t0) / args.rounds
    print(f"list of {args.images} images, {len(msg)} bytes signed")
    print(f"cloudctl verify+chain+parse  {ours * 1000:8.2f} ms")
    print(f"openssl smime -verify        {theirs * 1000:8.2f} ms  (process start included)")
    print(f"ratio cloudctl/openssl       {ours / theirs:8.2f}")


if __name__ == "__main__":
    main()
