"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", ROME)
of CRUXEval output prediction: which hidden states, MLPs and attention outputs carry the
information about the function's input that decides the predicted output.

Modules: ``adapters`` (the module map, derived from the model's structure), ``selftest``
(adapter check on the loaded model), ``spans`` (corrupted span -> token range via offset
mappings), ``noise`` (ROME-parity draws, sigma), ``corruption`` (the corrupted rows: noise or
symmetric token replacement), ``engine`` (the exact fast engine), ``patching`` (gradient screens:
attribution patching, AtP*'s QK fix and GradDrop), ``agreement`` (screens vs the exact trace),
``norms`` (activation norms), ``selection`` (problems the model gets right), ``frames``
(long-format output tables), ``summary`` (AIE by token bucket and layer), ``jobs`` (one function
per pipeline rule), ``cli`` (``python -m attribution trace``).

Quick use::

    tracer = CausalTracer(model, tokenizer)            # runs the adapter self-test
    result = tracer.trace(ids, (start, end), TraceSettings(noise=0.1))
    result.scores["mlp"][t, l], result.low, result.high
"""
