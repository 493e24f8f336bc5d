"""Document processing for the offline optkit_* lm-eval tasks (copied next to the YAML at run time)."""

import re


def _preprocess(text: str) -> str:
    # lm-eval's hellaswag preprocessing; harmless on text the upstream extractor already cleaned
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_docs(dataset):
    def _doc(doc):
        return {"query": _preprocess(doc["activity_label"] + ": " + doc["ctx"]),
                "choices": [_preprocess(e) for e in doc["endings"]], "gold": int(doc["label"])}

    return dataset.map(_doc)


_TITLE = re.compile(r"^ = [^=].* = $")


def wikitext_docs(dataset):
    """Lines of wiki.test.tokens -> one document per article (a level-1 heading starts the next one)."""
    from datasets import Dataset

    pages: list[list[str]] = []
    for line in dataset["text"]:
        if _TITLE.match(line) or not pages:
            pages.append([])
        pages[-1].append(line)
    pages = [p for p in pages if "".join(p).strip()]  # the blank line before the first title is no article
    return Dataset.from_dict({"page": ["\n".join(p).strip("\n") + "\n" for p in pages]})


def wikitext_detokenizer(doc):
    # lm-eval's own detokenizer (tasks/wikitext/preprocess_wikitext.py), so the scored text is the same
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer as upstream

    return upstream(doc)


def wikitext_results(doc, results):
    from lm_eval.tasks.wikitext.preprocess_wikitext import process_results

    return process_results(doc, results)
