#!/usr/bin/env python3
"""An independent verifier of countersign evidence bundles.

    python3 tools/verify_bundle.py BUNDLE.json --public-key CHECKPOINT.pub

Written from the format in docs/record.md ("Evidence bundles") with only the
Python standard library and the `cryptography` package (for Ed25519). It
shares no code with countersign. It checks:

  1. the checkpoint: a C2SP signed note whose signature by the public key
     verifies, holding a tlog-checkpoint (origin, tree size, root hash);
  2. every record: its chain hash recomputed from its fields, and its RFC
     6962 inclusion proof leading from its leaf to the checkpoint's root;
  3. the policy record: proven the same way, naming the decision's
     revision, its files hashing to that revision;
  4. every signed review: its Ed25519 (v1a) signature over the exact signed
     bytes, with the reviewer's public key from the bundle, and the signed
     body saying what the record says;
  5. every `approved` record: signed `approve` reviews of the action before
     it, from at least the hold's `min` distinct eligible reviewers (a
     shared-secret review, which cannot be checked here, still counts).

It does not evaluate the policy (that needs a Rego engine; `countersign
verify-bundle` replays it). Exit 0 and the action's story when every check
passes; exit 1 naming the first problem otherwise.
"""

import argparse
import base64
import hashlib
import json
import sys
import unicodedata

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "countersign-evidence-bundle/v1"
DASH = "\u2014 "


class Invalid(Exception):
    """The bundle does not verify; the message says why."""


# --- signed notes (C2SP signed-note, Ed25519) ------------------------------


def key_id(name, public):
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + public).digest()[:4]


def parse_verifier_key(text):
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise Invalid("the public key is not <name>+<key id>+<key>")
    name, hex_id, b64 = parts
    raw = base64.b64decode(b64, validate=True)
    if len(raw) != 33 or raw[0] != 1:
        raise Invalid("the public key is not an Ed25519 signed-note key")
    public = raw[1:]
    if key_id(name, public).hex() != hex_id:
        raise Invalid("the public key's id does not match its name and key")
    return name, bytes.fromhex(hex_id), public


def open_note(note, verifier):
    name, kid, public = verifier
    at = note.rfind("\n\n")
    if at < 0 or not note.endswith("\n"):
        raise Invalid("the checkpoint is not a signed note")
    text, sigs = note[: at + 1], note[at + 2 :]
    found = False
    for line in sigs[:-1].split("\n"):
        if not line.startswith(DASH):
            raise Invalid("the checkpoint has a malformed signature line")
        signer, _, b64 = line[len(DASH) :].partition(" ")
        blob = base64.b64decode(b64, validate=True)
        if signer != name or blob[:4] != kid:
            continue
        found = True
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], text.encode())
            return text
        except InvalidSignature:
            pass
    if found:
        raise Invalid("the checkpoint's signature does not verify with the public key")
    raise Invalid("the checkpoint is not signed by the public key")


def parse_checkpoint(text):
    lines = text.split("\n")
    if len(lines) < 4 or not lines[0]:
        raise Invalid("the checkpoint text is not origin, size, root hash")
    size = lines[1]
    if not size.isdigit() or (size != "0" and size.startswith("0")):
        raise Invalid("the checkpoint's tree size is not a decimal number")
    root = base64.b64decode(lines[2], validate=True)
    if len(root) != 32:
        raise Invalid("the checkpoint's root hash is not 32 bytes")
    return lines[0], int(size), root


