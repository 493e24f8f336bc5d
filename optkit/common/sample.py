"""The fixed texts tokenizers are held to each other on (the served-model checks, fidelity's tokenizer guard).

They cover what tokenizers most often get wrong: leading and repeated spaces, newlines and tabs, digits,
punctuation runs, non-Latin scripts, characters outside a vocabulary (byte fallback), emoji, and code.
"""

SAMPLE = (
    " = Robert Boulter = \n \n Robert Boulter is an English film , television and theatre actor . He had a "
    "guest @-@ starring role on the television series The Bill in 2000 .",
    "Hello world",
    "Hello world, 123 tokens.",
    " Leading space, tabs\tand\n\ndouble newlines; unicode: café – naïve 日本",
    "The quick brown fox jumps over the lazy dog.  Numbers: 12, 345 and 6789! 3.14159 1,000,000 2024-06-01",
    "def add(a, b):\n    \"\"\"Sum.\"\"\"\n    return a + b  # ok\n\n\tif x != y: print(f'{x}')\n",
    "    four spaces,\t\ttwo tabs,\n\n\n three newlines,          ten spaces and a trailing space ",
    "Ελληνικά, русский язык, العربية, हिन्दी, 한국어, 中文分词测试, ภาษาไทย",
    "emoji 🙂👍🏽🚀 and symbols ©®™ ∑∫√ ½ ¾ → ← ✓",
    "'s 've 're 'll 'd I'm don't WON'T CamelCaseWord snake_case_word kebab-case",
    "\n",
    " ",
    "a",
    "",
)


def id_mismatches(text: str, ours, theirs, whose: str) -> tuple[int, str]:
    """One sample text tokenized both ways optkit tokenizes it (as text, and as a prompt), by `ours(text, prompt)`
    and `theirs(text, prompt)`: how many of the two disagree, and the first difference in words ("" if none)."""
    mismatches, detail = 0, ""
    for prompt in (False, True):
        a, b = ours(text, prompt), theirs(text, prompt)
        if a != b:
            mismatches += 1
            if not detail:
                i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                detail = (f"first at {text[:40]!r} ({'as a prompt' if prompt else 'as text'}): token {i}: "
                          f"ours {a[i:i + 4]}, {whose} {b[i:i + 4]}")
    return mismatches, detail
