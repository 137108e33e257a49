"""The mall login service's public key (AUTH_JWT_PUBLIC_KEY): PEM text or a file's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# RSA keys below 2048 bits are factorable with public means (NIST SP 800-131A).
MIN_RSA_BITS = 2048


def load_public_key(value: str) -> tuple[Any, str]:
    """The verification key and its one JWS algorithm, from PEM text or a PEM file's path:
    an RSA key (>= 2048 bits) verifies RS256, a P-256 key ES256. ValueError says what is wrong."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = value.strip()
    if not text.startswith("-----BEGIN"):
        path = Path(text)
        if not path.is_file():
            raise ValueError("neither PEM text nor the path of a readable file")
        text = path.read_text(encoding="ascii", errors="replace").strip()
    elif "\n" not in text and "\\n" in text:
        text = text.replace("\\n", "\n")  # an env file that escaped the PEM's newlines
    try:
        key = load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        raise ValueError("not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"an RSA key needs at least {MIN_RSA_BITS} bits")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ValueError("only RSA (RS256) and P-256 (ES256) public keys are accepted")
