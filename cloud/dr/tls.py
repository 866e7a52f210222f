"""The VEN's TLS material, checked when the settings are read: a certificate, key or CA that
cannot serve is one line naming the file and what is wrong, before any connection is tried.
Loaded the way the connection loads them (``ssl``) and the way messages are signed
(``cryptography``, PEM), so what passes here is what openleadr gets."""

from __future__ import annotations

import datetime as dt
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from der_core.der_data import shown
from der_core.errors import ConfigError
from der_core.files import read_input

#: PEM files of a certificate chain or a key are a few kilobytes; past this it is not one.
MAX_PEM_BYTES = 1 << 20


def _pem(path: str, label: str) -> bytes:
    data = read_input(path, MAX_PEM_BYTES, f"{label} {shown(path, 200)}", "a PEM file")
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{label} {shown(path, 200)}: holds no PEM block; expected a PEM file (-----BEGIN ...)")
    return data


def check_tls(cert: str | None, key: str | None, passphrase: str | None, ca: str | None,
              labels: dict[str, str], now: dt.datetime | None = None) -> None:
    """Refuse, in one line, TLS files that cannot serve: not PEM, a key that is not the
    certificate's or cannot be decrypted with ``passphrase``, a certificate outside its dates,
    a CA file that holds no certificate. ``labels`` names each (``cert``, ``key``, ``ca``) as
    the user set it. A cert without its key, or the reverse, is refused too."""
    if bool(cert) != bool(key):
        given, lacking = ("cert", "key") if cert else ("key", "cert")
        raise ConfigError(f"{labels[given]} is set without {labels[lacking]}; expected both (the VEN's certificate "
                          "and its private key)")
    if cert and key:
        if not ca:
            raise ConfigError(f"{labels['cert']} and {labels['key']} are set without {labels['ca']}; expected all three "
                              "(the VEN's certificate, its key, and the CA the VTN's certificate is checked against)")
        data = _pem(cert, labels["cert"])
        _key(key, passphrase, labels["key"])
        try:
            certificate = x509.load_pem_x509_certificate(data)
        except ValueError:
            raise ConfigError(f"{labels['cert']} {shown(cert, 200)}: holds no certificate; expected the VEN's "
                              "certificate in PEM") from None
        moment = now or dt.datetime.now(dt.timezone.utc)
        if moment < certificate.not_valid_before_utc:
            raise ConfigError(f"{labels['cert']} {shown(cert, 200)}: not valid before "
                              f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; expected a certificate valid now")
        if moment > certificate.not_valid_after_utc:
            raise ConfigError(f"{labels['cert']} {shown(cert, 200)}: expired on "
                              f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; expected a certificate valid now")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:  # a callable password: OpenSSL never prompts on the terminal for an encrypted key
            context.load_cert_chain(cert, key, password=lambda: (passphrase or "").encode())
        except ssl.SSLError as error:
            raise ConfigError(f"{labels['key']} {shown(key, 200)}: {_reason(error)}; expected the private key of "
                              f"{labels['cert']} in PEM (encrypted: its passphrase in DER_OPENADR_KEY_PASSPHRASE)") from None
    if ca:
        _pem(ca, labels["ca"])
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=ca)
        except ssl.SSLError as error:
            raise ConfigError(f"{labels['ca']} {shown(ca, 200)}: {_reason(error)}; expected CA certificates in PEM") from None


def _key(path: str, passphrase: str | None, label: str) -> None:
    """The private key at ``path`` loads, decrypted with ``passphrase`` if it is encrypted."""
    data = _pem(path, label)
    try:
        serialization.load_pem_private_key(data, (passphrase or "").encode() or None)
    except TypeError as error:  # encrypted without a passphrase, or a passphrase for a plain key (which serves)
        if "not encrypted" in str(error):
            return
        raise ConfigError(f"{label} {shown(path, 200)}: is encrypted and no passphrase is set; expected its passphrase "
                          "in DER_OPENADR_KEY_PASSPHRASE") from None
    except ValueError as error:
        what = "cannot be decrypted with the passphrase set" if "decrypt" in str(error).lower() else "holds no private key"
        raise ConfigError(f"{label} {shown(path, 200)}: {what}; expected the VEN's private key in PEM") from None
    except Exception:  # an unsupported algorithm, say: cryptography raises its own types
        raise ConfigError(f"{label} {shown(path, 200)}: holds no private key this VEN can use; expected an RSA or EC "
                          "key in PEM") from None


def _reason(error: ssl.SSLError) -> str:
    """OpenSSL's reason in words. The key has been read and decrypted before ``ssl`` meets it
    (:func:`_key`), so what is left to say of a pair is that they do not match."""
    reason = str(getattr(error, "reason", None) or error)
    return "not the key of that certificate" if reason == "KEY_VALUES_MISMATCH" else reason.replace("_", " ").lower()
