"""A sum tree over non-negative priorities, vectorized in numpy: batched updates and batched prefix-sum search.

Proportional prioritized replay (Schaul et al. 2016, "Prioritized Experience Replay", appendix B.2.1) draws item
`i` with probability `p_i / sum_j p_j`. The tree keeps every internal node equal to the sum of its two children, so
the total is the root and a draw is one descent of `log2(capacity)` levels. Both the update and the descent touch
one tree level at a time for the whole batch, so their Python cost is `O(log capacity)` per call, not per item.
"""

from __future__ import annotations

import numpy as np


class SumTree:
    """Priorities of `capacity` slots (all 0 at first) with their sums.

    The array is a complete binary tree in heap order: node 1 is the root, node `j` has children `2j` and `2j + 1`,
    and slot `s` is leaf `leaves + s` (`leaves` is `capacity` rounded up to a power of two; the padding leaves stay 0).
    Parents are recomputed as the sum of their children (not adjusted by deltas), so rounding errors never
    accumulate, and several updates of one slot in a batch leave a consistent tree.

    Args:
        capacity: slots.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a sum tree needs at least one slot, got {capacity}")
        self.capacity = capacity
        self.leaves = 1 << max(0, (capacity - 1).bit_length())
        self.depth = self.leaves.bit_length() - 1  # levels below the root
        self.nodes = np.zeros(2 * self.leaves, np.float64)

    @property
    def total(self) -> float:
        """The sum of all priorities."""
        return float(self.nodes[1])

    def get(self, slots: np.ndarray) -> np.ndarray:
        """`[N]` priorities of `slots` `[N]`."""
        return self.nodes[self.leaves + np.asarray(slots)]

    def priorities(self) -> np.ndarray:
        """`[capacity]` all slot priorities (a view: copy it to keep it)."""
        return self.nodes[self.leaves : self.leaves + self.capacity]

    def update(self, slots: np.ndarray, values: np.ndarray | float) -> None:
        """Sets the priorities of `slots` `[N]` to `values` (`[N]` or a scalar, each >= 0), then their ancestors.

        Where a slot appears twice, one of its values is kept (numpy's fancy assignment); the sums stay exact:
        a parent listed twice is assigned the same sum twice, so no deduplication is needed.
        """
        slots = np.asarray(slots, np.int64)
        if slots.size == 0:
            return
        nodes = self.nodes
        index = self.leaves + slots
        nodes[index] = values
        for _ in range(self.depth):
            index >>= 1
            nodes[index] = nodes[2 * index] + nodes[2 * index + 1]

    def rebuild(self) -> None:
        """Recomputes every internal node from the leaves (after the leaves were written directly)."""
        nodes = self.nodes
        start = self.leaves
        while start > 1:
            half = start >> 1
            nodes[half:start] = nodes[start : 2 * start : 2] + nodes[start + 1 : 2 * start : 2]
            start = half

    def find(self, targets: np.ndarray) -> np.ndarray:
        """The slots whose prefix-sum interval holds each target: `[N]` values in `[0, total)` -> `[N]` slots.

        Slot `s` covers `[sum_{j<s} p_j, sum_{j<=s} p_j)`, so a target drawn uniformly from `[0, total)` lands on
        slot `s` with probability `p_s / total`. A descent never enters a subtree of sum 0, so a target at or above
        the total (rounding) ends on the last slot with a positive priority, never on an empty one.
        """
        nodes = self.nodes
        index = np.ones(np.shape(targets), np.int64)
        rest = np.array(targets, np.float64, copy=True)
        for _ in range(self.depth):
            index <<= 1
            left = nodes[index]
            go_right = rest >= left
            rest -= np.where(go_right, left, 0.0)
            index += go_right
        slots = index - self.leaves
        # Rounding can carry a target at the very end of a subtree into an empty right sibling (p = 0): those few
        # descend again, never entering a subtree of sum 0.
        empty = nodes[index] <= 0
        if empty.any():
            slots[empty] = self._find_guarded(np.asarray(targets, np.float64)[empty])
        return slots

    def _find_guarded(self, targets: np.ndarray) -> np.ndarray:
        nodes = self.nodes
        index = np.ones(targets.shape, np.int64)
        rest = targets.copy()
        for _ in range(self.depth):
            left, right = nodes[2 * index], nodes[2 * index + 1]
            go_right = ((rest >= left) & (right > 0)) | (left <= 0)
            rest = np.where(go_right, rest - left, rest)
            index = 2 * index + go_right
        return index - self.leaves
