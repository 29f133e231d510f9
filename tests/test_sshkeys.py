"""Key pair crypto: generated keys are usable and fingerprints match what AWS would report."""
from __future__ import annotations

import base64
import hashlib
import shutil
import struct
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from cloudctl.core.sshkeys import KeyMaterial, generate, parse_public

SSH_KEYGEN = shutil.which("ssh-keygen") or ""
needs_ssh_keygen = pytest.mark.skipif(not SSH_KEYGEN, reason="ssh-keygen not installed")

# Fixed keys made once with ssh-keygen.  Expected fingerprints computed outside Python:
#   ssh-keygen -e -m PKCS8 -f fx.pub | openssl pkey -pubin -outform DER | openssl md5 -c
#   ssh-keygen -lf fe.pub            (SHA256, printed without '=' padding)
FIXED_RSA = ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDTdqCzG10jxPuttJq1MXiqo+ofRXYeqfTNQ2C8RoXyq4r"
             "DpF4bn1fNDQ1k1yLPPX30leeQjO4jCM5osM+/8aPpLeoTLjeiadJRTbmZD6ZcW9wBJX1Jq2vEOFD4sltRjn"
             "4kA8qJcsNifKer2WnWr4zwixoPmkCt6DGFhzJWIkTBQQ== fixture@cloudctl")
FIXED_RSA_AWS_MD5 = "87:88:a7:d3:9d:5b:fa:b9:af:99:4d:7b:91:0d:bd:3b"
FIXED_RSA_SSH_KEYGEN_MD5 = "d8:77:7a:94:f6:48:17:19:0b:e4:8a:ef:30:d8:74:16"  # NOT the AWS one
FIXED_ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9YBN7w47V0T/TdZW9JdTflxFv03VA3q3YPT9SuQav9 "
                 "fixture@cloudctl")
FIXED_ED25519_SHA256 = "k6gYqP2TccEAQj2x9t8jENqwPoX0seCwttkAfc2ES9Y="


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def ssh_mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big")  # leading 0 keeps it positive
    return ssh_string(raw)


