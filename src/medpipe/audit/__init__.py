"""Stage ``audit`` (rules/audit.smk: ``review_list``, ``manifest``; ``medpipe audit verify|diff``).

:mod:`.manifest`: the run manifest (hashes, versions, hardware, seeds, timings) and its HTML tables;
:mod:`.verify`: verify a results folder against its manifest, diff two runs; :mod:`.review`: cases flagged for
review and the reviewer's sign-off; :mod:`.failures`: failed jobs of a ``--keep-going`` run as a sign-off sheet.
"""
