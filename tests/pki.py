"""A throw-away PKI for TLS tests, made by the `openssl` CLI at test time (nothing checked in
expires or leaks): a CA, a server certificate for localhost/127.0.0.1, one for a wrong name, a
client certificate, and a second CA that signed nothing here.

The certificates carry the extensions a real CA puts in them (RFC 5280), because the daemon
verifies strictly (ssl.VERIFY_X509_STRICT, Python 3.13's default, set by esl_audio_stream/ws/tls.py
on every interpreter): a CA certificate has basicConstraints critical CA:TRUE, keyUsage critical
keyCertSign+cRLSign and its key identifiers; a leaf has keyUsage critical digitalSignature (EC
keys sign, they do not encipher), its extendedKeyUsage, a subjectAltName and both key identifiers.
OLD_CA_EXTENSIONS is what `openssl req -x509` used to give a private CA (no keyUsage); the
README's fix for it (re-issuing the CA certificate with CA_EXTENSIONS) is run by
tests/test_tls_strict.py.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CA_EXTENSIONS = ("basicConstraints=critical,CA:TRUE\n"
                 "keyUsage=critical,keyCertSign,cRLSign\n"
                 "subjectKeyIdentifier=hash\n"
                 "authorityKeyIdentifier=keyid:always\n")
OLD_CA_EXTENSIONS = ("basicConstraints=critical,CA:TRUE\n"
                     "subjectKeyIdentifier=hash\n"
                     "authorityKeyIdentifier=keyid:always\n")
LEAF_EXTENSIONS = ("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid:always\n")
EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class PKI:
    dir: Path
    ca: str
    server_cert: str  # CN=localhost, SAN DNS:localhost, IP:127.0.0.1, serverAuth
    server_key: str
    wrong_cert: str  # CN=wrong.example, SAN DNS:wrong.example only
    wrong_key: str
    client_cert: str  # CN=client-1, SAN DNS:client-1, clientAuth
    client_key: str
    other_ca: str


class PKIUnavailable(Exception):
    """No openssl CLI, or it failed: the caller skips its tests."""


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_ca(d: Path, name: str, extensions: str = CA_EXTENSIONS,
            subject: str | None = None) -> str:
    """A self-signed CA certificate `d/<name>.pem` (key `d/<name>.key`) with these extensions,
    from a configuration of its own: nothing comes from the system's openssl.cnf."""
    conf = d / f"{name}.cnf"
    conf.write_text("[req]\ndistinguished_name = dn\n[dn]\n[ext]\n" + extensions)
    openssl("req", "-x509", *EC, "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"),
            "-days", "1", "-subj", subject or f"/CN=esl-audio-stream test {name}",
            "-config", str(conf), "-extensions", "ext")
    return str(d / f"{name}.pem")


def make_intermediate(d: Path, name: str, ca: str = "ca") -> str:
    """An intermediate CA certificate `d/<name>.pem` (key `d/<name>.key`) signed by CA `d/<ca>`."""
    ext, csr = d / f"{name}.ext", d / f"{name}.csr"
    ext.write_text(CA_EXTENSIONS)
    openssl("req", "-new", *EC, "-keyout", str(d / f"{name}.key"), "-out", str(csr), "-subj",
            f"/CN=esl-audio-stream test {name}")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(d / f"{ca}.pem"), "-CAkey",
            str(d / f"{ca}.key"), "-CAcreateserial", "-days", "1", "-out", str(d / f"{name}.pem"),
            "-extfile", str(ext))
    return str(d / f"{name}.pem")


def make_leaf(d: Path, name: str, cn: str, ext: str, ca: str = "ca") -> tuple[str, str]:
    """A certificate `d/<name>.pem` for `cn` (key `d/<name>.key`) signed by CA `d/<ca>`; `ext`
    adds its subjectAltName and extendedKeyUsage to LEAF_EXTENSIONS."""
    key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    extfile = d / f"{name}.ext"
    extfile.write_text(LEAF_EXTENSIONS + ext)
    openssl("req", "-new", *EC, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(d / f"{ca}.pem"), "-CAkey",
            str(d / f"{ca}.key"), "-CAcreateserial", "-days", "1", "-out", str(cert),
            "-extfile", str(extfile))
    return str(cert), str(key)


def server_extensions(*names: str) -> str:
    """A server's subjectAltName (DNS names, or IP addresses) and extendedKeyUsage."""
    san = ",".join(f"IP:{n}" if n.replace(".", "").isdigit() else f"DNS:{n}" for n in names)
    return f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n"


def make_pki(d: Path) -> PKI:
    """Write the PKI into directory `d`; raises PKIUnavailable when openssl cannot make it."""
    if shutil.which("openssl") is None:
        raise PKIUnavailable("no openssl command-line tool: it makes the test certificates")
    try:
        ca = make_ca(d, "ca")
        other_ca = make_ca(d, "other-ca")
        server = make_leaf(d, "server", "localhost", server_extensions("localhost", "127.0.0.1"))
        wrong = make_leaf(d, "wrong", "wrong.example", server_extensions("wrong.example"))
        client = make_leaf(d, "client", "client-1",
                           "subjectAltName=DNS:client-1\nextendedKeyUsage=clientAuth\n")
    except subprocess.CalledProcessError as exc:
        raise PKIUnavailable(
            f"openssl CLI failed: {exc.stderr.decode(errors='replace')[:300]}") from None
    return PKI(d, ca, *server, *wrong, *client, other_ca)
