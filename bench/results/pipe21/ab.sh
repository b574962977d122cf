#!/usr/bin/env bash
# pipe21's A/B: /tmp/snapA (base) and /tmp/snapB (branch), each a `git archive` of its
# commit, run alternately at K=1 and K=32; one JSON line a run, prefixed by the side.
set -u
for i in 1 2 3 4; do
  for side in A B; do
    for k in 1 32; do
      echo -n "$side "
      (cd "/tmp/snap$side" && PYTHONPATH="/tmp/snap$side" /work/main/.venv/bin/python \
        /work/main/bench/results/pipe21/one_run.py "$k" 2>&1 | tail -1)
    done
  done
done
