"""Frontend query speed: fieldsync against PostGraphile 5 on the same data (issue #8).

``python -m bench.frontend`` measures; ``python -m bench.frontend.profile`` profiles
fieldsync under the same reads. See README.md in this directory.
"""
