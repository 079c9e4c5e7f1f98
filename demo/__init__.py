"""parasal.demo: `parasal demo` (`make demo`) and `parasal report`, the static HTML report.

It drives the real pieces: the indexer builds (or reuses) a bundle, `parasal serve` runs
as a child process (or the report asks a running server), and every per-sample question
goes through the SDK, as a user's would (``collect.gather_report``); ``report.write_report``
lays the answers out with Jinja2 templates.
"""
