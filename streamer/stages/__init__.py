"""The pipeline's stages. Each is a plain class with a `run()` loop; `process.stage_main` wraps
one in a process, and tests can drive a stage in-process."""