# --- RFC 6962 Merkle tree ---------------------------------------------------


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index, size, leaf, proof):
    """RFC 9162, section 2.1.3.2."""
    if index >= size:
        raise Invalid("the leaf index is not in the tree")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise Invalid("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Invalid("the inclusion proof is too short")
    return r


# --- records ----------------------------------------------------------------


def chain_hash(r):
    h = hashlib.sha256(b"countersign-record-v1\n")
    for field in (str(r["seq"]), r["time"], r["action_id"], r["kind"], r["prev_hash"]):
        h.update(field.encode() + b"\n")
    h.update(r["payload"].encode())
    return h.hexdigest()


def check_record(r, size, root):
    where = "record seq %s" % r.get("seq")
    if not isinstance(r.get("seq"), int) or r["seq"] < 1 or r["seq"] > size:
        raise Invalid(where + ": it is not in the checkpoint's tree")
    if chain_hash(r) != r["hash"]:
        raise Invalid(where + ": its content does not match its hash (the record was altered)")
    try:
        proof = [bytes.fromhex(h) for h in r["inclusion_proof"]]
        record_hash = bytes.fromhex(r["hash"])
    except ValueError:
        raise Invalid(where + ": its hash or proof is not hex")
    if len(record_hash) != 32 or any(len(p) != 32 for p in proof):
        raise Invalid(where + ": its hash or proof has the wrong length")
    if root_from_inclusion(r["seq"] - 1, size, leaf_hash(record_hash), proof) != root:
        raise Invalid(where + ": its inclusion proof does not lead to the checkpoint's root")
    try:
        return json.loads(r["payload"])
    except ValueError:
        raise Invalid(where + ": its payload is not JSON")


def policy_revision(files):
    h = hashlib.sha256()
    for f in files:
        h.update(f["path"].encode() + b"\x00" + hashlib.sha256(f["text"].encode()).digest())
    return "sha256:" + h.hexdigest()[:16]


def check_review(r, payload, keys):
    where = "record seq %d" % r["seq"]
    reviewer = payload.get("reviewer")
    if payload.get("key") != "ed25519":
        return "NOT CHECKABLE: the review at seq %d by %s was proved with a shared secret" % (
            r["seq"],
            reviewer,
        )
    key = keys.get(reviewer)
    if key is None or not key.startswith("whpk_"):
        raise Invalid(where + ": the bundle has no public key for reviewer %s" % reviewer)
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key[5:], validate=True))
    if "signed_body" in payload:
        body = payload["signed_body"].encode()
    else:
        body = base64.b64decode(payload["signed_body_base64"], validate=True)
    message = ("%s.%s." % (payload["webhook_id"], int(payload["webhook_timestamp"]))).encode() + body
    ok = False
    for sig in payload["webhook_signature"].split(" "):
        version, _, b64 = sig.partition(",")
        if version != "v1a":
            continue
        try:
            public.verify(base64.b64decode(b64, validate=True), message)
            ok = True
        except (InvalidSignature, ValueError):
            pass
    if not ok:
        raise Invalid(where + ": the review does not verify with %s's public key" % reviewer)
    signed = json.loads(body)
    if r["kind"] == "reviewed":
        if signed.get("action_id") != r["action_id"]:
            raise Invalid(where + ": the signed review names another action")
        for field in ("reviewer", "verdict", "request_digest"):
            if signed.get(field) != payload.get(field):
                raise Invalid(where + ": the record's %s is not what the reviewer signed" % field)
    elif signed.get("reviewer") != reviewer:
        raise Invalid(where + ": the record's reviewer is not the one who signed")
    return "VERIFIED: the review at seq %d was signed by %s's ed25519 key" % (r["seq"], reviewer)


