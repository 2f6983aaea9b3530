#!/usr/bin/env python3
"""Data for the copy probe: can the demo's tiny model repeat a word it reads in its prompt?

A synthesizer that writes tasks for a new domain has to lift that domain's words out of the
caption it is given (the paper's synthesizer is an LLM, which does this from pre-training).
This probe asks the smallest version of that question. Each prompt is a general-domain
caption from a finished `adamllm demo` folder with one sentence added, "There is also a
<adjective> <word> <place>.", and the question "What else is in the picture?"; the answer is
<word>.

Three word sets:
  * nouns:  170 everyday nouns (train) and 30 held-out words, among them target-domain ones;
  * pseudo: made-up words of 2-4 random syllables, a fresh one per example, so the only way
            to answer is to copy (nothing can be memorized);
  * domain: the held-out words, the same as the nouns set's test words.

Usage: make_data.py DEMO_DIR OUT_DIR
Writes OUT_DIR/{nouns-train.json, pseudo-train.json, pseudo-more-train.json,
nouns-test.jsonl, pseudo-test.jsonl, seen-test.jsonl, copy.yaml} and links OUT_DIR/images to the demo's general images.
"""

import json
import os
import random
import sys

TRAIN_NOUNS = """apple bicycle candle kettle ladder mirror pencil rocket saddle teapot umbrella
violin wagon yacht anchor basket bottle button camera carpet castle cherry clock cloud coin comb
crown cup desk diamond drum eagle engine feather fence flag flute fork fountain glove guitar
hammer harp helmet island jacket jewel key kite lamp leaf lemon lion lock magnet map mask medal
melon monkey moon needle nest oar orange owl paddle palm parrot peach pear pepper piano pillow
pipe planet plum pocket pumpkin puzzle quilt rabbit radio ribbon ring robot rope rose ruler sail
scarf scissors shell shovel skate sled sock spoon stamp statue stone sword table tent ticket
tiger tower tractor train trumpet tulip turtle vase wallet whale wheel whistle window wolf zebra
barrel beacon blanket bridge bucket cabin canoe cart chimney compass cottage dragon easel forest
garden goblet hatchet hive igloo jar lantern lighthouse locket mantle meadow mitten obelisk
orchard pagoda pebble pitcher pyramid quiver raft satchel scroll shield spindle steeple thimble
thistle torch trellis trowel turret valley walnut windmill""".split()

# Held out from every training set; the first twelve are words of the demo's target domains.
TEST_WORDS = """lymphocyte nucleus salmon noodle carrot mushroom stroma necrosis sausage omelette
tomato potato chicken tissue spinach biscuit crayon falcon hornet lobster marble napkin oyster
pretzel sponge toaster trolley unicorn vulture walrus""".split()

SYLLABLES = """ba be bi bo bu ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu pa pe
pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo vu za ze zi zo zu an en in on
un ar er ir or ur""".split()

ADJECTIVES = ["small", "large", "bright", "faded", "striped"]
PLACES = ["at the top", "at the bottom", "on the left", "on the right", "in the center",
          "at the top left", "in the lower right"]
QUESTION = "What else is in the picture?"


def pseudo_word(rng):
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


def prompt(caption, word, rng):
    extra = f"There is also a {rng.choice(ADJECTIVES)} {word} {rng.choice(PLACES)}."
    return f"Here is a description: {caption} {extra} {QUESTION}"


def main():
    demo, out = sys.argv[1], sys.argv[2]
    general = os.path.join(demo, "data", "general-train")
    with open(os.path.join(general, "image_caption_pairs.json")) as f:
        pairs = json.load(f)
    captions = [(p["images"][0], p["messages"][1]["content"]) for p in pairs]
    os.makedirs(out, exist_ok=True)
    link = os.path.join(out, "images")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(os.path.join(general, "images")), link)
    rng = random.Random(0)

    def train_set(words, n):
        rows = []
        for _ in range(n):
            image, caption = rng.choice(captions)
            word = words(rng)
            rows.append({
                "images": [image],
                "messages": [
                    {"role": "user", "content": "<image>" + prompt(caption, word, rng)},
                    {"role": "assistant", "content": word},
                ],
            })
        return rows

    def test_set(words):
        rows = []
        for k, word in enumerate(words):
            image, caption = captions[k % len(captions)]
            rows.append({"image": image, "input": prompt(caption, word, rng), "label": word})
        return rows

    sets = {
        "nouns-train.json": train_set(lambda r: r.choice(TRAIN_NOUNS), 2400),
        "pseudo-train.json": train_set(pseudo_word, 3200),
        "pseudo-more-train.json": train_set(pseudo_word, 6400),
    }
    for name, rows in sets.items():
        with open(os.path.join(out, name), "w") as f:
            json.dump(rows, f)
    tests = {
        "nouns-test.jsonl": test_set(TEST_WORDS * 2),
        "seen-test.jsonl": test_set([rng.choice(TRAIN_NOUNS) for _ in range(60)]),
        "pseudo-test.jsonl": test_set([pseudo_word(rng) for _ in range(60)]),
    }
    for name, rows in tests.items():
        with open(os.path.join(out, name), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(os.path.join(out, "copy.yaml"), "w") as f:
        f.write('name: "copy"\nprompt_field: input\nlabel_field: label\n'
                "metric: exact_match\nmax_new_tokens: 16\n")


if __name__ == "__main__":
    main()
