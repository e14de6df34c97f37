"""Training and evaluation: synthetic data, real-data readers, losses, the loop, metrics."""

import sys as _sys

# Run as `python -m train.X` (runpy imports this package first, while sys.argv[0] is still "-m"):
# a Ctrl-C while the tool imports torch is one line, not the import's traceback.
if _sys.argv[:1] == ["-m"]:
    from engines.import_interrupt import module_run, say_interrupts_in_one_line

    say_interrupts_in_one_line(module_run(_sys.orig_argv))
