"""Provenance of every video the engine writes (DESIGN.md decision 8).

- An AI-generated label in the mp4's standard tags (`media.ai_label_tags`) and `settings["provenance"]`.
- An invisible watermark in every frame: invisible-watermark's `dwtDctSvd` method (DWT-DCT-SVD on the U plane; the
  `dwtDct` method diffusers applies to SDXL images kept only 54-100% of the bits through our own H.264 encode, chance
  being 50%: bench/watermark_bench.py) carrying 48 bits = a 32-bit generation id + its CRC-16, XOR-whitened with a fixed key.
  Detection averages the block votes of a sample of frames per bit and accepts a read-out only when the CRC matches
  (after at most one flip of the least certain bits): an unmarked video passes with probability < 1.1e-4.
  Frames under 256×256 pixels (the library's own limit) are not marked, and the settings and `verify` say so.
- Optionally a C2PA manifest (`sign_c2pa`, when HUMO_C2PA_CERT and HUMO_C2PA_KEY name a PEM chain and key): a
  `c2pa.created` action with digitalSourceType trainedAlgorithmicMedia, signed offline (no timestamp authority).
- `verify_file(path)`: what `python -m engine verify FILE` prints.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from engine import media
from engine.errors import HuMoError

ENGINE_VERSION = "0.1.0"  # the claim generator's version in every label and C2PA manifest
METHOD = "dwtDctSvd"
ID_BITS, CRC_BITS = 32, 16
MARK_BITS = ID_BITS + CRC_BITS
MIN_PIXELS = 256 * 256  # imwatermark refuses smaller images ("image too small, should be larger than 256x256")
SCALE = 36  # quantisation step (the library's default; 48 is more robust but shows chroma blocks on flat areas)
CHASE_BITS = 6  # single-bit corrections tried on the least certain bits when the CRC fails
DETECT_FRAMES = 16  # frames sampled for detection
_WHITEN = np.unpackbits(np.frombuffer(hashlib.sha256(b"HuMo Studio watermark v1").digest()[:6], np.uint8))
C2PA_CERT_ENV, C2PA_KEY_ENV, C2PA_TRUST_ENV = "HUMO_C2PA_CERT", "HUMO_C2PA_KEY", "HUMO_C2PA_TRUST"


class ProvenanceError(HuMoError):
    """Signing or reading provenance failed in a way the user can fix (certificate, key, package)."""


def ai_label(model_id: str) -> str:
    return f"AI-generated video (HuMo Studio, model {model_id})"


# ---------------------------------------------------------------------------------------------- payload
def payload_for(settings: dict) -> int:
    """32-bit id of a generation: the first 4 bytes of the SHA-256 of its settings JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def payload_bits(payload: int) -> np.ndarray:
    """The 48 embedded bits of a 32-bit payload: id + CRC-16, XOR the whitening key."""
    data = int(payload).to_bytes(4, "big")
    word = data + _crc16(data).to_bytes(2, "big")
    return np.unpackbits(np.frombuffer(word, np.uint8)) ^ _WHITEN


def bits_payload(bits: np.ndarray) -> int | None:
    """The payload of 48 read bits, or None when their CRC does not match."""
    word = np.packbits(np.asarray(bits, np.uint8) ^ _WHITEN).tobytes()
    return int.from_bytes(word[:4], "big") if _crc16(word[:4]) == int.from_bytes(word[4:], "big") else None


# ---------------------------------------------------------------------------------------------- watermark
def watermark_fits(height: int, width: int) -> bool:
    return height * width >= MIN_PIXELS


def too_small_message(height: int, width: int) -> str:
    return (
        f"too small for the invisible watermark ({width}×{height}; needs at least {MIN_PIXELS:,} pixels, e.g. 256×256)"
    )


