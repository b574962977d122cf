for i in 1 2 3 4; do
  for side in A B; do
    for k in 1 32; do
      echo -n "$side "; (cd /tmp/snap$side && PYTHONPATH=/tmp/snap$side /work/main/.venv/bin/python /tmp/k1.py $k 2>&1 | tail -1)
    done
  done
done
