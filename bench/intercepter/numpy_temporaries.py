"""turingwatch intercepter benchmark: a numpy loop whose expressions make large temporaries.

Each step evaluates array expressions over 6 M doubles (48 MB per temporary, above glibc's
largest mmap threshold), so every temporary is a fresh mapping faulted in page by page unless
the allocator keeps freed blocks. Prints a digest so allocators can be checked to agree.
"""

import hashlib
import sys

import numpy as np

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 40
x = np.linspace(0.0, 1.0, 6_000_000)
acc = np.zeros_like(x)
for step in range(steps):
    y = np.sin(x * (step + 1)) * np.exp(-x) + x**2  # several temporaries per line
    acc += np.where(y > 0.5, y, 0.5 * y)
print(hashlib.sha256(acc.tobytes()).hexdigest())