def _blocks(band: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The 4x4 blocks of a DWT band in raster order, as a [N, 4, 4] copy, and the block grid."""
    r, c = band.shape[0] // 4, band.shape[1] // 4
    return band[: r * 4, : c * 4].reshape(r, 4, c, 4).swapaxes(1, 2).reshape(-1, 4, 4), (r, c)


def _top_singular(blocks: np.ndarray, iterations: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Largest singular value and right singular vector of each block, by power iteration on B^T B. The U plane's
    offset of 128 makes the first singular value dominate (s1/s0 < 0.15 on noise), so 6 steps are exact to ~1e-10;
    10x faster than numpy's batched SVD or eigh on 4x4 matrices."""
    gram = blocks.swapaxes(1, 2) @ blocks
    vector = np.full(blocks.shape[:2], 0.5)
    for _ in range(iterations):
        vector = (gram @ vector[..., None])[..., 0]
        vector /= np.maximum(np.linalg.norm(vector, axis=1, keepdims=True), 1e-12)
    return np.linalg.norm((blocks @ vector[..., None])[..., 0], axis=1), vector


def _haar_ll(plane: np.ndarray) -> np.ndarray:
    """The LL band of a one-level Haar DWT (pywt.dwt2(plane, "haar")[0]) of an even-sized plane."""
    return (plane[0::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 0::2] + plane[1::2, 1::2]) / 2


def _embedder(bits=()):
    """invisible-watermark's dwtDctSvd embedder: BGR -> YUV -> Haar DWT of the U plane -> in each 4x4 block of the LL
    band (8x8 pixels) the largest singular value of its DCT is quantised to step SCALE, at 1/4 or 3/4 of a step for a
    0 or 1 bit; bit i goes to every 48th block. The same arithmetic as the library, on all blocks at once (the DCT is
    orthonormal, so a block's singular values are those of its DCT; only the LL band changes, so the inverse DWT adds
    half the LL change to each pixel of its 2x2 cell). `encode` also avoids three library defects that cost image
    quality and bit accuracy: it wraps out-of-range values around in uint8, truncates instead of rounding, and puts the
    horizontal and vertical detail bands back swapped. The unmodified library decodes our marks and we decode its
    marks (tests/test_provenance.py). ~10x faster than the library."""
    import cv2
    from imwatermark.dwtDctSvd import EmbedDwtDctSvd

    class VectorDwtDctSvd(EmbedDwtDctSvd):
        def encode(self, bgr):
            rows, cols = bgr.shape[0] // 4 * 4, bgr.shape[1] // 4 * 4
            yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV).astype(np.float64)
            band = _haar_ll(yuv[:rows, :cols, 1])
            marked = band.copy()
            self.encode_frame(marked, self._scales[1])
            yuv[:rows, :cols, 1] += np.repeat(np.repeat((marked - band) / 2, 2, 0), 2, 1)
            return cv2.cvtColor(np.clip(yuv, 0, 255).round().astype(np.uint8), cv2.COLOR_YUV2BGR)

        def encode_frame(self, frame, scale):
            blocks, (r, c) = _blocks(frame)
            s0, v0 = _top_singular(blocks)
            u0 = (blocks @ v0[..., None])[..., 0] / np.maximum(s0, 1e-9)[:, None]
            bits = np.resize(np.asarray(self._watermarks, np.float64), len(blocks))
            target = (s0 // scale + 0.25 + 0.5 * bits) * scale
            blocks += (target - s0)[:, None, None] * u0[:, :, None] * v0[:, None, :]
            frame[: r * 4, : c * 4] = blocks.reshape(r, c, 4, 4).swapaxes(1, 2).reshape(r * 4, c * 4)

        def bit_scores(self, bgr):
            """Per bit, the share of its blocks voting 1 (the library's `avgScores` in `decode`)."""
            rows, cols = bgr.shape[0] // 4 * 4, bgr.shape[1] // 4 * 4
            blocks, _ = _blocks(_haar_ll(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)[:rows, :cols, 1].astype(np.float64)))
            scale = self._scales[1]
            votes = _top_singular(blocks)[0] % scale > 0.5 * scale
            index = np.arange(len(blocks)) % self._wmLen
            return np.bincount(index, votes.astype(np.float64), self._wmLen) / np.bincount(index, minlength=self._wmLen)

    return VectorDwtDctSvd(list(bits), wmLen=MARK_BITS, scales=[0, SCALE, 0])


