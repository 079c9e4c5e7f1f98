"""parasal.demo: the end-to-end demo (`parasal demo` / `make demo`) and its HTML report.

It drives the real pieces: the indexer builds (or reuses) a bundle, `parasal serve` runs
as a child process, and every question goes through the SDK, as a user's would.
"""
