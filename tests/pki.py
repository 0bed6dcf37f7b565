"""A throw-away PKI for TLS tests, made by the `openssl` CLI at test time (nothing checked in
expires or leaks): a CA, a server certificate for localhost/127.0.0.1, one for a wrong name, a
client certificate, and a second CA that signed nothing here.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PKI:
    dir: Path
    ca: str
    server_cert: str  # CN=localhost, SAN DNS:localhost, IP:127.0.0.1
    server_key: str
    wrong_cert: str  # CN=wrong.example, SAN DNS:wrong.example only
    wrong_key: str
    client_cert: str  # CN=client-1, clientAuth
    client_key: str
    other_ca: str


class PKIUnavailable(Exception):
    """No openssl CLI, or it failed: the caller skips its tests."""


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _ca(d: Path, name: str) -> str:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"), "-days", "1",
             "-subj", f"/CN=esl-audio-stream test {name}")
    return str(d / f"{name}.pem")


def _leaf(d: Path, name: str, cn: str, ext: str) -> tuple[str, str]:
    key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    extfile = d / f"{name}.ext"
    extfile.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "subjectKeyIdentifier=hash\n" + ext
    )
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", "1", "-out", str(cert), "-extfile", str(extfile))
    return str(cert), str(key)


def make_pki(d: Path) -> PKI:
    """Write the PKI into directory `d`; raises PKIUnavailable when openssl cannot make it."""
    if shutil.which("openssl") is None:
        raise PKIUnavailable("no openssl command-line tool: it makes the test certificates")
    try:
        ca = _ca(d, "ca")
        other_ca = _ca(d, "other-ca")
        server = _leaf(d, "server", "localhost",
                       "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        wrong = _leaf(d, "wrong", "wrong.example",
                      "subjectAltName=DNS:wrong.example\nextendedKeyUsage=serverAuth\n")
        client = _leaf(d, "client", "client-1", "extendedKeyUsage=clientAuth\n")
    except subprocess.CalledProcessError as exc:
        raise PKIUnavailable(
            f"openssl CLI failed: {exc.stderr.decode(errors='replace')[:300]}") from None
    return PKI(d, ca, *server, *wrong, *client, other_ca)
