"""The measurement tools: the GP-overhead profiler (:mod:`~fastgp.perf.profile`), the benchmark
matrix (:mod:`~fastgp.perf.bench`), op/FLOP/byte counting (:mod:`~fastgp.perf.counting`), the
roofline model of GPU time (:mod:`~fastgp.perf.roofline`) and ``fastgp explain``
(:mod:`~fastgp.perf.explain`: how the engine reads a critic, and the step's FLOP ratios).

Nothing is imported here: ``counting`` loads torch's dispatch machinery and ``bench`` matplotlib,
which ``import fastgp`` must not pay for.
"""
