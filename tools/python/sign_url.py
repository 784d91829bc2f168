"""Reference V4 signed URLs from Google's Python client, for api-server's differential test.

Reads one JSON document on stdin:
    {"key_file": PATH, "timestamp": "2026-11-26T06:30:00Z", "cases": [CASE, ...]}
where CASE is
    {"name", "method", "bucket", "object" (or null: sign the bucket), "expires" (seconds),
     "headers": [[name, value], ...], "query": [[name, value], ...],
     "style": "path" | "virtual-hosted" | "bucket-bound-hostname",
     "scheme": "https" | "http", "host": HOST}
and prints {"results": [{"name", "url"} or {"name", "error"}, ...]} in the same order.

Runs offline: nothing here talks to Google; signing uses the key file only.
"""

import datetime
import json
import sys

from google.cloud import storage
from google.cloud.storage import _signing
from google.oauth2 import service_account


def freeze_clock(timestamp: str) -> None:
    # The client has no public way to pin the signing time; its own tests patch this hook.
    fixed = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))

    def now(tz=None):
        return fixed.astimezone(tz) if tz is not None else fixed.replace(tzinfo=None)

    _signing._NOW = now


def sign(client: storage.Client, case: dict) -> str:
    bucket = client.bucket(case["bucket"])
    target = bucket if case["object"] is None else bucket.blob(case["object"])
    method = case["method"].upper()
    kwargs = {
        "version": "v4",
        "expiration": case["expires"],
        # The client spells "POST that starts a resumable upload" as RESUMABLE and adds the
        # x-goog-resumable header itself, as our signer does for POST.
        "method": "RESUMABLE" if method == "POST" else method,
        "headers": dict(case["headers"]) or None,
        "query_parameters": dict(case["query"]) or None,
    }
    endpoint = f"{case['scheme']}://{case['host']}"
    style = case["style"]
    if style == "path":
        kwargs["api_access_endpoint"] = endpoint
    elif style == "virtual-hosted":
        kwargs["api_access_endpoint"] = endpoint
        kwargs["virtual_hosted_style"] = True
    elif style == "bucket-bound-hostname":
        kwargs["bucket_bound_hostname"] = case["host"]
        kwargs["scheme"] = case["scheme"]
    else:
        raise ValueError(f"unknown style {style!r}")
    return target.generate_signed_url(**kwargs)


def main() -> int:
    doc = json.load(sys.stdin)
    freeze_clock(doc["timestamp"])
    credentials = service_account.Credentials.from_service_account_file(doc["key_file"])
    client = storage.Client(project="differential-test", credentials=credentials)
    results = []
    for case in doc["cases"]:
        try:
            results.append({"name": case["name"], "url": sign(client, case)})
        except Exception as e:  # reported per case so one bad case does not hide the others
            results.append({"name": case["name"], "error": f"{type(e).__name__}: {e}"})
    json.dump({"results": results}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
