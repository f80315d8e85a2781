"""Helpers for the authentication tests: password-file lines made with
hashlib (the same format `antenna passwd` writes), JWTs made by hand
(HS256 with hmac; RS256/ES256 with the `cryptography` package), a paho
client that reports the CONNACK code instead of asserting success."""

import base64
import hashlib
import hmac
import json
import os
import threading
import time

import paho.mqtt.client as mqtt


def pbkdf2_line(user, password, iterations=1000, salt=None):
    salt = salt or os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return "%s:$pbkdf2-sha512$%d$%s$%s" % (user, iterations, base64.b64encode(salt).decode(),
                                           base64.b64encode(dk).decode())


def scram_line(user, password, iterations=1000, salt=None):
    """The line `antenna passwd` writes: SCRAM-SHA-512's StoredKey and
    ServerKey of the PBKDF2-SHA512 salted password (RFC 5802)."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    stored = hashlib.sha512(hmac.new(salted, b"Client Key", hashlib.sha512).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha512).digest()
    return "%s:$scram-sha-512$%d$%s$%s$%s" % (user, iterations, base64.b64encode(salt).decode(),
                                              base64.b64encode(stored).decode(),
                                              base64.b64encode(server).decode())


def verify_line(line, password):
    user, h = line.split(":", 1)
    parts = h.split("$")
    scheme, it, salt = parts[1], parts[2], parts[3]
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(it), 64)
    if scheme == "scram-sha-512":
        got = hashlib.sha512(hmac.new(got, b"Client Key", hashlib.sha512).digest()).digest()
    else:
        assert scheme == "pbkdf2-sha512"
    return hmac.compare_digest(got, base64.b64decode(parts[4]))


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt_hs256(claims, secret, header=None):
    hdr = header or {"alg": "HS256", "typ": "JWT"}
    signing = (b64u(json.dumps(hdr).encode()) + "." + b64u(json.dumps(claims).encode()))
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64u(sig)


def jwt_sign(claims, key, alg, kid=None):
    """RS256 or ES256 with a cryptography private key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    hdr = {"alg": alg, "typ": "JWT"}
    if kid:
        hdr["kid"] = kid
    signing = (b64u(json.dumps(hdr).encode()) + "." + b64u(json.dumps(claims).encode())).encode()
    if alg == "RS256":
        sig = key.sign(signing, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(signing, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing.decode() + "." + b64u(sig)


def jwk_of(pub, kid):
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    if isinstance(pub, rsa.RSAPublicKey):
        n = pub.public_numbers()
        return {"kty": "RSA", "kid": kid, "alg": "RS256",
                "n": b64u(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
                "e": b64u(n.e.to_bytes((n.e.bit_length() + 7) // 8, "big"))}
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    n = pub.public_numbers()
    return {"kty": "EC", "kid": kid, "crv": "P-256",
            "x": b64u(n.x.to_bytes(32, "big")), "y": b64u(n.y.to_bytes(32, "big"))}


def pem_public(key):
    from cryptography.hazmat.primitives import serialization
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def paho_connack(broker, username=None, password=None, protocol=mqtt.MQTTv311,
                 client_id="", timeout=5.0):
    """Connect with paho; return the CONNACK code (int; MQTT 5: the reason
    code value) and disconnect."""
    kw = {"client_id": client_id, "protocol": protocol}
    if protocol != mqtt.MQTTv5:
        kw["clean_session"] = True
    c = mqtt.Client(**kw)
    if username is not None or password is not None:
        c.username_pw_set(username, password)
    got = {}
    done = threading.Event()

    def on_connect(client, userdata, flags, rc, properties=None):
        got["rc"] = rc.value if hasattr(rc, "value") else rc
        done.set()

    def on_disconnect(client, userdata, rc, properties=None):
        if "rc" not in got:
            got["closed"] = True
        done.set()

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    c.connect(broker.host, broker.port, 30)
    c.loop_start()
    try:
        assert done.wait(timeout), "no CONNACK within %.1fs" % timeout
        deadline = time.monotonic() + 1.0
        while "rc" not in got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "rc" in got, "connection closed without CONNACK"
        return got["rc"]
    finally:
        c.disconnect()
        c.loop_stop()
