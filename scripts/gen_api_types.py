"""Write the HTTP API's OpenAPI schema to ``web/openapi.json``, the source of the web client's types.

    python scripts/gen_api_types.py           # regenerate web/openapi.json
    python scripts/gen_api_types.py --check   # exit 1 if web/openapi.json is out of date

The web build turns it into ``web/src/api/schema.ts`` with ``openapi-typescript``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from deepscope.server import create_app

OUTPUT = Path(__file__).resolve().parent.parent / "web" / "openapi.json"


def openapi_json() -> str:
    """The schema as committed: sorted keys, two-space indent, trailing newline (stable diffs)."""
    with tempfile.TemporaryDirectory() as empty_root:
        schema = create_app(empty_root).openapi()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = openapi_json()
    if "--check" in argv:
        if not OUTPUT.is_file() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python scripts/gen_api_types.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
