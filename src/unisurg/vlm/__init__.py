"""Zero-shot vision-language models on the benchmark datasets (SurgRec's VLM study, SPEC Sec. 9).

``unisurg vlm --model DIR --dataset NAME --root DIR`` asks a local VLM (Qwen2.5-VL, Qwen3-VL,
LLaVA-NeXT, LLaVA-OneVision, InternVL; transformers checkpoints) a multiple-choice question per
test sample, under several prompts, keeps every raw answer, parses it, and measures accuracy and
prompt sensitivity with tests. Modules: :mod:`prompts` (the question texts), :mod:`families` (how
each model family is loaded and prompted), :mod:`inputs` (samples and pixels from the benchmark's
frame store), :mod:`parsing` (answer -> label), :mod:`runner` (batched, resumable, sharded
generation), :mod:`statistics` and :mod:`report`.
"""
