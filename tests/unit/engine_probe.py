"""What both engine probes (vllm_probe.py, openvino_probe.py) ask of a LoadedModel in an engine's own environment,
besides their engine's own members: greedy decoding of two sequences stepped together, perplexity on the test's
windows, and a small benchmark. Imported by the probes as a sibling file (they run as scripts from this folder)."""


def decode_perplexity_bench(lm, ids: list[int], text_file: str) -> dict:
    import torch

    from optkit.bench import run_bench
    from optkit.evaluators import perplexity
    from optkit.recipe import BenchSpec, PerplexitySpec

    out = {}
    lm.expect_decode(5)
    logits, past = lm.start(torch.tensor([ids[:8], ids[4:12]]))
    rows = [logits.argmax(-1)]
    for _ in range(5):
        logits, past = lm.step(rows[-1][:, None], past)
        rows.append(logits.argmax(-1))
    out["stepped"] = torch.stack(rows, dim=1).tolist()
    spec = PerplexitySpec(path=text_file, max_tokens=200, window=64, stride=32)
    out["perplexity"] = perplexity.evaluate(lm, spec)[0].value
    bench = run_bench(lm, BenchSpec(prompt_len=16, gen_len=4, warmup=0, repeats=1, max_repeats=1, min_seconds=0,
                                    batch_sizes=[1, 2], roofline=False, paired_rounds=0))
    out["bench"] = {"decode": bench.decode_tokens_per_s.median, "prefill_ms": bench.prefill_ms.median,
                    "batches": [p.batch_size for p in bench.throughput], "memory_source": bench.peak_memory_source,
                    "peak_mb": bench.peak_memory_mb}
    return out
