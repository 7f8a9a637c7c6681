"""graphopt.passes: one module per rewrite; the spellings each rewrite accepts are stated as
text-IR rules in ``rules/<pass>.rules`` (proven by ``graphopt rules verify``)."""
from pathlib import Path

RULES_DIR = Path(__file__).parent / "rules"
