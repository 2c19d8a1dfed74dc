#!/usr/bin/env python3
"""The query texts of the HTTP load benchmark (scripts/bench_serve.sh): COUNT distinct short
natural queries, the kind people type ("a small red apple", "two dogs on a beach", "a drawing
of a cat in the snow"), made by filling templates from the word lists of query_words.txt.

    scripts/bench/make_queries.py [--count 1000] [--seed 1] [--words FILE] > queries.txt

Deterministic: the same word lists, count and seed give the same file on every machine (so
it does not depend on fetched data). Every template's fillings are shuffled with the seed
and the templates then take turns, so any stretch of the file mixes all the query shapes and
lengths (3 to 10 words). Python 3 standard library only.
"""
import argparse
import itertools
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Every template names a thing. {thing}/{things}: singular/plural; {a_X}: X with its article;
# {thing2}: a second, different thing.
TEMPLATES = [
    "{a_adjective} {colour} {thing}",
    "{count} {colour} {things} {place}",
    "{style} {a_thing} {place}",
    "{colour} {thing} icon",
    "{style} {count} {things}",
    "{a_thing} and {a_thing2}",
    "{a_colour} {thing} {place}",
    "{things} {place}",
]


def read_words(path):
    """{list name: [entries]} from a query_words.txt file."""
    lists, current = {}, None
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("[") and line.endswith("]"):
                current = lists.setdefault(line[1:-1], [])
            elif current is None:
                sys.exit("make_queries: %s:%d: an entry before any [list]" % (path, n))
            else:
                current.append(line)
    return lists


def article(phrase):
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def fillings(template, lists):
    """Every text the template makes from the lists, in list order."""
    things = [tuple(p.strip() for p in t.split("|")) for t in lists["thing"]]
    fields = [f for f in ("adjective", "colour", "count", "place", "style") if f in template]
    for values in itertools.product(*(lists[f] for f in fields)):
        v = dict(zip(fields, values))
        for key in fields:
            v["a_" + key] = article(v[key])
        for (one, many), (two, _) in itertools.product(things, things if "thing2" in template
                                                        else [("", "")]):
            if "thing2" in template and two == one:
                continue
            v.update(thing=one, things=many, a_thing=article(one), thing2=two,
                     a_thing2=article(two) if two else "")
            yield template.format(**v)


def make_queries(lists, count, seed):
    rng = random.Random(seed)
    pools = []
    for template in TEMPLATES:
        texts = list(fillings(template, lists))
        rng.shuffle(texts)
        pools.append(texts)
    out, seen = [], set()
    for round_ in itertools.zip_longest(*pools):
        for text in round_:
            if text is not None and text not in seen:
                seen.add(text)
                out.append(text)
                if len(out) == count:
                    return out
    sys.exit("make_queries: the word lists make only %d distinct queries, not %d"
             % (len(out), count))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--words", default=os.path.join(HERE, "query_words.txt"))
    a = ap.parse_args()
    lists = read_words(a.words)
    missing = {"adjective", "colour", "count", "place", "style", "thing"} - set(lists)
    if missing:
        sys.exit("make_queries: %s has no list %s" % (a.words, ", ".join(sorted(missing))))
    for text in make_queries(lists, a.count, a.seed):
        print(text)


if __name__ == "__main__":
    main()