def _bgr(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame[..., ::-1])


def embed_watermark(frames: np.ndarray, payload: int) -> np.ndarray:
    """uint8 RGB frames [F, H, W, 3] carrying `payload` (32 bits) in every frame; raises ValueError when too small."""
    frames = np.asarray(frames)
    h, w = frames.shape[1:3]
    if not watermark_fits(h, w):
        raise ValueError(f"Frames are {too_small_message(h, w)}.")
    embedder = _embedder(payload_bits(payload))
    return np.stack([embedder.encode(_bgr(frame))[..., ::-1] for frame in frames])


def _sample(frames: np.ndarray, count: int) -> np.ndarray:
    return frames[np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))]


def read_scores(frames: np.ndarray, max_frames: int = DETECT_FRAMES) -> np.ndarray:
    """Per embedded bit, the share of its block votes that read 1, over up to `max_frames` frames spread over the
    clip (every frame holds the whole mark, so frames vote together)."""
    decoder = _embedder()
    return np.mean([decoder.bit_scores(_bgr(f)) for f in _sample(np.asarray(frames), max_frames)], axis=0)


def decode_scores(scores: np.ndarray) -> int | None:
    """The payload of per-bit vote shares: the voted bits (the library's threshold) if their CRC matches, else the
    first of the CHASE_BITS single flips of the least certain bits that does; None otherwise. 1 + CHASE_BITS words
    are tried, so an unmarked video reads as marked with probability <= (1 + CHASE_BITS) / 2**16."""
    bits = (np.asarray(scores) * 255 > 127).astype(np.uint8)
    candidates = [bits]
    for index in np.argsort(np.abs(np.asarray(scores) - 0.5))[:CHASE_BITS]:
        flipped = bits.copy()
        flipped[index] ^= 1
        candidates.append(flipped)
    return next((p for p in map(bits_payload, candidates) if p is not None), None)


def detect_watermark(frames: np.ndarray, max_frames: int = DETECT_FRAMES) -> tuple[int | None, float]:
    """(payload or None, confidence) of uint8 RGB frames [F, H, W, 3]. confidence = the mean share of block votes
    agreeing with each voted bit (0.5 = chance; ~1 on a freshly marked clip; flat unmarked content also reads high,
    so the decision is the CRC's, not this number's)."""
    frames = np.asarray(frames)
    if not watermark_fits(*frames.shape[1:3]):
        return None, 0.0
    scores = read_scores(frames, max_frames)
    return decode_scores(scores), float(np.maximum(scores, 1 - scores).mean())


def mark_frames(frames: np.ndarray, settings: dict) -> tuple[np.ndarray, dict[str, Any]]:
    """Watermark a generation's frames; returns them and the record for `settings["provenance"]`."""
    h, w = frames.shape[1:3]
    record: dict[str, Any] = {"ai_generated": True, "digital_source_type": media.AI_SOURCE_TYPE}
    watermark: dict[str, Any] = {"method": METHOD, "library": "invisible-watermark"}
    if watermark_fits(h, w):
        payload = payload_for(settings)
        frames = embed_watermark(frames, payload)
        watermark.update(applied=True, payload=f"0x{payload:08x}", bits=ID_BITS, crc_bits=CRC_BITS, scale=SCALE)
    else:
        watermark.update(applied=False, reason=f"frames are {too_small_message(h, w)}")
    record["watermark"] = watermark
    if c2pa_configured():
        record["c2pa"] = "signed manifest: c2pa.created, trainedAlgorithmicMedia"
    return frames, record


# ---------------------------------------------------------------------------------------------- C2PA
def c2pa_configured() -> bool:
    return bool(os.environ.get(C2PA_CERT_ENV) and os.environ.get(C2PA_KEY_ENV))


def _c2pa():
    try:
        import c2pa
    except ImportError as exc:
        raise ProvenanceError("C2PA needs the c2pa-python package: pip install c2pa-python==0.38.1") from exc
    return c2pa


