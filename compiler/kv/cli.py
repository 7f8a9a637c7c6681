"""``graphopt generate OUT_DIR --prompt-ids 1,2,3 --max-new-tokens 64``: greedy generation with
a folder written by ``graphopt optimize ... --kv-cache`` (token ids in, ids out)."""
from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    g = sub.add_parser("generate", help="greedy generation with a --kv-cache folder "
                                        "(token ids in, ids out)")
    g.add_argument("folder", help="folder written by graphopt optimize --kv-cache")
    g.add_argument("--prompt-ids", required=True, action="append", metavar="IDS",
                   help="comma-separated token ids; repeat for a batch (prompts of different "
                        "lengths are left-padded)")
    g.add_argument("--max-new-tokens", type=int, default=32, metavar="N")
    g.add_argument("--json", action="store_true", help="print the ids as JSON")
    g.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    g.set_defaults(func=cmd_generate)


def parse_ids(texts: list[str]) -> list[list[int]]:
    from ..errors import GraphOptError

    rows = []
    for t in texts:
        try:
            row = [int(x) for x in t.replace(" ", "").split(",") if x != ""]
        except ValueError:
            raise GraphOptError(f"--prompt-ids {t!r}: expected comma-separated integers",
                                where="prompt-ids") from None
        if not row:
            raise GraphOptError("--prompt-ids: an empty prompt", where="prompt-ids")
        rows.append(row)
    return rows


def cmd_generate(args: argparse.Namespace) -> int:
    from ..errors import GraphOptError
    from .folder import load_folder
    from .generate import generate

    if args.max_new_tokens < 0:
        raise GraphOptError("--max-new-tokens must be >= 0", where="max-new-tokens")
    prompts = parse_ids(args.prompt_ids)
    session, spec = load_folder(args.folder)
    from .spec import IO

    slots = [i.shape[2] for i in session.get_inputs() if i.name == IO.past_key(0)]
    cache = "static" if slots and slots[0] == spec.context_length else "dynamic"
    from ..progress import for_args

    progress = for_args(args, "graphopt generate")
    progress("generate", None)
    try:
        out = generate(session, spec, prompts if len(prompts) > 1 else [prompts[0]],
                       max_new_tokens=args.max_new_tokens, cache=cache,
                       progress=lambda k, n: progress.say(f"{k}/{n} tokens"))
    finally:
        progress.close()
    if args.json:
        print(json.dumps(out.tolist()))
    else:
        for row in out.tolist():
            print(",".join(str(x) for x in row))
    return 0
