"""The benchmark behind the book's appendix on performance.

Read it in this order:

* :mod:`bench.configurations`: the fixed setting (model, photo, N, noise level), the
  configurations that are timed (frozen dataclasses, named by keys such as
  ``captum:10``), the sweeps, and the command-line settings, parsed once;
* :mod:`bench.timing`: the runs themselves (the starting material's loop, Captum,
  gradsal, the cost floor), interleaved timing rounds, peak memory, the profile;
* :mod:`bench.report`: medians, ratios and ranges, and the markdown tables written
  from the saved JSON (also by ``--render-only``);
* ``smoothgrad_bench.py``: the command line that chains them;
  ``alternatives.py`` (bfloat16, ``torch.compile``), ``gradient_pass.py`` (the parts
  of the rewritten gradient pass), ``chapter_times.py`` (book build times) and
  ``exact_scans.py`` (the line scans of chapters 03, 04 and 07) are scripts of their own.
"""