def verify(bundle, verifier):
    if bundle.get("format") != FORMAT:
        raise Invalid("not a %s bundle" % FORMAT)
    origin, size, root = parse_checkpoint(open_note(bundle["checkpoint"], verifier))
    records = bundle["records"]
    if not records:
        raise Invalid("the bundle holds no records")
    lines = [
        "VERIFIED: the %d records of action %s are in checkpoint %s of %d records"
        % (len(records), bundle["action_id"], origin, size)
    ]
    payloads, last = [], 0
    for r in records:
        if r["action_id"] != bundle["action_id"]:
            raise Invalid("record seq %s: it belongs to another action" % r["seq"])
        if r["seq"] <= last:
            raise Invalid("record seq %s: the records are not in seq order" % r["seq"])
        last = r["seq"]
        payloads.append(check_record(r, size, root))
    if records[0]["kind"] not in ("decided", "failed"):
        raise Invalid("record seq %d: an action starts with a decided or failed record" % records[0]["seq"])
    revision = next(
        (p["policy"]["revision"] for p in payloads if isinstance(p.get("policy"), dict) and "revision" in p["policy"]),
        None,
    )
    policy = bundle.get("policy")
    if revision is not None and policy is not None:
        pp = check_record(policy, size, root)
        if policy["kind"] != "policy" or policy["action_id"] != "policy:" + revision:
            raise Invalid("policy record seq %d: it is not the policy record of %s" % (policy["seq"], revision))
        if pp.get("revision") != revision or policy_revision(pp["files"]) != revision:
            raise Invalid("policy record seq %d: its files do not hash to revision %s" % (policy["seq"], revision))
        lines.append("VERIFIED: policy revision %s: its %d file(s) hash to it" % (revision, len(pp["files"])))
    elif revision is not None and any(r["kind"] == "decided" for r in records):
        raise Invalid("the bundle lacks the policy record of revision %s" % revision)
    elif policy is not None:
        raise Invalid("the action names no policy revision, yet the bundle has a policy record")
    hold, approvers = None, set()
    for r, p in zip(records, payloads):
        signed = r["kind"] in ("reviewed", "review_refused") and isinstance(p.get("key"), str)
        if signed:
            lines.append(check_review(r, p, bundle.get("reviewer_keys", {})))
        if r["kind"] == "decided" and p.get("state") == "pending":
            hold = p.get("hold") or {}
        elif r["kind"] == "reviewed" and signed and p.get("verdict") == "approve":
            if hold is not None and p.get("reviewer") in hold.get("eligible", []):
                approvers.add(p.get("reviewer"))
        elif r["kind"] == "approved":
            needed = max(int((hold or {}).get("min", 1)), 1)
            if len(approvers) < needed:
                raise Invalid(
                    "record seq %d: the action is recorded approved with %d signed approval(s) "
                    "from eligible reviewers before it, %d needed" % (r["seq"], len(approvers), needed)
                )
    lines.append("")
    lines.extend(story(records, payloads))
    return lines


def story(records, payloads):
    out = []
    first = payloads[0]
    req = first.get("request") or {}
    out.append("1. REQUEST   %s %s (agent %s)" % (req.get("method"), req.get("url"), (first.get("agent") or {}).get("id")))
    out.append("2. EVIDENCE  %s" % json.dumps(first.get("evidence") or {}, sort_keys=True))
    d = first.get("decision") or {}
    out.append("3. DECISION  %s, risk %s, rules %s" % (d.get("action"), d.get("risk"), d.get("rules")))
    out.append("4. REVIEWS")
    for r, p in zip(records, payloads):
        if r["kind"] == "reviewed":
            out.append("   %s %s by %s" % (r["time"], p.get("verdict"), p.get("reviewer")))
        elif r["kind"] in ("approved", "rejected", "expired", "cancelled"):
            out.append("   %s resolution: %s" % (r["time"], r["kind"].upper()))
    out.append("5. RESULT")
    for r, p in zip(records, payloads):
        if r["kind"] == "completed":
            out.append("   upstream answered %s" % p["response"].get("status"))
        elif r["kind"] == "failed":
            out.append("   not completed: %s" % p.get("error"))
        elif r["kind"] == "answered":
            out.append("   the agent got %s" % p.get("status"))
    out.append("(the policy was not re-evaluated: countersign verify-bundle replays it)")
    return [printable(line) for line in out]


def printable(text):
    """One line safe for a terminal: control, format (bidi) and separator
    characters from the record are written as escapes."""
    return "".join(
        "\\u{%x}" % ord(c) if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
        for c in text
    )


def main():
    ap = argparse.ArgumentParser(description="Verify a countersign evidence bundle.")
    ap.add_argument("bundle")
    ap.add_argument("--public-key", required=True, help="the checkpoint verifier key file")
    args = ap.parse_args()
    try:
        with open(args.public_key, encoding="utf-8") as f:
            verifier = parse_verifier_key(f.read())
        with open(args.bundle, encoding="utf-8") as f:
            bundle = json.load(f)
        lines = verify(bundle, verifier)
    except (Invalid, KeyError, TypeError, ValueError) as e:
        print("%s: does not verify: %s" % (args.bundle, e), file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
