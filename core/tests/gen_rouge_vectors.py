#!/usr/bin/env python3
"""Generate ROUGE-L test vectors with PyPI `rouge` 1.0.1 (the package the AdaMLLM Recipe1M
scorer uses).

    pip install rouge==1.0.1
    python3 core/tests/gen_rouge_vectors.py > tests/data/rouge_l_vectors.json

Each vector is {"hyp", "ref", "f", "p", "r"}: the `rouge-l` scores of
`Rouge().get_scores(hyp, ref)[0]`, or nulls when the call raises (the Recipe1M scorer then
scores the row 0).

The package reconstructs the longest common subsequence recursively, so very long sentences
raise RecursionError. How deep the stack already is when that recursion starts decides where
the limit falls; the vectors are computed with REFERENCE_FRAMES_ABOVE_GET_SCORES Python
frames below `get_scores`, the depth of the reference harness (module, evaluate, list
comprehension, evaluate_entry, metric.rouge), so the Rust port can be checked at the
boundary.
"""
import json
import random
import sys

import rouge
from rouge import Rouge

REFERENCE_FRAMES_ABOVE_GET_SCORES = 5


def stack_depth():
    """Number of Python frames on the stack, the caller's frame included."""
    depth = 0
    frame = sys._getframe(1)
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


def at_depth(target, function):
    """Call `function` so that its frame is the `target`-th frame on the stack."""
    if stack_depth() + 1 >= target:
        return function()
    return at_depth(target, function)


def rouge_l(hyp, ref):
    def score():
        assert stack_depth() == REFERENCE_FRAMES_ABOVE_GET_SCORES
        return Rouge().get_scores(hyp, ref)[0]["rouge-l"]

    try:
        result = at_depth(REFERENCE_FRAMES_ABOVE_GET_SCORES, score)
    except (ValueError, RecursionError):
        return {"hyp": hyp, "ref": ref, "f": None, "p": None, "r": None}
    return {"hyp": hyp, "ref": ref, "f": result["f"], "p": result["p"], "r": result["r"]}


HAND_WRITTEN = [
    ("", "a b c"),
    ("a b c", ""),
    ("...", "a"),
    ("a", ". ."),
    (" ", "a"),
    ("  .  ", "a b"),
    ("a. . b", "a b"),
    ("a b", "a. . b"),
    ("the cat sat. the dog ran", "the dog ran. the cat sat"),
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("A B C", "a b c"),
    ("a\u00a0b\tc\nd", "a b c d"),
    ("a\x1cb c", "a b c"),
    ("x y x y x y", "y x y x"),
    ("1.5 cups of flour. 2 eggs", "2 eggs. 1.5 cups of sugar"),
    ("Title: Pancakes. Ingredients: flour, eggs, milk. Steps: mix and fry.",
     "Title: Pancakes. Ingredients: flour, milk, butter. Steps: mix, rest, fry."),
    ("no match here", "completely different words"),
    ("repeat repeat repeat", "repeat"),
    ("b a c a b", "a b c b a"),
    ("e\u0301t\u00e9 caf\u00e9", "\u00e9t\u00e9 cafe"),
]

WORDS = ["salt", "pepper", "flour", "eggs", "milk", "butter", "sugar", "mix", "bake", "fry",
         "Title:", "Steps:", "1.5", "2", "cups", "the", ","]


def random_text(rng):
    pieces = []
    for _ in range(rng.randint(0, 25)):
        pieces.append(rng.choice(WORDS))
        roll = rng.random()
        if roll < 0.15:
            pieces.append(".")
        elif roll < 0.2:
            pieces.append(". .")
    text = " ".join(pieces)
    if rng.random() < 0.3:
        text = text.replace(" .", ".")
    return text


def long_cases():
    cases = []
    # No common words: the reconstruction walks the whole hypothesis sentence.
    for length in (986, 987, 988, 989, 990):
        hyp = " ".join(f"h{i}" for i in range(length))
        cases.append((hyp, "r0 r1 r2 r3 r4"))
    # Common words: diagonal steps shorten the walk.
    for length in (1200, 1500):
        hyp = " ".join(f"w{i % 400}" for i in range(length))
        ref = " ".join(f"w{i}" for i in range(0, 400, 3))
        cases.append((hyp, ref))
    # Long but split into sentences: each pair stays short.
    hyp = ". ".join(" ".join(f"w{(i * 7 + j) % 50}" for j in range(40)) for i in range(30))
    ref = ". ".join(" ".join(f"w{(i * 3 + j) % 50}" for j in range(30)) for i in range(10))
    cases.append((hyp, ref))
    return cases


def main():
    assert rouge.__version__ == "1.0.1", rouge.__version__
    rng = random.Random(20240917)
    cases = list(HAND_WRITTEN)
    cases += [(random_text(rng), random_text(rng)) for _ in range(300)]
    cases += long_cases()
    # Two frames deep here (module, main); `at_depth` pads the stack to the reference
    # depth before calling `get_scores`.
    vectors = []
    for hyp, ref in cases:
        vectors.append(rouge_l(hyp, ref))
    json.dump({"generator": "rouge==1.0.1 Rouge().get_scores(hyp, ref)[0]['rouge-l']",
               "frames_above_get_scores": REFERENCE_FRAMES_ABOVE_GET_SCORES,
               "vectors": vectors}, sys.stdout, ensure_ascii=False, indent=0)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
