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
