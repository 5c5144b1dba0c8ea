"""The consortium's TLS material and the partners' node keys, made with the `cryptography` package.

`consortium certs` makes a consortium CA and a server certificate signed by it (names: localhost, 127.0.0.1
and every `--host`), the files Flower's SuperLink takes (`--ssl-ca-certfile ca.crt --ssl-certfile
server.pem --ssl-keyfile server.key`); partners get `ca.crt` only. `partner-kit keygen` makes a node key pair
in Flower's SuperNode-authentication format (NIST P-384, OpenSSH encoding: `--auth-supernode-private-key`
reads the private file, `flwr supernode register` the public one); the partner sends `partner.pub` to the
operator, who admits it with `consortium admit`. Private keys are written 0600 and never leave their owner.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from data_prep.atomic import write_atomic
from data_prep.errors import InputError

CA_CERT, SERVER_CERT, SERVER_KEY, CA_KEY = "ca.crt", "server.pem", "server.key", "ca.key"


@dataclass(frozen=True)
class CertFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    ca_key: Path


def _write(path: Path, data: bytes, private: bool) -> Path:
    def write(tmp: Path) -> None:
        tmp.write_bytes(data)
        tmp.chmod(0o600 if private else 0o644)

    return write_atomic(path, write)


def _name(common: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedqsar consortium"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certs(out: Path, hosts: list[str], *, days: int = 365, force: bool = False) -> CertFiles:
    """A CA and a server certificate for `hosts` (plus localhost and 127.0.0.1) under `out`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    out = Path(out)
    files = CertFiles(out / CA_CERT, out / SERVER_CERT, out / SERVER_KEY, out / CA_KEY)
    existing = [p for p in (files.ca_cert, files.server_cert, files.server_key, files.ca_key) if p.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]} exists; pass --force to replace the consortium's certificates (partners "
                         "then need the new ca.crt)")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a directory for the certificates")
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(["localhost", "127.0.0.1", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (x509.CertificateBuilder().subject_name(_name("fedqsar consortium CA")).issuer_name(
        _name("fedqsar consortium CA")).public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA384()))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0] if hosts else "localhost"))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA384()))
    pem = serialization.Encoding.PEM
    plain = serialization.NoEncryption()
    out.mkdir(parents=True, exist_ok=True)
    _write(files.ca_key, ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, plain), private=True)
    _write(files.ca_cert, ca_cert.public_bytes(pem), private=False)
    _write(files.server_key, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, plain), private=True)
    _write(files.server_cert, cert.public_bytes(pem), private=False)
    return files


def make_node_keys(private: Path, *, force: bool = False) -> tuple[Path, Path]:
    """A SuperNode key pair: `private` (OpenSSH, 0600) and `private` + ".pub" (what the operator admits)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = Path(private)
    public = private.with_name(private.name + ".pub")
    for p in (private, public):
        if p.exists() and not force:
            raise InputError(f"{p} exists; pass --force to replace this partner's node key (then admit the new "
                             "public key)")
        if p.parent.exists() and not p.parent.is_dir():
            raise InputError(f"{p.parent} is a file; give a path in a directory for the key")
    key = ec.generate_private_key(ec.SECP384R1())
    private.parent.mkdir(parents=True, exist_ok=True)
    _write(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                      serialization.NoEncryption()), private=True)
    _write(public, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                 serialization.PublicFormat.OpenSSH) + b"\n", private=False)
    return private, public


def check_node_public_key(path: Path) -> bytes:
    """The public key file's bytes if it is a NIST-curve EC key in OpenSSH format (what Flower registers)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = Path(path)
    if not path.is_file():
        raise InputError(f"public key {path} not found; the partner makes it with `partner-kit keygen`")
    data = path.read_bytes()
    try:
        key = serialization.load_ssh_public_key(data.strip())
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{path} is not an OpenSSH public key; send the .pub file `partner-kit keygen` wrote "
                         "(never the private key)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in (
            "secp256r1", "secp384r1", "secp521r1"):
        raise InputError(f"{path} is not a NIST P-256/384/521 EC key; Flower's node authentication needs one "
                         "(`partner-kit keygen` makes a P-384 key)")
    return data


def check_tls_files(ca: Path | None, cert: Path | None, key: Path | None) -> tuple[Path, Path, Path]:
    """Absolute paths of the three server TLS files, each present; before anything starts."""
    if not (ca and cert and key):
        raise InputError("TLS needs --certs DIR (from `consortium certs`) or --ssl-ca-certfile, --ssl-certfile and "
                         "--ssl-keyfile; --insecure is for loopback tests only")
    out = []
    for what, p in (("--ssl-ca-certfile", ca), ("--ssl-certfile", cert), ("--ssl-keyfile", key)):
        p = Path(p).expanduser().resolve()
        if not p.is_file():
            raise InputError(f"{what} {p} not found; make the files with `consortium certs --out DIR`")
        out.append(p)
    return out[0], out[1], out[2]