def blob_of(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> bytes:
    """SSH wire-format public key built by hand (RFC 4253 / RFC 8709), independent of the code."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return ssh_string(b"ssh-ed25519") + ssh_string(raw)
    nums = key.public_numbers()
    return ssh_string(b"ssh-rsa") + ssh_mpint(nums.e) + ssh_mpint(nums.n)


def openssh_of(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> str:
    kind = "ssh-ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "ssh-rsa"
    return f"{kind} {base64.b64encode(blob_of(key)).decode()}"


def rfc4716_of(line: str, comment: str = "") -> bytes:
    b64 = line.split()[1]
    body = "\n".join(b64[i:i + 70] for i in range(0, len(b64), 70))
    header = f'Comment: "{comment}"\n' if comment else ""
    return f"---- BEGIN SSH2 PUBLIC KEY ----\n{header}{body}\n---- END SSH2 PUBLIC KEY ----\n".encode()


def aws_rsa_import_md5(key: rsa.RSAPublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return ":".join(f"{b:02x}" for b in hashlib.md5(der).digest())


# -- generate --------------------------------------------------------------------------------

def test_generate_rsa() -> None:
    km = generate()
    assert km.key_type == "rsa" and km.private_pem is not None
    assert km.private_pem.startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    private = serialization.load_pem_private_key(km.private_pem.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    assert km.public_openssh == openssh_of(private.public_key())
    assert len(km.public_openssh.split()) == 2 and "\n" not in km.public_openssh
    # AWS: `openssl pkcs8 -in key.pem -inform PEM -outform DER -topk8 -nocrypt | openssl sha1 -c`
    pkcs8 = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    expected = hashlib.sha1(pkcs8).hexdigest()
    assert km.fingerprint == ":".join(expected[i:i + 2] for i in range(0, 40, 2))


def test_generate_ed25519() -> None:
    km = generate("ed25519")
    assert km.key_type == "ed25519" and km.private_pem is not None
    assert km.private_pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    private = serialization.load_ssh_private_key(km.private_pem.encode(), password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert km.public_openssh == openssh_of(private.public_key())
    digest = hashlib.sha256(blob_of(private.public_key())).digest()
    assert km.fingerprint == base64.b64encode(digest).decode()
    assert len(km.fingerprint) == 44 and km.fingerprint.endswith("=")


def test_generated_keys_differ_and_are_thread_safe() -> None:
    with ThreadPoolExecutor(4) as pool:
        keys = list(pool.map(generate, ["rsa", "ed25519"] * 3))
    assert len({k.fingerprint for k in keys}) == 6
    for km in keys:  # each private key still matches its own public key
        assert km.private_pem is not None
        loader: Callable[..., object] = (serialization.load_pem_private_key if km.key_type == "rsa"
                                         else serialization.load_ssh_private_key)
        private = loader(km.private_pem.encode(), password=None)
        assert openssh_of(private.public_key()) == km.public_openssh  # type: ignore[attr-defined]


@needs_ssh_keygen
@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
def test_generated_private_key_accepted_by_ssh_keygen(tmp_path: Path, key_type: str) -> None:
    km = generate(key_type)
    assert km.private_pem is not None
    path = tmp_path / "id"
    path.write_text(km.private_pem)
    path.chmod(0o600)
    out = subprocess.run([SSH_KEYGEN, "-y", "-f", str(path)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert " ".join(out[:2]) == km.public_openssh
    if key_type == "ed25519":
        line = subprocess.run([SSH_KEYGEN, "-l", "-f", str(path)], capture_output=True, text=True,
                              check=True).stdout
        assert f"SHA256:{km.fingerprint.rstrip('=')} " in line


@pytest.mark.parametrize(("key_type", "key_format"),
                         [("dsa", "pem"), ("ecdsa", "pem"), ("RSA", "pem"), ("rsa", "ppk"),
                          ("ed25519", "der"), ("", "pem")])
def test_generate_rejects(key_type: str, key_format: str) -> None:
    with pytest.raises(ValueError):
        generate(key_type, key_format)


def test_generated_key_round_trips_through_import_with_aws_import_fingerprint() -> None:
    km = generate()
    imported = parse_public(km.public_openssh.encode())
    assert imported.public_openssh == km.public_openssh and imported.private_pem is None
    # Same key, different fingerprint: AWS hashes the private key for keys it creates.
    assert imported.fingerprint != km.fingerprint and len(imported.fingerprint) == 47


# -- parse_public ----------------------------------------------------------------------------

def test_fixed_rsa_fingerprint() -> None:
    km = parse_public(FIXED_RSA.encode())
    assert km == KeyMaterial("rsa", " ".join(FIXED_RSA.split()[:2]), FIXED_RSA_AWS_MD5, None)
    key = serialization.load_ssh_public_key(FIXED_RSA.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    assert aws_rsa_import_md5(key) == FIXED_RSA_AWS_MD5
    wire_md5 = hashlib.md5(base64.b64decode(FIXED_RSA.split()[1])).hexdigest()
    assert ":".join(wire_md5[i:i + 2] for i in range(0, 32, 2)) == FIXED_RSA_SSH_KEYGEN_MD5
    assert km.fingerprint != FIXED_RSA_SSH_KEYGEN_MD5


def test_fixed_ed25519_fingerprint() -> None:
    km = parse_public(FIXED_ED25519.encode())
    assert km == KeyMaterial("ed25519", " ".join(FIXED_ED25519.split()[:2]), FIXED_ED25519_SHA256,
                             None)


def _all_forms(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> dict[str, bytes]:
    line = openssh_of(key)
    spki_der = key.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
    forms = {
        "openssh": f"{line} someone@somewhere\n".encode(),
        "openssh-no-comment": line.encode(),
        "openssh-crlf-bom": ("\ufeff" + line + " c\r\n").encode(),
        "authorized_keys-options": f'from="10.0.0.0/8",no-pty {line} c'.encode(),
        "rfc4716": rfc4716_of(line, "2048-bit key, \\\n continued comment"),
        "rfc4716-no-header": rfc4716_of(line),
        "pem-spki": key.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo),
        "der-spki": spki_der,
        "base64-der-spki": base64.b64encode(spki_der),
        "base64-of-openssh-line": base64.b64encode(f"{line} c\n".encode()),
    }
    if isinstance(key, rsa.RSAPublicKey):
        forms["pem-pkcs1"] = key.public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.PKCS1)
        forms["base64-der-pkcs1"] = base64.b64encode(
            key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1))
    return forms


@pytest.mark.parametrize("bits", [1024, 2048, 3072, 4096])
def test_rsa_import_forms_agree(bits: int) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    expected = aws_rsa_import_md5(key)
    for name, material in _all_forms(key).items():
        km = parse_public(material)
        assert (km.key_type, km.fingerprint, km.public_openssh) == ("rsa", expected, openssh_of(key)), name
        assert km.private_pem is None


def test_ed25519_import_forms_agree() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    expected = base64.b64encode(hashlib.sha256(blob_of(key)).digest()).decode()
    for name, material in _all_forms(key).items():
        km = parse_public(material)
        assert (km.key_type, km.fingerprint, km.public_openssh) == ("ed25519", expected, openssh_of(key)), name


@needs_ssh_keygen
@pytest.mark.parametrize("fixed", [FIXED_RSA, FIXED_ED25519])
def test_ssh_keygen_exports_agree(tmp_path: Path, fixed: str) -> None:
    pub = tmp_path / "k.pub"
    pub.write_text(fixed + "\n")
    expected = parse_public(fixed.encode()).fingerprint
    # OpenSSH 9.x exports ED25519 only as RFC 4716.
    modes = ["RFC4716"] + (["PKCS8", "PEM"] if fixed.startswith("ssh-rsa") else [])
    for mode in modes:
        out = subprocess.run([SSH_KEYGEN, "-e", "-m", mode, "-f", str(pub)], capture_output=True,
                             check=True).stdout
        assert parse_public(out).fingerprint == expected, mode
    if fixed.startswith("ssh-ed25519"):
        line = subprocess.run([SSH_KEYGEN, "-l", "-f", str(pub)], capture_output=True, text=True,
                              check=True).stdout
        assert f"SHA256:{expected.rstrip('=')} " in line


def _dsa_line() -> bytes:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        key = dsa.generate_private_key(1024).public_key()
        return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def _small_rsa(bits: int) -> rsa.RSAPublicKey:
    n = (1 << (bits - 1)) | 0xF1  # any odd modulus of the right size: only its length matters here
    return rsa.RSAPublicNumbers(65537, n).public_key()


@pytest.mark.parametrize(("material", "match"), [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"garbage", "format"),
    (b"ssh-rsa", "format"),
    (b"ssh-rsa AAAAnot-base64!!", "format"),
    (b"ssh-rsa AAAAB3NzaC1yc2E= trunc", "format"),
    (b"\x00\x01\x02\xff\xfe", "format"),
    (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "PEM"),
    (b"---- BEGIN SSH2 PUBLIC KEY ----\nAAAAB3NzaC1yc2E=\n", "END"),
    (b"x" * 20000, "too large"),
])
def test_garbage_rejected(material: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_public(material)


def test_dsa_and_ecdsa_rejected() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    ec_line = ec_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    for material in (_dsa_line(), ec_line, rfc4716_of(ec_line.decode()),
                     ec_key.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo),
                     ec_key.public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)):
        with pytest.raises(ValueError, match="unsupported key type"):
            parse_public(material)


@pytest.mark.parametrize("bits", [512, 1016, 4104, 8192])
def test_rsa_size_limits(bits: int) -> None:
    key = _small_rsa(bits)
    assert key.key_size == bits
    for material in (openssh_of(key).encode(),
                     key.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)):
        with pytest.raises(ValueError, match="bits"):
            parse_public(material)


def test_private_key_rejected_with_a_helpful_message() -> None:
    km = generate("ed25519")
    assert km.private_pem is not None
    with pytest.raises(ValueError, match="private key"):
        parse_public(km.private_pem.encode())


def test_type_label_must_match_blob() -> None:
    rsa_b64 = FIXED_RSA.split()[1]
    with pytest.raises(ValueError, match="does not match"):
        parse_public(f"ssh-ed25519 {rsa_b64}".encode())


def test_several_keys_rejected() -> None:
    with pytest.raises(ValueError, match="one public key"):
        parse_public(f"{FIXED_RSA}\n{FIXED_ED25519}\n".encode())