def c2pa_signer(cert: str | os.PathLike, key: str | os.PathLike):
    """A c2pa Signer from a PEM certificate chain (end-entity first) and its PEM private key."""
    c2pa = _c2pa()
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        cert_pem, key_pem = Path(cert).read_bytes(), Path(key).read_bytes()
        private = load_pem_private_key(key_pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ProvenanceError(f"Could not read the C2PA certificate {cert} or key {key}: {exc}") from exc
    algs = c2pa.C2paSigningAlg
    if isinstance(private, ec.EllipticCurvePrivateKey):
        alg = {"secp256r1": algs.ES256, "secp384r1": algs.ES384, "secp521r1": algs.ES512}.get(private.curve.name)
    else:
        alg = algs.ED25519 if isinstance(private, ed25519.Ed25519PrivateKey) else None
        alg = algs.PS256 if isinstance(private, rsa.RSAPrivateKey) else alg
    if alg is None:
        raise ProvenanceError("C2PA keys must be EC P-256/384/521, Ed25519 or RSA.")
    try:
        return c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, cert_pem, key_pem, None))
    except c2pa.C2paError as exc:
        raise ProvenanceError(f"c2pa refused the certificate {cert}: {exc}") from exc


def sign_c2pa(
    path: str | os.PathLike, cert: str | os.PathLike | None = None, key: str | os.PathLike | None = None, signer=None
) -> Path:
    """Embed a signed C2PA manifest (c2pa.created, trainedAlgorithmicMedia) in an mp4, atomically and offline, with a
    PEM chain + key or a `c2pa_signer(...)`."""
    c2pa = _c2pa()
    path = Path(path)
    signer = signer or c2pa_signer(cert, key)
    manifest = {
        "claim_generator_info": [{"name": "HuMo Studio", "version": ENGINE_VERSION}],
        "title": path.name,
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": media.AI_SOURCE_TYPE,
                            "softwareAgent": {"name": "HuMo Studio", "version": ENGINE_VERSION},
                        }
                    ]
                },
            }
        ],
    }
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.c2pa{path.suffix}")
    try:
        c2pa.Builder(manifest).sign_file(path, tmp, signer)
        os.replace(tmp, path)
    except c2pa.C2paError as exc:
        raise ProvenanceError(f"C2PA signing of {path.name} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_c2pa(path: str | os.PathLike, trust_pem: str | None = None) -> dict[str, Any] | None:
    """The active C2PA manifest's claim, or None when the file has none. `trust_pem`: trusted root certificates
    (default: the file named by HUMO_C2PA_TRUST); without them a valid signature reads "Valid" (signer unknown)."""
    c2pa = _c2pa()
    trust_file = os.environ.get(C2PA_TRUST_ENV)
    trust_pem = trust_pem or (Path(trust_file).read_text() if trust_file else None)
    context = None
    if trust_pem:
        context = c2pa.Context.from_dict({"trust": {"trust_anchors": trust_pem}, "verify": {"verify_trust": True}})
    try:
        reader = c2pa.Reader.try_create(str(path), context=context)
        if reader is None:
            return None
        store = json.loads(reader.json())
        state = reader.get_validation_state()
    except c2pa.C2paError as exc:
        return {"state": "Unreadable", "errors": [str(exc)]}
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    actions = [
        action
        for assertion in manifest.get("assertions", [])
        if assertion.get("label", "").startswith("c2pa.actions")
        for action in assertion.get("data", {}).get("actions", [])
    ]
    return {
        "state": state,  # Invalid | Valid (signature and hashes good) | Trusted (and the signer chains to a trust root)
        "generator": ", ".join(g.get("name", "") for g in manifest.get("claim_generator_info", [])),
        "actions": [a.get("action") for a in actions],
        "digital_source_type": next((a["digitalSourceType"] for a in actions if "digitalSourceType" in a), None),
        "signer": manifest.get("signature_info", {}),
        "errors": [s.get("code") for s in store.get("validation_status", [])],
    }


def make_test_certificate(folder: str | os.PathLike, days: int = 30) -> tuple[Path, Path, Path]:
    """A throwaway CA and an end-entity certificate C2PA accepts (EC P-256, digitalSignature, emailProtection EKU),
    for tests and trials. Returns (chain.pem: end-entity + CA, key.pem, ca.pem: the trust anchor)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HuMo Studio test")])  # fmt: skip

    def usage(sign: bool) -> x509.KeyUsage:
        flags = dict.fromkeys(["content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
                               "encipher_only", "decipher_only"], False)  # fmt: skip
        return x509.KeyUsage(digital_signature=True, key_cert_sign=sign, crl_sign=sign, **flags)

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def builder(subject: str, issuer: str, public) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )

    ca = (
        builder("HuMo Studio test CA", "HuMo Studio test CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ee = (
        builder("HuMo Studio test signer", "HuMo Studio test CA", key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    chain, key_path, ca_path = folder / "chain.pem", folder / "key.pem", folder / "ca.pem"
    chain.write_bytes(ee.public_bytes(pem) + ca.public_bytes(pem))
    key_path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ca_path.write_bytes(ca.public_bytes(pem))
    return chain, key_path, ca_path


# ---------------------------------------------------------------------------------------------- verify
def verify_file(path: str | os.PathLike, max_frames: int = 48) -> dict[str, Any]:
    """Everything `python -m engine verify` reports about a video; raises InputError when it cannot be read."""
    tags = media.read_metadata(path)
    settings = media.read_settings(path)
    recorded = settings.get("provenance", {})
    labels = [tags[k] for k in ("description", "synopsis", "keywords") if "AI-generated" in tags.get(k, "")]
    if not labels and recorded.get("ai_generated"):
        labels = ["ai_generated in the stored settings (the standard tags are missing)"]
    report: dict[str, Any] = {
        "label": labels[0] if labels else None,
        "model_id": settings.get("model_id"),
        "recorded_watermark": recorded.get("watermark"),
    }
    frames = media.read_video_frames(path, max_frames=max_frames)
    if len(frames) == 0:
        report["watermark"] = {"status": "no frames"}
    elif not watermark_fits(*frames.shape[1:3]):
        report["watermark"] = {"status": "too small", "message": too_small_message(*frames.shape[1:3])}
    else:
        scores = read_scores(frames)
        payload, confidence = decode_scores(scores), float(np.maximum(scores, 1 - scores).mean())
        expected = (recorded.get("watermark") or {}).get("payload")
        found = f"0x{payload:08x}" if payload is not None else None
        report["watermark"] = {
            "status": "found" if found else "none",
            "payload": found,
            "confidence": round(confidence, 4),
            "expected": expected,
            "match": None if not (found and expected) else found == expected,
        }
        if expected and not found and re.fullmatch(r"0x[0-9a-f]{8}", expected):  # how close the frames still are
            agree = int(((scores * 255 > 127) == payload_bits(int(expected, 16))).sum())
            chance = sum(math.comb(MARK_BITS, k) for k in range(agree, MARK_BITS + 1)) / 2**MARK_BITS
            report["watermark"].update(expected_bits_agreeing=agree, chance_p=chance)
    try:
        report["c2pa"] = read_c2pa(path)
    except ProvenanceError as exc:
        report["c2pa"] = {"state": "not checked", "errors": [str(exc)]}
    claim = report["c2pa"] or {}
    c2pa_ai = claim.get("state") in ("Valid", "Trusted") and claim.get("digital_source_type") == media.AI_SOURCE_TYPE
    found = {
        "label": report["label"] is not None,
        "watermark": report["watermark"]["status"] == "found",
        "c2pa": c2pa_ai,
    }
    report["evidence"] = [name for name, present in found.items() if present]
    return report


__all__ = [
    "ai_label",
    "payload_for",
    "payload_bits",
    "bits_payload",
    "watermark_fits",
    "embed_watermark",
    "detect_watermark",
    "read_scores",
    "decode_scores",
    "mark_frames",
    "sign_c2pa",
    "read_c2pa",
    "c2pa_signer",
    "make_test_certificate",
    "verify_file",
]
